"""BatchNorm moving statistics are federated (README, Measures, "BatchNorm statistics"): every client
sends the statistics it holds after local training and the global model takes their example-weighted
mean; the optional final recalibration (`learning.batch_norm`) replaces them with the clients' exact
batch statistics at the final weights, on a hand-computed case."""
import collections

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_federated as tff

from tff_sparsify import experiment, export, learning, models
from tff_sparsify.core import schedules
from tff_sparsify.learning import MajorityVoteFactory, abns, batch_norm
from tff_sparsify.algorithms import fedavg, fedprox, fedsparsify_global, fedsparsify_local, random_pruning

SCHEDULE = schedules.SparsitySchedule(final_sparsity=0.5, total_rounds=2)
BUILDERS = {
    "fedavg": lambda task: fedavg.build(task),
    "fedprox": lambda task: fedprox.build(task, 0.001),
    "fedsparsify_global": lambda task: fedsparsify_global.build(task, SCHEDULE),
    "fedsparsify_local": lambda task: fedsparsify_local.build(task, SCHEDULE),
    "random": lambda task: random_pruning.build(task, SCHEDULE),
}


def bn_first_model():
    """BatchNorm straight on the 2 inputs (momentum 0.99), then a prunable dense layer."""
    return tf.keras.Sequential(
        [tf.keras.layers.Input((2,)), tf.keras.layers.BatchNormalization(), tf.keras.layers.Dense(3)]
    )


def constant_client(value: float, batches: int) -> tf.data.Dataset:
    """`batches` batches of 2 examples whose 2 features all equal `value` (batch variance 0)."""
    return tf.data.Dataset.from_tensor_slices(
        collections.OrderedDict(x=np.full((2 * batches, 2), value, np.float32), y=np.zeros(2 * batches, np.int64))
    ).batch(2)


@pytest.fixture(scope="module")
def bn_task():
    spec = collections.OrderedDict(
        x=tf.TensorSpec([None, 2], tf.float32), y=tf.TensorSpec([None], tf.int64)
    )
    return learning.ModelTask(bn_first_model, spec)


def test_layout_finds_the_moving_mean_and_variance(bn_task):
    weights = models.initial_model_weights(bn_task.wrapped_keras_model())
    statistics = bn_task.layout.statistics(weights.non_trainable)
    np.testing.assert_array_equal(np.stack(statistics), [[0.0, 0.0], [1.0, 1.0]])  # mean, variance
    assert learning.ModelTask(lambda: models.build_model("fc", (8, 8, 1), 10), None).layout.statistic_indices == ()


@pytest.mark.parametrize("algorithm", BUILDERS)
def test_two_clients_statistics_give_their_example_weighted_mean(bn_task, algorithm):
    # Client A: 1 batch of 2 inputs equal to 2: moving mean 0.99 * 0 + 0.01 * 2 = 0.02, variance
    # 0.99 * 1 + 0.01 * 0 = 0.99. Client B: 2 batches of 4s: mean 0.04, then 0.99 * 0.04 + 0.04 =
    # 0.0796; variance 0.99, then 0.9801. Weighted by 2 and 4 examples: mean (2 * 0.02 + 4 * 0.0796) / 6
    # = 0.059733..., variance (2 * 0.99 + 4 * 0.9801) / 6 = 0.9834.
    process = BUILDERS[algorithm](bn_task)
    state = process.initialize()
    state = process.next(state, [constant_client(2.0, 1), constant_client(4.0, 2)]).state
    mean, variance = bn_task.layout.statistics(process.get_model_weights(state).non_trainable)
    np.testing.assert_allclose(mean, [0.3584 / 6] * 2, rtol=1e-5)
    np.testing.assert_allclose(variance, [0.9834] * 2, rtol=1e-5)


def test_vote_merges_statistics_by_example_weighted_mean_without_voting():
    value_type = tff.types.to_type(
        collections.OrderedDict(
            weights=[(np.float32, [2])], masks=[(np.float32, [2])], statistics=[(np.float32, [2])]
        )
    )
    process = MajorityVoteFactory().create(value_type, tff.types.TensorType(np.float32))

    def client(statistics):  # A client that prunes both weights: its statistics count all the same.
        zeros = [np.zeros(2, np.float32)]
        return collections.OrderedDict(weights=zeros, masks=zeros, statistics=[np.array(statistics, np.float32)])

    output = process.next(process.initialize(), [client([1.0, 4.0]), client([4.0, 1.0])], [1.0, 2.0])
    np.testing.assert_allclose(output.result["statistics"][0], [3.0, 2.0])  # (1 + 8) / 3, (4 + 2) / 3
    np.testing.assert_array_equal(output.result["masks"][0], [0.0, 0.0])


