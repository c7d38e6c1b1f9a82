"""Builders of the FedSparsify and baseline `tff.learning.templates.LearningProcess`es.

Each composes, with `tff.learning.templates.compose_learning_process`: TFF's broadcast of the model
weights (masks included), the masked client work, an aggregator, and the masking finalizer.

| builder                  | client work             | aggregator                  | finalizer masks        |
|--------------------------|-------------------------|-----------------------------|------------------------|
| build_fed_avg            | train within masks      | example-weighted mean       | keep                   |
| build_fed_prox           | + proximal term mu      | example-weighted mean       | keep                   |
| build_fedsparsify_global | train within masks      | example-weighted mean       | prune to s(t) (eq. 1)  |
| build_fedsparsify_local  | train, prune to s(t)    | MajorityVoteFactory (eq. 2) | voted                  |
| build_one_shot           | train within masks      | example-weighted mean       | prune once to s_f      |
| build_random             | train within masks      | example-weighted mean       | s(t), fixed random order |
| build_fixed_mask         | train within masks      | example-weighted mean       | keep the initial masks (SNIP, GraSP) |
| build_prune_fl           | + squared dense grads   | example-weighted mean       | every R rounds: top (1 - s_f) N by squared grad / cost |

PruneFL runs at the fixed density 1 - s_f (as in the FedSparsify authors' comparison): the original
PruneFL's adaptive model-size selection at each readjustment is not implemented.
"""
from __future__ import annotations

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_sparsify import schedules
from tff_sparsify.aggregators import MajorityVoteFactory
from tff_sparsify.learning.client_work import build_masked_client_work
from tff_sparsify.learning.finalizers import Readjustment, build_masking_finalizer
from tff_sparsify.learning.task import ModelTask

# The paper's FashionMNIST client optimizer (SGD, learning rate 0.02) and plain server averaging.
DEFAULT_CLIENT_LEARNING_RATE = 0.02


def _default_client_optimizer():
    return tff.learning.optimizers.build_sgdm(learning_rate=DEFAULT_CLIENT_LEARNING_RATE)


def _default_server_optimizer():
    return tff.learning.optimizers.build_sgdm(learning_rate=1.0)


def _compose(
    task: ModelTask,
    mask_source: str,
    *,
    client_optimizer=None,
    server_optimizer=None,
    aggregator_factory=None,
    schedule=None,
    local_schedule=None,
    block_size=(1, 1),
    proximal_strength: float = 0.0,
    seed: int = 0,
    initial_weights: tff.learning.models.ModelWeights | None = None,
    readjustment: Readjustment | None = None,
) -> tff.learning.templates.LearningProcess:
    initial_weights_fn = task.initial_model_weights_fn() if initial_weights is None else _constant_fn(initial_weights)
    weights_type = initial_weights_fn.type_signature.result
    client_work = build_masked_client_work(
        task, client_optimizer or _default_client_optimizer(), local_schedule, block_size, proximal_strength,
        report_squared_gradients=readjustment is not None,
    )
    client_result_type = client_work.next.type_signature.result.result.member
    aggregator = (aggregator_factory or tff.aggregators.MeanFactory()).create(
        client_result_type.update, client_result_type.update_weight
    )
    finalizer = build_masking_finalizer(
        server_optimizer or _default_server_optimizer(), weights_type, client_result_type.update,
        task.layout, mask_source, schedule, block_size, seed, readjustment,
    )
    return tff.learning.templates.compose_learning_process(
        initial_weights_fn,
        tff.learning.templates.build_broadcast_process(weights_type),
        client_work,
        aggregator,
        finalizer,
    )


def _constant_fn(weights: tff.learning.models.ModelWeights) -> tff.Computation:
    """A TFF computation returning `weights` (e.g. weights whose masks were set before training)."""
    trainable = [np.asarray(w) for w in weights.trainable]
    non_trainable = [np.asarray(w) for w in weights.non_trainable]

    @tff.tensorflow.computation
    def initial_weights():
        return tff.learning.models.ModelWeights(
            trainable=[tf.constant(w) for w in trainable], non_trainable=[tf.constant(w) for w in non_trainable]
        )

    return initial_weights


def build_fed_avg(task: ModelTask, *, client_optimizer=None, server_optimizer=None):
    """FedAvg (McMahan et al., 2017) through the same machinery; the model stays dense."""
    return _compose(task, "keep", client_optimizer=client_optimizer, server_optimizer=server_optimizer)


