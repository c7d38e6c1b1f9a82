"""What a learning process trains: a Keras model builder, its input spec, loss and metrics.

`ModelTask` turns these into the TFMOT-wrapped Keras model and the `tff.learning` model TFF needs, and
records where the prunable kernels and their masks sit in `tff.learning.models.ModelWeights` and what
one weight of each kernel costs per example (`kernel_costs`, PruneFL's per-layer time).
"""
from __future__ import annotations

import dataclasses
import functools
import math
import warnings
from typing import Any, Callable, Sequence

import tensorflow as tf
import tensorflow_federated as tff

from tff_sparsify import compat, export, models


def _default_metrics() -> list[tf.keras.metrics.Metric]:
    return [tf.keras.metrics.SparseCategoricalAccuracy(name="accuracy")]


@dataclasses.dataclass(frozen=True)
class WeightsLayout:
    """Positions of the prunable kernels in `ModelWeights.trainable`, of their masks in
    `ModelWeights.non_trainable` (one to one, in layer order), and of the BatchNorm moving
    statistics in `ModelWeights.non_trainable` (`models.batch_norm_statistics`)."""

    kernel_indices: tuple[int, ...]
    mask_indices: tuple[int, ...]
    statistic_indices: tuple[int, ...] = ()

    def kernels(self, trainable: Sequence[Any]) -> list:
        return [trainable[i] for i in self.kernel_indices]

    def masks(self, non_trainable: Sequence[Any]) -> list:
        return [non_trainable[i] for i in self.mask_indices]

    def replace_kernels(self, trainable: Sequence[Any], kernels: Sequence[Any]) -> list:
        return _replace(trainable, self.kernel_indices, kernels)

    def replace_masks(self, non_trainable: Sequence[Any], masks: Sequence[Any]) -> list:
        return _replace(non_trainable, self.mask_indices, masks)

    def statistics(self, non_trainable: Sequence[Any]) -> list:
        return [non_trainable[i] for i in self.statistic_indices]

    def replace_statistics(self, non_trainable: Sequence[Any], statistics: Sequence[Any]) -> list:
        return _replace(non_trainable, self.statistic_indices, statistics)

    def full_masks(self, trainable: Sequence[Any], masks: Sequence[Any]) -> list:
        """One mask per trainable tensor: the kernel masks, all-ones for the rest."""
        return _replace([tf.ones_like(t) for t in trainable], self.kernel_indices, masks)


def kernel_costs(keras_model: tf.keras.Model) -> list[float]:
    """Multiply-accumulates per example and per weight of each prunable kernel of a wrapped model
    (in `models.prunable_weights` order): the number of output positions the kernel is applied at,
    i.e. the product of the layer's output shape without batch and channel dimensions: 1 for a Dense
    kernel on vectors, H_out * W_out for a Conv2D kernel. PruneFL's per-layer cost (its importance
    is squared gradient over time per weight; FLOPs stand in for time)."""
    costs = []
    for wrapper in models.pruning_wrappers(keras_model):
        shape = tf.TensorShape(wrapper.output_shape)
        positions = shape[1:-1]
        if not positions.is_fully_defined():
            raise ValueError(f"layer {wrapper.name} has output shape {shape}: spatial sizes must be known")
        costs += [float(math.prod(positions.as_list()))] * len(wrapper.pruning_vars)
    return costs


def _warn_if_softmax_meets_logits_loss(model: tf.keras.Model, loss) -> None:
    """A softmax output trained with a loss that expects logits learns slowly and wrongly, silently."""
    last = model.layers[-1] if model.layers else None
    softmax = isinstance(last, tf.keras.layers.Softmax) or getattr(last, "activation", None) is tf.keras.activations.softmax
    if softmax and getattr(loss, "get_config", dict)().get("from_logits"):
        warnings.warn(f"model {model.name!r} ends in a softmax but the loss expects logits (from_logits=True); "
                      "remove the softmax, or give ModelTask a loss_fn with from_logits=False", stacklevel=3)


def _replace(values: Sequence[Any], indices: Sequence[int], replacements: Sequence[Any]) -> list:
    values = list(values)
    for i, value in zip(indices, replacements):
        values[i] = value
    return values


@dataclasses.dataclass(frozen=True)
class ModelTask:
    """A Keras model (unwrapped; it is wrapped for pruning here) and how to train it."""

    keras_model_fn: Callable[[], tf.keras.Model]
    input_spec: Any
    loss_fn: Callable[[], tf.keras.losses.Loss] = models.default_loss
    metrics_fn: Callable[[], list[tf.keras.metrics.Metric]] = _default_metrics

    def wrapped_keras_model(self) -> tf.keras.Model:
        model = self.keras_model_fn()
        _warn_if_softmax_meets_logits_loss(model, self.loss_fn())
        return models.wrap_for_pruning(model)

    def sparse_keras_model(self, weights: tff.learning.models.ModelWeights) -> tf.keras.Model:
        """The trained model out of a process, in one call (`task.sparse_keras_model(
        process.get_model_weights(state))`): a plain Keras model, TFMOT wrappers stripped, pruned
        kernels exactly zero, BatchNorm statistics as federated."""
        wrapped = self.wrapped_keras_model()
        weights.assign_weights_to(wrapped)
        return export.strip_to_sparse_keras(wrapped)

    def tff_model(self, keras_model: tf.keras.Model | None = None) -> tff.learning.models.VariableModel:
        return compat.from_keras_model(
            keras_model or self.wrapped_keras_model(),
            input_spec=self.input_spec,
            loss=self.loss_fn(),
            metrics=self.metrics_fn(),
        )

    @functools.cached_property
    def layout(self) -> WeightsLayout:
        with tf.Graph().as_default():
            keras_model = self.wrapped_keras_model()
            trainable = {v.ref(): i for i, v in enumerate(keras_model.trainable_weights)}
            non_trainable = {v.ref(): i for i, v in enumerate(keras_model.non_trainable_weights)}
            return WeightsLayout(
                tuple(trainable[v.ref()] for v in models.prunable_weights(keras_model)),
                tuple(non_trainable[v.ref()] for v in models.mask_variables(keras_model)),
                tuple(non_trainable[v.ref()] for v in models.batch_norm_statistics(keras_model)),
            )

    @functools.cached_property
    def kernel_costs(self) -> tuple[float, ...]:
        """`kernel_costs` of the wrapped model, one per prunable kernel in layout order."""
        with tf.Graph().as_default():
            return tuple(kernel_costs(self.wrapped_keras_model()))

    def initial_model_weights_fn(self) -> tff.Computation:
        """A TFF computation returning freshly initialized weights, ready to train (see compat)."""

        @tff.tensorflow.computation
        def initial_model_weights():
            return models.initial_model_weights(self.wrapped_keras_model())

        return initial_model_weights
