"""Datasets of the FedSparsify paper (section 5) as federated client datasets.

Three sources, one result type (`Dataset`, images in the Keras layout `x: [N, H, W, C] uint8`):

- TFDS: `load_dataset("fashion_mnist")`, `"cifar10"`, `"cifar100"` (downloads on first use).
- A local `.npz` in the layout of `keras.datasets.*.load_data()` (`x_train, y_train, x_test,
  y_test`): `load_dataset("fashion_mnist", path="fashion_mnist.npz")`.
- `"digits"`: scikit-learn's bundled 8x8 digits (1,797 images), embedded, no download; the
  default for the quickstart and fast tests.

`federate` partitions the training split among clients (see `tff_sparsify.core.partitions`) and serves
per-client `tf.data` pipelines (shuffled, batched, scaled to [0, 1]) plus a batched test set.
"""
from __future__ import annotations

import collections
import dataclasses
import math
import zipfile

import numpy as np
import tensorflow as tf

from tff_sparsify import checks
from tff_sparsify.core import partitions


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    image_shape: tuple[int, int, int]
    num_classes: int
    max_value: float  # Pixel value that maps to 1.0.


DATASETS = {
    "digits": DatasetSpec((8, 8, 1), 10, 16.0),
    "fashion_mnist": DatasetSpec((28, 28, 1), 10, 255.0),
    "cifar10": DatasetSpec((32, 32, 3), 10, 255.0),
    "cifar100": DatasetSpec((32, 32, 3), 100, 255.0),
}
DIGITS_TEST_FRACTION = 0.2
NPZ_ARRAYS = ("x_train", "y_train", "x_test", "y_test")  # Keras's `load_data()` layout.


@dataclasses.dataclass(frozen=True)
class Dataset:
    """Train and test images (uint8, [N, H, W, C]) with integer labels."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    spec: DatasetSpec

    @property
    def num_classes(self) -> int:
        return self.spec.num_classes

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return self.spec.image_shape

    def first_per_class(self, count: int) -> Dataset:
        """This dataset with only the first `count` training examples of each class (in stored order)
        and the whole test split: a class-balanced subset for scaled-down protocols."""
        rank, _ = self._class_ranks("train_examples_per_class", count)
        keep = rank < count
        return dataclasses.replace(self, x_train=self.x_train[keep], y_train=self.y_train[keep])

    def hold_out_last_per_class(self, count: int) -> tuple[Dataset, Dataset]:
        """(the last `count` training examples of each class, in stored order, as a server's labelled
        set; this dataset without them). Both keep the whole test split, which a server set must never
        come from."""
        rank, present = self._class_ranks("server_examples_per_class", count, spare=1)
        held = rank >= present[self.y_train] - count
        return (dataclasses.replace(self, x_train=self.x_train[held], y_train=self.y_train[held]),
                dataclasses.replace(self, x_train=self.x_train[~held], y_train=self.y_train[~held]))

    def _class_ranks(self, name: str, count: int, spare: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Each training example's position within its class and the classes' sizes, after checking
        that `count` (the key `name`) is in [1, smallest class - `spare`]."""
        present = np.bincount(self.y_train, minlength=self.num_classes)
        largest = int(present[present > 0].min()) - spare
        if not isinstance(count, (int, np.integer)) or isinstance(count, bool) or not 1 <= count <= largest:
            raise ValueError(f"{name} must be an integer in [1, {largest}] (the smallest class of {self.name} "
                             f"has {largest + spare}), got {count!r}")
        rank = np.empty(len(self.y_train), np.int64)
        order = np.argsort(self.y_train, kind="stable")
        starts = np.concatenate([[0], np.cumsum(present)[:-1]])
        rank[order] = np.arange(len(order)) - np.repeat(starts, present)
        return rank, present

    def scaled(self, images) -> tf.Tensor:
        """`images` as the models see them: float32 in [0, 1]."""
        return tf.cast(images, tf.float32) * (1.0 / self.spec.max_value)


def load_dataset(name: str, *, path: str | None = None, data_dir: str | None = None) -> Dataset:
    """Loads `name` from TFDS, from the local `.npz` at `path`, or (for "digits") from scikit-learn."""
    if name not in DATASETS:
        raise ValueError(f"dataset must be one of {sorted(DATASETS)}, got {name!r}")
    if path is not None:
        try:
            return _as_dataset(name, DATASETS[name], *_read_npz(path))
        except ValueError as error:
            raise ValueError(f"path {path!r}: {error}") from None
    if name == "digits":
        arrays = _digits_arrays()
    else:
        arrays = _tfds_arrays(name, data_dir)
    return _as_dataset(name, DATASETS[name], *arrays)


