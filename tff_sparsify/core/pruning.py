"""Pruning masks: one global magnitude threshold over all prunable tensors, and applying masks.

Pure TensorFlow, tensors in and tensors out, vectorized: the same functions run eagerly, inside
`tf.function` and inside TFF TensorFlow computations (where the round's target sparsity arrives as a
scalar tensor). A mask is a float32 tensor shaped like its weight, 1 where the weight is kept and 0
where it is pruned.

`magnitude_masks` implements FedSparsify's magnitude pruning (purge) step: over the N weights of all
given tensors together (not per layer), zero the k = floor(s * N + 0.5) of smallest magnitude, so
exactly k are zero. Ties are broken by position (layer order, then row-major: the first is pruned
first), and masks only shrink: weights pruned earlier stay pruned (no regrowth).

With `block_size` other than (1, 1) it prunes whole blocks instead, the structure TFLite's sparse
FULLY_CONNECTED kernels run faster (see `magnitude_masks`): one global ranking of all blocks of all
tensors by mean |w|, pruning the fewest blocks that reach k zeros.
"""
from __future__ import annotations

import numbers
from typing import Sequence

import tensorflow as tf

from tff_sparsify import checks

TensorLike = tf.types.experimental.TensorLike


def _flat_concat(tensors: Sequence[TensorLike]) -> tf.Tensor:
    return tf.concat([tf.reshape(t, [-1]) for t in tensors], axis=0)


def _check_one_mask_per_weight(weights: Sequence[TensorLike], masks: Sequence[TensorLike]) -> None:
    if len(masks) != len(weights):
        raise ValueError(f"masks must match weights one to one, got {len(masks)} for {len(weights)}")


def _num_to_prune(sparsity: float | tf.Tensor, n: tf.Tensor) -> tf.Tensor:
    """k = floor(sparsity * n + 0.5) as an int32 scalar (round half up), computed in float64.

    A Python-number `sparsity` is checked here; a tensor one by assertions that run with the op.
    """
    if isinstance(sparsity, numbers.Real):
        sparsity = tf.constant(checks.fraction("sparsity", sparsity), tf.float64)
        assertions = []
    else:
        sparsity = tf.cast(sparsity, tf.float64)
        message = "sparsity must be in [0, 1)"
        assertions = [
            tf.debugging.assert_greater_equal(sparsity, tf.constant(0.0, tf.float64), message=message),
            tf.debugging.assert_less(sparsity, tf.constant(1.0, tf.float64), message=message),
        ]
    with tf.control_dependencies(assertions):
        k = tf.floor(sparsity * tf.cast(n, tf.float64) + 0.5)
    return tf.cast(k, tf.int32)


def _kth_smallest(keys: tf.Tensor, k: tf.Tensor) -> tf.Tensor:
    """The smallest v with at least k of the int32 `keys` <= v, by bisection over the int32 range.

    Each of the at most 33 steps is one counting pass over `keys`, much faster than a full sort.
    Returns -1 when k = 0 (`keys` are >= -1).
    """

    def bisect(low, high):
        middle = low + (high - low) // 2
        enough = tf.reduce_sum(tf.cast(keys <= tf.cast(middle, tf.int32), tf.int32)) >= k
        return tf.where(enough, low, middle + 1), tf.where(enough, middle, high)

    low = tf.constant(-1, tf.int64)  # int64: high - low can exceed the int32 range
    high = tf.cast(tf.reduce_max(keys), tf.int64)
    _, kth = tf.while_loop(lambda low, high: low < high, bisect, (low, high))
    return tf.cast(kth, tf.int32)


