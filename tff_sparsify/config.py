"""What defines a run: `ExperimentConfig`, validated on creation. Pure Python (no TensorFlow), so the
command line can check its arguments before TensorFlow loads.

The dataset and model names are those of `data.DATASETS` and `models.MODELS` (a test keeps them
equal); the algorithms are those `experiment.build_process` builds.
"""
from __future__ import annotations

import dataclasses
import math
import re
import typing

import numpy as np

from tff_sparsify import checks, partitions, schedules

DATASETS = ("digits", "fashion_mnist", "cifar10", "cifar100")
MODELS = ("fc", "cnn", "vgg16")
LAST_ROUNDS_FOR_MEAN = 10  # DESIGN: compare runs on the mean test accuracy of the last 10 rounds.
MEAN_ACCURACY = f"mean_test_accuracy_last_{LAST_ROUNDS_FOR_MEAN}"  # Its key in a run's summary.
ALGORITHMS = (
    "fedsparsify_global", "fedsparsify_local", "fedavg", "fedprox", "oneshot", "oneshot_finetune",
    "random", "snip", "grasp", "prunefl",
)
PARTITION_ARGUMENTS = {"label_skew": "classes_per_client", "label_skew_random": "classes_per_client",
                       "dirichlet": "alpha"}  # The one argument each partition takes.
DEFAULT_QUORUM = 0.5


