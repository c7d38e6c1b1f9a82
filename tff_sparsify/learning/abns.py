"""FedTiny's adaptive BatchNorm selection (Huang et al., ICDCS 2023, arXiv 2212.01977; phase 1 as
reconstructed from the authors' code) as TFF computations over the clients' validation data.

For each candidate coarse mask c (its masked weights w * m_c):
- exchange A, `build_recalibration`: every client sets w * m_c, runs forward passes in training mode
  over its validation data for `epochs` epochs (BatchNorm moves its moving statistics from the
  server's; no gradients, no weight change) and returns its statistics and example count |V_k|; the
  server takes their |V_k|-weighted mean (the authors' 2022 code kept only the last client's);
- exchange B, `build_evaluation`: every client evaluates w * m_c with the averaged statistics in
  inference mode and returns its summed loss and |V_k|; L_c = sum_k loss_k / sum_k |V_k|.
`select_candidate` returns c* = argmin L_c (ties: the first) with its statistics. Without
recalibration (the "no ABNS" ablation) the candidates are evaluated with the server's statistics.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_sparsify.learning.batch_norm import client_computation, computation_types, with_statistics
from tff_sparsify.learning.process import masked
from tff_sparsify.learning.task import ModelTask

RECALIBRATION_EPOCHS = 10


def build_recalibration(task: ModelTask, epochs: int = RECALIBRATION_EPOCHS) -> tff.Computation:
    """(model weights at SERVER, validation data at CLIENTS) -> the clients' |V_k|-weighted mean
    BatchNorm statistics (layout order) at SERVER, after `epochs` training-mode passes each."""
    weights_type, data_type = computation_types(task)
    layout = task.layout

    def passes(model, model_weights, dataset):
        examples = tf.constant(0, tf.int64)
        for _ in tf.range(epochs):  # Training mode moves the statistics; nothing else changes.
            examples = dataset.reduce(
                examples, lambda n, batch: n + tf.cast(model.forward_pass(batch, training=True).num_examples, tf.int64)
            )
        statistics = [tf.identity(s) for s in layout.statistics(model_weights.non_trainable)]
        return statistics, tf.cast(examples // epochs, tf.float32)

    recalibrate = client_computation(task, weights_type, data_type, passes)

    @tff.federated_computation(tff.FederatedType(weights_type, tff.SERVER), tff.FederatedType(data_type, tff.CLIENTS))
    def recalibration(weights, client_data):
        statistics, examples = tff.federated_map(recalibrate, (tff.federated_broadcast(weights), client_data))
        return tff.federated_mean(statistics, weight=examples)

    return recalibration


def build_evaluation(task: ModelTask) -> tff.Computation:
    """(model weights at SERVER, validation data at CLIENTS) -> (summed loss, examples) at SERVER, in
    inference mode."""
    weights_type, data_type = computation_types(task)

    def losses(model, model_weights, dataset):
        def add(sums, batch):
            output = model.forward_pass(batch, training=False)
            examples = tf.cast(output.num_examples, tf.float64)
            return sums[0] + tf.cast(output.loss, tf.float64) * examples, sums[1] + examples

        return dataset.reduce((tf.constant(0.0, tf.float64), tf.constant(0.0, tf.float64)), add)

    evaluate = client_computation(task, weights_type, data_type, losses)

    @tff.federated_computation(tff.FederatedType(weights_type, tff.SERVER), tff.FederatedType(data_type, tff.CLIENTS))
    def evaluation(weights, client_data):
        loss, examples = tff.federated_map(evaluate, (tff.federated_broadcast(weights), client_data))
        return tff.federated_sum(loss), tff.federated_sum(examples)

    return evaluation


@dataclasses.dataclass(frozen=True)
class Selection:
    """The chosen candidate, every candidate's validation loss L_c, and the chosen weights (its masks
    applied, its statistics set)."""

    index: int
    losses: tuple[float, ...]
    weights: tff.learning.models.ModelWeights


def select_candidate(task: ModelTask, weights, candidate_masks, client_data, *, recalibrate: bool = True,
                     epochs: int = RECALIBRATION_EPOCHS) -> Selection:
    """c* = argmin L_c over `candidate_masks` (each a list of kernel masks, layout order) applied to
    `weights`; `client_data` are the clients' validation datasets."""
    recalibration = build_recalibration(task, epochs) if recalibrate else None
    evaluation = build_evaluation(task)
    candidates, losses = [], []
    for masks in candidate_masks:
        candidate = _with_masks(task, weights, masks)
        if recalibration is not None:
            statistics = [np.asarray(s) for s in recalibration(candidate, client_data)]
            candidate = with_statistics(task, candidate, statistics)
        loss, examples = evaluation(candidate, client_data)
        candidates.append(candidate)
        losses.append(float(loss) / float(examples))
    index = int(np.argmin(losses))
    return Selection(index, tuple(losses), candidates[index])


def _with_masks(task: ModelTask, weights, masks) -> tff.learning.models.ModelWeights:
    """`weights` with `masks` in place of their masks, the kernels multiplied by them."""
    non_trainable = task.layout.replace_masks(list(weights.non_trainable), [np.asarray(m, np.float32) for m in masks])
    return masked(task, tff.learning.models.ModelWeights(trainable=list(weights.trainable), non_trainable=non_trainable))
