"""Nesterov SGD: Keras's update rule, exactly, and zero stays zero under masked gradients."""
import numpy as np
import pytest
import tensorflow as tf

from tff_sparsify import optimizers

GRADIENTS = [np.array([1.0, -2.0, 0.0], np.float32), np.array([0.5, 1.0, 0.0], np.float32),
             np.array([-1.0, 0.25, 0.0], np.float32)]


def test_matches_keras_sgd_with_nesterov_and_a_hand_computed_first_step():
    weights = (np.array([1.0, 2.0, 0.0], np.float32),)
    optimizer = optimizers.build_nesterov_sgdm(learning_rate=0.1, momentum=0.9)
    state = optimizer.initialize((tf.TensorSpec([3], tf.float32),))
    keras_variable = tf.Variable(weights[0])
    keras_sgd = tf.keras.optimizers.SGD(learning_rate=0.1, momentum=0.9, nesterov=True)
    ours = weights
    for step, gradient in enumerate(GRADIENTS):
        state, ours = optimizer.next(state, ours, (tf.constant(gradient),))
        keras_sgd.apply_gradients([(tf.constant(gradient), keras_variable)])
        np.testing.assert_allclose(ours[0], keras_variable.numpy(), rtol=1e-6)
        if step == 0:  # v = g; w = w - lr (g + 0.9 g) = [1, 2, 0] - 0.19 [1, -2, 0].
            np.testing.assert_allclose(ours[0], [0.81, 2.38, 0.0], rtol=1e-6)
    assert ours[0][2] == 0.0 and state["accumulator"][0].numpy()[2] == 0.0  # Masked: stays zero.
    assert optimizer.get_hparams(state) == {"learning_rate": 0.1, "momentum": 0.9}


@pytest.mark.parametrize("kwargs, match", [(dict(momentum=1.0), "momentum"), (dict(learning_rate=-0.1), "learning_rate")])
def test_rejects_bad_hyperparameters(kwargs, match):
    with pytest.raises(ValueError, match=match):
        optimizers.build_nesterov_sgdm(**kwargs)


def test_experiment_configs_choose_the_clients_sgd():
    from tff_sparsify import algorithms, experiment

    def client_optimizer(**fields):
        return algorithms.Setup(experiment.ExperimentConfig(**fields), None, None).optimizers()["client_optimizer"]

    nesterov = client_optimizer(client_momentum=0.9, client_nesterov=True)
    state = nesterov.initialize((tf.TensorSpec([1], tf.float32),))
    assert isinstance(nesterov, optimizers._NesterovSGD) and nesterov.get_hparams(state)["momentum"] == 0.9
    assert not isinstance(client_optimizer(client_momentum=0.9), optimizers._NesterovSGD)
