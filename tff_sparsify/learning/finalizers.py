"""Server finalizers: apply the aggregated update with the server optimizer, then set the masks.

The new masks come from one of four sources:
- `"prune"` (FedSparsify-Global, OneShot): global magnitude pruning of the new model to s(t)
  (paper eq. 1), nested in the current masks;
- `"random"` (the Random baseline): the schedule's s(t), positions pruned in one fixed random order;
- `"vote"` (FedSparsify-Local): the majority-voted masks delivered by the aggregator (paper eq. 2);
- `"keep"` (FedAvg, FedProx, SNIP, GraSP): the current masks.
The kernels are multiplied by the new masks, which are written into the model's TFMOT mask
variables, so `get_model_weights` returns the sparse model with its masks. The state counts rounds.
"""
from __future__ import annotations

import collections

import tensorflow as tf
import tensorflow_federated as tff

from tff_sparsify import pruning, schedules
from tff_sparsify.learning.client_work import sparsity_table, target_sparsity
from tff_sparsify.learning.task import WeightsLayout

MASK_SOURCES = ("prune", "random", "vote", "keep")
SCHEDULED_SOURCES = ("prune", "random")


def build_masking_finalizer(
    optimizer: tff.learning.optimizers.Optimizer,
    model_weights_type: tff.Type,
    update_type: tff.Type,
    layout: WeightsLayout,
    mask_source: str,
    schedule: schedules.SparsitySchedule | None = None,
    block_size: tuple[int, int] = (1, 1),
    seed: int = 0,
) -> tff.learning.templates.FinalizerProcess:
    """A `FinalizerProcess` applying `optimizer` to the update, then the masks from `mask_source`
    (server pruning in blocks of `block_size`, see `pruning.magnitude_masks`; `seed` fixes the
    Random baseline's order)."""
    if mask_source not in MASK_SOURCES:
        raise ValueError(f"mask_source must be one of {MASK_SOURCES}, got {mask_source!r}")
    if (mask_source in SCHEDULED_SOURCES) != (schedule is not None):
        raise ValueError(f"a schedule is needed exactly when mask_source is one of {SCHEDULED_SOURCES}")
    table = sparsity_table(schedule) if schedule else None
    trainable_specs = tuple(tf.TensorSpec(t.shape, t.dtype) for t in model_weights_type.trainable)

    @tff.tensorflow.computation
    def initial_state():
        return collections.OrderedDict(
            optimizer=optimizer.initialize(trainable_specs), round_num=tf.constant(0, tf.int32)
        )

    state_type = initial_state.type_signature.result

    @tff.tensorflow.computation(state_type, model_weights_type, update_type)
    def finalize(state, weights, update):
        delta = update["weights"] if mask_source == "vote" else update
        optimizer_state, trainable = optimizer.next(
            state["optimizer"], tuple(weights.trainable), tuple(delta)
        )
        round_num = state["round_num"] + 1
        kernels, masks = layout.kernels(trainable), layout.masks(weights.non_trainable)
        target = tf.constant(float("nan"), tf.float64)
        if mask_source == "prune":
            target = target_sparsity(table, round_num)
            masks = pruning.magnitude_masks(kernels, target, masks, block_size=block_size)
        elif mask_source == "random":
            target = target_sparsity(table, round_num)
            masks = pruning.random_masks(kernels, target, masks, seed=seed)
        elif mask_source == "vote":
            masks = layout.kernels(update["masks"])
        trainable = layout.replace_kernels(trainable, pruning.apply_masks(kernels, masks))
        new_weights = tff.learning.models.ModelWeights(
            trainable=trainable, non_trainable=layout.replace_masks(weights.non_trainable, masks)
        )
        measurements = collections.OrderedDict(
            round=round_num,
            target_sparsity=target,
            sparsity=pruning.sparsity(layout.kernels(trainable)),
            sparsity_all=pruning.sparsity(trainable),
            nonzero_params=pruning.count_nonzero(trainable),
        )
        state = collections.OrderedDict(optimizer=optimizer_state, round_num=round_num)
        return state, new_weights, measurements

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