def from_arrays(x_train, y_train, x_test, y_test, *, num_classes: int | None = None, max_value: float = 255.0,
                name: str = "custom") -> Dataset:
    """Your own images and labels as a `Dataset`: `x` of shape [N, H, W] or [N, H, W, C] holding raw
    pixel values in [0, `max_value`] (scaled to [0, 1] for the model), `y` integer labels in
    [0, `num_classes`) (default: the largest label + 1). Checked as the built-in datasets are."""
    x_train = np.asarray(x_train)
    if x_train.ndim not in (3, 4):
        raise ValueError(f"{name} train images must have shape [N, H, W] or [N, H, W, C], got {x_train.shape}")
    image_shape = (*x_train.shape[1:3], x_train.shape[3] if x_train.ndim == 4 else 1)
    if num_classes is None:
        labels = np.concatenate([np.ravel(y_train), np.ravel(y_test)])
        _check_values(f"{name} labels", labels, 0, np.inf, integral=True)
        num_classes = int(labels.max()) + 1
    spec = DatasetSpec(image_shape, num_classes, float(max_value))
    return _as_dataset(name, spec, x_train, y_train, x_test, y_test)


def _read_npz(path: str) -> tuple[np.ndarray, ...]:
    checks.file("path", path, ".npz file")
    try:
        loaded = np.load(path, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile) as error:
        raise ValueError(f"not a readable .npz ({type(error).__name__}: {error})") from None
    if not isinstance(loaded, np.lib.npyio.NpzFile):
        raise ValueError("a single .npy array, not a .npz archive of arrays")
    with loaded as npz:
        arrays = {name: npz[name] for name in NPZ_ARRAYS if name in npz.files}
    missing = sorted(set(NPZ_ARRAYS) - set(arrays))
    if missing:
        raise ValueError(f"lacks arrays {missing} (Keras layout expected: {', '.join(NPZ_ARRAYS)})")
    return tuple(arrays[name] for name in NPZ_ARRAYS)


def _digits_arrays() -> tuple[np.ndarray, ...]:
    from sklearn.datasets import load_digits  # Imported here: only the embedded dataset needs it.

    digits = load_digits()
    images, labels = digits.images.astype(np.uint8), digits.target
    test = np.random.default_rng(0).random(len(labels)) < DIGITS_TEST_FRACTION
    return images[~test], labels[~test], images[test], labels[test]


def _tfds_arrays(name: str, data_dir: str | None) -> tuple[np.ndarray, ...]:
    import tensorflow_datasets as tfds  # Imported here: importing TFDS is slow.

    try:
        splits = tfds.load(name, split=["train", "test"], as_supervised=True, data_dir=data_dir)
    except Exception as error:  # Offline, a proxy, a full disk: TFDS raises many kinds.
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
        raise ValueError(f"dataset {name!r} could not be loaded from TFDS ({reason}); download it once "
                         f"with network access, or give a local .npz in the Keras layout (--data-path, config "
                         f"key data_path)") from None
    arrays = []
    for split in splits:
        xs, ys = zip(*tfds.as_numpy(split.batch(10_000)))
        arrays += [np.concatenate(xs), np.concatenate(ys)]
    return tuple(arrays)


def _as_dataset(name: str, spec: DatasetSpec, x_train, y_train, x_test, y_test) -> Dataset:
    x_train, x_test = (_with_channels(x, spec.image_shape) for x in (x_train, x_test))
    for split, x, y in (("train", x_train, y_train), ("test", x_test, y_test)):
        y = np.asarray(y)
        if len(x) != len(y.reshape(-1)) or len(x) == 0:
            raise ValueError(f"{name} {split} split: {len(x)} images and {len(y.reshape(-1))} labels")
        _check_values(f"{name} {split} images", x, 0, spec.max_value)
        if np.issubdtype(x.dtype, np.floating) and spec.max_value > 1 and x.max() <= 1:
            raise ValueError(f"{name} {split} images are already scaled to [0, 1]; store the raw pixel "
                             f"values in [0, {spec.max_value:g}] (the Keras layout), or give from_arrays "
                             "max_value=1.0")
        _check_values(f"{name} {split} labels", y, 0, spec.num_classes - 1, integral=True)
    y_train, y_test = (np.asarray(y).astype(np.int64).reshape(-1) for y in (y_train, y_test))
    return Dataset(name, x_train, y_train, x_test, y_test, spec)


def _check_values(what: str, values: np.ndarray, low: float, high: float, integral: bool = False) -> None:
    """A ValueError naming `what` unless every value is a finite number in [low, high] (an integer
    if `integral`)."""
    if not (np.issubdtype(values.dtype, np.integer) or np.issubdtype(values.dtype, np.floating)):
        raise ValueError(f"{what} must be numbers, got dtype {values.dtype}")
    if not np.all(np.isfinite(values)):
        raise ValueError(f"{what} must be finite, found NaN or inf")
    if integral and not np.all(np.mod(values, 1) == 0):
        raise ValueError(f"{what} must be integers, found e.g. {values[np.mod(values, 1) != 0].flat[0]!r}")
    if values.min() < low or values.max() > high:
        raise ValueError(f"{what} must be in [{low:g}, {high:g}], found [{values.min():g}, {values.max():g}]")


