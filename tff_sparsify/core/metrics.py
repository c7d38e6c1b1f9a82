"""Communication cost of federated training (paper appendix C, tables 1-2) and honest wire sizes.

Paper accounting (appendix C, "Transmission Cost"): per round t, the server sends the global model
to every participating client and each client uploads its model, counted in nonzero parameters and
without compression:

    download(t) = |S_t| * nnz(global model sent at the start of round t)
    upload(t)   = sum over i in S_t of nnz(client i's upload)
    Mbit        = (download + upload) * 32 / 1e6 + mask bits / 1e6

with one bit per prunable parameter for every binary mask sent (FedSparsify-Local uploads one mask
per client per round). `CommunicationLedger` accumulates measured rounds; `schedule_cost` is the
estimate for FedSparsify-Global from the sparsity schedule alone; `dense_fedavg_cost` is the dense
FedAvg reference behind the paper's "x less than FedAvg" ratios.

The paper counts parameters, not bytes. `encoded_bytes` gives what a sparse encoding would really
put on the wire: per tensor the smallest of dense, bitmap and coordinate-list encodings.

Everything except `encoded_bytes` is pure Python; results are plain ints and floats (JSON-friendly).
"""
from __future__ import annotations

import dataclasses
import math
import numbers
from typing import Any, Sequence

import tensorflow as tf

from tff_sparsify import checks
from tff_sparsify.core import schedules

BITS_PER_PARAM = 32  # Full-precision (float32) values, as in the paper.
INDEX_BYTES = 4  # An int32 position in the coordinate-list encoding.
_UPLOAD_COUNTS = ("start", "end")
_UNITS = ("params", "mbit", "bytes")


def _check_optional_count(name: str, value: Any) -> int | None:
    return None if value is None else checks.integer(name, value, 0)


def _mbit(params: int, mask_bits: int) -> float:
    return (params * BITS_PER_PARAM + mask_bits) / 1e6


