"""What an algorithm adds to the masked client training of `client_work`: small hooks, composed in a
`ClientHooks`, instead of flags.

- a gradient transform, applied to each step's gradients before masking (`ProximalTerm`, FedProx);
- a step after training that sets the client's own masks (`LocalPruning`, FedSparsify-Local); the
  client then sends its masks, and reads the round number (`counts_rounds`);
- reports accumulated over the local steps from the kernels' dense gradients, finished after
  training and sent in the update under their name (`SquaredGradients`, PruneFL; `TopKGradients`,
  FedTiny).
"""
from __future__ import annotations

import dataclasses
from typing import Protocol

import tensorflow as tf

from tff_sparsify.core import metrics, prune_grow, pruning, schedules
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
    counts_rounds: bool  # Whether `finish` reads the round.

    def initial(self, kernels: list) -> list:
        """The report before the first step."""

    def accumulate(self, report: list, kernel_gradients: list) -> list:
        """The report after one more step, from its kernels' dense (unmasked) loss gradients."""

    def finish(self, round_num, report: list, masks: list) -> tuple[list, tf.Tensor, tf.Tensor]:
        """The report as sent after training (one tensor per kernel), with the parameters and bytes
        it puts on the wire (int64 scalars, counted as upload)."""

    def gradient_flops(self, round_num, masks: list, flops_per_weight: list, examples, last_batch) -> tf.Tensor:
        """The FLOPs of the dense weight gradients the report needs beyond the masked ones (float64),
        for a client that trained on `examples` examples, `last_batch` of them in its last batch;
        `flops_per_weight` is 2 x the multiply-adds of one weight per example, per kernel."""

    def buffer_bytes(self, round_num, masks: list) -> tf.Tensor:
        """The bytes of the buffers the report needs on the device beyond the model's (int64)."""


@dataclasses.dataclass(frozen=True)
class ClientHooks:
    """An algorithm's additions to the masked client training; the default adds nothing (FedAvg)."""

    gradient_transform: GradientTransform | None = None
    after_training: AfterTraining | None = None
    reports: tuple[ClientReport, ...] = ()

    @property
    def counts_rounds(self) -> bool:
        return bool(self.after_training and self.after_training.counts_rounds) or any(
            r.counts_rounds for r in self.reports)


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
    loss gradient (pruned positions included, so that they can regrow). It travels every round, but
    counts as communication (one float32 per kernel weight) only in the rounds whose aggregate the
    server readjusts with, every `every` rounds (the original PruneFL sends importances then only)."""

    every: int
    name = "squared_gradients"
    counts_rounds = True

    def initial(self, kernels):
        return [tf.zeros_like(k) for k in kernels]

    def accumulate(self, report, kernel_gradients):
        return [s + tf.square(g) for s, g in zip(report, kernel_gradients)]

    def finish(self, round_num, report, masks):
        readjusting = tf.equal((round_num + 1) % self.every, 0)  # The server readjusts after round t % every == 0.
        params = tf.where(readjusting, sum(tf.size(r, out_type=tf.int64) for r in report), tf.constant(0, tf.int64))
        return report, params, 4 * params

    def gradient_flops(self, round_num, masks, flops_per_weight, examples, last_batch):
        return tf.cast(examples, tf.float64) * _pruned_flops(masks, flops_per_weight)  # Every step.

    def buffer_bytes(self, round_num, masks):
        """A dense gradient buffer and the dense sum of squares, float32."""
        return tf.constant(2 * 4 * sum(m.shape.num_elements() for m in masks), tf.int64)


@dataclasses.dataclass(frozen=True)
class TopKGradients:
    """FedTiny's client report in an adjusting round (`prune_grow.Adjustments`): the dense loss
    gradient of the last batch of local training, of the selected block's kernels only, restricted
    to inactive positions (mask 0), its K_l entries of largest |g| (`prune_grow.top_k_inactive`),
    sent as (int32 index, float32 value) pairs: K_l parameters and 8 K_l bytes per layer. It travels
    in the update as a dense tensor per kernel, zero elsewhere (all zero in other rounds), so that
    the server's per-position mean counts a client that did not report a position as 0."""

    adjustments: prune_grow.Adjustments
    name = "top_k_gradients"
    counts_rounds = True

    def initial(self, kernels):
        return [tf.zeros_like(k) for k in kernels]

    def accumulate(self, report, kernel_gradients):
        return list(kernel_gradients)  # The last step's: what the client holds after its last batch.

    def finish(self, round_num, report, masks):
        sent, entries = [], tf.constant(0, tf.int64)
        for gradient, mask, k in zip(report, masks, self.adjustments.sizes(round_num, masks)):
            indices, values = prune_grow.top_k_inactive(gradient, mask, k)
            flat = tf.scatter_nd(indices[:, None], values, [tf.size(gradient)])
            sent.append(tf.reshape(flat, tf.shape(gradient)))
            entries += tf.size(indices, out_type=tf.int64)
        return sent, entries, entries * (metrics.INDEX_BYTES + values.dtype.size)

    def gradient_flops(self, round_num, masks, flops_per_weight, examples, last_batch):
        selected = [tf.cast(k > 0, tf.float64) for k in self.adjustments.sizes(round_num, masks)]
        return tf.cast(last_batch, tf.float64) * _pruned_flops(masks, flops_per_weight, selected)

    def buffer_bytes(self, round_num, masks):
        """The K_l (index, value) pairs of the selected block."""
        sizes = self.adjustments.sizes(round_num, masks)
        return tf.cast(tf.add_n(sizes), tf.int64) * (metrics.INDEX_BYTES + 4)


def _pruned_flops(masks, flops_per_weight, selected=None) -> tf.Tensor:
    """Per example, the FLOPs of the weight gradient at the pruned positions of the (`selected`)
    kernels: sum_l selected_l flops_l (n_l - nnz_l)."""
    selected = selected or [1.0] * len(masks)
    return tf.add_n([
        tf.cast(s, tf.float64) * c * tf.cast(tf.size(m) - tf.math.count_nonzero(m, dtype=tf.int32), tf.float64)
        for m, c, s in zip(masks, flops_per_weight, selected)
    ])
