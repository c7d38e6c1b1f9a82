"""The clients' BatchNorm statistics at given weights (`learning.batch_norm`), on a hand-computed case:
a BatchNorm layer directly on 2-feature inputs, so its batch statistics are the inputs' own."""
import collections

import numpy as np
import pytest
import tensorflow as tf

from tff_sparsify import learning, models
from tff_sparsify.learning import abns, batch_norm

SPEC = collections.OrderedDict(x=tf.TensorSpec([None, 2], tf.float32), y=tf.TensorSpec([None], tf.int32))


def bn_first_model():
    return tf.keras.Sequential([tf.keras.layers.Input([2]), tf.keras.layers.BatchNormalization(momentum=0.5),
                                tf.keras.layers.Dense(2)])


def client(points):
    x = np.float32(points)
    return tf.data.Dataset.from_tensor_slices(collections.OrderedDict(x=x, y=np.zeros(len(x), np.int32))).batch(2)


@pytest.fixture(scope="module")
def task():
    return learning.ModelTask(bn_first_model, SPEC)


def test_statistics_are_the_example_weighted_mean_of_every_batchs_over_the_clients(task):
    # Client 1: batches {(0, 0), (2, 4)} (mean (1, 2), variance (1, 4)) and {(4, 2)} (mean (4, 2),
    # variance 0): mean (2, 2), variance (2/3, 8/3) over its 3 examples. Client 2: mean (6, 0),
    # variance 0 over 2. Together: mean (3 (2, 2) + 2 (6, 0)) / 5 = (3.6, 1.2), variance (0.4, 1.6),
    # whatever the starting statistics and the layer's momentum (0.5 here).
    tf.keras.utils.set_random_seed(0)
    weights = models.initial_model_weights(task.wrapped_keras_model())
    clients = [client([[0, 0], [2, 4], [4, 2]]), client([[6, 0], [6, 0]])]
    mean, variance = batch_norm.build_batch_statistics(task)(weights, clients)
    np.testing.assert_allclose(mean, [3.6, 1.2], rtol=1e-6)
    np.testing.assert_allclose(variance, [0.4, 1.6], rtol=1e-6)


def test_a_recalibration_replaces_only_the_statistics_and_counts_its_exchange(task):
    tf.keras.utils.set_random_seed(0)
    weights = models.initial_model_weights(task.wrapped_keras_model())
    diagonal = np.float32([[1, 0], [0, 1]])  # The Dense kernel keeps 2 of its 4 weights.
    pruned = abns._with_masks(task, weights, [diagonal])
    clients = [client([[0, 0], [2, 4], [4, 2]]), client([[6, 0], [6, 0]])]
    result = batch_norm.recalibrate(batch_norm.build_batch_statistics(task), task, pruned, clients)
    mean, variance = task.layout.statistics(result.weights.non_trainable)
    np.testing.assert_allclose(mean, [3.6, 1.2], rtol=1e-6)
    np.testing.assert_allclose(variance, [0.4, 1.6], rtol=1e-6)
    for new, old in zip(result.weights.trainable, pruned.trainable):
        np.testing.assert_array_equal(new, old)
    np.testing.assert_array_equal(task.layout.masks(result.weights.non_trainable)[0], diagonal)
    # Each of the 2 clients receives the kept weights (BatchNorm gamma 2, beta 2, kernel 2 of 4, bias 2)
    # and the 4 statistics, and returns the 4 statistics and its count.
    assert (result.cost.download_params, result.cost.upload_params) == (2 * (8 + 4), 2 * (4 + 1))
    # Cheapest encodings of what is sent: gamma dense 8 bytes, beta and bias and the moving mean all
    # zero (0), the kernel as a bitmap (1 + 2 x 4), the moving variance (ones) dense 8; 4-byte replies.
    assert (result.cost.download_bytes, result.cost.upload_bytes) == (2 * (8 + 9 + 8), 2 * 4 * 5)