def magnitude_masks(
    weights: Sequence[TensorLike],
    sparsity: float | tf.Tensor,
    masks: Sequence[TensorLike] | None = None,
    *,
    block_size: Sequence[int] = (1, 1),
) -> list[tf.Tensor]:
    """Masks zeroing the k = floor(sparsity * N + 0.5) smallest |w| over all `weights` together.

    Args:
      weights: the prunable tensors (any float dtype; magnitudes are compared in float32).
      sparsity: the target fraction of zeros in [0, 1), a Python number or a scalar tensor (e.g.
        `schedules.SparsitySchedule(...)(t)`, paper eq. 1). Absolute, counting earlier zeros.
      masks: the current masks (nonzero = kept), or None. Positions they prune are pruned first,
        whatever their weight; if k is below their number, the result equals them (no regrowth).
      block_size: (rows, cols) of the blocks to prune whole, in TFLite's fully-connected layout
        (weights [out, in]): rows = output units, cols = input features. (1, 1), the default, is
        unstructured pruning as described above. See "Block pruning" below.

    Returns:
      One float32 mask per weight, same shapes, with exactly max(k, already pruned) zeros. Among
      equal magnitudes, the smaller flat index (layer order, then row-major) is pruned first.
      (Block pruning: see below for the count.)

    Block pruning (`block_size` other than (1, 1)):
      Orientation. TFLite stores a fully-connected weight as [out, in], the transpose of a Keras
      Dense kernel [in, out]. Its fast sparse kernels want 1x4 blocks (float32) or 1x16 blocks
      (dynamic-range int8): 4 / 16 consecutive *input* weights of one output unit. So
      `block_size=(r, c)` means r output units x c input features, and on a Keras kernel of shape
      [in, out] a block is c consecutive rows x r consecutive columns: (1, 4) is 4 consecutive rows
      of one column. Blocks tile the kernel from index 0 (rows [c*i, c*i + c), columns
      [r*j, r*j + r)); block (i, j) has flat index i * (out / r) + j.
      Which tensors. Every 2-D tensor is a Keras kernel [in, out] and is cut into blocks; a 2-D
      tensor whose `in` is not divisible by c or whose `out` is not divisible by r raises a
      ValueError naming block_size (a block cannot be honoured there, and TFLite's block kernels
      need it too). Tensors that are not 2-D (conv kernels, vectors) are pruned per weight, as 1x1
      blocks, in the same global ranking (TFLite has no block-sparse convolution kernel). 2-D
      tensors need statically known shapes, others a known rank (else ValueError).
      Ranking. One global ranking over the blocks of all tensors (not per layer) by the mean of
      |w| over the block (a 1x1 block: |w|), computed in float32; among equal means the smaller
      block flat index (layer order, then the block order above) is pruned first.
      Count. With k = floor(sparsity * N + 0.5) over all N weights, blocks are pruned in ranking
      order until the zeros reach k: the fewest whole blocks with at least k zeros, never fewer
      (the realized sparsity is the target rounded up to whole blocks, fewer than one block of
      excess zeros). If the current masks already prune k or more weights, they are returned
      unchanged.
      Nesting. Masks only shrink. A block all of whose positions are pruned by `masks` is
      already pruned: it stays pruned and counts its zeros. Masks made with the same block_size
      (and majority votes of such masks) prune whole blocks only, so this is the usual case. A
      partly pruned block (e.g. from unstructured masks) keeps its pruned positions pruned; it is
      ranked by the mean of |w * mask| over the whole block (pruned positions count as 0), and
      pruning it adds only its kept positions to the count.
      TFLite (TF 2.14 converter, `Optimize.EXPERIMENTAL_SPARSITY`) stores a kernel sparse only if
      at least 30% of it is zero, and uses the block format (no DENSIFY op, the fast kernel) only
      if its zeros in whole 1x4 (float32) / 1x16 (int8) blocks are over 90% / 80% of its zeros.
      The global ranking gives each tensor its own sparsity: a kernel left under 30% zeros runs
      dense. 1x16 blocks are also 1x4 blocks (they serve float32 too); 1x4 blocks do not serve int8.
    """
    block_size = _check_block_size(block_size)
    weights = [tf.convert_to_tensor(w) for w in weights]
    if not weights:
        raise ValueError("weights must hold at least one tensor")
    if masks is not None:
        _check_one_mask_per_weight(weights, masks)
    if block_size != (1, 1):
        return _block_magnitude_masks(weights, sparsity, masks, block_size)
    # For non-negative floats the int32 bit pattern orders like the value, so magnitudes become
    # int32 keys; already-pruned positions get key -1, below every magnitude.
    keys = tf.bitcast(tf.abs(_flat_concat([tf.cast(w, tf.float32) for w in weights])), tf.int32)
    if masks is not None:
        kept = tf.not_equal(_flat_concat([tf.cast(m, tf.float32) for m in masks]), 0.0)
        keys = tf.where(kept, keys, -1)
    n = tf.size(keys)
    k = tf.maximum(_num_to_prune(sparsity, n), tf.reduce_sum(tf.cast(keys < 0, tf.int32)))

    # Prune every key below the k-th smallest, then the first of the keys equal to it (by index).
    kth = _kth_smallest(keys, k)
    below = keys < kth
    tied = tf.equal(keys, kth)
    tied_to_prune = k - tf.reduce_sum(tf.cast(below, tf.int32))
    tied_indices = tf.cast(tf.where(tied)[:, 0], tf.int32)
    first_kept_tied = tf.concat([tied_indices, [n]], axis=0)[tied_to_prune]
    pruned = below | (tied & (tf.range(n) < first_kept_tied))

    flat_masks = tf.cast(tf.logical_not(pruned), tf.float32)
    sizes = tf.stack([tf.size(w) for w in weights])
    return [
        tf.reshape(m, tf.shape(w))
        for m, w in zip(tf.split(flat_masks, sizes, num=len(weights)), weights)
    ]


