"""What an algorithm is to the runner (`Algorithm`), what the runner hands it (`Setup`), and the option
groups several algorithms share. Pure Python at import (TensorFlow loads when a process is built), so
the command line derives its flags and checks them before TensorFlow loads.
"""
from __future__ import annotations

import dataclasses
import re
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

import tff_sparsify as ts
from tff_sparsify import checks
from tff_sparsify.core import schedules

if TYPE_CHECKING:
    import tensorflow_federated as tff

    from tff_sparsify.config import ExperimentConfig


@dataclasses.dataclass(frozen=True)
class Options:
    """An algorithm's own options: a frozen dataclass of plain values (its fields become config keys
    and command-line flags), checked on creation; `check_rounds` checks what depends on the run's
    length."""

    def __post_init__(self):
        checks.field_types(self)

    def check_rounds(self, rounds: int) -> None:
        """Raises a ValueError naming the option if it does not fit a run of `rounds` rounds."""


@dataclasses.dataclass(frozen=True)
class Pruned(Options):
    """Options of an algorithm that prunes to a final sparsity s_f."""

    final_sparsity: float = 0.8

    def __post_init__(self):
        super().__post_init__()
        checks.fraction("final_sparsity", self.final_sparsity)


@dataclasses.dataclass(frozen=True)
class Scheduled(Pruned):
    """Options of the progressive sparsity schedule s(t) (paper eq. 1, `schedules.SparsitySchedule`)."""

    initial_sparsity: float = 0.0
    start_round: int = 1
    frequency: int = 1
    exponent: float = 3.0

    def schedule(self, rounds: int) -> schedules.SparsitySchedule:
        try:
            return schedules.SparsitySchedule(self.final_sparsity, rounds, self.initial_sparsity,
                                              self.start_round, self.frequency, self.exponent)
        except ValueError as error:  # Named as the config names them.
            raise ValueError(str(error).replace("total_rounds", "rounds")) from None

    def check_rounds(self, rounds: int) -> None:
        self.schedule(rounds)


@dataclasses.dataclass(frozen=True)
class Blocked(Scheduled):
    """A schedule with block-structured pruning: `block_size` "RxC" prunes whole blocks that TFLite's
    sparse kernels accelerate ("1x4" float32, "1x16" int8); "1x1" is the paper's unstructured pruning."""

    block_size: str = "1x1"

    def __post_init__(self):
        super().__post_init__()
        if not re.fullmatch(r"[1-9][0-9]*x[1-9][0-9]*", self.block_size):
            raise ValueError(f"block_size must look like 1x4 (rows x columns, each >= 1), got {self.block_size!r}")

    @property
    def block_shape(self) -> tuple[int, int]:
        rows, columns = self.block_size.split("x")
        return int(rows), int(columns)


@dataclasses.dataclass(frozen=True)
class Setup:
    """What the runner hands an algorithm: the run's config (`config.options` are the algorithm's own),
    its model task and its clients' data."""

    config: ExperimentConfig
    task: Any  # learning.ModelTask
    federated: Any  # data.FederatedData

    @property
    def options(self):
        return self.config.options

    def optimizers(self) -> dict:
        """The clients' SGD (plain, classical or Nesterov momentum) and the server's, as keyword
        arguments of `learning.compose`."""
        import tensorflow_federated as tff  # Here: building a process loads TensorFlow.

        config = self.config
        if config.client_nesterov:
            client = ts.optimizers.build_nesterov_sgdm(config.client_learning_rate, config.client_momentum)
        else:
            client = tff.learning.optimizers.build_sgdm(
                learning_rate=config.client_learning_rate, momentum=config.client_momentum or None
            )
        server = tff.learning.optimizers.build_sgdm(learning_rate=config.server_learning_rate)
        return dict(client_optimizer=client, server_optimizer=server)

    def chosen_client(self) -> int:
        """One client chosen with the run's seed: whose data SNIP, GraSP and PruneFL use before
        training (paper section 5)."""
        return int(np.random.default_rng(self.config.seed).integers(self.config.num_clients))


@dataclasses.dataclass(frozen=True)
class Algorithm:
    """One algorithm as the runner, grid, report and command line know it.

    `build_process(setup, weights)` returns its `LearningProcess` started from `weights`, the initial
    weights that `initial_weights(setup)` makes (None: the seeded initialization; SNIP, GraSP,
    PruneFL and FedTiny choose masks from data). `summary` is its one line in `--help`, with its paper."""

    name: str
    summary: str
    build_process: Callable[[Setup, Any], tff.learning.templates.LearningProcess]
    options: type = Options
    initial_weights: Callable[[Setup], Any] | None = None
    run_prefix: str | None = None  # The grid's run names: `global_0.9` (default: the name).
    uploads_masks: bool = False  # Clients upload a binary mask (one bit per prunable weight) too.
    server_examples_per_class: int = 0  # Labelled examples per class the server needs (FedTiny: 5).
    # The communication before round 1 (FedTiny's BatchNorm selection), a `metrics.RoundCost`.
    setup_cost: Callable[[Setup], Any] | None = None

    @property
    def prunes(self) -> bool:
        """Whether it has a final sparsity (else the model stays dense)."""
        return issubclass(self.options, Pruned)

    def option_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(self.options))
