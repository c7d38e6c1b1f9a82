"""FedTiny's adaptive BatchNorm selection on hand-computed cases: two clients whose every example is the
same point, so Keras's moving mean after s steps of momentum m from 0 is mu (1 - m^s) and the moving
variance from 1 is m^s (the batch variance is 0)."""
import collections

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_federated as tff

from tff_sparsify import learning, models
from tff_sparsify.learning import abns

SPEC = collections.OrderedDict(x=tf.TensorSpec([None, 2], tf.float32), y=tf.TensorSpec([None], tf.int32))


def bn_first_model():
    return tf.keras.Sequential([tf.keras.layers.Input([2]), tf.keras.layers.BatchNormalization(momentum=0.5),
                                tf.keras.layers.Dense(2)])


def client(point, count, label=0):
    x = np.tile(np.float32(point), (count, 1))
    return tf.data.Dataset.from_tensor_slices(collections.OrderedDict(x=x, y=np.full(count, label, np.int32))).batch(2)


@pytest.fixture(scope="module")
def task():
    return learning.ModelTask(bn_first_model, SPEC)


@pytest.fixture(scope="module")
def weights(task):
    tf.keras.utils.set_random_seed(0)
    return models.initial_model_weights(task.wrapped_keras_model())


def test_recalibration_is_the_example_weighted_mean_of_the_clients_statistics(task, weights):
    clients = [client([1, 3], 2), client([5, -1], 6)]  # 1 and 3 batches per epoch.
    mean, variance = abns.build_recalibration(task, epochs=2)(weights, clients)
    first, second = 1 - 0.5 ** 2, 1 - 0.5 ** 6  # 2 and 6 steps in 2 epochs.
    np.testing.assert_allclose(mean, (2 * first * np.float32([1, 3]) + 6 * second * np.float32([5, -1])) / 8, rtol=1e-6)
    np.testing.assert_allclose(variance, (2 * 0.5 ** 2 + 6 * 0.5 ** 6) / 8 * np.ones(2), rtol=1e-5)


def test_evaluation_sums_the_clients_losses(task, weights):
    clients = [client([1, 3], 2, label=1), client([5, -1], 6)]
    loss, examples = abns.build_evaluation(task)(weights, clients)
    plain = task.sparse_keras_model(weights)  # The same weights in a plain Keras model.
    per_example = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction="none")
    expected = sum(float(tf.reduce_sum(per_example(b["y"], plain(b["x"], training=False)))) for c in clients for b in c)
    assert float(examples) == 8 and float(loss) == pytest.approx(expected, rel=1e-5)


def test_selection_takes_the_lowest_validation_loss(task, weights):
    clients = [client([1, 3], 2), client([5, -1], 6)]
    kernel = task.layout.kernels(weights.trainable)[0]
    candidates = [[np.ones_like(kernel)], [np.zeros_like(kernel)], [np.float32([[1, 0], [0, 1]])]]
    selection = abns.select_candidate(task, weights, candidates, clients, epochs=2)
    assert selection.index == int(np.argmin(selection.losses)) and len(selection.losses) == 3
    chosen = task.layout.masks(selection.weights.non_trainable)[0]
    np.testing.assert_array_equal(chosen, candidates[selection.index][0])
    np.testing.assert_array_equal(task.layout.kernels(selection.weights.trainable)[0], np.asarray(kernel) * chosen)


def test_recalibration_changes_the_choice_where_the_servers_statistics_mislead(task):
    # Feature 0 is 11 for class 0 and 9 for class 1 (batches of one of each); feature 1 is 0. With the
    # server's statistics (mean 0, variance 1) BatchNorm passes x through, so a logit x0 gives the
    # class-1 examples a loss of about 9: keeping nothing (loss ln 2) looks better. Recalibrated
    # (mean -> 10, variance -> 1), x0 becomes +-1 and the same weight separates the classes (loss
    # log(1 + e^-1) = 0.31 < ln 2).
    x = np.float32([[11, 0], [9, 0]] * 4)
    y = np.int32([0, 1] * 4)
    clients = [tf.data.Dataset.from_tensor_slices(collections.OrderedDict(x=x, y=y)).batch(2)] * 2
    tf.keras.utils.set_random_seed(0)
    weights = models.initial_model_weights(task.wrapped_keras_model())
    keep_x0 = np.float32([[1, 0], [0, 0]])  # The Dense kernel: logit 0 = x0.
    weights = tff.learning.models.ModelWeights(
        trainable=task.layout.replace_kernels(list(weights.trainable), [keep_x0]), non_trainable=weights.non_trainable)
    candidates = [[np.zeros_like(keep_x0)], [keep_x0]]
    plain = abns.select_candidate(task, weights, candidates, clients, recalibrate=False)
    assert plain.index == 0 and plain.losses[0] == pytest.approx(np.log(2)) and plain.losses[1] > 4
    adaptive = abns.select_candidate(task, weights, candidates, clients, epochs=10)
    assert adaptive.index == 1 and adaptive.losses[0] == pytest.approx(np.log(2))
    assert adaptive.losses[1] == pytest.approx(np.log1p(np.exp(-1)), abs=0.02)
    mean, variance = task.layout.statistics(adaptive.weights.non_trainable)[:2]
    np.testing.assert_allclose(mean, [10 * (1 - 0.5 ** 40), 0], rtol=1e-5)
    np.testing.assert_allclose(variance[0], 1, rtol=1e-2)
