"""The aggregators beyond TFF's example-weighted mean: majority-vote merging of client models for
FedSparsify-Local (paper eq. 2), and `MeanPerClientFields` for reports every client counts once in.

Each of the K participating clients sends its weights w_i, a binary mask m_i (1 = kept, 0 = pruned)
and its example count n_i. For every position the keep share is v = sum_i m_i / K; the position is
kept iff v >= quorum and then gets

- `average_over="all"` (the paper): sum_i n_i w_i / sum_i n_i, the example-weighted mean over all
  participants of the values as sent. Clients sending weights send 0 where they pruned. Clients
  sending model deltas `initial - pruned` (TFF's sign) send `initial` there, and the server's
  `initial - mean delta` is then the paper's merge;
- `average_over="keepers"`: sum_i n_i m_i w_i / sum_i n_i m_i, the mean over the clients that
  kept it (other clients' values there are ignored; this also holds for model deltas).

A dropped position is exactly 0. Clients of weight 0 (no examples, or an update the client work
left out as non-finite) neither vote nor count in K.

`MajorityVoteFactory.create(value_type, weight_type)` takes a struct with the fields `weights` and
`masks`, two structures of float tensors of the same shapes, and optionally `statistics` (values that
are neither voted nor masked: the BatchNorm moving statistics, merged into their example-weighted
mean sum_i n_i s_i / sum_i n_i). The result has the same type: the merged weights, the voted mask
(1.0 kept, 0.0 dropped) and the merged statistics.

Measurements, an OrderedDict at SERVER, over all positions of all tensors (masks of ones included):
`kept_fraction` (fraction kept by the vote), `mean_client_sparsity` (mean over clients of the
fraction their masks prune), `agreement` (mean over positions of the share of clients whose mask
agrees with the outcome), `vote_histogram` (int32 counts of keep shares in 10 equal bins over
[0, 1], the last one closed) and `num_clients`.
"""
from __future__ import annotations

import collections

import tensorflow as tf
import tensorflow_federated as tff

AVERAGE_OVER = ("all", "keepers")
HISTOGRAM_BINS = 10
EXPLICIT_FIELDS = ("weights", "masks")
STATISTICS_FIELD = "statistics"


class MajorityVoteFactory(tff.aggregators.WeightedAggregationFactory):
    """Merges client models by majority vote over their masks (FedSparsify-Local, paper eq. 2)."""

    def __init__(self, quorum: float = 0.5, average_over: str = "all"):
        """`quorum`: keep share needed to keep a position, in (0, 1]; `average_over`: see module."""
        if not 0 < quorum <= 1:
            raise ValueError(f"quorum must be in (0, 1], got {quorum}")
        if average_over not in AVERAGE_OVER:
            raise ValueError(f"average_over must be one of {AVERAGE_OVER}, got {average_over!r}")
        self._quorum = float(quorum)
        self._average_over = average_over

    def create(self, value_type, weight_type) -> tff.templates.AggregationProcess:
        """An `AggregationProcess` (empty state) merging `value_type`s weighted by `weight_type`."""
        _check_types(value_type, weight_type)
        with_statistics = STATISTICS_FIELD in tff.structure.name_list(value_type)
        keepers = self._average_over == "keepers"
        quorum = self._quorum

        @tff.tensorflow.computation(value_type, weight_type)
        def client_sums(value, weight):
            weights, masks = _flatten(value["weights"]), _flatten(value["masks"])
            sums = _client_sums(weights, [tf.not_equal(m, 0) for m in masks], weight, keepers)
            if with_statistics:
                sums[STATISTICS_FIELD] = [s * tf.cast(weight, s.dtype) for s in _flatten(value[STATISTICS_FIELD])]
            return sums

        @tff.tensorflow.computation(client_sums.type_signature.result)
        def merge(sums):
            merged, keeps = _merge(sums, quorum, keepers)
            mask_types = tff.structure.flatten(value_type.masks)
            fields = {"weights": merged, "masks": [tf.cast(k, t.dtype) for k, t in zip(keeps, mask_types)]}
            if with_statistics:
                fields[STATISTICS_FIELD] = [s / tf.cast(sums["weight"], s.dtype) for s in sums[STATISTICS_FIELD]]
            flat = [t for name in tff.structure.name_list(value_type) for t in fields[name]]
            return collections.OrderedDict(
                result=_pack(value_type, flat),
                measurements=_measurements(sums["votes"], keeps, sums["num_clients"]),
            )

        @tff.federated_computation
        def init_fn():
            return tff.federated_value((), tff.SERVER)

        @tff.federated_computation(
            init_fn.type_signature.result,
            tff.FederatedType(value_type, tff.CLIENTS),
            tff.FederatedType(weight_type, tff.CLIENTS),
        )
        def next_fn(state, value, weight):
            sums = tff.federated_sum(tff.federated_map(client_sums, (value, weight)))
            output = tff.federated_map(merge, sums)
            return tff.templates.MeasuredProcessOutput(state, output.result, output.measurements)

        return tff.templates.AggregationProcess(init_fn, next_fn)


