"""FedTiny's mask math (Huang et al., "Distributed Pruning Towards Tiny Neural Networks in Federated
Learning", ICDCS 2023, arXiv 2212.01977; reconstructed from the authors' 2022 code): the candidate
coarse masks of phase 0 and the progressive prune-and-grow of phase 3.

- `candidate_densities`: a per-layer density vector d_l = d + (u_l - 0.5) d, u_l ~ U(0, 1), redrawn
  until the mask it gives keeps d of all prunable weights within `tolerance` (relative, 2%).
- `layer_magnitude_masks`: per layer, the max(floor(d_l n_l), 1) largest |w| kept.
- `adjustment_fraction`: the cosine decay alpha_t = alpha / 2 (1 + cos(pi t / T_end)); a selected
  layer adjusts K_l = ceil(alpha_t nnz_l) positions (`adjustment_size`).
- `selected_block`: adjustment round number i (0, 1, ...) adjusts block B - 1 - (i mod B), cycling
  from the output towards the input; `layer_blocks` groups the prunable layers into blocks.
- `Adjustments`: when rounds adjust (every Delta_R rounds until T_end) and each layer's K_l there.
- `top_k_inactive`: a client's report, the K entries of largest |g| among its inactive positions.
- `prune_and_grow`: the server prunes the K active weights of smallest |w| and grows the K inactive
  positions of largest |mean gradient| (grown weights start at 0), so nnz is unchanged.

Ties go to the lower flat index everywhere, so every choice is reproducible. The functions on
tensors run eagerly and inside TFF's TensorFlow computations.
"""
from __future__ import annotations

import dataclasses
import math
import re
from typing import Sequence

import numpy as np
import tensorflow as tf

from tff_sparsify import checks

DENSITY_TOLERANCE = 0.02  # Relative: a candidate keeps d (1 +- 2%) of the prunable weights.
MAX_DRAWS = 10_000


def kept_per_layer(num_weights: Sequence[int], densities: Sequence[float]) -> list[int]:
    """max(floor(d_l n_l), 1) weights kept in each layer."""
    return [max(math.floor(d * n), 1) for d, n in zip(densities, num_weights)]


def candidate_densities(num_weights: Sequence[int], density: float, rng: np.random.Generator,
                        tolerance: float = DENSITY_TOLERANCE) -> list[float]:
    """One candidate's per-layer densities d_l in [0.5 d, 1.5 d] whose mask keeps d (1 +- `tolerance`)
    of all weights; a ValueError if `MAX_DRAWS` draws never do (a model with too few weights)."""
    if not 0 < density < 1:
        raise ValueError(f"density must be in (0, 1), got {density!r}")
    total = sum(num_weights)
    for _ in range(MAX_DRAWS):
        densities = [density + (u - 0.5) * density for u in rng.random(len(num_weights))]
        if abs(sum(kept_per_layer(num_weights, densities)) / total - density) <= tolerance * density:
            return [float(d) for d in densities]
    raise ValueError(f"no per-layer densities in [0.5d, 1.5d] keep density {density} within "
                     f"{tolerance:.0%} for layers of {list(num_weights)} weights")


def layer_magnitude_masks(kernels: Sequence[tf.Tensor], densities: Sequence[float]) -> list[tf.Tensor]:
    """Per layer, a float32 mask keeping the max(floor(d_l n_l), 1) largest |w| (ties: lower index)."""
    kept = kept_per_layer([int(np.prod(k.shape)) for k in kernels], densities)
    return [_top_positions(tf.abs(kernel), k) for kernel, k in zip(kernels, kept)]


def adjustment_fraction(alpha: float, round_num, end_round: int):
    """alpha_t = alpha / 2 (1 + cos(pi t / T_end)): alpha at t = 0, alpha / 2 at T_end / 2, 0 at T_end."""
    t = tf.cast(round_num, tf.float64)
    return alpha / 2 * (1 + tf.cos(math.pi * t / end_round))


def adjustment_size(fraction, nnz):
    """K_l = ceil(alpha_t nnz_l), as an int32 tensor."""
    return tf.cast(tf.math.ceil(tf.cast(fraction, tf.float64) * tf.cast(nnz, tf.float64)), tf.int32)


def selected_block(adjustment: int, num_blocks: int) -> int:
    """The block the `adjustment`-th adjustment round (0, 1, ...) changes: the last block (next to the
    output) first, then towards the input, then again from the last."""
    checks.integer("num_blocks", num_blocks)
    return num_blocks - 1 - adjustment % num_blocks


def layer_blocks(layer_names: Sequence[str], granularity: str = "block") -> tuple[tuple[int, ...], ...]:
    """The layers (indices into `layer_names`, input to output) each adjustment changes together.

    `block`: a model whose layers are named `stage<n>_...` (`models.resnet18`) by stage, layers before
    the first stage going with it and after the last (the classifier) with the last; other models
    by consecutive pairs from the input (an odd last layer alone). `entire`: all layers at once.
    `layer`: one layer at a time."""
    indices = list(range(len(layer_names)))
    if granularity == "entire":
        return (tuple(indices),)
    if granularity == "layer":
        return tuple((i,) for i in indices)
    if granularity != "block":
        raise ValueError(f"granularity must be block, entire or layer, got {granularity!r}")
    stages = [re.match(r"(?:.*_)?(stage\d+)_", name) for name in layer_names]
    if not any(stages):
        return tuple(tuple(indices[i:i + 2]) for i in range(0, len(indices), 2))
    names = sorted({m.group(1) for m in stages if m}, key=lambda n: int(n[5:]))
    blocks: dict[str, list[int]] = {n: [] for n in names}
    current = names[0]
    for i, match in zip(indices, stages):
        current = match.group(1) if match else current
        blocks[current].append(i)
    return tuple(tuple(b) for b in blocks.values())


