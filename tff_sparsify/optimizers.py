"""SGD with Nesterov momentum as a `tff.learning.optimizers.Optimizer` (TFF 0.87's `build_sgdm` has
classical momentum only); the paper trains VGG-16 on CIFAR-100 with it (section 5).
"""
from __future__ import annotations

import collections

import tensorflow as tf
import tensorflow_federated as tff

from tff_sparsify import checks

LEARNING_RATE, MOMENTUM, ACCUMULATOR = "learning_rate", "momentum", "accumulator"


class _NesterovSGD(tff.learning.optimizers.Optimizer):
    """See `build_nesterov_sgdm`."""

    def __init__(self, learning_rate: float, momentum: float):
        if learning_rate < 0.0:
            raise ValueError(f"learning_rate must be >= 0, got {learning_rate!r}")
        checks.fraction("momentum", momentum)
        self._learning_rate, self._momentum = learning_rate, momentum

    def initialize(self, specs):
        return collections.OrderedDict(
            [
                (LEARNING_RATE, self._learning_rate),
                (MOMENTUM, self._momentum),
                (ACCUMULATOR, tf.nest.map_structure(lambda s: tf.zeros(s.shape, s.dtype), specs)),
            ]
        )

    def next(self, state, weights, gradients):
        learning_rate, momentum = state[LEARNING_RATE], state[MOMENTUM]
        accumulator = tf.nest.map_structure(lambda v, g: momentum * v + g, state[ACCUMULATOR], gradients)
        weights = tf.nest.map_structure(
            lambda w, g, v: w - learning_rate * (g + momentum * v), weights, gradients, accumulator
        )
        state = collections.OrderedDict(
            [(LEARNING_RATE, learning_rate), (MOMENTUM, momentum), (ACCUMULATOR, accumulator)]
        )
        return state, weights

    def get_hparams(self, state):
        return collections.OrderedDict([(LEARNING_RATE, state[LEARNING_RATE]), (MOMENTUM, state[MOMENTUM])])

    def set_hparams(self, state, hparams):
        return collections.OrderedDict(state, **hparams)


def build_nesterov_sgdm(learning_rate: float = 0.01, momentum: float = 0.9) -> tff.learning.optimizers.Optimizer:
    """SGD with Nesterov momentum, as Keras's `SGD(nesterov=True)` and PyTorch's: with velocity v
    (zero at the start of local training), v <- m·v + g, then w <- w - lr·(g + m·v).

    A masked gradient (g = 0 at pruned positions) leaves v and w at zero there.
    """
    return _NesterovSGD(learning_rate, momentum)