def build_fed_prox(task: ModelTask, proximal_strength: float = 0.001, *, client_optimizer=None,
                   server_optimizer=None):
    """FedProx (Li et al., 2020): FedAvg with the proximal term mu/2 ||w - w_t||^2 (paper: mu = 0.001)."""
    if not proximal_strength >= 0:
        raise ValueError(f"proximal_strength must be >= 0, got {proximal_strength!r}")
    return _compose(task, "keep", proximal_strength=proximal_strength, client_optimizer=client_optimizer,
                    server_optimizer=server_optimizer)


def build_fedsparsify_global(
    task: ModelTask,
    schedule: schedules.SparsitySchedule,
    *,
    block_size=(1, 1),
    client_optimizer=None,
    server_optimizer=None,
):
    """FedSparsify-Global: the server prunes the averaged model to s(t) after every round.

    `block_size` (r, c) prunes whole blocks that TFLite's sparse kernels accelerate ((1, 4) float32,
    (1, 16) int8); the default (1, 1) is the paper's unstructured pruning.
    """
    return _compose(task, "prune", schedule=schedule, block_size=block_size,
                    client_optimizer=client_optimizer, server_optimizer=server_optimizer)


def build_fedsparsify_local(
    task: ModelTask,
    schedule: schedules.SparsitySchedule,
    *,
    quorum: float = 0.5,
    average_over: str = "all",
    block_size=(1, 1),
    client_optimizer=None,
    server_optimizer=None,
):
    """FedSparsify-Local: clients prune to s(t) (in blocks of `block_size`); the server merges by
    majority vote (eq. 2)."""
    return _compose(
        task, "vote", aggregator_factory=MajorityVoteFactory(quorum=quorum, average_over=average_over),
        local_schedule=schedule, block_size=block_size, client_optimizer=client_optimizer,
        server_optimizer=server_optimizer,
    )


def build_one_shot(
    task: ModelTask,
    final_sparsity: float,
    total_rounds: int,
    *,
    fine_tune_rounds: int = 0,
    client_optimizer=None,
    server_optimizer=None,
):
    """OneShot: dense training, one global magnitude prune to `final_sparsity` at the end of round
    `total_rounds - fine_tune_rounds`, then `fine_tune_rounds` rounds within the mask."""
    schedule = schedules.OneShotSchedule(final_sparsity, total_rounds, total_rounds - fine_tune_rounds)
    return _compose(task, "prune", schedule=schedule, client_optimizer=client_optimizer,
                    server_optimizer=server_optimizer)


def build_random(task: ModelTask, schedule: schedules.SparsitySchedule, *, seed: int = 0,
                 client_optimizer=None, server_optimizer=None):
    """Random: FedSparsify-Global's schedule, positions pruned in one fixed `seed`ed random order."""
    return _compose(task, "random", schedule=schedule, seed=seed, client_optimizer=client_optimizer,
                    server_optimizer=server_optimizer)


def build_fixed_mask(task: ModelTask, initial_weights: tff.learning.models.ModelWeights, *,
                     client_optimizer=None, server_optimizer=None):
    """Trains within the masks of `initial_weights` for the whole run (SNIP, GraSP: masks computed
    before training, see `tff_sparsify.saliency`). The kernels are masked at the start."""
    return _compose(task, "keep", initial_weights=_masked(task, initial_weights),
                    client_optimizer=client_optimizer, server_optimizer=server_optimizer)


def build_prune_fl(task: ModelTask, initial_weights: tff.learning.models.ModelWeights, final_sparsity: float,
                   *, readjust_every: int = 50, client_optimizer=None, server_optimizer=None):
    """PruneFL (Jiang et al., 2022) at the fixed sparsity `final_sparsity`: starts from the masks of
    `initial_weights` (the kernels are masked at the start; `experiment.initial_weights` learns them
    at one client) and every `readjust_every` rounds keeps the (1 - s_f) N positions with the
    highest aggregated squared dense gradient per unit of cost (`ModelTask.kernel_costs`), pruned
    positions included (regrowth). Adaptive model-size selection is not implemented."""
    readjustment = Readjustment(final_sparsity, readjust_every, task.kernel_costs)
    return _compose(task, "readjust", initial_weights=_masked(task, initial_weights), readjustment=readjustment,
                    client_optimizer=client_optimizer, server_optimizer=server_optimizer)


def _masked(task: ModelTask, weights: tff.learning.models.ModelWeights) -> tff.learning.models.ModelWeights:
    """`weights` with each kernel multiplied by its mask."""
    masks = task.layout.masks(weights.non_trainable)
    kernels = [np.asarray(k) * np.asarray(m) for k, m in zip(task.layout.kernels(weights.trainable), masks)]
    return tff.learning.models.ModelWeights(
        trainable=task.layout.replace_kernels(list(weights.trainable), kernels),
        non_trainable=list(weights.non_trainable),
    )
