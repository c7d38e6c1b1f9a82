"""Pruning at initialization: SNIP and GraSP masks (the FedSparsify paper's baselines, section 5).

Both score every prunable weight (the kernels of `models.prunable_weights`) once, at the model's
initial weights, from one client's data, and keep the best (1 - s_f) fraction in ONE global ranking
over all prunable kernels together (not per layer). The mask is then enforced for the whole run
(`algorithms.snip_grasp`). In the federated setting the data is that of one randomly chosen
client (paper section 5, following PruneFL and FedDST): the caller picks the client, e.g.
`federated.client_dataset(c)`, and passes its dataset.

- SNIP (Lee, Ajanthan and Torr, "SNIP: Single-shot network pruning based on connection
  sensitivity", ICLR 2019): connection sensitivity S = |g * w|, g = dL/dw. Prunes the LOWEST S.
- GraSP (Wang, Zhang and Grosse, "Picking winning tickets before training by preserving gradient
  flow", ICLR 2020, eq. 8 and Algorithm 1): S = -w * (H g), with H the Hessian of the loss and g its
  gradient. -w * Hg is the first-order change of the gradient norm ||g||^2 / 2 when w is removed
  (set to 0); the weights with the HIGHEST S are removed (removing them reduces the gradient flow
  least, or even increases it), the lowest are kept. Hg is computed exactly (double backprop, no
  finite differences): Hg = d(stop_gradient(g) . g)/dw.

Exact definitions used here.
- The loss. L = the mean over all examples used of the per-example loss: batch b with n_b examples
  contributes n_b / N times its (batch-mean) loss, N the total. So g = dL/dw and Hg = H g are those
  of the dataset's mean loss, independent of how it is cut into batches (in inference mode). A sum
  over batches instead of this mean (GraSP's reference code sums g over its batches, then H_b g over
  them) only rescales all scores by one positive factor (for equal batch sizes), which leaves the
  ranking unchanged. `num_batches=None` uses the whole dataset (one pass for SNIP; GraSP holds the
  batches in memory and makes two passes over them, one for g, one for Hg), an integer the first
  `num_batches` batches (1: as the original SNIP and the FedSparsify authors' code, which score one
  batch).
- Inference mode (`training=False`, the default): like the FedSparsify authors' code (their SNIP and
  GraSP call `model(x)`, Keras inference mode). Dropout is off, batch norm uses its (initial) moving
  statistics, so the scores are a deterministic function of the weights and the examples.
  `training=True` runs the layers in training mode (batch statistics, dropout: random scores), like
  GraSP's reference PyTorch code. Either way the model is left as it was: all its variables (kernels,
  masks, TFMOT pruning steps, batch-norm statistics) are restored afterwards.
- The weights scored are the model's kernels as the TFMOT wrapper computes with them (kernel * mask);
  positions the model's current masks already prune stay pruned and count towards k (as the `masks`
  argument of `pruning.magnitude_masks`). At initialization the masks are all ones.
- GraSP's reference code divides the logits by a temperature T = 200 before the loss; the paper's
  eq. 8 and the FedSparsify authors' code do not, nor does this module.

Selection (`prune_lowest`, `prune_highest`): exactly k = floor(s_f * N + 0.5) of the N prunable
weights are pruned, ties broken by flat index (layer order, then row-major: the first is pruned
first), by `pruning.magnitude_masks`, which ranks by |key|. SNIP's scores are non-negative and serve
as keys directly. For GraSP the keys are the positions in the order "highest S first" (a stable sort),
encoded exactly as float32 (see `_pruning_order_keys`).

Eager code (it runs once, before training, on the server side of a simulation), vectorized over the
weights; the only Python loops are over batches and layers.
"""
from __future__ import annotations

import contextlib
import numbers
import warnings
from typing import Callable, Iterable, Sequence

import tensorflow as tf
import tensorflow_federated as tff

from tff_sparsify import checks, compat, models
from tff_sparsify.core import pruning

LossFn = Callable[[tf.Tensor, tf.Tensor], tf.Tensor]


# --- Scores ------------------------------------------------------------------------------------


