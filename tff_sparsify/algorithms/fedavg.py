"""FedAvg (McMahan et al., 2017, "Communication-Efficient Learning of Deep Networks from Decentralized
Data"): the dense reference, through the same masked machinery (its masks stay all ones)."""
from __future__ import annotations

import tff_sparsify as ts
from tff_sparsify.algorithms.base import Algorithm


def build(task, **optimizers):
    """FedAvg's learning process of `task` (`optimizers`: see `learning.compose`)."""
    return ts.learning.compose(task, **optimizers)


ALGORITHMS = (
    Algorithm("fedavg", "FedAvg (McMahan et al., 2017), dense",
              lambda setup, weights: build(setup.task, **setup.optimizers())),
)
