"""Pruning masks: one global magnitude threshold over all prunable tensors, and applying masks.

Pure TensorFlow, tensors in and tensors out, vectorized: the same functions run eagerly, inside
`tf.function` and inside TFF TensorFlow computations (where the round's target sparsity arrives as a
scalar tensor). A mask is a float32 tensor shaped like its weight, 1 where the weight is kept and 0
where it is pruned.

`magnitude_masks` implements FedSparsify's magnitude pruning (purge) step: over the N weights of all
given tensors together (not per layer), zero the k = floor(s * N + 0.5) of smallest magnitude, so
exactly k are zero. Ties are broken by position (layer order, then row-major: the first is pruned
first), and masks only shrink: weights pruned earlier stay pruned (no regrowth).
"""
from __future__ import annotations

import numbers
from typing import Sequence

import tensorflow as tf

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
        if not 0.0 <= sparsity < 1.0:
            raise ValueError(f"sparsity must be in [0, 1), got {sparsity!r}")
        sparsity = tf.constant(float(sparsity), tf.float64)
        checks = []
    else:
        sparsity = tf.cast(sparsity, tf.float64)
        message = "sparsity must be in [0, 1)"
        checks = [
            tf.debugging.assert_greater_equal(sparsity, tf.constant(0.0, tf.float64), message=message),
            tf.debugging.assert_less(sparsity, tf.constant(1.0, tf.float64), message=message),
        ]
    with tf.control_dependencies(checks):
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
) -> list[tf.Tensor]:
    """Masks zeroing the k = floor(sparsity * N + 0.5) smallest |w| over all `weights` together.

    Args:
      weights: the prunable tensors (any float dtype; magnitudes are compared in float32).
      sparsity: the target fraction of zeros in [0, 1), a Python number or a scalar tensor (e.g.
        `schedules.SparsitySchedule(...)(t)`, paper eq. 1). Absolute, counting earlier zeros.
      masks: the current masks (nonzero = kept), or None. Positions they prune are pruned first,
        whatever their weight; if k is below their number, the result equals them (no regrowth).

    Returns:
      One float32 mask per weight, same shapes, with exactly max(k, already pruned) zeros. Among
      equal magnitudes, the smaller flat index (layer order, then row-major) is pruned first.
    """
    weights = [tf.convert_to_tensor(w) for w in weights]
    if not weights:
        raise ValueError("weights must hold at least one tensor")
    if masks is not None:
        _check_one_mask_per_weight(weights, masks)
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