def snip_scores(
    model: tf.keras.Model,
    dataset: Iterable,
    *,
    loss: LossFn | None = None,
    num_batches: int | None = None,
    training: bool = False,
) -> list[tf.Tensor]:
    """SNIP's connection sensitivities |g * w|, one float32 tensor per `models.prunable_weights`.

    Args:
      model: a model wrapped by `models.wrap_for_pruning`, at the weights to score (its initial ones).
      dataset: batches `OrderedDict(x=..., y=...)` (as `data.FederatedData.client_dataset`) or
        `(x, y)` tuples; e.g. one client's `tf.data.Dataset`.
      loss: `loss(y_true, model_output)`, the batch-mean loss (Keras' default reduction) or one loss
        per example; e.g. `task.loss_fn()`. Default `models.default_loss()`.
      num_batches: use only the first `num_batches` batches; None (default): all.
      training: run the model in training mode (see the module docstring); default inference mode.

    g is the gradient of the mean loss over all examples used (see the module docstring).
    """
    weights, batches, loss = _prepare(model, dataset, loss, num_batches, keep_batches=False)
    with _model_state_restored(model, training):
        gradient = _mean_gradient(model, weights, batches, loss, training)
        scores = [tf.abs(g * w) for g, w in zip(gradient, weights)]
    return _checked_finite(scores, "SNIP")


def grasp_scores(
    model: tf.keras.Model,
    dataset: Iterable,
    *,
    loss: LossFn | None = None,
    num_batches: int | None = None,
    training: bool = False,
) -> list[tf.Tensor]:
    """GraSP's scores S = -w * (H g), one float32 tensor per `models.prunable_weights`.

    Arguments as `snip_scores`. H and g are the Hessian and the gradient of the mean loss over all
    examples used, w.r.t. the prunable kernels only (biases and batch norm are held fixed, as in
    GraSP's reference code, which takes H over the Conv/Linear weights). HIGH S = prune first.
    """
    weights, batches, loss = _prepare(model, dataset, loss, num_batches, keep_batches=True)
    with _model_state_restored(model, training):
        gradient = _mean_gradient(model, weights, batches, loss, training)
        hessian_gradient = _mean_hessian_gradient_product(model, weights, batches, loss, training, gradient)
        scores = [-w * hg for w, hg in zip(weights, hessian_gradient)]
    return _checked_finite(scores, "GraSP")


# --- Masks -------------------------------------------------------------------------------------


def prune_lowest(
    scores: Sequence[tf.Tensor], sparsity: float | tf.Tensor, masks: Sequence[tf.Tensor] | None = None
) -> list[tf.Tensor]:
    """Masks pruning the k = floor(sparsity * N + 0.5) LOWEST of the non-negative `scores` over all
    tensors together, ties by flat index; positions `masks` prune are pruned first (no regrowth)."""
    scores = [tf.convert_to_tensor(s, tf.float32) for s in scores]
    if any(tf.reduce_any(s < 0.0) for s in scores):
        raise ValueError("prune_lowest needs non-negative scores (use prune_highest(-scores) otherwise)")
    return pruning.magnitude_masks(scores, sparsity, masks)


def prune_highest(
    scores: Sequence[tf.Tensor], sparsity: float | tf.Tensor, masks: Sequence[tf.Tensor] | None = None
) -> list[tf.Tensor]:
    """Masks pruning the k = floor(sparsity * N + 0.5) HIGHEST `scores` (any sign) over all tensors
    together, ties by flat index; positions `masks` prune are pruned first (no regrowth)."""
    scores = [tf.convert_to_tensor(s, tf.float32) for s in scores]
    flat = tf.concat([tf.reshape(s, [-1]) for s in scores], axis=0)
    keys = _pruning_order_keys(flat)
    sizes = [tf.size(s) for s in scores]
    key_tensors = [tf.reshape(k, tf.shape(s)) for k, s in zip(tf.split(keys, sizes, num=len(scores)), scores)]
    return pruning.magnitude_masks(key_tensors, sparsity, masks)