@dataclasses.dataclass(frozen=True)
class ExperimentConfig:
    """Everything that defines a run. Defaults: a small FedSparsify-Global run on embedded digits."""

    algorithm: str = "fedsparsify_global"
    dataset: str = "digits"
    data_path: str | None = None
    train_examples_per_class: int | None = None  # Only the first n of each class (scaled protocols).
    model: str | None = None  # None: the paper's model for the dataset.
    partition: str = "iid"
    classes_per_client: int | None = None
    alpha: float | None = None
    num_clients: int = 10
    participation: float = 1.0
    rounds: int = 30
    local_epochs: int = 4
    batch_size: int = 32
    client_learning_rate: float = 0.02
    client_momentum: float = 0.0
    client_nesterov: bool = False  # Nesterov momentum (paper: CIFAR-100); needs client_momentum > 0.
    server_learning_rate: float = 1.0
    final_sparsity: float = 0.8
    initial_sparsity: float = 0.0
    start_round: int = 1
    frequency: int = 1
    exponent: float = 3.0
    block_size: str = "1x1"  # "RxC": TFLite-style blocks, e.g. "1x4" (float32) or "1x16" (int8).
    quorum: float = DEFAULT_QUORUM
    proximal_strength: float = 0.001  # FedProx's mu (paper: 0.001).
    fine_tune_rounds: int = 10  # OneShot with fine-tuning prunes at round T - this.
    saliency_batches: int | None = None  # SNIP/GraSP: batches of the chosen client scored (None: all).
    readjust_every: int = 50  # PruneFL: rounds between mask readjustments (paper: 50).
    seed: int = 1990

    def __post_init__(self):
        self._check_types()
        checks.choice("algorithm", self.algorithm, ALGORITHMS)
        checks.choice("dataset", self.dataset, DATASETS)
        if self.model is not None:
            checks.choice("model", self.model, MODELS)
        self._check_partition()
        for name in ("num_clients", "local_epochs", "batch_size", "readjust_every"):
            checks.integer(name, getattr(self, name))
        for name in ("train_examples_per_class", "saliency_batches"):
            if getattr(self, name) is not None:
                checks.integer(name, getattr(self, name))
        if not 0.0 < self.participation <= 1.0:
            raise ValueError(f"participation must be in (0, 1], got {self.participation!r}")
        for name in ("client_learning_rate", "server_learning_rate"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)!r}")
        if not 0 <= self.seed < 2**32:
            raise ValueError(f"seed must be an integer in [0, 2**32 - 1], got {self.seed!r}")
        if not 0 < self.quorum <= 1:
            raise ValueError(f"quorum must be in (0, 1], got {self.quorum!r}")
        if self.quorum != DEFAULT_QUORUM and self.algorithm != "fedsparsify_local":
            raise ValueError(f"quorum applies to fedsparsify_local only, got {self.quorum!r} with algorithm "
                             f"{self.algorithm!r}")
        if self.block_size != "1x1" and self.algorithm not in ("fedsparsify_global", "fedsparsify_local"):
            raise ValueError(f"block_size applies to fedsparsify_global and fedsparsify_local only, got "
                             f"{self.block_size!r} with algorithm {self.algorithm!r}")
        checks.fraction("client_momentum", self.client_momentum)
        if self.client_nesterov and not self.client_momentum:
            raise ValueError("client_nesterov needs client_momentum in (0, 1), got 0")
        if self.algorithm == "oneshot_finetune" and not 1 <= self.fine_tune_rounds < self.rounds:
            raise ValueError(f"fine_tune_rounds must be in [1, {self.rounds - 1}] (rounds - 1), got {self.fine_tune_rounds!r}")
        if not self.proximal_strength >= 0:
            raise ValueError(f"proximal_strength must be >= 0, got {self.proximal_strength!r}")
        if not re.fullmatch(r"[1-9][0-9]*x[1-9][0-9]*", self.block_size):
            raise ValueError(f"block_size must look like 1x4 (rows x columns, each >= 1), got {self.block_size!r}")
        try:
            self.schedule()  # Validates the schedule arguments.
        except ValueError as error:  # Named as the config names them.
            raise ValueError(str(error).replace("total_rounds", "rounds")) from None

    def _check_partition(self) -> None:
        """The partition is known and gets exactly the arguments it uses (`classes_per_client` for the
        label skews, `alpha` for Dirichlet); ranges that need the data are checked with it."""
        checks.choice("partition", self.partition, partitions.PARTITIONS)
        uses = PARTITION_ARGUMENTS.get(self.partition)
        for name in ("classes_per_client", "alpha"):
            if name == uses and getattr(self, name) is None:
                raise ValueError(f"{name} is required for partition {self.partition!r}")
            if name != uses and getattr(self, name) is not None:
                raise ValueError(f"{name} applies to partition "
                                 f"{'dirichlet' if name == 'alpha' else 'label_skew or label_skew_random'} "
                                 f"only, got {getattr(self, name)!r} with partition {self.partition!r}")
        if self.classes_per_client is not None:
            checks.integer("classes_per_client", self.classes_per_client)
        if self.alpha is not None and self.alpha < partitions.MIN_ALPHA:
            raise ValueError(f"alpha must be a finite number >= {partitions.MIN_ALPHA:g}, got {self.alpha!r}")

    def _check_types(self) -> None:
        """Each field holds its annotated type: a real bool, an integer (not 1.5, not "32"), a finite
        number, a string; None only where the field is optional."""
        hints = typing.get_type_hints(type(self))
        for field in dataclasses.fields(self):
            value, hint = getattr(self, field.name), hints[field.name]
            optional = type(None) in typing.get_args(hint)
            if value is None and optional:
                continue
            kind = next(t for t in (bool, int, float, str) if t is hint or t in typing.get_args(hint))
            if not _is_kind(value, kind):
                raise ValueError(f"{field.name} must be {_KIND_NAMES[kind]}{' or null' if optional else ''}, "
                                 f"got {value!r}")

    def schedule(self) -> schedules.SparsitySchedule:
        return schedules.SparsitySchedule(
            final_sparsity=self.final_sparsity,
            total_rounds=self.rounds,
            initial_sparsity=self.initial_sparsity,
            start_round=self.start_round,
            frequency=self.frequency,
            exponent=self.exponent,
        )

    @property
    def block_shape(self) -> tuple[int, int]:
        rows, columns = self.block_size.split("x")
        return int(rows), int(columns)

    @property
    def clients_per_round(self) -> int:
        return max(1, round(self.participation * self.num_clients))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def without_unused_fields(values: dict) -> dict:
    """A saved config's `values` with what its partition and algorithm ignore reset to the default
    (`classes_per_client`, `alpha`, `quorum`), as runs saved them before such values were refused:
    resuming such a run compares only what matters."""
    unused = {"classes_per_client", "alpha"} - {PARTITION_ARGUMENTS.get(values.get("partition"))}
    values = {**values, **{name: None for name in unused}}
    if values.get("algorithm") != "fedsparsify_local":
        values["quorum"] = DEFAULT_QUORUM
    return values


def last_rounds_label(rounds_completed) -> str:
    """How many final rounds `MEAN_ACCURACY` averages for runs of `rounds_completed` rounds: "10",
    or as many as a shorter run has ("2"; "2-10" across runs of different lengths)."""
    counts = sorted({min(LAST_ROUNDS_FOR_MEAN, n) for n in rounds_completed})
    return str(counts[0]) if len(counts) == 1 else f"{counts[0]}-{counts[-1]}"


_KIND_NAMES = {bool: "true or false", int: "an integer", float: "a finite number", str: "a string"}


def _is_kind(value, kind: type) -> bool:
    if kind is bool or isinstance(value, bool):
        return kind is bool and isinstance(value, bool)
    if kind is int:
        return isinstance(value, (int, np.integer))
    if kind is float:
        return isinstance(value, (int, float, np.integer, np.floating)) and math.isfinite(value)
    return isinstance(value, str)
