"""PruneFL (fixed density 1 - s_f): masks readjusted every R rounds by squared gradient over cost."""
import collections
import math

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_federated as tff

from tff_sparsify import algorithms, experiment, learning, models
from tff_sparsify.core import pruning, saliency
from tff_sparsify.learning import finalizers
from tff_sparsify.algorithms import prunefl

from conftest import TINY_CONFIG

SPARSITY = 0.8


def flat(tensors):
    return np.concatenate([np.ravel(t) for t in tensors])


def run(process, federated, rounds, initial_weights):
    state = process.set_model_weights(process.initialize(), initial_weights)
    history = []
    for round_num in range(rounds):
        state = process.next(state, federated.client_datasets(round_num=round_num)).state
        history.append(process.get_model_weights(state))
    return history


@pytest.fixture(scope="module")
def masked_initial_weights(task):
    tf.keras.utils.set_random_seed(5)
    model = task.wrapped_keras_model()
    return saliency.model_weights_with_masks(model, pruning.magnitude_masks(models.prunable_weights(model), SPARSITY))


def test_masks_change_only_at_readjustments_to_exactly_s_f_and_can_regrow(task, federated, masked_initial_weights):
    process = prunefl.build(task, masked_initial_weights, SPARSITY, readjust_every=2)
    history = run(process, federated, 4, masked_initial_weights)
    initial = flat(task.layout.masks(masked_initial_weights.non_trainable))
    masks = [flat(task.layout.masks(w.non_trainable)) for w in history]
    k = math.floor(SPARSITY * initial.size + 0.5)
    np.testing.assert_array_equal(masks[0], initial)  # Round 1: no readjustment.
    np.testing.assert_array_equal(masks[2], masks[1])  # Round 3: none either.
    for readjusted in (masks[1], masks[3]):  # Rounds 2 and 4.
        assert np.sum(readjusted == 0) == k
    assert np.any((initial == 0) & (masks[1] == 1))  # Regrowth.
    for weights, mask in zip(history, masks):
        kernels = flat(task.layout.kernels(weights.trainable))
        assert np.all(kernels[mask == 0] == 0)


def _constant_computation(value):
    @tff.tensorflow.computation
    def constant():
        return tf.nest.map_structure(tf.constant, value)

    return constant


def test_readjustment_keeps_the_top_positions_by_squared_gradient_over_cost():
    # A tiny "model": kernel (3, 2), bias (2,), kernel (2, 2); masks for the two kernels.
    layout = learning.WeightsLayout(kernel_indices=(0, 2), mask_indices=(0, 1))
    rng = np.random.default_rng(0)
    kernels = [rng.normal(size=(3, 2)).astype(np.float32), rng.normal(size=(2, 2)).astype(np.float32)]
    masks = [np.array([[1, 0], [1, 1], [0, 1]], np.float32), np.array([[1, 1], [0, 1]], np.float32)]
    kernels = [k * m for k, m in zip(kernels, masks)]
    weights = tff.learning.models.ModelWeights(
        trainable=[kernels[0], np.ones(2, np.float32), kernels[1]], non_trainable=masks
    )
    # Importances (squared / cost): [[1, 6], [2, 3], [5, 0.25]] and [[0.5, 2.5], [3.5, 1.5]]; the top
    # half includes the three pruned positions.
    squared = [np.array([[1, 6], [2, 3], [5, 0.25]], np.float32), np.array([[2, 10], [14, 6]], np.float32)]
    update = collections.OrderedDict(
        weights=[np.zeros_like(t) for t in weights.trainable], squared_gradients=squared
    )
    costs = (1.0, 4.0)
    readjustment = learning.Readjust(sparsity=0.5, every=2, kernel_costs=costs)
    process = finalizers.build_masking_finalizer(
        tff.learning.optimizers.build_sgdm(learning_rate=1.0),
        _constant_computation(weights).type_signature.result,
        _constant_computation(update).type_signature.result,
        layout, readjustment,
    )
    state = process.initialize()
    first = process.next(state, weights, update)  # Round 1: masks kept.
    for got, expected in zip(first.result.non_trainable, masks):
        np.testing.assert_array_equal(got, expected)
    second = process.next(first.state, first.result, update)  # Round 2: readjusted.

    importance = flat([s / c for s, c in zip(squared, costs)])
    expected = np.zeros(importance.size, np.float32)
    expected[np.argsort(-importance)[: importance.size // 2]] = 1.0
    np.testing.assert_array_equal(flat(second.result.non_trainable), expected)
    assert np.all(expected[flat(masks) == 0] == 1)  # Every pruned position regrows...
    np.testing.assert_array_equal(  # ...which restarts from its current value, 0.
        flat(layout.kernels(second.result.trainable)), flat(kernels) * expected
    )
    # The measured sparsity counts zero kernels: the regrown weights are still 0 (5 pruned + 3 regrown).
    assert float(second.measurements["sparsity"]) == pytest.approx(0.8)


def test_kernel_costs_are_output_positions_per_weight():
    task = learning.ModelTask(lambda: models.build_model("cnn", (32, 32, 3), 10), None)
    assert task.kernel_costs == (1024.0,) * 2 + (256.0,) * 2 + (64.0,) * 2 + (1.0,) * 2


def test_readjust_every_must_be_at_least_one():
    with pytest.raises(ValueError, match="readjust_every"):
        experiment.ExperimentConfig(algorithm="prunefl", options={"readjust_every": 0})


def test_experiment_runs_prunefl_from_a_mask_learned_at_one_client(task, federated, tmp_path):
    config = experiment.ExperimentConfig.from_dict({**TINY_CONFIG, "rounds": 2, "algorithm": "prunefl",
                                                    "readjust_every": 1})
    tf.keras.utils.set_random_seed(config.seed)
    initial = algorithms.get("prunefl").initial_weights(algorithms.Setup(config, task, federated))
    masks = flat(task.layout.masks(initial.non_trainable))
    assert np.sum(masks == 0) == math.floor(SPARSITY * masks.size + 0.5)
    np.testing.assert_array_equal(flat(task.layout.kernels(initial.trainable)) == 0, masks == 0)

    summary = experiment.run(config, str(tmp_path), progress=False)
    assert summary["completed"] and summary["rounds_completed"] == 2
    # Zero kernels: s_f, plus the regrown positions still at 0 right after the round-2 readjustment.
    assert SPARSITY - 1e-4 <= summary["final_sparsity"] < 1.0