def snip_masks(
    model: tf.keras.Model,
    dataset: Iterable,
    sparsity: float | tf.Tensor,
    *,
    loss: LossFn | None = None,
    num_batches: int | None = None,
    training: bool = False,
) -> list[tf.Tensor]:
    """SNIP masks (float32, aligned with `models.prunable_weights(model)`): the k = floor(sparsity
    * N + 0.5) weights of lowest |g * w| pruned, globally, ties by flat index. See `snip_scores`."""
    _check_sparsity(sparsity)
    scores = snip_scores(model, dataset, loss=loss, num_batches=num_batches, training=training)
    return prune_lowest(scores, sparsity, _current_masks(model))


def grasp_masks(
    model: tf.keras.Model,
    dataset: Iterable,
    sparsity: float | tf.Tensor,
    *,
    loss: LossFn | None = None,
    num_batches: int | None = None,
    training: bool = False,
) -> list[tf.Tensor]:
    """GraSP masks (float32, aligned with `models.prunable_weights(model)`): the k = floor(sparsity
    * N + 0.5) weights of HIGHEST -w * Hg pruned, globally, ties by flat index. See `grasp_scores`."""
    _check_sparsity(sparsity)
    scores = grasp_scores(model, dataset, loss=loss, num_batches=num_batches, training=training)
    return prune_highest(scores, sparsity, _current_masks(model))


def model_weights_with_masks(
    model: tf.keras.Model, masks: Sequence[tf.Tensor]
) -> tff.learning.models.ModelWeights:
    """`models.initial_model_weights(model)` (ready to train in TFF) with `masks` in place of the
    model's TFMOT masks and its kernels multiplied by them: the initial weights of a
    process trained within fixed masks (`learning.compose`). The model itself is not changed."""
    kernels, mask_vars = models.prunable_weights(model), models.mask_variables(model)
    if len(masks) != len(mask_vars):
        raise ValueError(f"masks must match the model's {len(mask_vars)} prunable kernels, got {len(masks)}")
    weights = models.initial_model_weights(model)
    trainable, non_trainable = list(weights.trainable), list(weights.non_trainable)
    trainable_index = {v.ref(): i for i, v in enumerate(model.trainable_weights)}
    non_trainable_index = {v.ref(): i for i, v in enumerate(model.non_trainable_weights)}
    for kernel, mask_var, mask in zip(kernels, mask_vars, masks):
        mask = tf.cast(tf.convert_to_tensor(mask), mask_var.dtype)
        if mask.shape != mask_var.shape:
            raise ValueError(
                f"mask of shape {mask.shape} for the kernel {kernel.name} of shape {kernel.shape}"
            )
        i = trainable_index[kernel.ref()]
        trainable[i] = trainable[i] * tf.cast(mask, kernel.dtype)
        non_trainable[non_trainable_index[mask_var.ref()]] = mask
    return type(weights)(trainable=trainable, non_trainable=non_trainable)


# --- Internals ---------------------------------------------------------------------------------

# GraSP's order keys: position r in the pruning order becomes the float32 with bit pattern
# 2**23 + r, a positive normal number (no denormals, which CPU kernels may flush to zero). Positive
# float32 values order like their bit patterns, and magnitude_masks compares bit patterns of |key|,
# so the order is reproduced exactly for any N below the bit pattern of +inf.
_KEY_OFFSET = 1 << 23
_MAX_KEYS = 0x7F800000 - _KEY_OFFSET


def _pruning_order_keys(flat_scores: tf.Tensor) -> tf.Tensor:
    """Non-negative float32 keys, smaller = pruned first, putting the highest score first and equal
    scores in flat-index order (a stable sort; -0.0 and 0.0 are equal)."""
    n = int(tf.size(flat_scores))
    if n > _MAX_KEYS:
        raise ValueError(f"at most {_MAX_KEYS} prunable weights are supported, got {n}")
    order = tf.argsort(flat_scores, direction="DESCENDING", stable=True)
    position = tf.math.invert_permutation(order)  # position[i] = place of weight i in the order
    return tf.bitcast(position + _KEY_OFFSET, tf.float32)


def _check_sparsity(sparsity) -> None:
    """Rejects a bad Python-number sparsity before the (costly) scores; tensors are checked later."""
    if isinstance(sparsity, numbers.Real):
        checks.fraction("sparsity", sparsity)


def _current_masks(model: tf.keras.Model) -> list[tf.Tensor]:
    return [m.read_value() for m in models.mask_variables(model)]