def _client_sums(weights, keeps, weight, keepers: bool):
    """One client's summands: its weighted values, its votes, its weight and a client count.

    For `keepers`, values at the client's pruned positions are left out, and so is its weight there.
    A client of weight 0 (no examples, or a non-finite update the client work left out) does not vote.
    """
    voting = weight > 0
    keeps = [tf.logical_and(k, voting) for k in keeps]
    weighted = [w * tf.cast(weight, w.dtype) for w in weights]
    sums = collections.OrderedDict(
        weighted=[_masked(k, x) for x, k in zip(weighted, keeps)] if keepers else weighted,
        votes=[tf.cast(k, tf.int32) for k in keeps],
        weight=weight,
        num_clients=tf.cast(voting, tf.int32),
    )
    if keepers:
        sums["keeper_weight"] = [
            _masked(k, tf.cast(weight, w.dtype)) for w, k in zip(weights, keeps)
        ]
    return sums


def _merge(sums, quorum: float, keepers: bool):
    """The merged tensors and the boolean kept positions (eq. 2) from the clients' summed values."""
    clients = tf.cast(sums["num_clients"], tf.float64)
    merged, keeps = [], []
    for i, (weighted, votes) in enumerate(zip(sums["weighted"], sums["votes"])):
        # In float64, votes / K equals the quorum exactly when the share written as a decimal does.
        keep = tf.cast(votes, tf.float64) / clients >= quorum
        if keepers:
            denominator = sums["keeper_weight"][i]
        else:
            denominator = tf.cast(sums["weight"], weighted.dtype)
        merged.append(_masked(keep, tf.math.divide_no_nan(weighted, denominator)))
        keeps.append(keep)
    return merged, keeps


