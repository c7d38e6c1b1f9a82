"""Random pruning, a baseline of the FedSparsify paper (Stripelis et al., 2022, section 5):
FedSparsify-Global's schedule s(t), the positions pruned in one fixed random order (seeded) instead
of by magnitude."""
from __future__ import annotations

import tff_sparsify as ts
from tff_sparsify.algorithms.base import Algorithm, Scheduled


def build(task, schedule, *, seed: int = 0, **optimizers):
    """Random pruning's learning process of `task`, to `schedule` in the order `seed` fixes."""
    return ts.learning.compose(task, mask_update=ts.learning.RandomOrder(schedule, seed), **optimizers)


ALGORITHMS = (
    Algorithm("random", "Random (Stripelis et al., 2022): the schedule s(t), positions pruned in a fixed random order",
              lambda setup, weights: build(setup.task, setup.options.schedule(setup.config.rounds),
                                           seed=setup.config.seed, **setup.optimizers()),
              options=Scheduled),
)
