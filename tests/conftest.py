"""Shared test set-up: quiet TensorFlow logs, and free TFF's worker process after the session."""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pathlib  # noqa: E402

import pytest  # noqa: E402

SHARED_FASHION_MNIST = (
    pathlib.Path(__file__).resolve().parents[2] / "shared" / "data" / "fashion_mnist.npz"
)


@pytest.fixture(scope="session", autouse=True)
def release_tff_runtime():
    """Stops TFF's `worker_binary` when the session ends (it would otherwise outlive pytest)."""
    yield
    from tff_sparsify import compat

    compat.release_tff_runtime()


@pytest.fixture(scope="session")
def fashion_mnist_npz() -> pathlib.Path:
    """Path of the real Fashion-MNIST file shipped beside the project; skips when absent."""
    if not SHARED_FASHION_MNIST.is_file():
        pytest.skip(f"real Fashion-MNIST not found at {SHARED_FASHION_MNIST} (see shared/data/README.md)")
    return SHARED_FASHION_MNIST
