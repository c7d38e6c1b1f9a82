"""Shared test set-up: quiet TensorFlow logs, TFF's runtime as the runner sets it up, and TFF's worker
process freed after the session."""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pathlib  # noqa: E402

import numpy as np  # noqa: E402

import pytest  # noqa: E402

SHARED_FASHION_MNIST = (
    pathlib.Path(__file__).resolve().parents[2] / "shared" / "data" / "fashion_mnist.npz"
)


@pytest.fixture(scope="session", autouse=True)
def tff_runtime():
    """TFF's runtime as `experiment.run` sets it up (tff_sparsify's import leaves TFF alone), for the
    tests that drive processes directly; its `worker_binary` is stopped when the session ends."""
    from tff_sparsify import compat

    compat.configure_tff_runtime()
    yield
    compat.release_tff_runtime()


@pytest.fixture(scope="session")
def fashion_mnist_npz() -> pathlib.Path:
    """Path of the real Fashion-MNIST file shipped beside the project; skips when absent."""
    if not SHARED_FASHION_MNIST.is_file():
        pytest.skip(f"real Fashion-MNIST not found at {SHARED_FASHION_MNIST} (see shared/data/README.md)")
    return SHARED_FASHION_MNIST


@pytest.fixture(scope="session")
def tiny_fashion_mnist(tmp_path_factory):
    """A Fashion-MNIST-shaped .npz: 10 classes x 20 training and 5 test images of 28x28."""
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(10), 20)
    images = (rng.random((200, 28, 28)) * 60 + labels[:, None, None] * 19).astype(np.uint8)
    path = tmp_path_factory.mktemp("data") / "fashion_mnist.npz"
    np.savez(path, x_train=images, y_train=labels, x_test=images[::4], y_test=labels[::4])
    return str(path)


@pytest.fixture(scope="session")
def finished_grid_cells(tiny_fashion_mnist, tmp_path_factory):
    """FedAvg and FedSparsify-Global at 0.9 of the paper grid's FashionMNIST non-IID group, run for 2
    rounds of 1 epoch on `tiny_fashion_mnist`: (runs_dir, their configs)."""
    from tff_sparsify import grid

    runs_dir = str(tmp_path_factory.mktemp("grid"))
    cells = grid.select(
        grid.paper_grid({"fashion_mnist": tiny_fashion_mnist}, rounds=2, local_epochs=1),
        ["fashion_mnist_noniid2/fedavg", "fashion_mnist_noniid2/global_0.9"],
    )
    grid.run_cells(cells, runs_dir, progress=False)
    return runs_dir, cells


@pytest.fixture(scope="session")
def federated():
    """Embedded digits split among 3 clients holding 4 classes each, batches of 64."""
    from tff_sparsify import data

    return data.federate(data.load_dataset("digits"), 3, "label_skew_random", classes_per_client=4, batch_size=64)


@pytest.fixture(scope="session")
def task(federated):
    """The paper's FC model for digits, as a `learning.ModelTask`."""
    from tff_sparsify import learning, models

    dataset = federated.dataset
    return learning.ModelTask(
        lambda: models.build_model("fc", dataset.input_shape, dataset.num_classes), federated.element_spec
    )


# A 3-round FedSparsify-Global run on digits (3 clients, 1 local epoch): seconds, not minutes.
TINY_CONFIG = dict(num_clients=3, rounds=3, local_epochs=1, batch_size=64, final_sparsity=0.8, client_learning_rate=0.1)


@pytest.fixture(scope="session")
def resumed_run(tmp_path_factory):
    """A tiny run interrupted after 2 of its 3 rounds, then resumed: (dir, first, second, rows_seen)."""
    from tff_sparsify import experiment

    config = experiment.ExperimentConfig.from_dict(TINY_CONFIG)
    output_dir = str(tmp_path_factory.mktemp("run"))
    first = experiment.run(config, output_dir, stop_after=2, progress=False)
    rows_seen = []
    second = experiment.run(config, output_dir, progress=False, on_round=rows_seen.append)
    return output_dir, first, second, rows_seen