def _with_channels(x: np.ndarray, image_shape: tuple[int, int, int]) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim == 3 and image_shape[2] == 1:
        x = x[..., np.newaxis]
    if x.shape[1:] != image_shape:
        raise ValueError(f"images must have shape [N, {', '.join(map(str, image_shape))}], got {x.shape}")
    return x


@dataclasses.dataclass(frozen=True)
class FederatedData:
    """A dataset split among clients, served as `tf.data` pipelines of OrderedDict(x=, y=) batches;
    `server` is the labelled set the server holds out of the training data, if any."""

    dataset: Dataset
    partition: partitions.Partition
    batch_size: int
    seed: int
    server: Dataset | None = None

    @property
    def num_clients(self) -> int:
        return self.partition.num_clients

    @property
    def element_spec(self):
        return self.client_dataset(0).element_spec

    def client_dataset(self, client: int, *, epochs: int = 1, round_num: int = 0) -> tf.data.Dataset:
        """Client `client`'s examples, every one once per epoch, batched and scaled to [0, 1].

        Each epoch has its own order, a function of (seed, client, round_num, epoch): a run is
        reproducible while each round and epoch sees a new order.
        """
        indices = self.partition.client_indices[client]
        return self.batches(
            self.dataset.x_train[indices], self.dataset.y_train[indices], self.shuffle_seed(client, round_num), epochs
        )

    def shuffle_seed(self, client: int, round_num: int) -> np.ndarray:
        """The stateless seed (int64 [2]) of client `client`'s example order in round `round_num`."""
        return np.random.SeedSequence([self.seed, client, round_num]).generate_state(2).astype(np.int64)

    def batches(self, x, y, seed, epochs: int) -> tf.data.Dataset:
        """Examples `(x, y)` `epochs` times, each epoch in a seeded random order, in batches of
        `batch_size` (the last batch may be smaller) scaled to [0, 1]. Works eagerly and in a graph
        (TFF's worker builds client datasets with it, see `tff_sparsify.learning.worker_data`)."""
        num_examples = tf.shape(y)[0]
        order = tf.argsort(tf.random.stateless_uniform([epochs, num_examples], seed=seed), axis=1)
        batch_indices = tf.data.Dataset.from_tensor_slices(tf.reshape(order, [-1])).batch(self.batch_size)
        # The examples enter as a dataset element, not as a tensor the map function captures: a
        # captured array becomes a constant that is copied for every batch (3x slower).
        examples = tf.data.Dataset.from_tensors((x, y)).repeat()

        def to_example(indices, images_and_labels):
            images, labels = images_and_labels
            return collections.OrderedDict(
                x=self.dataset.scaled(tf.gather(images, indices)), y=tf.gather(labels, indices)
            )

        return tf.data.Dataset.zip((batch_indices, examples)).map(to_example)

    def validation_dataset(self, client: int, fraction: float) -> tf.data.Dataset:
        """A seeded random `fraction` of client `client`'s examples (at least one), once, batched: its
        local validation subset (FedTiny's adaptive BatchNorm selection); they stay in its training
        data."""
        indices = self.partition.client_indices[client]
        rng = np.random.default_rng([self.seed, client])
        count = min(len(indices), max(1, math.floor(fraction * len(indices))))
        chosen = np.sort(rng.choice(indices, count, replace=False))
        return self.batches(self.dataset.x_train[chosen], self.dataset.y_train[chosen],
                            self.shuffle_seed(client, 0), 1)

    def server_dataset(self, epochs: int = 1) -> tf.data.Dataset:
        """The server's held-out examples, `epochs` times in a seeded order, batched."""
        if self.server is None:
            raise ValueError("this federation holds no server examples (server_examples_per_class)")
        server = self.num_clients  # Its order seeded as one more client past the last.
        return self.batches(self.server.x_train, self.server.y_train, self.shuffle_seed(server, 0), epochs)

    def client_datasets(self, clients=None, **kwargs) -> list[tf.data.Dataset]:
        clients = range(self.num_clients) if clients is None else clients
        return [self.client_dataset(c, **kwargs) for c in clients]

    def test_dataset(self, batch_size: int = 256) -> tf.data.Dataset:
        def to_example(x, y):
            return collections.OrderedDict(x=self.dataset.scaled(x), y=y)

        ds = tf.data.Dataset.from_tensor_slices((self.dataset.x_test, self.dataset.y_test))
        return ds.batch(batch_size).map(to_example)


def federate(
    dataset: Dataset,
    num_clients: int,
    scheme: str = "iid",
    *,
    classes_per_client: int | None = None,
    alpha: float | None = None,
    batch_size: int = 32,
    seed: int = 1990,
) -> FederatedData:
    """Splits `dataset`'s training examples among `num_clients` (see `partitions.partition`)."""
    checks.integer("batch_size", batch_size)
    split = partitions.partition(
        dataset.y_train,
        num_clients,
        scheme,
        classes_per_client=classes_per_client,
        alpha=alpha,
        num_classes=dataset.num_classes,
        seed=seed,
    )
    return FederatedData(dataset, split, batch_size, seed)
