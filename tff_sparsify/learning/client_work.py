"""Client work that trains within the broadcast masks (and, for FedSparsify-Local, prunes locally).

Each client assigns the broadcast `ModelWeights` (kernels, biases, TFMOT masks, BatchNorm statistics)
to its model and runs local SGD with the kernel gradients multiplied by the masks, so pruned weights
stay exactly zero and the update `initial - final` is exactly zero at pruned positions (TFF's sign
convention).

Every client sends its model: `ClientResult.update` is an `OrderedDict` with
- `weights`: the trainable weights' delta `initial - final`; for FedSparsify-Local, `final` is the
  client's model pruned to the round's target s(t) (paper eq. 1) by global magnitude;
- `masks` (FedSparsify-Local): one binary mask per trainable tensor (all ones for biases), for the
  server's majority vote (paper eq. 2);
- `squared_gradients` (PruneFL, `report_squared_gradients`): per prunable kernel (layout order), the
  sum over the client's local steps of its squared loss gradient taken before masking (dense:
  pruned positions get an importance too, so they can regrow). The server uses it at readjustment
  rounds (`finalizers`, mask source "readjust"). Not counted below (the original PruneFL sends
  importances at readjustment rounds only);
- `statistics` (models with BatchNorm): the BatchNorm moving means and variances the client holds
  after local training, as values (not deltas). The aggregators average them example-weighted and
  the finalizer sets them (DESIGN, "BatchNorm statistics"; the authors' FedAvg over all weights).

A client whose update holds a NaN or an infinity (a diverging learning rate, a corrupt example) sends
zeros with weight 0, so the weighted aggregators leave it out (as TFF's own client work does); the
`nonfinite_clients` measurement counts such clients.

Measurements, summed over the round's clients, feed the communication-cost accounting (paper
appendix C, `tff_sparsify.metrics`), on one basis for every algorithm: the model sent.
`download_params` and `upload_params` count the parameters of the model received and of the model
sent (the kernel positions their masks keep, all other trainable weights, the BatchNorm
statistics), so dense FedAvg counts exactly 2 x clients x parameters per round. `update_nonzero`,
for information, counts the nonzeros of the delta (zero wherever a client's data never reaches a
weight), which is not what the paper counts. `download_bytes` and `upload_bytes` are the sizes of
the cheapest lossless per-tensor encoding (dense, bitmap or coordinate list; `metrics.encoded_bytes`)
of the same models' values.
"""
from __future__ import annotations

import collections

import tensorflow as tf
import tensorflow_federated as tff

from tff_sparsify import metrics, pruning, schedules
from tff_sparsify.learning import targets
from tff_sparsify.learning.task import ModelTask


