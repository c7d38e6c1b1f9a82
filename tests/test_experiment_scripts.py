"""The analysis scripts under experiments/ on hand-checkable cases."""
import importlib.util
import pathlib

import numpy as np
import pytest
import tensorflow as tf

from tff_sparsify import data

EXPERIMENTS = pathlib.Path(__file__).resolve().parents[1] / "experiments"


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, EXPERIMENTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_pooled_training_statistics_are_every_clients_examples_together():
    # Four 1-pixel images 0, 100, 200, 100 of 200 -> 0, 0.5, 1, 0.5: mean 0.5, variance 0.125.
    dataset = data.from_arrays(np.array([0, 100, 200, 100]).reshape(4, 1, 1), [0, 1, 0, 1],
                               np.zeros((1, 1, 1), np.uint8), [0], max_value=200.0)
    federated = data.federate(dataset, 2, "iid", batch_size=2)
    assert sorted(len(c) for c in federated.partition.client_indices) == [2, 2]
    model = tf.keras.Sequential([tf.keras.Input((1, 1, 1)), tf.keras.layers.Flatten(),
                                 tf.keras.layers.BatchNormalization(), tf.keras.layers.Dense(2)])
    _script("batchnorm_diagnosis")._set_pooled_training_statistics(model, [1], federated)
    assert model.layers[1].moving_mean.numpy() == pytest.approx([0.5])
    assert model.layers[1].moving_variance.numpy() == pytest.approx([0.125])


def test_recalibrated_statistics_are_the_clients_example_weighted_mean():
    # Class 0: pixels 0 and 0.5 (mean 0.25, variance 0.0625); class 1: 1 and 0.5 (0.75, 0.0625). One
    # class per client, one batch each; whatever the layer's momentum, each batch counts whole.
    dataset = data.from_arrays(np.array([0, 100, 200, 100]).reshape(4, 1, 1), [0, 0, 1, 1],
                               np.zeros((1, 1, 1), np.uint8), [0], max_value=200.0)
    federated = data.federate(dataset, 2, "label_skew", classes_per_client=1, batch_size=2)
    model = tf.keras.Sequential([tf.keras.Input((1, 1, 1)), tf.keras.layers.Flatten(),
                                 tf.keras.layers.BatchNormalization(momentum=0.9), tf.keras.layers.Dense(2)])
    _script("batchnorm_diagnosis")._set_recalibrated_statistics(model, [1], federated)
    assert model.layers[1].moving_mean.numpy() == pytest.approx([0.5])
    assert model.layers[1].moving_variance.numpy() == pytest.approx([0.0625])  # Pooled: 0.125.
    assert model.layers[1].momentum == 0.9
