"""What defines a run: `ExperimentConfig`, validated on creation. Pure Python (no TensorFlow), so the
command line can check its arguments before TensorFlow loads.

The dataset and model names are those of `data.DATASETS` and `models.MODELS` (a test keeps them
equal); the algorithms, and each one's own options, are those of `tff_sparsify.algorithms`.
"""
from __future__ import annotations

import dataclasses
from typing import Any

from tff_sparsify import algorithms, checks
from tff_sparsify.core import partitions

DATASETS = ("digits", "fashion_mnist", "cifar10", "cifar100")
EXECUTION_FIELDS = ("workers", "round_timeout")  # Where and how rounds run: a run may resume with others.
MODELS = ("fc", "cnn", "vgg16", "resnet18", "bn_cnn")
LAST_ROUNDS_FOR_MEAN = 10  # Runs are compared on the mean test accuracy of their last 10 rounds.
MEAN_ACCURACY = f"mean_test_accuracy_last_{LAST_ROUNDS_FOR_MEAN}"  # Its key in a run's summary.
PARTITION_ARGUMENTS = {"label_skew": "classes_per_client", "label_skew_random": "classes_per_client",
                       "dirichlet": "alpha"}  # The one argument each partition takes.


@dataclasses.dataclass(frozen=True)
class ExperimentConfig:
    """Everything that defines a run. Defaults: a small FedSparsify-Global run on embedded digits.

    `options` are the algorithm's own (its `algorithms.Options` dataclass, or a dict of some of its
    fields; the rest take their defaults), e.g. `ExperimentConfig(algorithm="fedsparsify_local",
    options={"final_sparsity": 0.9, "quorum": 0.6})`. `from_dict` and `to_dict` use one flat mapping
    of the common fields and the algorithm's options, as config files and `config.json` hold them.
    """

    algorithm: str = "fedsparsify_global"
    dataset: str = "digits"
    data_path: str | None = None
    train_examples_per_class: int | None = None  # Only the first n of each class (scaled protocols).
    # The last n of each class held out of the training data for the server (FedTiny pre-trains on
    # them); None: what the algorithm needs (FedTiny 5, others 0). Set it for every algorithm of a
    # comparison on the full training split, so that they share one partition.
    server_examples_per_class: int | None = None
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
    seed: int = 1990
    # After the last round, one more exchange over every client: each computes the BatchNorm
    # statistics of its training data at the final weights (`learning.batch_norm`) and the server
    # sets their example-weighted mean, counted in communication; the final model keeps them.
    # False: the authors' protocol, the clients' averaged moving statistics.
    recalibrate_batch_norm: bool = False
    # Where rounds run (not part of the experiment: a run may resume elsewhere): TFF workers
    # "host:port,host:port" or "local:N" (README, "Past one machine"); None: this process.
    workers: str | None = None
    round_timeout: float = 600.0  # Seconds a round may take on the workers before it fails.
    options: Any = None

    def __post_init__(self):
        checks.field_types(self, skip=("options",))
        algorithm = algorithms.get(self.algorithm)
        checks.choice("dataset", self.dataset, DATASETS)
        if self.model is not None:
            checks.choice("model", self.model, MODELS)
        self._check_partition()
        for name in ("num_clients", "local_epochs", "batch_size"):
            checks.integer(name, getattr(self, name))
        if self.train_examples_per_class is not None:
            checks.integer("train_examples_per_class", self.train_examples_per_class)
        if self.server_examples_per_class is not None:
            checks.integer("server_examples_per_class", self.server_examples_per_class, 0)
        if algorithm.server_examples_per_class and self.server_examples_per_class == 0:
            raise ValueError(f"server_examples_per_class must be >= 1 for {self.algorithm}, which pre-trains "
                             f"on the server's examples (default {algorithm.server_examples_per_class}), got 0")
        if not 0.0 < self.participation <= 1.0:
            raise ValueError(f"participation must be in (0, 1], got {self.participation!r}")
        for name in ("client_learning_rate", "server_learning_rate"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)!r}")
        if not 0 <= self.seed < 2**32:
            raise ValueError(f"seed must be an integer in [0, 2**32 - 1], got {self.seed!r}")
        checks.fraction("client_momentum", self.client_momentum)
        if self.workers is not None:
            checks.workers("workers", self.workers)
        if not self.round_timeout > 0:
            raise ValueError(f"round_timeout must be > 0 seconds, got {self.round_timeout!r}")
        if self.client_nesterov and not self.client_momentum:
            raise ValueError("client_nesterov needs client_momentum in (0, 1), got 0")
        object.__setattr__(self, "options", _options(algorithm, self.options))
        self.options.check_rounds(self.rounds)

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

    @property
    def clients_per_round(self) -> int:
        return max(1, round(self.participation * self.num_clients))

    @property
    def final_sparsity(self) -> float:
        """The final sparsity s_f the algorithm prunes to; 0 for a dense algorithm."""
        return getattr(self.options, "final_sparsity", 0.0)

    @property
    def server_examples(self) -> int:
        """Training examples of each class the server holds out: `server_examples_per_class`, or what
        the algorithm needs."""
        if self.server_examples_per_class is not None:
            return self.server_examples_per_class
        return algorithms.get(self.algorithm).server_examples_per_class

    def to_dict(self) -> dict:
        """The common fields and the algorithm's options, in one flat mapping."""
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "options"}
        return {**values, **dataclasses.asdict(self.options)}

    @classmethod
    def from_dict(cls, values: dict, *, ignore_other_algorithms: bool = False) -> ExperimentConfig:
        """The config of a flat mapping (`to_dict`'s). An option of another algorithm is refused,
        naming the algorithms that take it, or with `ignore_other_algorithms` left out (`compare`
        and the grid apply to each algorithm the options it takes)."""
        common = [f.name for f in dataclasses.fields(cls) if f.name != "options"]
        owners = algorithms.option_owners()
        unknown = sorted(set(values) - set(common) - set(owners))
        if unknown:
            raise ValueError(f"unknown config keys {unknown}; known: the fields of ExperimentConfig and "
                             f"the algorithms' options {sorted(owners)}")
        algorithm = algorithms.get(values.get("algorithm", cls.algorithm))
        own = algorithm.option_names()
        for name in values:
            if name in owners and name not in own and not ignore_other_algorithms:
                raise ValueError(f"{name} applies to {', '.join(owners[name])} only, got "
                                 f"{values[name]!r} with algorithm {algorithm.name!r}")
        return cls(**{k: values[k] for k in common if k in values},
                   options={k: values[k] for k in own if k in values})

    @classmethod
    def from_saved(cls, values: dict) -> ExperimentConfig:
        """The config a run saved (`config.json`, a summary's `config`), also of older versions: they
        saved every algorithm's options, and values their partition ignored; fields added since
        take their defaults."""
        return cls.from_dict(without_unused_fields(values), ignore_other_algorithms=True)


