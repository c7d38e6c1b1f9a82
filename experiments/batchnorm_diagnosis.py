"""Why a federated BatchNorm model evaluates as it does: for a run's `final_model.keras`, each
BatchNorm layer's moving mean and variance beside the true mean and variance of its inputs on test
images, and the test accuracy with the moving statistics, with the initial ones (mean 0, variance 1:
what a model whose statistics are never federated keeps), with the batch's own statistics, and with
the exact statistics of the run's training examples (all clients' pooled; each layer's set in forward
order at the model's weights), and with the statistics the `recalibrate_batch_norm` exchange sets
(`learning.batch_norm` computes them in TFF): over every client's batches in training mode, the
example-weighted mean of each batch's statistics.

    .venv/bin/python experiments/batchnorm_diagnosis.py RUN_DIR [--data-path ../shared/data/fashion_mnist.npz]
        [--test-examples 10000]
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np
import tensorflow as tf

from tff_sparsify import data, experiment, files

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TEST_EXAMPLES = 2000  # Test images used by default (the first ones).
BATCH = 2000  # Test images per batch; with batch statistics, each batch normalizes with its own.


def diagnose(run_dir: str, data_path: str, test_examples: int = TEST_EXAMPLES) -> dict:
    config = files.read_json(os.path.join(run_dir, "config.json"))
    federated = experiment.federated_data(experiment.ExperimentConfig.from_saved({**config, "data_path": data_path}))
    dataset = federated.dataset  # Its test split is whole: only training examples are held out or cut.
    x = np.asarray(dataset.scaled(dataset.x_test[:test_examples]))
    y = dataset.y_test[:test_examples]
    model = tf.keras.models.load_model(os.path.join(run_dir, "final_model.keras"), compile=False)
    norms = [i for i, layer in enumerate(model.layers) if isinstance(layer, tf.keras.layers.BatchNormalization)]
    layers = []
    for i in norms:
        inputs = tf.keras.Model(model.inputs, model.layers[i - 1].output).predict(x, verbose=0)
        inputs = inputs.reshape(-1, inputs.shape[-1])
        norm = model.layers[i]
        layers.append({
            "layer": norm.name,
            "true_mean": float(np.mean(inputs.mean(0))), "moving_mean": float(np.mean(norm.moving_mean)),
            "true_variance": float(np.mean(inputs.var(0))), "moving_variance": float(np.mean(norm.moving_variance)),
        })

    def accuracy(training: bool = False) -> float:
        predictions = [model(x[i:i + BATCH], training=training).numpy().argmax(-1) for i in range(0, len(x), BATCH)]
        return float(np.mean(np.concatenate(predictions) == y))

    result = {"run_dir": run_dir, "test_examples": len(y), "layers": layers,
              "accuracy_moving_statistics": accuracy()}
    moving = _statistics(model, norms)
    _set_pooled_training_statistics(model, norms, federated)
    result["accuracy_pooled_training_statistics"] = accuracy()
    _set_statistics(model, norms, moving)
    _set_recalibrated_statistics(model, norms, federated)
    result["accuracy_recalibrated_statistics"] = accuracy()
    _set_statistics(model, norms, [[np.zeros_like(m), np.ones_like(v)] for m, v in moving])
    result["accuracy_initial_statistics"] = accuracy()
    result["accuracy_batch_statistics"] = accuracy(training=True)
    return result


def _set_pooled_training_statistics(model: tf.keras.Model, norms: list[int], federated: data.FederatedData) -> None:
    """Sets each BatchNorm layer's moving statistics to the mean and variance of its inputs over all
    clients' training examples, layer after layer in forward order."""
    indices = np.concatenate(federated.partition.client_indices)
    x = np.asarray(federated.dataset.scaled(federated.dataset.x_train[indices]))
    for i in norms:
        inputs = tf.keras.Model(model.inputs, model.layers[i - 1].output).predict(x, batch_size=512, verbose=0)
        inputs = inputs.reshape(-1, inputs.shape[-1])
        model.layers[i].moving_mean.assign(inputs.mean(0))
        model.layers[i].moving_variance.assign(inputs.var(0))


def _set_recalibrated_statistics(model: tf.keras.Model, norms: list[int], federated: data.FederatedData) -> None:
    """Sets each BatchNorm layer's moving statistics to what `recalibrate_batch_norm` sets
    (`learning.batch_norm`): over every client's batches in training mode at the model's weights,
    the example-weighted mean of each batch's statistics."""
    momenta = [model.layers[i].momentum for i in norms]
    for i in norms:
        model.layers[i].momentum = 0.0  # A moving statistic is then the last batch's.
    total = sum(federated.partition.examples_per_client())
    sums = [[0.0, 0.0] for _ in norms]
    for client in range(federated.num_clients):
        for batch in federated.client_dataset(client):
            model(batch["x"], training=True)  # Sets the moving statistics; the weights stay.
            share = len(batch["y"]) / total
            sums = [[a + share * b for a, b in zip(pair, now)] for pair, now in zip(sums, _statistics(model, norms))]
    _set_statistics(model, norms, sums)
    for i, momentum in zip(norms, momenta):
        model.layers[i].momentum = momentum


def _statistics(model: tf.keras.Model, norms: list[int]) -> list[list[np.ndarray]]:
    return [[model.layers[i].moving_mean.numpy(), model.layers[i].moving_variance.numpy()] for i in norms]


def _set_statistics(model: tf.keras.Model, norms: list[int], statistics) -> None:
    for i, (mean, variance) in zip(norms, statistics):
        model.layers[i].moving_mean.assign(mean)
        model.layers[i].moving_variance.assign(variance)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir")
    parser.add_argument("--data-path", default=os.path.join(ROOT, "..", "shared", "data", "fashion_mnist.npz"))
    parser.add_argument("--test-examples", type=int, default=TEST_EXAMPLES,
                        help=f"the first N test images (default {TEST_EXAMPLES})")
    args = parser.parse_args(argv)
    if args.test_examples < 1:
        parser.error(f"--test-examples must be >= 1, got {args.test_examples}")
    result = diagnose(args.run_dir, args.data_path, args.test_examples)
    files.write_json(os.path.join(args.run_dir, "batchnorm_diagnosis.json"), result)
    for layer in result["layers"]:
        print(f"{layer['layer']}: mean over channels of the mean {layer['true_mean']:.4f} (moving "
              f"{layer['moving_mean']:.4f}), of the variance {layer['true_variance']:.4f} (moving "
              f"{layer['moving_variance']:.4f})")
    print(f"test accuracy on {result['test_examples']} images: moving statistics "
          f"{result['accuracy_moving_statistics']:.4f}, initial 0/1 {result['accuracy_initial_statistics']:.4f}, "
          f"batch statistics "
          f"{result['accuracy_batch_statistics']:.4f}, pooled training statistics "
          f"{result['accuracy_pooled_training_statistics']:.4f}, recalibrated by the clients "
          f"{result['accuracy_recalibrated_statistics']:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