@pytest.fixture(scope="module")
def cnn_run(tiny_fashion_mnist, tmp_path_factory):
    """The paper's CNN (BatchNorm) trained by FedAvg for 2 rounds on tiny Fashion-MNIST-shaped data."""
    config = experiment.ExperimentConfig(
        algorithm="fedavg", dataset="fashion_mnist", data_path=tiny_fashion_mnist, model="cnn",
        partition="label_skew", classes_per_client=2, num_clients=2, rounds=2, local_epochs=1,
        batch_size=16, train_examples_per_class=4, client_learning_rate=0.01,
    )
    output_dir = str(tmp_path_factory.mktemp("cnn"))
    summary = experiment.run(config, output_dir, progress=False)
    return output_dir, summary


def test_statistics_leave_zero_and_one_and_reach_the_saved_model(cnn_run):
    output_dir, summary = cnn_run
    model = tf.keras.models.load_model(f"{output_dir}/final_model.keras", compile=False)
    norms = [layer for layer in model.layers if isinstance(layer, tf.keras.layers.BatchNormalization)]
    assert len(norms) == 2
    for layer in norms:
        assert np.all(layer.moving_mean.numpy() != 0.0)
        assert np.all(layer.moving_variance.numpy() != 1.0)
    # Parameters as counted: 1,609,930 trainable (on 28x28x1 inputs: 1,625,866) + 384 statistics;
    # dense FedAvg sends each of them once each way to each client, every round.
    params = sum(int(np.prod(w.shape)) for w in model.trainable_weights) + 384
    assert summary["communication"]["params"] == summary["communication"]["dense_fedavg_params"] == 2 * 2 * 2 * params


def test_bn_model_tflite_agrees_with_keras(cnn_run, tmp_path):
    output_dir, _ = cnn_run
    x = np.random.default_rng(0).random((16, 28, 28, 1)).astype(np.float32)
    report = export.export_run(output_dir, str(tmp_path), test_x=x)
    for parity in report["parity"].values():
        assert parity["agreement"] == 1.0
        assert parity["max_abs_diff"] < 1e-4


def points_client(points) -> tf.data.Dataset:
    """The examples `points` (2 features each), in batches of 2."""
    x = np.float32(points)
    return tf.data.Dataset.from_tensor_slices(collections.OrderedDict(x=x, y=np.zeros(len(x), np.int64))).batch(2)


# Client 1: batches {(0, 0), (2, 4)} (mean (1, 2), variance (1, 4)) and {(4, 2)} (mean (4, 2),
# variance 0): mean (2, 2), variance (2/3, 8/3) over its 3 examples. Client 2: mean (6, 0), variance 0
# over 2. Together: mean (3 (2, 2) + 2 (6, 0)) / 5 = (3.6, 1.2), variance (0.4, 1.6), whatever the
# starting statistics and the layer's momentum (0.99).
RECALIBRATION_CLIENTS = ([[0, 0], [2, 4], [4, 2]], [[6, 0], [6, 0]])


def test_recalibrated_statistics_are_the_example_weighted_mean_of_every_batchs(bn_task):
    tf.keras.utils.set_random_seed(0)
    weights = models.initial_model_weights(bn_task.wrapped_keras_model())
    clients = [points_client(c) for c in RECALIBRATION_CLIENTS]
    mean, variance = batch_norm.build_batch_statistics(bn_task)(weights, clients)
    np.testing.assert_allclose(mean, [3.6, 1.2], rtol=1e-6)
    np.testing.assert_allclose(variance, [0.4, 1.6], rtol=1e-6)


def test_a_recalibration_replaces_only_the_statistics_and_counts_its_exchange(bn_task):
    tf.keras.utils.set_random_seed(0)
    weights = models.initial_model_weights(bn_task.wrapped_keras_model())
    kept = np.float32([[1, 0, 0], [0, 1, 0]])  # The Dense kernel keeps 2 of its 6 weights.
    pruned = abns._with_masks(bn_task, weights, [kept])
    clients = [points_client(c) for c in RECALIBRATION_CLIENTS]
    result = batch_norm.recalibrate(batch_norm.build_batch_statistics(bn_task), bn_task, pruned, clients)
    mean, variance = bn_task.layout.statistics(result.weights.non_trainable)
    np.testing.assert_allclose(mean, [3.6, 1.2], rtol=1e-6)
    np.testing.assert_allclose(variance, [0.4, 1.6], rtol=1e-6)
    for new, old in zip(result.weights.trainable, pruned.trainable):
        np.testing.assert_array_equal(new, old)
    np.testing.assert_array_equal(bn_task.layout.masks(result.weights.non_trainable)[0], kept)
    # Each of the 2 clients receives the kept weights (BatchNorm gamma 2, beta 2, kernel 2 of 6, bias 3)
    # and the 4 statistics, and returns the 4 statistics and its count.
    assert (result.cost.download_params, result.cost.upload_params) == (2 * (9 + 4), 2 * (4 + 1))
    # Cheapest encodings of what is sent: gamma dense 8 bytes, beta and bias and the moving mean all
    # zero (0), the kernel as a bitmap (1 + 2 x 4), the moving variance (ones) dense 8; 4-byte replies.
    assert (result.cost.download_bytes, result.cost.upload_bytes) == (2 * (8 + 9 + 8), 2 * 4 * 5)
