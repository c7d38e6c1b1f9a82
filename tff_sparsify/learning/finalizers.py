"""The server finalizer: applies the aggregated update with the server optimizer, then the masks of
the algorithm's `mask_updates.MaskUpdate`.

The update is the client work's `OrderedDict` (`weights` = the aggregated delta, see `client_work`).
The kernels are multiplied by the new masks, which are written into the model's TFMOT mask variables,
so `get_model_weights` returns the sparse model with its masks. The BatchNorm moving statistics are
set to the aggregated `statistics` (the clients' example-weighted mean, README, Measures, "BatchNorm
statistics"); the server optimizer never touches them. The state holds the optimizer's state and,
when the mask update reads the round (`counts_rounds`), the process's round counter.
"""
from __future__ import annotations

import collections

import tensorflow as tf
import tensorflow_federated as tff

from tff_sparsify.core import pruning
from tff_sparsify.learning.mask_updates import MaskUpdate
from tff_sparsify.learning.task import WeightsLayout


def build_masking_finalizer(
    optimizer: tff.learning.optimizers.Optimizer,
    model_weights_type: tff.Type,
    update_type: tff.Type,
    layout: WeightsLayout,
    mask_update: MaskUpdate,
) -> tff.learning.templates.FinalizerProcess:
    """A `FinalizerProcess` applying `optimizer` to the update, then the masks of `mask_update`."""
    trainable_specs = tuple(tf.TensorSpec(t.shape, t.dtype) for t in model_weights_type.trainable)
    counts_rounds = mask_update.counts_rounds

    @tff.tensorflow.computation
    def initial_state():
        state = collections.OrderedDict(optimizer=optimizer.initialize(trainable_specs))
        if counts_rounds:
            state["round_num"] = tf.constant(0, tf.int32)
        return state

    state_type = initial_state.type_signature.result

    @tff.tensorflow.computation(state_type, model_weights_type, update_type)
    def finalize(state, weights, update):
        optimizer_state, trainable = optimizer.next(
            state["optimizer"], tuple(weights.trainable), tuple(update["weights"])
        )
        new_state = collections.OrderedDict(optimizer=optimizer_state)
        if counts_rounds:
            new_state["round_num"] = state["round_num"] + 1
        kernels = layout.kernels(trainable)
        masks, target = mask_update(
            new_state.get("round_num"), kernels, layout.masks(weights.non_trainable), update, layout
        )
        trainable = layout.replace_kernels(trainable, pruning.apply_masks(kernels, masks))
        non_trainable = layout.replace_masks(weights.non_trainable, masks)
        if layout.statistic_indices:
            non_trainable = layout.replace_statistics(non_trainable, update["statistics"])
        new_weights = tff.learning.models.ModelWeights(trainable=trainable, non_trainable=non_trainable)
        measurements = collections.OrderedDict(
            target_sparsity=target,
            sparsity=pruning.sparsity(layout.kernels(trainable)),
            sparsity_all=pruning.sparsity(trainable),
            nonzero_params=pruning.count_nonzero(trainable),
        )
        return new_state, new_weights, measurements

    @tff.federated_computation
    def initialize():
        return tff.federated_eval(initial_state, tff.SERVER)

    @tff.federated_computation(
        initialize.type_signature.result,
        tff.FederatedType(model_weights_type, tff.SERVER),
        tff.FederatedType(update_type, tff.SERVER),
    )
    def next_fn(state, weights, update):
        state, new_weights, measurements = tff.federated_map(finalize, (state, weights, update))
        return tff.templates.MeasuredProcessOutput(state, new_weights, measurements)

    return tff.learning.templates.FinalizerProcess(initialize, next_fn)