def _check_block_size(block_size) -> tuple[int, int]:
    """`block_size` as a tuple of two Python ints >= 1, or a ValueError naming it."""
    try:
        rows, cols = block_size
    except (TypeError, ValueError):
        rows = cols = None
    if not all(isinstance(d, numbers.Integral) and not isinstance(d, bool) and d >= 1 for d in (rows, cols)):
        raise ValueError(
            "block_size must be two integers >= 1, (output units, input features) in TFLite's "
            f"[out, in] layout, got {block_size!r}"
        )
    return int(rows), int(cols)


def _blocks_of(weight: tf.Tensor, index: int, block_size: tuple[int, int]) -> tuple[int, int] | None:
    """The (in, out) shape of a 2-D Keras kernel cut into `block_size` blocks; None for a tensor
    that is not 2-D (pruned per weight). Raises a ValueError naming block_size if it cannot be."""
    rows, cols = block_size
    rank = weight.shape.rank
    if rank is None:
        raise ValueError(f"block_size {block_size} needs tensors of known rank, weights[{index}] has none")
    if rank != 2:
        return None
    n_in, n_out = weight.shape.as_list()
    if n_in is None or n_out is None:
        raise ValueError(
            f"block_size {block_size} needs the shapes of 2-D tensors statically known, "
            f"weights[{index}] has shape {weight.shape}"
        )
    if n_in % cols or n_out % rows:
        raise ValueError(
            f"block_size {block_size} ({rows} output units x {cols} input features, TFLite [out, in] "
            f"layout) does not tile weights[{index}], a Keras [in, out] kernel of shape "
            f"({n_in}, {n_out}): {n_in} inputs must be divisible by {cols} and {n_out} outputs by {rows}"
        )
    return n_in, n_out


