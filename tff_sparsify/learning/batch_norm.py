"""BatchNorm statistics computed by the clients at given model weights, as TFF computations: the
building blocks of FedTiny's adaptive BatchNorm selection (`abns`) and of the final recalibration
every run may add (`ExperimentConfig.recalibrate_batch_norm`).

The recalibration (`build_batch_statistics`, `recalibrate`): every client receives the model, passes
its training data through it once in training mode (no gradients, no weight change) and returns,
for each BatchNorm layer, the example-weighted mean of the batch means and variances Keras computes
there (the values its moving averages follow, without the moving average's memory of the starting
statistics), and its example count; the server sets their example-weighted mean.
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_sparsify.core import metrics
from tff_sparsify.learning import client_work
from tff_sparsify.learning.task import ModelTask


def build_batch_statistics(task: ModelTask) -> tff.Computation:
    """(model weights at SERVER, data at CLIENTS) -> at SERVER, per BatchNorm statistic (layout
    order), sum_k n_k s_k / sum_k n_k, where s_k = sum_b |b| s_b / n_k over client k's batches b of
    the statistic s_b of batch b in training mode."""
    weights_type, data_type = computation_types(task)
    layout = task.layout

    def batch_statistics(model, model_weights, dataset):
        statistics = layout.statistics(model_weights.non_trainable)

        def add(sums_and_count, batch):
            sums, count = sums_and_count
            examples = tf.cast(model.forward_pass(batch, training=True).num_examples, tf.float32)
            # With momentum 0 each moving statistic is the batch's (read after the forward pass,
            # which assigns it: the same variables, in program order).
            return tuple(total + examples * tf.identity(s) for total, s in zip(sums, statistics)), count + examples

        # Tuples: tf.data would take a list of tensors for one tensor.
        sums, count = dataset.reduce((tuple(tf.zeros_like(s) for s in statistics), tf.constant(0.0)), add)
        return [total / count for total in sums], count

    client = client_computation(task, weights_type, data_type, batch_statistics,
                                keras_model_fn=lambda: _momentum_zero(task.wrapped_keras_model()))

    @tff.federated_computation(tff.FederatedType(weights_type, tff.SERVER), tff.FederatedType(data_type, tff.CLIENTS))
    def batch_statistics_mean(weights, client_data):
        statistics, examples = tff.federated_map(client, (tff.federated_broadcast(weights), client_data))
        return tff.federated_mean(statistics, weight=examples)

    return batch_statistics_mean


@dataclasses.dataclass(frozen=True)
class Recalibration:
    """A model's weights with the clients' recalibrated statistics, and what the exchange sent."""

    weights: tff.learning.models.ModelWeights
    cost: metrics.RoundCost


def recalibrate(computation: tff.Computation, task: ModelTask, weights, client_data) -> Recalibration:
    """`computation` (`build_batch_statistics(task)`'s) at `weights` over `client_data` (one dataset
    per client). Each client receives the model as the rounds send it (its kept kernel positions,
    the other trainable weights, the statistics) and returns its statistics and example count. The
    weights keep everything but the statistics."""
    layout = task.layout
    statistics = [np.asarray(s) for s in computation(weights, client_data)]
    sent_statistics = sum(s.size for s in statistics)
    sent = layout.statistics(weights.non_trainable)
    download = int(client_work.params_sent(layout, weights.trainable, layout.masks(weights.non_trainable), sent))
    clients = len(client_data)
    download_bytes = int(metrics.encoded_bytes([*weights.trainable, *sent]))
    cost = metrics.RoundCost(clients * download, clients * (sent_statistics + 1),
                             download_bytes=clients * download_bytes, upload_bytes=clients * 4 * (sent_statistics + 1))
    return Recalibration(with_statistics(task, weights, statistics), cost)


def client_computation(task: ModelTask, weights_type, data_type, body,
                       keras_model_fn: Callable[[], tf.keras.Model] | None = None) -> tff.Computation:
    """A client's TF computation (weights, dataset) -> `body(model, model_weights, dataset)`, run in a
    fresh model (of `keras_model_fn`, default the task's wrapped model) holding `weights`."""

    @tff.tensorflow.computation(weights_type, data_type)
    def client(weights, dataset):
        model = task.tff_model(keras_model_fn() if keras_model_fn else None)
        model_weights = tff.learning.models.ModelWeights.from_model(model)

        @tf.function
        def run():
            tf.nest.map_structure(lambda v, w: v.assign(w), model_weights, weights)
            return body(model, model_weights, dataset)

        return run()

    return client


def computation_types(task: ModelTask):
    """(the model weights' TFF type, the clients' dataset type) of `task`."""
    with tf.Graph().as_default():
        tff_model = task.tff_model()
    return (tff.learning.models.weights_type_from_model(tff_model),
            tff.SequenceType(tff.types.tensorflow_to_type(tff_model.input_spec)))


def with_statistics(task: ModelTask, weights, statistics) -> tff.learning.models.ModelWeights:
    """`weights` with `statistics` (layout order) in place of their BatchNorm statistics."""
    return tff.learning.models.ModelWeights(
        trainable=list(weights.trainable),
        non_trainable=task.layout.replace_statistics(list(weights.non_trainable), statistics),
    )


def _momentum_zero(model: tf.keras.Model) -> tf.keras.Model:
    """`model` with every BatchNorm layer's momentum 0 (read when a layer is called, so set before)."""
    for layer in model.submodules:
        if isinstance(layer, tf.keras.layers.BatchNormalization):
            layer.momentum = 0.0
    return model