@dataclasses.dataclass(frozen=True)
class RoundCost:
    """What one round exchanged: parameters each way, mask bits, and (if known) encoded bytes.

    `download_params` = |S_t| * nnz(broadcast model), `upload_params` = the sum of the clients'
    upload nnz, `mask_bits` = one bit per prunable parameter per binary mask sent. The `*_bytes`
    fields are the `encoded_bytes` sizes of the same traffic, None when not measured.
    """

    download_params: int
    upload_params: int
    mask_bits: int = 0
    download_bytes: int | None = None
    upload_bytes: int | None = None

    def __post_init__(self):
        # Plain Python ints (also from NumPy / TF scalars), so that `to_dict` is JSON-serializable.
        for name in ("download_params", "upload_params", "mask_bits"):
            object.__setattr__(self, name, checks.integer(name, getattr(self, name), 0))
        for name in ("download_bytes", "upload_bytes"):
            object.__setattr__(self, name, _check_optional_count(name, getattr(self, name)))

    @classmethod
    def from_counts(
        cls,
        clients: int,
        broadcast_nnz: int,
        upload_nnz: int | Sequence[int],
        num_prunable: int = 0,
        masks_per_round: int = 0,
        download_bytes: int | None = None,
        upload_bytes: int | None = None,
    ) -> RoundCost:
        """The cost of a round with `clients` participants, from nonzero counts.

        Args:
          clients: |S_t|, at least 1.
          broadcast_nnz: nonzeros of the global model sent at the start of the round.
          upload_nnz: one count per client (a sequence of length `clients`), or one int that every
            client uploads.
          num_prunable: mask size in bits (one bit per prunable parameter).
          masks_per_round: binary masks sent in the round (FedSparsify-Local: `clients`).
          download_bytes, upload_bytes: measured encoded sizes of the round's traffic, if any.
        """
        clients = checks.integer("clients", clients, 1)
        broadcast_nnz = checks.integer("broadcast_nnz", broadcast_nnz, 0)
        if isinstance(upload_nnz, numbers.Integral) and not isinstance(upload_nnz, bool):
            upload = clients * checks.integer("upload_nnz", upload_nnz, 0)
        else:
            counts = list(upload_nnz)
            if len(counts) != clients:
                raise ValueError(
                    f"upload_nnz must hold one count per client ({clients}), got {len(counts)}"
                )
            upload = sum(checks.integer(f"upload_nnz[{i}]", c, 0) for i, c in enumerate(counts))
        mask_bits = checks.integer("masks_per_round", masks_per_round, 0) * checks.integer(
            "num_prunable", num_prunable, 0
        )
        return cls(clients * broadcast_nnz, upload, mask_bits, download_bytes, upload_bytes)

    @property
    def params(self) -> int:
        """Parameters exchanged, both directions."""
        return self.download_params + self.upload_params

    @property
    def mbit(self) -> float:
        """Megabits exchanged: params * 32 / 1e6 plus mask bits / 1e6 (paper appendix C)."""
        return _mbit(self.params, self.mask_bits)

    @property
    def bytes(self) -> int | None:
        """Encoded bytes, both directions; None unless both directions were measured."""
        if self.download_bytes is None or self.upload_bytes is None:
            return None
        return self.download_bytes + self.upload_bytes

    def to_dict(self) -> dict[str, Any]:
        """The fields, JSON-serializable."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, config: dict[str, Any]) -> RoundCost:
        """Inverse of `to_dict`."""
        return cls(**config)


@dataclasses.dataclass
class CommunicationLedger:
    """The rounds of one training run, in order, and their cumulative cost."""

    rounds: list[RoundCost] = dataclasses.field(default_factory=list)

    def __post_init__(self):
        self.rounds = list(self.rounds)
        for i, cost in enumerate(self.rounds):
            if not isinstance(cost, RoundCost):
                raise TypeError(f"rounds[{i}] must be a RoundCost, got {type(cost).__name__}")

    def __len__(self) -> int:
        return len(self.rounds)

    def add(self, cost: RoundCost) -> RoundCost:
        """Appends one round's cost and returns it."""
        if not isinstance(cost, RoundCost):
            raise TypeError(f"cost must be a RoundCost, got {type(cost).__name__}")
        self.rounds.append(cost)
        return cost

    @property
    def mask_bits(self) -> int:
        return sum(r.mask_bits for r in self.rounds)

    @property
    def params(self) -> int:
        """Total parameters exchanged (the paper's "C.C. (MM)" column, in units, not millions)."""
        return sum(r.params for r in self.rounds)

    @property
    def mbit(self) -> float:
        """Total megabits, computed from the exact integer totals."""
        return _mbit(self.params, self.mask_bits)

    @property
    def bytes(self) -> int | None:
        """Total encoded bytes; None if any round lacks them."""
        sizes = [r.bytes for r in self.rounds]
        return None if any(s is None for s in sizes) else sum(sizes)

    def ratio_to(
        self, reference: CommunicationLedger | numbers.Real, unit: str = "params"
    ) -> float:
        """How many times less this run exchanged than `reference`: reference / self.

        `reference` is another ledger (e.g. dense FedAvg) or a total in `unit` (e.g.
        `dense_fedavg_cost(...)` in params). `unit` is "params", "mbit" or "bytes".
        """
        if unit not in _UNITS:
            raise ValueError(f"unit must be one of {_UNITS}, got {unit!r}")
        own = getattr(self, unit)
        if isinstance(reference, CommunicationLedger):
            reference = getattr(reference, unit)
            if reference is None:
                raise ValueError("reference has rounds without encoded bytes")
        elif (
            not isinstance(reference, numbers.Real) or isinstance(reference, bool) or reference < 0
        ):
            raise ValueError(
                f"reference must be a CommunicationLedger or a number >= 0, got {reference!r}"
            )
        if own is None:
            raise ValueError("this ledger has rounds without encoded bytes")
        if own == 0:
            raise ValueError(f"this ledger exchanged 0 {unit}: the ratio is undefined")
        return float(reference) / own

def dense_fedavg_cost(num_params: int, clients_per_round: int, rounds: int) -> int:
    """Parameters exchanged by dense FedAvg: 2 * clients_per_round * num_params * rounds.

    The reference for "x less than FedAvg": FashionMNIST FC (118,282), 10 clients, 200 rounds gives
    473,128,000 (paper table 2: 473).
    """
    num_params = checks.integer("num_params", num_params, 0)
    clients_per_round = checks.integer("clients_per_round", clients_per_round, 1)
    rounds = checks.integer("rounds", rounds, 0)
    return 2 * clients_per_round * num_params * rounds