def _prepare(model, dataset, loss, num_batches, *, keep_batches: bool):
    """(prunable kernels, batches as (x, y, n_b), loss function), validated."""
    weights = models.prunable_weights(model)
    if not weights:
        raise ValueError(
            f"model {model.name!r} has no TFMOT-wrapped prunable kernels; "
            "wrap it with models.wrap_for_pruning"
        )
    if num_batches is not None:
        checks.integer("num_batches", num_batches)
    batches = _batches(dataset, num_batches)
    if keep_batches:  # GraSP passes twice over the SAME examples (a shuffled dataset would differ).
        batches = list(batches)
        if not batches:
            raise ValueError("dataset yields no batches")
    return weights, batches, loss or models.default_loss()


def _batches(dataset, num_batches):
    """Yields (x, y, number of examples) for the first `num_batches` batches (all if None); warns
    when the dataset has fewer."""
    count = 0
    for batch in dataset:
        if isinstance(batch, dict):
            x, y = batch["x"], batch["y"]
        else:
            x, y = batch
        yield x, y, tf.shape(tf.nest.flatten(y)[0])[0]
        count += 1
        if num_batches is not None and count >= num_batches:
            return  # Without fetching one batch more.
    if num_batches is not None:
        warnings.warn(
            f"saliency: num_batches={num_batches} but the dataset has only {count} batches; "
            f"all {count} scored", stacklevel=2,
        )


def _batch_loss(model, x, y, loss, training) -> tf.Tensor:
    return tf.reduce_mean(loss(y, model(x, training=training)))


def _mean_gradient(model, weights, batches, loss, training) -> list[tf.Tensor]:
    """Gradient of the mean loss over all examples of `batches`: sum of n_b * g_b, divided by N."""
    total, count = [tf.zeros_like(w) for w in weights], 0
    for x, y, n in batches:
        with tf.GradientTape() as tape:
            batch_loss = _batch_loss(model, x, y, loss, training)
        grads = tape.gradient(batch_loss, weights, unconnected_gradients=tf.UnconnectedGradients.ZERO)
        total = [t + tf.cast(n, g.dtype) * g for t, g in zip(total, grads)]
        count += int(n)
    if count == 0:
        raise ValueError("dataset yields no examples")
    return [t / count for t in total]


def _mean_hessian_gradient_product(model, weights, batches, loss, training, gradient) -> list[tf.Tensor]:
    """H g for the mean loss over `batches`, with `gradient` = g held constant: per batch, the
    gradient of stop_gradient(g) . g_b, weighted by n_b / N."""
    fixed = [tf.stop_gradient(g) for g in gradient]
    total, count = [tf.zeros_like(w) for w in weights], 0
    for x, y, n in batches:
        with tf.GradientTape() as outer:
            with tf.GradientTape() as inner:
                batch_loss = _batch_loss(model, x, y, loss, training)
            grads = inner.gradient(batch_loss, weights, unconnected_gradients=tf.UnconnectedGradients.ZERO)
            inner_product = tf.add_n([tf.reduce_sum(f * g) for f, g in zip(fixed, grads)])
        hessian_grads = outer.gradient(
            inner_product, weights, unconnected_gradients=tf.UnconnectedGradients.ZERO
        )
        total = [t + tf.cast(n, h.dtype) * h for t, h in zip(total, hessian_grads)]
        count += int(n)
    return [t / count for t in total]


@contextlib.contextmanager
def _model_state_restored(model: tf.keras.Model, training: bool):
    """Restores every variable of `model` on exit. The TFMOT wrapper writes kernel * mask into the
    kernel on every call and, in training mode, increments its pruning step (asserting it reaches
    1, so it is set ready first); batch norm updates its statistics in training mode."""
    saved = [(v, tf.identity(v.read_value())) for v in model.weights]
    try:
        if training:
            compat.ready_pruning_steps(model)
        yield
    finally:
        for v, value in saved:
            v.assign(value)


def _checked_finite(scores: list[tf.Tensor], method: str) -> list[tf.Tensor]:
    if not all(bool(tf.reduce_all(tf.math.is_finite(s))) for s in scores):
        raise ValueError(f"{method} scores are not all finite (the loss or its gradient overflowed)")
    return scores
