"""What an algorithm adds to the masked client training of `client_work`: small hooks, composed in a
`ClientHooks`, instead of flags.

- a gradient transform, applied to each step's gradients before masking (`ProximalTerm`, FedProx);
- a step after training that sets the client's own masks (`LocalPruning`, FedSparsify-Local); the
  client then sends its masks, and reads the round number (`counts_rounds`);
- reports accumulated over the local steps from the kernels' dense gradients, sent in the update
  under their name (`SquaredGradients`, PruneFL).
"""
from __future__ import annotations

import dataclasses
from typing import Protocol

import tensorflow as tf

from tff_sparsify.core import pruning, schedules
from tff_sparsify.learning import targets


class GradientTransform(Protocol):
    def __call__(self, gradients: list, weights: list, initial_weights: list) -> list:
        """The step's trainable gradients, changed (before the masks apply)."""


class AfterTraining(Protocol):
    counts_rounds: bool

    def __call__(self, round_num: tf.Tensor, kernels: list, masks: list) -> list:
        """The client's kernel masks after local training (nested in the broadcast `masks`)."""


class ClientReport(Protocol):
    name: str

    def initial(self, kernels: list) -> list:
        """The report before the first step."""

    def accumulate(self, report: list, kernel_gradients: list) -> list:
        """The report after one more step, from its kernels' dense (unmasked) loss gradients."""


@dataclasses.dataclass(frozen=True)
class ClientHooks:
    """An algorithm's additions to the masked client training; the default adds nothing (FedAvg)."""

    gradient_transform: GradientTransform | None = None
    after_training: AfterTraining | None = None
    reports: tuple[ClientReport, ...] = ()

    @property
    def counts_rounds(self) -> bool:
        return bool(self.after_training and self.after_training.counts_rounds)


@dataclasses.dataclass(frozen=True)
class ProximalTerm:
    """FedProx's proximal term mu/2 ||w - w_t||^2 toward the round's global weights w_t (Li et al.,
    2020): its gradient mu (w - w_t) is added to the loss gradient."""

    strength: float

    def __call__(self, gradients, weights, initial_weights):
        return [g + self.strength * (w - w0) for g, w, w0 in zip(gradients, weights, initial_weights)]


@dataclasses.dataclass(frozen=True)
class LocalPruning:
    """FedSparsify-Local's client step: global magnitude pruning of the trained kernels to the target
    s(t + 1) of the round being trained (paper eq. 1), in blocks of `block_size`."""

    schedule: schedules.SparsitySchedule
    block_size: tuple[int, int] = (1, 1)
    counts_rounds = True

    def __call__(self, round_num, kernels, masks):
        target = targets.target_sparsity(self.schedule, round_num + 1)
        return pruning.magnitude_masks(kernels, target, masks, block_size=self.block_size)


@dataclasses.dataclass(frozen=True)
class SquaredGradients:
    """PruneFL's importance at each client: per kernel, the sum over local steps of its squared dense
    loss gradient (pruned positions included, so that they can regrow). Not counted as communication
    (the original PruneFL sends importances at readjustment rounds only)."""

    name = "squared_gradients"

    def initial(self, kernels):
        return [tf.zeros_like(k) for k in kernels]

    def accumulate(self, report, kernel_gradients):
        return [s + tf.square(g) for s, g in zip(report, kernel_gradients)]
