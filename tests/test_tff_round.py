"""A TFMOT-wrapped paper model trains inside a real TFF learning process."""
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_federated as tff

from tff_sparsify import data, models


@pytest.fixture(scope="module")
def federated_digits():
    return data.federate(data.load_dataset("digits"), 5, "label_skew", classes_per_client=2, batch_size=32)


@pytest.fixture(scope="module")
def keras_model_fn(federated_digits):
    dataset = federated_digits.dataset
    return lambda: models.wrap_for_pruning(models.build_model("fc", dataset.input_shape, dataset.num_classes))


@pytest.fixture(scope="module")
def fed_avg(federated_digits, keras_model_fn):
    def model_fn():
        return tff.learning.models.from_keras_model(
            keras_model_fn(),
            input_spec=federated_digits.element_spec,
            loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=[tf.keras.metrics.SparseCategoricalAccuracy()],
        )

    return tff.learning.algorithms.build_weighted_fed_avg(
        model_fn, client_optimizer_fn=tff.learning.optimizers.build_sgdm(0.1)
    )


def test_wrapped_model_without_ready_steps_hits_the_tfmot_trap(fed_avg, federated_digits):
    with pytest.raises(Exception, match="UpdatePruningStep"):
        fed_avg.next(fed_avg.initialize(), federated_digits.client_datasets())


def test_wrapped_model_trains_one_tff_round(fed_avg, federated_digits, keras_model_fn):
    initial = models.initial_model_weights(keras_model_fn())
    state = fed_avg.set_model_weights(fed_avg.initialize(), initial)
    output = fed_avg.next(state, federated_digits.client_datasets())

    train = output.metrics["client_work"]["train"]
    assert train["num_examples"] == len(federated_digits.dataset.y_train)
    assert np.isfinite(train["loss"])
    trained = fed_avg.get_model_weights(output.state)
    for before, after in zip(initial.trainable, trained.trainable):
        assert not np.allclose(before, after)
    # Non-trainable weights (masks, thresholds, pruning steps) are the server's: passed through.
    for before, after in zip(initial.non_trainable, trained.non_trainable):
        np.testing.assert_array_equal(before, after)