def _block_magnitude_masks(
    weights: list[tf.Tensor],
    sparsity: float | tf.Tensor,
    masks: Sequence[TensorLike] | None,
    block_size: tuple[int, int],
) -> list[tf.Tensor]:
    """`magnitude_masks` with `block_size` other than (1, 1): see its docstring."""
    rows, cols = block_size
    shapes = [_blocks_of(w, i, block_size) for i, w in enumerate(weights)]
    if masks is None:
        kept = [tf.ones(tf.shape(w), tf.bool) for w in weights]
    else:
        kept = [tf.not_equal(tf.cast(m, tf.float32), 0.0) for m in masks]

    # Per tensor, its units (blocks, or single weights for tensors that are not 2-D) in flat order:
    # the mean of |w * mask| over the unit and its number of kept positions.
    means, counts = [], []
    for w, keep, shape in zip(weights, kept, shapes):
        magnitudes = tf.abs(tf.cast(w, tf.float32)) * tf.cast(keep, tf.float32)
        kept_count = tf.cast(keep, tf.int32)
        if shape is None:
            means.append(tf.reshape(magnitudes, [-1]))
            counts.append(tf.reshape(kept_count, [-1]))
        else:
            grid = [shape[0] // cols, cols, shape[1] // rows, rows]  # Keras [in, out]: c rows x r columns.
            means.append(tf.reshape(tf.reduce_mean(tf.reshape(magnitudes, grid), axis=[1, 3]), [-1]))
            counts.append(tf.reshape(tf.reduce_sum(tf.reshape(kept_count, grid), axis=[1, 3]), [-1]))
    counts_flat = tf.concat(counts, axis=0)
    # Non-negative float32 means order like their int32 bit patterns; fully pruned units get key -1.
    keys = tf.where(counts_flat > 0, tf.bitcast(tf.concat(means, axis=0), tf.int32), -1)

    n = tf.add_n([tf.size(w) for w in weights])
    already = n - tf.reduce_sum(counts_flat)
    k = tf.maximum(_num_to_prune(sparsity, n), already)
    needed = k - already  # Zeros the newly pruned units must add: their kept positions.

    # The smallest key v whose units (with all below) cover `needed`; prune every unit below v,
    # then the fewest of the units equal to v (by index) that cover what remains.
    kth = _weighted_kth_smallest(keys, counts_flat, needed)
    below = keys < kth
    tied = tf.equal(keys, kth)
    remaining = needed - tf.reduce_sum(tf.where(below, counts_flat, 0))
    tied_before = tf.cumsum(tf.where(tied, counts_flat, 0), exclusive=True)
    pruned = (keys < 0) | below | (tied & (tied_before < remaining))
    unit_kept = tf.logical_not(pruned)

    sizes = tf.stack([tf.size(c) for c in counts])
    new_masks = []
    for u, w, keep, shape in zip(tf.split(unit_kept, sizes, num=len(weights)), weights, kept, shapes):
        if shape is None:
            positions = tf.reshape(u, tf.shape(w))
        else:
            grid = [shape[0] // cols, 1, shape[1] // rows, 1]
            positions = tf.reshape(
                tf.broadcast_to(tf.reshape(u, grid), [grid[0], cols, grid[2], rows]), shape
            )
        new_masks.append(tf.cast(positions & keep, tf.float32))
    return new_masks


def _weighted_kth_smallest(keys: tf.Tensor, weights: tf.Tensor, total: tf.Tensor) -> tf.Tensor:
    """The smallest v >= -1 with the `weights` of the int32 `keys` <= v summing to at least `total`.

    `_kth_smallest` with a weight per key (all weights 1: the same), by bisection over the int32
    range; -1 when `total` <= the weight of the keys equal to -1 (e.g. `total` <= 0).
    """

    def bisect(low, high):
        middle = low + (high - low) // 2
        covered = tf.reduce_sum(tf.where(keys <= tf.cast(middle, tf.int32), weights, 0))
        enough = covered >= total
        return tf.where(enough, low, middle + 1), tf.where(enough, middle, high)

    low = tf.constant(-1, tf.int64)  # int64: high - low can exceed the int32 range
    high = tf.maximum(tf.cast(tf.reduce_max(keys), tf.int64), low)
    _, kth = tf.while_loop(lambda low, high: low < high, bisect, (low, high))
    return tf.cast(kth, tf.int32)


def apply_masks(weights: Sequence[TensorLike], masks: Sequence[TensorLike]) -> list[tf.Tensor]:
    """The elementwise products `weight * mask`, in the weights' dtypes."""
    _check_one_mask_per_weight(weights, masks)
    weights = [tf.convert_to_tensor(w) for w in weights]
    return [w * tf.cast(m, w.dtype) for w, m in zip(weights, masks)]


def count_nonzero(tensors: Sequence[TensorLike]) -> tf.Tensor:
    """The number of nonzero elements over all `tensors`, an int64 scalar."""
    if not tensors:
        raise ValueError("tensors must hold at least one tensor")
    return tf.add_n([tf.math.count_nonzero(t, dtype=tf.int64) for t in tensors])


def sparsity(tensors: Sequence[TensorLike]) -> tf.Tensor:
    """The fraction of zeros over all elements of `tensors` (masks or weights), a float32 scalar."""
    nonzero = count_nonzero(tensors)
    total = tf.add_n([tf.size(t, out_type=tf.int64) for t in tensors])
    zeros = total - nonzero
    return tf.cast(tf.cast(zeros, tf.float64) / tf.cast(total, tf.float64), tf.float32)


def random_masks(
    weights: Sequence[TensorLike],
    sparsity: float | tf.Tensor,
    masks: Sequence[TensorLike] | None = None,
    *,
    seed: int,
) -> list[tf.Tensor]:
    """Masks pruning positions in one fixed random order (the Random baseline, paper section 5).

    The order depends only on `seed` and the shapes, so masks for a rising target are nested: the
    positions pruned at a lower sparsity are the first of those pruned at a higher one.
    """
    keys = [
        tf.random.stateless_uniform(tf.shape(w), seed=[seed, i], minval=1e-3, maxval=1.0)
        for i, w in enumerate(weights)
    ]
    return magnitude_masks(keys, sparsity, masks)
