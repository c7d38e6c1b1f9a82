"""Client datasets built inside TFF's worker equal the ones served from Python."""
import os

import numpy as np
import pytest

from tff_sparsify import data, learning, models
from tff_sparsify.core import schedules
from tff_sparsify.learning import worker_data
from tff_sparsify.algorithms import fedsparsify_global


@pytest.fixture(scope="module")
def federated():
    return data.federate(data.load_dataset("digits"), 3, batch_size=16, seed=5)


def test_sources_name_each_clients_file_and_round_seed(federated):
    with worker_data.WorkerClientData(federated) as client_data:
        sources = client_data.sources([2, 0], round_num=7)
        assert [os.path.basename(s["path"]) for s in sources] == ["client_2.tensor", "client_0.tensor"]
        assert all(os.path.isfile(s["path"]) for s in sources)
        np.testing.assert_array_equal(sources[0]["seed"], federated.shuffle_seed(2, 7))
        assert sources[0]["seed"].dtype == np.int64 and sources[0]["seed"].shape == (2,)
        assert not np.array_equal(sources[0]["seed"], federated.shuffle_seed(2, 8))
    assert not os.path.exists(sources[0]["path"])  # The files go with the context.


def test_a_process_with_worker_datasets_trains_exactly_as_with_python_datasets(federated):
    task = learning.ModelTask(lambda: models.build_model("fc", (8, 8, 1), 10), federated.element_spec)
    process = fedsparsify_global.build(task, schedules.SparsitySchedule(0.5, 2))
    with worker_data.WorkerClientData(federated) as client_data:
        composed = client_data.compose(process, epochs=2)
        direct_state, worker_state = process.initialize(), composed.initialize()
        for round_num in (1, 2):
            direct = process.next(direct_state, federated.client_datasets(epochs=2, round_num=round_num))
            worker = composed.next(worker_state, client_data.sources(range(3), round_num))
            direct_state, worker_state = direct.state, worker.state
            assert worker.metrics["client_work"]["train"] == direct.metrics["client_work"]["train"]
            assert worker.metrics["client_work"]["train"]["num_examples"] == 2 * len(federated.dataset.y_train)
    for a, b in zip(process.get_model_weights(direct_state).trainable, composed.get_model_weights(worker_state).trainable):
        np.testing.assert_array_equal(a, b)


def test_float_images_are_read_back_as_they_were_written():
    digits = data.load_dataset("digits")
    floats = data.Dataset("digits", digits.x_train.astype("float32"), digits.y_train, digits.x_test,
                          digits.y_test, digits.spec)
    federated = data.federate(floats, 2, batch_size=64, seed=1)
    with worker_data.WorkerClientData(federated) as client_data:
        built = client_data.dataset_computation(epochs=1)(client_data.sources([1], round_num=3)[0])
        expected = federated.client_dataset(1, round_num=3)
        for got, want in zip(built, expected, strict=True):
            np.testing.assert_array_equal(got["x"], want["x"])
            np.testing.assert_array_equal(got["y"], want["y"])
