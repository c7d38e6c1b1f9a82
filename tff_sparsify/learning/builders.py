"""Builders of FedSparsify and FedAvg `tff.learning.templates.LearningProcess`es.

Each composes, with `tff.learning.templates.compose_learning_process`: TFF's broadcast of the model
weights (masks included), the masked client work, an aggregator, and the masking finalizer.

| builder                  | client work          | aggregator                  | finalizer masks |
|--------------------------|----------------------|-----------------------------|-----------------|
| build_fed_avg            | train within masks   | example-weighted mean       | keep            |
| build_fedsparsify_global | train within masks   | example-weighted mean       | prune to s(t)   |
| build_fedsparsify_local  | train, prune to s(t) | MajorityVoteFactory (eq. 2) | voted           |
"""
from __future__ import annotations

import tensorflow_federated as tff

from tff_sparsify import schedules
from tff_sparsify.aggregators import MajorityVoteFactory
from tff_sparsify.learning.client_work import build_masked_client_work
from tff_sparsify.learning.finalizers import build_masking_finalizer
from tff_sparsify.learning.task import ModelTask

# The paper's FashionMNIST client optimizer (SGD, learning rate 0.02) and plain server averaging.
DEFAULT_CLIENT_LEARNING_RATE = 0.02


def _default_client_optimizer():
    return tff.learning.optimizers.build_sgdm(learning_rate=DEFAULT_CLIENT_LEARNING_RATE)


def _default_server_optimizer():
    return tff.learning.optimizers.build_sgdm(learning_rate=1.0)


def _compose(
    task: ModelTask,
    client_optimizer,
    server_optimizer,
    aggregator_factory,
    mask_source: str,
    server_schedule=None,
    local_schedule=None,
    block_size=(1, 1),
) -> tff.learning.templates.LearningProcess:
    initial_weights_fn = task.initial_model_weights_fn()
    weights_type = initial_weights_fn.type_signature.result
    client_work = build_masked_client_work(
        task, client_optimizer or _default_client_optimizer(), local_schedule, block_size
    )
    update_type = client_work.next.type_signature.result.result.member.update
    aggregator = aggregator_factory.create(
        update_type, client_work.next.type_signature.result.result.member.update_weight
    )
    finalizer = build_masking_finalizer(
        server_optimizer or _default_server_optimizer(),
        weights_type,
        update_type,
        task.layout,
        mask_source,
        server_schedule,
        block_size,
    )
    return tff.learning.templates.compose_learning_process(
        initial_weights_fn,
        tff.learning.templates.build_broadcast_process(weights_type),
        client_work,
        aggregator,
        finalizer,
    )


def build_fed_avg(task: ModelTask, *, client_optimizer=None, server_optimizer=None):
    """FedAvg (McMahan et al., 2017) through the same machinery; the model stays dense."""
    return _compose(task, client_optimizer, server_optimizer, tff.aggregators.MeanFactory(), "keep")


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
    return _compose(
        task, client_optimizer, server_optimizer, tff.aggregators.MeanFactory(), "prune",
        server_schedule=schedule, block_size=block_size,
    )


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
        task, client_optimizer, server_optimizer,
        MajorityVoteFactory(quorum=quorum, average_over=average_over), "vote",
        local_schedule=schedule, block_size=block_size,
    )
