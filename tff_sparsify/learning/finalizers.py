"""Server finalizers: apply the aggregated update with the server optimizer, then set the masks.

The new masks come from one of five sources:
- `"prune"` (FedSparsify-Global, OneShot): global magnitude pruning of the new model to s(t)
  (paper eq. 1), nested in the current masks;
- `"random"` (the Random baseline): the schedule's s(t), positions pruned in one fixed random order;
- `"vote"` (FedSparsify-Local): the majority-voted masks delivered by the aggregator (paper eq. 2);
- `"keep"` (FedAvg, FedProx, SNIP, GraSP): the current masks;
- `"readjust"` (PruneFL, Jiang et al., 2022): every `Readjustment.every` rounds (round_num % every
  == 0), the (1 - s_f) N positions of highest importance = aggregated squared dense gradient (the
  update's `squared_gradients`, see `client_work`) / the kernel's per-weight cost
  (`task.kernel_costs`); regrowth allowed (a regrown weight restarts from its current value, 0).
  The current masks on the other rounds. The density stays fixed at 1 - s_f: the original
  PruneFL's adaptive choice of the model size at each readjustment is not implemented (as in the
  FedSparsify authors' comparison, which fixes the sparsity). The `sparsity` measurement counts
  zero kernels, so right after a readjustment that regrows it is above s_f (regrown weights are 0).
The update is the client work's `OrderedDict` (`weights` = the aggregated delta, see `client_work`).
The kernels are multiplied by the new masks, which are written into the model's TFMOT mask
variables, so `get_model_weights` returns the sparse model with its masks. The BatchNorm moving
statistics are set to the aggregated `statistics` (the clients' example-weighted mean, DESIGN
"BatchNorm statistics"); the server optimizer never touches them. The state counts rounds.
"""
from __future__ import annotations

import collections
import dataclasses
from typing import Sequence

import tensorflow as tf
import tensorflow_federated as tff

from tff_sparsify import checks, pruning, schedules
from tff_sparsify.learning import targets
from tff_sparsify.learning.task import WeightsLayout

MASK_SOURCES = ("prune", "random", "vote", "keep", "readjust")
SCHEDULED_SOURCES = ("prune", "random")


@dataclasses.dataclass(frozen=True)
class Readjustment:
    """PruneFL's mask readjustment: to `sparsity` every `every` rounds, by squared gradient over
    `kernel_costs` (one per prunable kernel, layout order; see `task.kernel_costs`)."""

    sparsity: float
    every: int
    kernel_costs: Sequence[float]

    def __post_init__(self):
        checks.fraction("sparsity", self.sparsity)
        checks.integer("readjust_every", self.every)
        if not all(c > 0 for c in self.kernel_costs):
            raise ValueError(f"kernel_costs must be > 0, got {self.kernel_costs!r}")


def build_masking_finalizer(
    optimizer: tff.learning.optimizers.Optimizer,
    model_weights_type: tff.Type,
    update_type: tff.Type,
    layout: WeightsLayout,
    mask_source: str,
    schedule: schedules.SparsitySchedule | None = None,
    block_size: tuple[int, int] = (1, 1),
    seed: int = 0,
    readjustment: Readjustment | None = None,
) -> tff.learning.templates.FinalizerProcess:
    """A `FinalizerProcess` applying `optimizer` to the update, then the masks from `mask_source`
    (server pruning in blocks of `block_size`, see `pruning.magnitude_masks`; `seed` fixes the
    Random baseline's order; `readjustment` is needed exactly for "readjust")."""
    if mask_source not in MASK_SOURCES:
        raise ValueError(f"mask_source must be one of {MASK_SOURCES}, got {mask_source!r}")
    if (mask_source in SCHEDULED_SOURCES) != (schedule is not None):
        raise ValueError(f"a schedule is needed exactly when mask_source is one of {SCHEDULED_SOURCES}")
    if (mask_source == "readjust") != (readjustment is not None):
        raise ValueError('a readjustment is needed exactly when mask_source is "readjust"')
    if readjustment and len(readjustment.kernel_costs) != len(layout.kernel_indices):
        raise ValueError(f"kernel_costs must have one cost per kernel ({len(layout.kernel_indices)}), "
                         f"got {len(readjustment.kernel_costs)}")
    trainable_specs = tuple(tf.TensorSpec(t.shape, t.dtype) for t in model_weights_type.trainable)

    @tff.tensorflow.computation
    def initial_state():
        return collections.OrderedDict(
            optimizer=optimizer.initialize(trainable_specs), round_num=tf.constant(0, tf.int32)
        )

    state_type = initial_state.type_signature.result

    @tff.tensorflow.computation(state_type, model_weights_type, update_type)
    def finalize(state, weights, update):
        optimizer_state, trainable = optimizer.next(
            state["optimizer"], tuple(weights.trainable), tuple(update["weights"])
        )
        round_num = state["round_num"] + 1
        kernels, masks = layout.kernels(trainable), layout.masks(weights.non_trainable)
        target = tf.constant(float("nan"), tf.float64)
        if mask_source == "prune":
            target = targets.target_sparsity(schedule, round_num)
            masks = pruning.magnitude_masks(kernels, target, masks, block_size=block_size)
        elif mask_source == "random":
            target = targets.target_sparsity(schedule, round_num)
            masks = pruning.random_masks(kernels, target, masks, seed=seed)
        elif mask_source == "vote":
            masks = layout.kernels(update["masks"])
        elif mask_source == "readjust":
            target = tf.constant(readjustment.sparsity, tf.float64)
            importance = [
                tf.cast(g, tf.float32) / cost
                for g, cost in zip(update["squared_gradients"], readjustment.kernel_costs)
            ]
            current = [tf.cast(m, tf.float32) for m in masks]
            masks = tf.cond(
                tf.equal(round_num % readjustment.every, 0),
                lambda: pruning.magnitude_masks(importance, readjustment.sparsity),  # Regrowth allowed.
                lambda: current,
            )
        trainable = layout.replace_kernels(trainable, pruning.apply_masks(kernels, masks))
        non_trainable = layout.replace_masks(weights.non_trainable, masks)
        if layout.statistic_indices:
            non_trainable = layout.replace_statistics(non_trainable, update["statistics"])
        new_weights = tff.learning.models.ModelWeights(trainable=trainable, non_trainable=non_trainable)
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