@dataclasses.dataclass(frozen=True)
class Adjustments:
    """FedTiny's progressive pruning schedule. After aggregating round t (t = 1, 2, ...), if t <=
    `end_round` (T_end) and t mod `every` (Delta_R) == 0, round t + 1 adjusts: its i-th such round
    (i = t / Delta_R - 1) changes the layers of block `selected_block(i, len(blocks))`, each by
    K_l = ceil(alpha_t nnz_l) positions. `t` below is the number of rounds aggregated before the
    adjusting round (a tensor, in TFF computations)."""

    every: int
    end_round: int
    alpha: float
    blocks: tuple[tuple[int, ...], ...]

    def __post_init__(self):
        checks.integer("adjust_every", self.every)
        checks.integer("adjust_until", self.end_round)
        checks.share("adjust_fraction", self.alpha)

    def adjusting(self, t):
        """Whether the round after `t` aggregated rounds adjusts (a boolean tensor)."""
        t = tf.cast(t, tf.int32)
        return (t >= self.every) & (t <= self.end_round) & tf.equal(t % self.every, 0)

    def sizes(self, t, masks: Sequence[tf.Tensor]) -> list[tf.Tensor]:
        """K_l of every layer (int32; 0 outside the selected block and in rounds that do not adjust),
        from the masks the round starts with."""
        t = tf.cast(t, tf.int32)
        block = selected_block(t // self.every - 1, len(self.blocks))
        fraction = adjustment_fraction(self.alpha, t, self.end_round)
        block_of = {layer: b for b, layers in enumerate(self.blocks) for layer in layers}
        adjusting = self.adjusting(t)
        sizes = []
        for layer, mask in enumerate(masks):
            chosen = adjusting & tf.equal(block, block_of.get(layer, -1))
            size = adjustment_size(fraction, tf.math.count_nonzero(mask))
            sizes.append(tf.where(chosen, size, 0))
        return sizes


def top_k_inactive(gradient: tf.Tensor, mask: tf.Tensor, k) -> tuple[tf.Tensor, tf.Tensor]:
    """The flat int32 indices (ascending) and values of the `k` entries of largest |gradient| among the
    positions where `mask` is 0 (fewer if fewer are inactive)."""
    inactive = tf.reshape(tf.equal(mask, 0), [-1])
    k = tf.minimum(tf.cast(k, tf.int32), tf.reduce_sum(tf.cast(inactive, tf.int32)))
    scores = tf.where(inactive, tf.abs(tf.reshape(gradient, [-1])), -1.0)  # Active: never chosen.
    chosen = tf.sort(_largest(scores, k))
    return chosen, tf.gather(tf.reshape(gradient, [-1]), chosen)


def prune_and_grow(kernel: tf.Tensor, mask: tf.Tensor, mean_gradient: tf.Tensor, k) -> tuple[tf.Tensor, tf.Tensor]:
    """The kernel and mask after pruning the `k` active weights of smallest |w| and growing the `k`
    inactive positions of largest |mean_gradient| (weights there start at 0); nnz of the mask is
    unchanged. `k` is capped at the number of active and of inactive positions."""
    flat_mask = tf.reshape(tf.cast(mask, tf.float32), [-1])
    active = tf.equal(flat_mask, 1)
    k = tf.cast(k, tf.int32)
    k = tf.minimum(k, tf.minimum(tf.reduce_sum(tf.cast(active, tf.int32)),
                                 tf.reduce_sum(tf.cast(tf.logical_not(active), tf.int32))))
    flat_kernel = tf.reshape(kernel, [-1])
    # Prune: the k smallest |w| among active positions = the k largest of -|w| there.
    pruned = _largest(tf.where(active, -tf.abs(flat_kernel), -np.inf), k)
    grown = _largest(tf.where(active, -1.0, tf.abs(tf.reshape(mean_gradient, [-1]))), k)
    size = tf.shape(flat_mask, out_type=tf.int64)
    new_mask = flat_mask - _indicator(pruned, size) + _indicator(grown, size)
    new_kernel = flat_kernel * new_mask * (1 - _indicator(grown, size))
    return tf.reshape(new_kernel, tf.shape(kernel)), tf.reshape(new_mask, tf.shape(mask))


def _largest(scores: tf.Tensor, k) -> tf.Tensor:
    """Flat int32 positions of the `k` largest `scores`, ties to the lower index (stable sort)."""
    order = tf.argsort(-tf.cast(scores, tf.float64), stable=True)
    return tf.cast(order[:k], tf.int32)


def _top_positions(scores: tf.Tensor, k: int) -> tf.Tensor:
    """A float32 mask of the shape of `scores`, 1 at its `k` largest entries."""
    flat = tf.reshape(scores, [-1])
    indicator = _indicator(_largest(flat, k), tf.shape(flat, out_type=tf.int64))
    return tf.reshape(indicator, tf.shape(scores))


def _indicator(positions: tf.Tensor, size: tf.Tensor) -> tf.Tensor:
    """A float32 vector of length `size`, 1 at `positions`."""
    return tf.scatter_nd(tf.cast(positions[:, None], tf.int64), tf.ones_like(positions, tf.float32), size)
