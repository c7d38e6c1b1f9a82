import numpy as np
import pytest
import tensorflow_datasets as tfds

from tff_sparsify import data


@pytest.fixture(scope="module")
def digits():
    return data.load_dataset("digits")


def write_npz(path, train=40, test=10, shape=(28, 28), classes=10):
    rng = np.random.default_rng(0)
    arrays = dict(
        x_train=rng.integers(0, 256, (train, *shape), dtype=np.uint8),
        y_train=np.arange(train) % classes,
        x_test=rng.integers(0, 256, (test, *shape), dtype=np.uint8),
        y_test=np.arange(test) % classes,
    )
    np.savez(path, **arrays)
    return arrays


def test_digits_is_embedded_and_split_deterministically(digits):
    assert digits.input_shape == (8, 8, 1) and digits.num_classes == 10
    assert len(digits.x_train) + len(digits.x_test) == 1797
    assert 300 < len(digits.x_test) < 420
    assert digits.x_train.dtype == np.uint8 and digits.x_train.max() == 16
    np.testing.assert_array_equal(digits.y_test, data.load_dataset("digits").y_test)


def test_npz_in_keras_layout_gets_a_channel_axis(tmp_path):
    arrays = write_npz(tmp_path / "fm.npz")
    ds = data.load_dataset("fashion_mnist", path=str(tmp_path / "fm.npz"))
    assert ds.x_train.shape == (40, 28, 28, 1) and ds.x_test.shape == (10, 28, 28, 1)
    np.testing.assert_array_equal(ds.x_train[..., 0], arrays["x_train"])
    np.testing.assert_array_equal(ds.y_test, arrays["y_test"])


def test_real_fashion_mnist_npz(fashion_mnist_npz):
    ds = data.load_dataset("fashion_mnist", path=str(fashion_mnist_npz))
    assert ds.x_train.shape == (60000, 28, 28, 1) and ds.x_test.shape == (10000, 28, 28, 1)
    np.testing.assert_array_equal(np.bincount(ds.y_train), [6000] * 10)
    np.testing.assert_array_equal(np.bincount(ds.y_test), [1000] * 10)


@pytest.mark.parametrize(
    "name,shape,classes",
    [("fashion_mnist", (28, 28, 1), 10), ("cifar10", (32, 32, 3), 10), ("cifar100", (32, 32, 3), 100)],
)
def test_tfds_loader(name, shape, classes):
    # TFDS's own mocking serves generated examples through the real `tfds.load` path (no download).
    with tfds.testing.mock_data(num_examples=12):
        ds = data.load_dataset(name)
    assert ds.x_train.shape == (12, *shape) and ds.x_test.shape == (12, *shape)
    assert ds.num_classes == classes and ds.y_train.max() < classes


@pytest.mark.parametrize(
    "call,error,match",
    [
        (lambda p: data.load_dataset("mnist"), ValueError, "dataset must be one of"),
        (lambda p: data.load_dataset("fashion_mnist", path=str(p / "nope.npz")), FileNotFoundError, "path"),
        (lambda p: data.load_dataset("fashion_mnist", path=str(p)), IsADirectoryError, "a directory, not a .npz"),
        (lambda p: data.load_dataset("cifar10", path=str(p / "fm.npz")), ValueError, r"shape \[N, 32, 32, 3\]"),
        (lambda p: data.load_dataset("digits", path=str(p / "fm.npz")), ValueError, r"shape \[N, 8, 8, 1\]"),
    ],
)
def test_bad_sources_are_named(tmp_path, call, error, match):
    write_npz(tmp_path / "fm.npz")
    with pytest.raises(error, match=match):
        call(tmp_path)


def test_a_dataset_tfds_cannot_load_says_how_to_give_it_locally(monkeypatch):
    import tensorflow_datasets as tfds

    def offline(*args, **kwargs):
        raise ConnectionError("Failed to resolve 'storage.googleapis.com'\n(and 40 more lines)")

    monkeypatch.setattr(tfds, "load", offline)
    with pytest.raises(ValueError, match=r"^dataset 'cifar10' could not be loaded from TFDS \(Failed to resolve "
                                         r"'storage.googleapis.com'\); .* \(--data-path, config key data_path\)$"):
        data.load_dataset("cifar10")


def test_npz_missing_arrays_and_bad_labels(tmp_path):
    np.savez(tmp_path / "a.npz", x_train=np.zeros((2, 28, 28)))
    with pytest.raises(ValueError, match="lacks arrays"):
        data.load_dataset("fashion_mnist", path=str(tmp_path / "a.npz"))
    arrays = write_npz(tmp_path / "b.npz")
    np.savez(tmp_path / "b.npz", **{**arrays, "y_test": arrays["y_test"] + 5})
    with pytest.raises(ValueError, match=r"b.npz': fashion_mnist test labels must be in \[0, 9\], found \[5, 14\]"):
        data.load_dataset("fashion_mnist", path=str(tmp_path / "b.npz"))