def _options(algorithm: algorithms.Algorithm, options) -> algorithms.Options:
    """`options` as `algorithm`'s options dataclass (None: its defaults; a dict: some of its fields)."""
    if isinstance(options, algorithm.options):
        return options
    if options is not None and not isinstance(options, dict):
        raise ValueError(f"options must be a dict or a {algorithm.options.__name__}, got {options!r}")
    options = options or {}
    owners = algorithms.option_owners()
    for name, value in options.items():
        if name not in algorithm.option_names():
            takers = ", ".join(owners.get(name, ())) or "no algorithm"
            raise ValueError(f"{name} applies to {takers} only, got {value!r} with algorithm {algorithm.name!r}")
    return algorithm.options(**options)


def without_unused_fields(values: dict) -> dict:
    """A saved config's `values` without the partition argument its partition ignores (`alpha`,
    `classes_per_client`), as runs saved them before such values were refused."""
    unused = {"classes_per_client", "alpha"} - {PARTITION_ARGUMENTS.get(values.get("partition"))}
    return {**values, **{name: None for name in unused}}


def last_rounds_label(rounds_completed) -> str:
    """How many final rounds `MEAN_ACCURACY` averages for runs of `rounds_completed` rounds: "10",
    or as many as a shorter run has ("2"; "2-10" across runs of different lengths)."""
    counts = sorted({min(LAST_ROUNDS_FOR_MEAN, n) for n in rounds_completed})
    return str(counts[0]) if len(counts) == 1 else f"{counts[0]}-{counts[-1]}"