def _measurements(votes, keeps, num_clients):
    """The measurements described in the module docstring, from per-position vote counts."""
    positions = tf.add_n([tf.size(v, tf.int64) for v in votes])
    votes_cast = positions * tf.cast(num_clients, tf.int64)
    keep_votes = tf.add_n([tf.reduce_sum(tf.cast(v, tf.int64)) for v in votes])
    agreeing = tf.add_n(
        [
            tf.reduce_sum(tf.cast(tf.where(k, v, num_clients - v), tf.int64))
            for v, k in zip(votes, keeps)
        ]
    )
    kept = tf.add_n([tf.math.count_nonzero(k) for k in keeps])
    # Share k/K belongs in bin floor(10 k / K), computed here in integers: tf.histogram_fixed_width
    # on float shares puts e.g. 7/10 in bin 6. Counting integer bins with it is exact.
    histogram = tf.add_n(
        [
            tf.histogram_fixed_width(
                tf.minimum(v * HISTOGRAM_BINS // num_clients, HISTOGRAM_BINS - 1),
                [0, HISTOGRAM_BINS],
                nbins=HISTOGRAM_BINS,
            )
            for v in votes
        ]
    )
    return collections.OrderedDict(
        kept_fraction=tf.cast(kept / positions, tf.float32),
        mean_client_sparsity=tf.cast(1 - keep_votes / votes_cast, tf.float32),
        agreement=tf.cast(agreeing / votes_cast, tf.float32),
        vote_histogram=histogram,
        num_clients=num_clients,
    )


def _masked(keep, tensor):
    """`tensor` where `keep`, exactly 0 elsewhere."""
    return tf.where(keep, tensor, tf.zeros_like(tensor))


def _check_types(value_type, weight_type) -> None:
    """Raises `TypeError` unless values are a struct of `weights` and `masks` (and, optionally,
    `statistics`) of float tensors, masks matching weights, and weights are scalars."""
    names = set(tff.structure.name_list(value_type)) if isinstance(value_type, tff.types.StructType) else set()
    if names not in (set(EXPLICIT_FIELDS), {*EXPLICIT_FIELDS, STATISTICS_FIELD}):
        raise TypeError(f"value_type must be a struct of {EXPLICIT_FIELDS} (and optionally "
                        f"{STATISTICS_FIELD!r}), got {value_type}")
    if not tff.types.is_structure_of_floats(value_type):
        raise TypeError(f"value_type must be a structure of float tensors, got {value_type}")
    weight_shapes = [t.shape for t in tff.structure.flatten(value_type.weights)]
    mask_shapes = [t.shape for t in tff.structure.flatten(value_type.masks)]
    if weight_shapes != mask_shapes:
        raise TypeError(f"masks must match weights one-to-one in shape, got {value_type}")
    if not isinstance(weight_type, tff.types.TensorType) or weight_type.shape != ():
        raise TypeError(f"weight_type must be a scalar tensor type, got {weight_type}")


def _flatten(value) -> list[tf.Tensor]:
    """The tensors of a client value in the order of its TFF type (`tf.nest` sorts dict keys)."""
    if isinstance(value, tf.Tensor):
        return [value]
    return tff.structure.flatten(tff.structure.from_container(value, recursive=True))


def _pack(type_spec, tensors):
    """`tensors` (in `type_spec`'s order) in the containers of `type_spec`: the types match."""
    packed = tff.structure.pack_sequence_as(type_spec, tensors)
    if isinstance(type_spec, tff.types.StructWithPythonType):
        return tff.types.type_to_py_container(packed, type_spec)
    return packed


class MeanPerClientFields(tff.aggregators.WeightedAggregationFactory):
    """TFF's example-weighted `MeanFactory` for every field of a struct update except `fields`, which
    are averaged with every client counting once: sum_k x_k / K over the K clients of nonzero weight
    (a client the client work left out as non-finite does not count). FedTiny's gradient reports are
    averaged this way (its server averages them per position over the participating clients)."""

    def __init__(self, fields: tuple[str, ...]):
        self._fields = tuple(fields)

    def create(self, value_type, weight_type) -> tff.templates.AggregationProcess:
        names = tff.structure.name_list(value_type)
        missing = [f for f in self._fields if f not in names]
        if missing:
            raise TypeError(f"value_type has no fields {missing}: {value_type}")
        parts = ([n for n in names if n not in self._fields], list(self._fields))
        selectors = [_field_selector(value_type, part) for part in parts]
        processes = [tff.aggregators.MeanFactory().create(s.type_signature.result, weight_type) for s in selectors]

        @tff.tensorflow.computation(weight_type)
        def counts_once(weight):
            return tf.cast(weight > 0, weight.dtype)

        @tff.tensorflow.computation(*(s.type_signature.result for s in selectors))
        def join(by_example, by_client):
            merged = {**by_example, **by_client}
            return collections.OrderedDict((n, merged[n]) for n in names)

        @tff.federated_computation
        def init_fn():
            return tff.federated_zip(tuple(p.initialize() for p in processes))

        @tff.federated_computation(
            init_fn.type_signature.result,
            tff.FederatedType(value_type, tff.CLIENTS),
            tff.FederatedType(weight_type, tff.CLIENTS),
        )
        def next_fn(state, value, weight):
            weights = (weight, tff.federated_map(counts_once, weight))
            outputs = [p.next(state[i], tff.federated_map(selectors[i], value), weights[i])
                       for i, p in enumerate(processes)]
            result = tff.federated_map(join, tff.federated_zip(tuple(o.result for o in outputs)))
            return tff.templates.MeasuredProcessOutput(
                tff.federated_zip(tuple(o.state for o in outputs)), result,
                tff.federated_zip(tuple(o.measurements for o in outputs)),
            )

        return tff.templates.AggregationProcess(init_fn, next_fn)


def _field_selector(value_type, fields: list[str]) -> tff.Computation:
    """A TF computation: a struct of `value_type` -> an OrderedDict of its `fields`."""

    @tff.tensorflow.computation(value_type)
    def select(value):
        return collections.OrderedDict((f, value[f]) for f in fields)

    return select