@pytest.mark.parametrize(
    "change,match",
    [
        (lambda a: {**a, "x_train": np.where(np.arange(a["x_train"].size).reshape(a["x_train"].shape) == 0, np.nan,
                                             a["x_train"].astype(np.float32))}, "train images must be finite"),
        (lambda a: {**a, "x_test": a["x_test"].astype(np.float32) + 300}, r"test images must be in \[0, 255\]"),
        (lambda a: {**a, "y_train": a["y_train"] + 0.5}, "train labels must be integers, found e.g. 0.5"),
        (lambda a: {**a, "y_train": a["y_train"].astype(str)}, "train labels must be numbers"),
        (lambda a: {**a, "x_train": a["x_train"] / np.float32(255)}, r"train images are already scaled to \[0, 1\]"),
    ],
)
def test_data_that_is_not_finite_in_range_or_integral_is_refused(tmp_path, change, match):
    np.savez(tmp_path / "c.npz", **change(write_npz(tmp_path / "c.npz")))
    with pytest.raises(ValueError, match=match):
        data.load_dataset("fashion_mnist", path=str(tmp_path / "c.npz"))


def test_files_that_are_not_npz_archives_are_named(tmp_path):
    np.save(tmp_path / "a.npy", np.zeros(3))
    (tmp_path / "b.npz").write_bytes(b"PK\x03\x04 not a zip")
    with pytest.raises(ValueError, match=r"a.npy': a single .npy array, not a .npz archive"):
        data.load_dataset("fashion_mnist", path=str(tmp_path / "a.npy"))
    with pytest.raises(ValueError, match=r"b.npz': not a readable .npz \(BadZipFile"):
        data.load_dataset("fashion_mnist", path=str(tmp_path / "b.npz"))


def test_client_datasets_serve_each_clients_examples_scaled_and_batched(digits):
    fed = data.federate(digits, 5, "label_skew_random", classes_per_client=2, batch_size=16, seed=3)
    for client in range(5):
        batches = list(fed.client_dataset(client).as_numpy_iterator())
        x = np.concatenate([b["x"] for b in batches])
        y = np.concatenate([b["y"] for b in batches])
        expected = fed.partition.client_indices[client]
        assert all(len(b["y"]) == 16 for b in batches[:-1])
        assert x.dtype == np.float32 and 0.0 <= x.min() and x.max() <= 1.0
        np.testing.assert_array_equal(np.bincount(y, minlength=10), np.bincount(digits.y_train[expected], minlength=10))
        assert len(np.unique(y)) == 2
        pixel_sums = digits.x_train[expected].sum(axis=(1, 2, 3)) / 16.0
        np.testing.assert_allclose(np.sort(x.sum(axis=(1, 2, 3))), np.sort(pixel_sums), rtol=1e-5)


def test_epochs_repeat_and_rounds_reshuffle(digits):
    fed = data.federate(digits, 3, batch_size=8, seed=1)

    def labels(**kwargs):
        return np.concatenate([b["y"] for b in fed.client_dataset(0, **kwargs).as_numpy_iterator()])

    n = len(fed.partition.client_indices[0])
    assert len(labels(epochs=3)) == 3 * n
    np.testing.assert_array_equal(labels(round_num=4), labels(round_num=4))
    assert not np.array_equal(labels(round_num=4), labels(round_num=5))


def test_each_epoch_is_its_own_permutation_of_the_clients_examples(digits):
    fed = data.federate(digits, 3, batch_size=7, seed=1)
    expected = np.sort(digits.x_train[fed.partition.client_indices[2]].reshape(-1, 64) / 16.0, axis=0)
    x = np.concatenate([b["x"] for b in fed.client_dataset(2, epochs=3, round_num=1).as_numpy_iterator()])
    epochs = x.reshape(3, -1, 64)
    for epoch in epochs:  # Every example exactly once per epoch (batches may straddle epochs).
        np.testing.assert_allclose(np.sort(epoch, axis=0), expected, rtol=1e-6)
    assert not np.array_equal(epochs[0], epochs[1]) and not np.array_equal(epochs[1], epochs[2])


def test_test_dataset_covers_the_test_split(digits):
    fed = data.federate(digits, 2)
    y = np.concatenate([b["y"] for b in fed.test_dataset(batch_size=100).as_numpy_iterator()])
    np.testing.assert_array_equal(y, digits.y_test)


def test_federate_rejects_bad_batch_size(digits):
    with pytest.raises(ValueError, match="batch_size"):
        data.federate(digits, 2, batch_size=0)


def test_own_arrays_become_a_dataset_checked_like_the_built_in_ones():
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 256, (30, 5, 7), dtype=np.uint8), np.arange(30) % 4
    dataset = data.from_arrays(x, y, x[:6], y[:6])
    assert (dataset.input_shape, dataset.num_classes, dataset.x_train.shape) == ((5, 7, 1), 4, (30, 5, 7, 1))
    assert float(np.max(dataset.scaled(np.array([255], np.uint8)))) == 1.0
    unit = data.from_arrays(x / 255, y, x[:6] / 255, y[:6], max_value=1.0, num_classes=5)
    assert unit.num_classes == 5 and np.allclose(unit.scaled(unit.x_train), x[..., None] / 255)
    with pytest.raises(ValueError, match=r"custom train images are already scaled to \[0, 1\]; .* max_value=1.0"):
        data.from_arrays(x / 255, y, x[:6] / 255, y[:6])
    with pytest.raises(ValueError, match=r"custom labels must be integers, found e.g. 0.5"):
        data.from_arrays(x, y + 0.5, x[:6], y[:6])
    with pytest.raises(ValueError, match=r"custom train images must have shape \[N, H, W\] or \[N, H, W, C\]"):
        data.from_arrays(x[0], y, x[:6], y[:6])
