"""Client datasets built inside TFF's worker, from per-client files written once per run.

Handing `tf.data` datasets to a learning process's `next` serializes every client's examples into
every round (for Fashion-MNIST's 10 clients, 47.5 MB of dataset graphs per round), which TFF's
worker then rebuilds. `WorkerClientData` instead writes each client's examples to a file once; a
round sends each client only `OrderedDict(path=, seed=)`, and the worker reads the file and builds
the very batches `FederatedData.client_dataset` gives (same order, same scaling), through TFF's
`tff.simulation.compose_dataset_computation_with_learning_process`.

    with WorkerClientData(federated) as client_data:
        process = client_data.compose(process, epochs=4)
        state = process.next(state, client_data.sources(clients, round_num)).state
"""
from __future__ import annotations

import collections
import fcntl
import glob
import os
import shutil
import tempfile

import tensorflow as tf
import tensorflow_federated as tff

from tff_sparsify import compat, data


class WorkerClientData:
    """`federated`'s clients, as files (in a temporary directory, removed by `close`) from which
    TFF's worker builds each round's client datasets."""

    PREFIX = "tff_sparsify_clients_"
    OWNER_FILE = ".owner"  # Locked (flock) by the process that owns the directory, while it lives.

    def __init__(self, federated: data.FederatedData):
        self.federated = federated
        _remove_orphaned_directories(self.PREFIX, self.OWNER_FILE)
        self._directory = tempfile.TemporaryDirectory(prefix=self.PREFIX)
        self._owner = _own(self._directory.name, self.OWNER_FILE)
        self.paths = [
            self._write_client(client, os.path.join(self._directory.name, f"client_{client}.tensor"))
            for client in range(federated.num_clients)
        ]

    def _write_client(self, client: int, path: str) -> str:
        indices = self.federated.partition.client_indices[client]
        images, labels = self.federated.dataset.x_train[indices], self.federated.dataset.y_train[indices]
        examples = tf.stack([tf.io.serialize_tensor(images), tf.io.serialize_tensor(labels)])
        tf.io.write_file(path, tf.io.serialize_tensor(examples))
        return path

    def dataset_computation(self, epochs: int) -> tff.Computation:
        """A TFF computation from one client's `sources` entry to its batches of `epochs` epochs."""
        federated = self.federated
        image_shape, image_dtype = federated.dataset.input_shape, tf.as_dtype(federated.dataset.x_train.dtype)
        label_dtype = tf.as_dtype(federated.dataset.y_train.dtype)
        source_type = collections.OrderedDict(path=tf.TensorSpec([], tf.string), seed=tf.TensorSpec([2], tf.int64))

        @tff.tensorflow.computation(source_type)
        def client_dataset(source):
            images, labels = tf.unstack(tf.io.parse_tensor(tf.io.read_file(source["path"]), tf.string), num=2)
            images = tf.ensure_shape(tf.io.parse_tensor(images, image_dtype), [None, *image_shape])
            labels = tf.ensure_shape(tf.io.parse_tensor(labels, label_dtype), [None])
            return federated.batches(images, labels, source["seed"], epochs)

        return client_dataset

    def compose(
        self, process: tff.learning.templates.LearningProcess, epochs: int
    ) -> tff.learning.templates.LearningProcess:
        """`process` with its client datasets replaced by `sources` (built in the worker)."""
        return tff.simulation.compose_dataset_computation_with_learning_process(
            self.dataset_computation(epochs), process
        )

    def sources(self, clients, round_num: int) -> list[collections.OrderedDict]:
        """What a composed process's `next` takes for `clients` in round `round_num`."""
        return [
            collections.OrderedDict(path=self.paths[c], seed=self.federated.shuffle_seed(c, round_num))
            for c in clients
        ]

    def close(self) -> None:
        self._directory.cleanup()
        os.close(self._owner)

    def __enter__(self) -> WorkerClientData:
        return self

    def __exit__(self, exc_type, exc_value, traceback) -> None:
        if exc_type is not None:  # A round may still run in the worker (Ctrl-C): stop it before its files go.
            compat.release_tff_runtime()
        self.close()


def _own(directory: str, owner_file: str) -> int:
    """A descriptor holding the lock of `directory`'s owner file. The file is locked under another
    name and then renamed, so no other process ever finds it unlocked while its owner lives."""
    unnamed = os.path.join(directory, owner_file + ".new")
    fd = os.open(unnamed, os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    os.rename(unnamed, os.path.join(directory, owner_file))
    return fd


def _remove_orphaned_directories(prefix: str, owner_file: str) -> None:
    """Removes client-file directories whose owner is gone (a SIGKILL allows no cleanup): their
    owner file is no longer locked. Works across PID namespaces sharing the directory; directories
    without an owner file (older versions) are left alone."""
    for path in glob.glob(os.path.join(tempfile.gettempdir(), prefix + "*")):
        try:
            fd = os.open(os.path.join(path, owner_file), os.O_RDWR)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            continue  # Its owner lives.
        finally:
            os.close(fd)
        shutil.rmtree(path, ignore_errors=True)
