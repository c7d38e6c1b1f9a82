"""Composes a masked `tff.learning.templates.LearningProcess` from the building blocks: TFF's
broadcast of the model weights (masks included), the masked client work with an algorithm's
`hooks.ClientHooks`, an aggregator (the example-weighted mean, or FedSparsify-Local's vote), and the
masking finalizer with an algorithm's `mask_updates.MaskUpdate` (`tff.learning.templates.
compose_learning_process`, as TFF composes its own algorithms)."""
from __future__ import annotations

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_sparsify.learning.client_work import build_masked_client_work
from tff_sparsify.learning.finalizers import build_masking_finalizer
from tff_sparsify.learning.hooks import ClientHooks
from tff_sparsify.learning.mask_updates import KeepMasks, MaskUpdate
from tff_sparsify.learning.task import ModelTask

# The paper's FashionMNIST client optimizer (SGD, learning rate 0.02) and plain server averaging.
DEFAULT_CLIENT_LEARNING_RATE = 0.02


def compose(
    task: ModelTask,
    *,
    hooks: ClientHooks = ClientHooks(),
    mask_update: MaskUpdate = KeepMasks(),
    aggregator_factory: tff.aggregators.WeightedAggregationFactory | None = None,
    initial_weights: tff.learning.models.ModelWeights | None = None,
    client_optimizer: tff.learning.optimizers.Optimizer | None = None,
    server_optimizer: tff.learning.optimizers.Optimizer | None = None,
) -> tff.learning.templates.LearningProcess:
    """The learning process of `task` with these blocks. `initial_weights` (their kernels multiplied by
    their masks here) replace the seeded initialization, for masks chosen before training. The
    optimizers default to client SGD at 0.02 and server SGD at 1.0 (plain averaging)."""
    if initial_weights is None:
        initial_weights_fn = task.initial_model_weights_fn()
    else:
        initial_weights_fn = _constant_fn(masked(task, initial_weights))
    weights_type = initial_weights_fn.type_signature.result
    client_work = build_masked_client_work(
        task, client_optimizer or tff.learning.optimizers.build_sgdm(DEFAULT_CLIENT_LEARNING_RATE), hooks
    )
    client_result_type = client_work.next.type_signature.result.result.member
    aggregator = (aggregator_factory or tff.aggregators.MeanFactory()).create(
        client_result_type.update, client_result_type.update_weight
    )
    finalizer = build_masking_finalizer(
        server_optimizer or tff.learning.optimizers.build_sgdm(learning_rate=1.0), weights_type,
        client_result_type.update, task.layout, mask_update,
    )
    return tff.learning.templates.compose_learning_process(
        initial_weights_fn,
        tff.learning.templates.build_broadcast_process(weights_type),
        client_work,
        aggregator,
        finalizer,
    )


def masked(task: ModelTask, weights: tff.learning.models.ModelWeights) -> tff.learning.models.ModelWeights:
    """`weights` with each kernel multiplied by its mask."""
    masks = task.layout.masks(weights.non_trainable)
    kernels = [np.asarray(k) * np.asarray(m) for k, m in zip(task.layout.kernels(weights.trainable), masks)]
    return tff.learning.models.ModelWeights(
        trainable=task.layout.replace_kernels(list(weights.trainable), kernels),
        non_trainable=list(weights.non_trainable),
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