def build_masked_client_work(
    task: ModelTask,
    optimizer: tff.learning.optimizers.Optimizer,
    local_schedule: schedules.SparsitySchedule | None = None,
    block_size: tuple[int, int] = (1, 1),
    proximal_strength: float = 0.0,
    report_squared_gradients: bool = False,
) -> tff.learning.templates.ClientWorkProcess:
    """A `ClientWorkProcess` training within the masks; with `local_schedule`, clients prune too
    (in blocks of `block_size`, see `pruning.magnitude_masks`). A `proximal_strength` mu > 0 adds
    FedProx's proximal term mu/2 ||w - w_t||^2 toward the round's global weights (Li et al., 2020).
    With `report_squared_gradients`, the update also carries each kernel's summed squared dense
    gradient (PruneFL; not with `local_schedule`).

    Its state is the number of rounds done (clients prune to s(round + 1)).
    """
    if report_squared_gradients and local_schedule:
        raise ValueError("report_squared_gradients cannot be combined with a local_schedule")
    layout = task.layout
    with tf.Graph().as_default():
        tff_model = task.tff_model()
        metrics_aggregation_fn = tff.learning.metrics.sum_then_finalize(tff_model.metric_finalizers())
    weights_type = tff.learning.models.weights_type_from_model(tff_model)
    data_type = tff.SequenceType(tff.types.tensorflow_to_type(tff_model.input_spec))

    @tff.tensorflow.computation(tf.int32, weights_type, data_type)
    def client_update(round_num, initial_weights, dataset):
        model = task.tff_model()
        model_weights = tff.learning.models.ModelWeights.from_model(model)
        trainable_specs = tuple(tf.TensorSpec(v.shape, v.dtype) for v in model_weights.trainable)

        @tf.function
        def train():
            tf.nest.map_structure(lambda v, w: v.assign(w), model_weights, initial_weights)
            masks = layout.full_masks(model_weights.trainable, layout.masks(initial_weights.non_trainable))

            def step(state, batch):
                num_examples, optimizer_state, squared = state
                with tf.GradientTape() as tape:
                    output = model.forward_pass(batch, training=True)
                gradients = tape.gradient(output.loss, model_weights.trainable)
                if report_squared_gradients:
                    squared = tuple(s + tf.square(g) for s, g in zip(squared, layout.kernels(gradients)))
                if proximal_strength:
                    gradients = [
                        g + proximal_strength * (w - w0)
                        for g, w, w0 in zip(gradients, model_weights.trainable, initial_weights.trainable)
                    ]
                gradients = tuple(g * m for g, m in zip(gradients, masks))
                optimizer_state, updated = optimizer.next(
                    optimizer_state, tuple(model_weights.trainable), gradients
                )
                for variable, value in zip(model_weights.trainable, updated):
                    variable.assign(value)
                return num_examples + tf.cast(output.num_examples, tf.int64), optimizer_state, squared

            no_squares = tuple(tf.zeros_like(k) for k in layout.kernels(initial_weights.trainable))
            num_examples, _, squared = dataset.reduce(
                (
                    tf.constant(0, tf.int64),
                    optimizer.initialize(trainable_specs),
                    no_squares if report_squared_gradients else (),
                ),
                step,
            )
            final = list(model_weights.trainable)
            broadcast_masks = layout.masks(initial_weights.non_trainable)
            kernel_masks = broadcast_masks
            if local_schedule is not None:
                kernel_masks = pruning.magnitude_masks(
                    layout.kernels(final),
                    targets.target_sparsity(local_schedule, round_num + 1),
                    broadcast_masks,
                    block_size=block_size,
                )
                final = layout.replace_kernels(final, pruning.apply_masks(layout.kernels(final), kernel_masks))
            update = collections.OrderedDict(weights=[a - b for a, b in zip(initial_weights.trainable, final)])
            if local_schedule is not None:
                update["masks"] = layout.full_masks(final, kernel_masks)
            if report_squared_gradients:
                update["squared_gradients"] = list(squared)
            statistics = [tf.identity(s) for s in layout.statistics(model_weights.non_trainable)]
            if statistics:
                update["statistics"] = statistics
            finite = tf.reduce_all([tf.reduce_all(tf.math.is_finite(t)) for t in tf.nest.flatten(update)])
            result = tff.learning.templates.ClientResult(  # A non-finite update is left out, as in TFF.
                update=tf.nest.map_structure(lambda t: tf.where(finite, t, tf.zeros_like(t)), update),
                update_weight=tf.where(finite, tf.cast(num_examples, tf.float32), 0.0),
            )
            broadcast_statistics = layout.statistics(initial_weights.non_trainable)
            communication = collections.OrderedDict(
                clients=tf.constant(1, tf.int64),
                download_params=_params_sent(
                    layout, initial_weights.trainable, broadcast_masks, broadcast_statistics
                ),
                upload_params=_params_sent(layout, final, kernel_masks, statistics),
                update_nonzero=pruning.count_nonzero(update["weights"]),
                download_bytes=metrics.encoded_bytes([*initial_weights.trainable, *broadcast_statistics]),
                upload_bytes=metrics.encoded_bytes([*final, *statistics]),
            )
            nonfinite = tf.cast(tf.logical_not(finite), tf.int32)
            return result, model.report_local_unfinalized_metrics(), communication, nonfinite

        return train()

    @tff.federated_computation
    def initialize():
        return tff.federated_value(0, tff.SERVER)

    @tff.federated_computation(
        initialize.type_signature.result,
        tff.FederatedType(weights_type, tff.CLIENTS),
        tff.FederatedType(data_type, tff.CLIENTS),
    )
    def next_fn(round_num, weights, client_data):
        round_at_clients = tff.federated_broadcast(round_num)
        results, model_outputs, communication, nonfinite = tff.federated_map(
            client_update, (round_at_clients, weights, client_data)
        )
        measurements = tff.federated_zip(
            collections.OrderedDict(
                train=metrics_aggregation_fn(model_outputs),
                communication=tff.federated_sum(communication),
                nonfinite_clients=tff.federated_sum(nonfinite),
            )
        )
        next_round = tff.federated_map(tff.tensorflow.computation(lambda r: r + 1, tf.int32), round_num)
        return tff.templates.MeasuredProcessOutput(next_round, results, measurements)

    return tff.learning.templates.ClientWorkProcess(initialize, next_fn)


def _params_sent(layout, trainable, kernel_masks, statistics) -> tf.Tensor:
    """Parameters of a sparse model as sent (paper appendix C): the kernel positions its masks keep,
    every other trainable weight and the BatchNorm statistics; an int64 scalar. A kept weight that
    is 0 by chance (a zero-initialized bias) is sent all the same, so a dense model counts fully."""
    kept = pruning.count_nonzero(layout.full_masks(trainable, kernel_masks))
    return kept + sum(tf.size(s, out_type=tf.int64) for s in statistics)
