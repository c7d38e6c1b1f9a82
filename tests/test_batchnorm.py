"""BatchNorm moving statistics are federated (README, Measures, "BatchNorm statistics"): every client
sends the statistics it holds after local training and the global model takes their example-weighted
mean."""
import collections

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_federated as tff

from tff_sparsify import experiment, export, learning, models
from tff_sparsify.core import schedules
from tff_sparsify.learning import MajorityVoteFactory
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