def schedule_cost(
    num_params: int,
    num_prunable: int,
    clients_per_round: int,
    schedule: schedules.SparsitySchedule,
    masks_per_round: int = 0,
    upload: str = "start",
) -> CommunicationLedger:
    """The FedSparsify-Global cost over `schedule.total_rounds` rounds, from the schedule alone.

    After round t the model has k(t) = floor(s(t) * num_prunable + 0.5) zeros (exactly what
    `pruning.magnitude_masks` produces; k(0) = 0), so round t broadcasts num_params - k(t - 1)
    nonzeros to each of `clients_per_round` clients. Each client then uploads:

    - upload="start" (default): num_params - k(t - 1). In FedSparsify-Global the clients train
      within the broadcast mask and the server prunes only after aggregating, so the upload carries
      the broadcast model's nonzeros: this is what this library's Global process really sends, and
      what a `CommunicationLedger` measured on it records.
    - upload="end": num_params - k(t), the model size after the round's pruning. Appendix C counts
      the parameters uploaded "at the end of the round", and its tables are reproduced to the
      printed digit with this choice when every trainable parameter is prunable (the authors also
      pruned biases): e.g. FashionMNIST FC, 10 clients, s_f = 0.9 gives 155.37 M (table 2: 155),
      while upload="start" gives 156.43 M (157.14 M with only the 118,016 kernels prunable).

    Each round also carries `masks_per_round` binary masks of `num_prunable` bits. Encoded bytes are
    unknown here (None).
    """
    num_params = checks.integer("num_params", num_params, 0)
    num_prunable = checks.integer("num_prunable", num_prunable, 0)
    if num_prunable > num_params:
        raise ValueError(f"num_prunable must be <= num_params = {num_params}, got {num_prunable}")
    clients_per_round = checks.integer("clients_per_round", clients_per_round, 1)
    masks_per_round = checks.integer("masks_per_round", masks_per_round, 0)
    if not isinstance(schedule, schedules.SparsitySchedule):
        raise TypeError(f"schedule must be a SparsitySchedule, got {type(schedule).__name__}")
    if upload not in _UPLOAD_COUNTS:
        raise ValueError(f"upload must be one of {_UPLOAD_COUNTS}, got {upload!r}")

    zeros = [0] + [
        math.floor(schedule(t) * num_prunable + 0.5) for t in range(1, schedule.total_rounds + 1)
    ]
    ledger = CommunicationLedger()
    for t in range(1, schedule.total_rounds + 1):
        ledger.add(RoundCost.from_counts(
            clients_per_round,
            broadcast_nnz=num_params - zeros[t - 1],
            upload_nnz=num_params - zeros[t if upload == "end" else t - 1],
            num_prunable=num_prunable,
            masks_per_round=masks_per_round,
        ))
    return ledger


def encoded_bytes(tensors: Any) -> tf.Tensor:
    """Bytes of the cheapest lossless encoding of each tensor, summed: an int64 scalar.

    Per tensor of n elements with z nonzeros and v-byte values (v = 4 for float32), the smallest of
    dense (v * n), bitmap (ceil(n / 8) + v * z) and coordinate list (4-byte int32 index + v-byte
    value per nonzero: (4 + v) * z). `tensors` is any nest of tensors (list, dict, `ModelWeights`,
    ...). Pure TF, no `.numpy()`: runs eagerly, in `tf.function` and in TFF TensorFlow computations.
    """
    flat = [tf.convert_to_tensor(t) for t in tf.nest.flatten(tensors)]
    if not flat:
        return tf.constant(0, tf.int64)
    n = tf.stack([tf.size(t, out_type=tf.int64) for t in flat])
    z = tf.stack([tf.math.count_nonzero(t, dtype=tf.int64) for t in flat])
    v = tf.constant([t.dtype.size for t in flat], tf.int64)
    dense = v * n
    bitmap = (n + 7) // 8 + v * z
    coordinates = (INDEX_BYTES + v) * z
    return tf.reduce_sum(tf.minimum(dense, tf.minimum(bitmap, coordinates)))
