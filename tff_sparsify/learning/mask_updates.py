"""The server's mask update: the new kernel masks after the aggregated update is applied.

One small interface (`MaskUpdate`) with one implementation per rule; `finalizers` calls it inside its
TFF computation with the round number, the new kernels, the current masks and the aggregated update
(the client work's `OrderedDict`, see `client_work`), and gets back the new masks and the round's
target sparsity (NaN when the rule has none). A rule that reads the round (`counts_rounds`) makes
the finalizer keep the process's round counter.
"""
from __future__ import annotations

import dataclasses
from typing import Protocol, Sequence

import tensorflow as tf

from tff_sparsify import checks
from tff_sparsify.core import prune_grow, pruning, schedules
from tff_sparsify.learning import targets
from tff_sparsify.learning.task import WeightsLayout

NO_TARGET = float("nan")


class MaskUpdate(Protocol):
    counts_rounds: bool

    def __call__(self, round_num: tf.Tensor, kernels: list, masks: list, update, layout: WeightsLayout):
        """(new kernel masks, the round's target sparsity as a float64 scalar)."""


@dataclasses.dataclass(frozen=True)
class KeepMasks:
    """The current masks (FedAvg, FedProx, SNIP, GraSP)."""

    counts_rounds = False

    def __call__(self, round_num, kernels, masks, update, layout):
        return masks, tf.constant(NO_TARGET, tf.float64)


class _Scheduled:
    """Prunes to the schedule's target s(t) of the round (`_prune` chooses which positions)."""

    counts_rounds = True

    def __call__(self, round_num, kernels, masks, update, layout):
        target = targets.target_sparsity(self.schedule, round_num)
        return self._prune(kernels, target, masks), target


@dataclasses.dataclass(frozen=True)
class ScheduledMagnitude(_Scheduled):
    """Global magnitude pruning of the new model to s(t) (paper eq. 1), nested in the current masks,
    in blocks of `block_size` (see `pruning.magnitude_masks`)."""

    schedule: schedules.SparsitySchedule | schedules.OneShotSchedule
    block_size: tuple[int, int] = (1, 1)

    def _prune(self, kernels, target, masks):
        return pruning.magnitude_masks(kernels, target, masks, block_size=self.block_size)


@dataclasses.dataclass(frozen=True)
class RandomOrder(_Scheduled):
    """The schedule's s(t), positions pruned in one fixed `seed`ed random order (the Random baseline)."""

    schedule: schedules.SparsitySchedule
    seed: int = 0

    def _prune(self, kernels, target, masks):
        return pruning.random_masks(kernels, target, masks, seed=self.seed)


@dataclasses.dataclass(frozen=True)
class VotedMasks:
    """The masks the majority-vote aggregator delivers in the update's `masks` (paper eq. 2)."""

    counts_rounds = False

    def __call__(self, round_num, kernels, masks, update, layout):
        return layout.kernels(update["masks"]), tf.constant(NO_TARGET, tf.float64)


@dataclasses.dataclass(frozen=True)
class Readjust:
    """PruneFL's readjustment (Jiang et al., 2022): every `every` rounds (round % every == 0), the
    (1 - `sparsity`) N positions of highest importance = aggregated squared dense gradient (the
    update's `squared_gradients`) / the kernel's per-weight cost (`task.kernel_costs`); regrowth
    allowed (a regrown weight restarts from its current value, 0). The current masks on other rounds.
    The density stays fixed at 1 - s_f: the original PruneFL's adaptive model size is not implemented
    (as in the FedSparsify authors' comparison, which fixes the sparsity)."""

    sparsity: float
    every: int
    kernel_costs: Sequence[float]
    counts_rounds = True

    def __post_init__(self):
        checks.fraction("sparsity", self.sparsity)
        checks.integer("readjust_every", self.every)
        if not all(c > 0 for c in self.kernel_costs):
            raise ValueError(f"kernel_costs must be > 0, got {self.kernel_costs!r}")

    def __call__(self, round_num, kernels, masks, update, layout):
        if len(self.kernel_costs) != len(kernels):
            raise ValueError(f"kernel_costs must have one cost per kernel ({len(kernels)}), "
                             f"got {len(self.kernel_costs)}")
        importance = [tf.cast(g, tf.float32) / cost for g, cost in zip(update["squared_gradients"], self.kernel_costs)]
        current = [tf.cast(m, tf.float32) for m in masks]
        new_masks = tf.cond(
            tf.equal(round_num % self.every, 0),
            lambda: pruning.magnitude_masks(importance, self.sparsity),  # Regrowth allowed.
            lambda: current,
        )
        return new_masks, tf.constant(self.sparsity, tf.float64)


@dataclasses.dataclass(frozen=True)
class PruneAndGrow:
    """FedTiny's progressive pruning (Huang et al., 2023, phase 3): after an adjusting round (see
    `prune_grow.Adjustments`), each layer of the selected block prunes its K_l active weights of
    smallest |w| and grows the K_l inactive positions of largest |mean reported gradient| (the
    update's `top_k_gradients`, averaged over the clients); grown weights start at 0, nnz is
    unchanged. The current masks on other rounds. The target is the fixed sparsity 1 - d."""

    adjustments: prune_grow.Adjustments
    sparsity: float
    counts_rounds = True

    def __call__(self, round_num, kernels, masks, update, layout):
        aggregated = round_num - 1  # Rounds aggregated before the round that just ended.
        new_masks = []
        for kernel, mask, gradient, k in zip(kernels, masks, update["top_k_gradients"],
                                             self.adjustments.sizes(aggregated, masks)):
            new_masks.append(tf.cond(
                k > 0,
                lambda: prune_grow.prune_and_grow(kernel, mask, gradient, k)[1],
                lambda: tf.cast(mask, tf.float32),
            ))
        return new_masks, tf.constant(self.sparsity, tf.float64)
