"""Training FLOPs and on-device memory (FedTiny's measures, `learning.client_work`) on real one-round
processes of the digits FC model, whose kernels cost one multiply-add per weight per example, so
per example dense training is 3 x 2 x 25,856 FLOPs and a masked pass 2 x nnz."""
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_federated as tff

from tff_sparsify import learning, models
from tff_sparsify.core import metrics, pruning

KERNEL_WEIGHTS = 64 * 128 + 128 * 128 + 128 * 10  # 25,856.
TRAINABLE = KERNEL_WEIGHTS + 128 + 128 + 10


def _one_round(task, federated, weights, **blocks):
    process = learning.compose(task, initial_weights=weights, **blocks)
    state = process.set_model_weights(process.initialize(), weights)
    return process.next(state, federated.client_datasets()).metrics["client_work"]


@pytest.fixture(scope="module")
def sparse_weights(task):
    tf.keras.utils.set_random_seed(0)
    model = task.wrapped_keras_model()
    masks = pruning.magnitude_masks(models.prunable_weights(model), 0.9)
    from tff_sparsify.core import saliency

    return saliency.model_weights_with_masks(model, masks), sum(int(np.sum(m)) for m in masks)


def test_dense_training_costs_exactly_dense_flops_and_memory(task, federated):
    tf.keras.utils.set_random_seed(0)
    weights = models.initial_model_weights(task.wrapped_keras_model())
    work = _one_round(task, federated, weights)
    examples = sum(len(i) for i in federated.partition.client_indices)
    assert work["compute"]["train_flops"] == work["compute"]["dense_train_flops"] == examples * 6 * KERNEL_WEIGHTS
    assert work["compute"]["dense_memory_bytes"] == 3 * 4 * 2 * TRAINABLE  # 3 clients, weights + gradients.
    # The zero-initialized biases are empty coordinate lists (0 bytes), the kernels dense.
    assert work["compute"]["memory_bytes"] == 3 * 2 * 4 * KERNEL_WEIGHTS


def test_masked_training_costs_three_passes_at_the_masks(task, federated, sparse_weights):
    weights, kept = sparse_weights
    work = _one_round(task, federated, weights)
    examples = sum(len(i) for i in federated.partition.client_indices)
    assert work["compute"]["train_flops"] == examples * 6 * kept
    model_bytes = int(metrics.encoded_bytes(learning.masked(task, weights).trainable))
    assert work["compute"]["memory_bytes"] == 3 * 2 * model_bytes


def test_prunefl_adds_dense_weight_gradients_and_their_buffers(task, federated, sparse_weights):
    weights, kept = sparse_weights
    work = _one_round(task, federated, weights, hooks=learning.ClientHooks(reports=(learning.SquaredGradients(1),)))
    examples = sum(len(i) for i in federated.partition.client_indices)
    assert work["compute"]["train_flops"] == examples * (6 * kept + 2 * (KERNEL_WEIGHTS - kept))
    model_bytes = int(metrics.encoded_bytes(learning.masked(task, weights).trainable))
    assert work["compute"]["memory_bytes"] == 3 * (2 * model_bytes + 2 * 4 * KERNEL_WEIGHTS)
    # Readjusting every round: each client uploads its importances, one float32 per kernel weight.
    assert work["communication"]["report_params"] == 3 * KERNEL_WEIGHTS
    model_params = work["communication"]["upload_params"] - work["communication"]["report_params"]
    assert model_params == work["communication"]["download_params"]


def test_momentum_keeps_one_slot_per_kept_weight(task, federated, sparse_weights):
    weights, kept = sparse_weights
    plain = _one_round(task, federated, weights)
    momentum = _one_round(task, federated, weights, client_optimizer=tff.learning.optimizers.build_sgdm(0.02, 0.9))
    kept_params = kept + 128 + 128 + 10
    assert momentum["compute"]["memory_bytes"] - plain["compute"]["memory_bytes"] == 3 * 4 * kept_params
    assert momentum["compute"]["dense_memory_bytes"] == 3 * 4 * 3 * TRAINABLE


def test_activation_bytes_count_every_layers_output():
    model = models.build_model("fc", (8, 8, 1), 10)
    assert models.activation_bytes(model, 32) == 4 * 32 * (64 + 128 + 128 + 10)
