"""FedProx (Li et al., 2020, "Federated Optimization in Heterogeneous Networks"): FedAvg whose clients
add the proximal term mu/2 ||w - w_t||^2 toward the round's global weights (paper: mu = 0.001)."""
from __future__ import annotations

import dataclasses

import tff_sparsify as ts
from tff_sparsify.algorithms.base import Algorithm, Options


@dataclasses.dataclass(frozen=True)
class FedProxOptions(Options):
    proximal_strength: float = 0.001  # mu.

    def __post_init__(self):
        super().__post_init__()
        if not self.proximal_strength >= 0:
            raise ValueError(f"proximal_strength must be >= 0, got {self.proximal_strength!r}")


def build(task, proximal_strength: float = 0.001, **optimizers):
    """FedProx's learning process of `task` with mu = `proximal_strength` (0: FedAvg)."""
    FedProxOptions(float(proximal_strength))  # Checks it.
    proximal = ts.learning.ProximalTerm(proximal_strength) if proximal_strength else None
    return ts.learning.compose(task, hooks=ts.learning.ClientHooks(gradient_transform=proximal), **optimizers)


ALGORITHMS = (
    Algorithm("fedprox", "FedProx (Li et al., 2020), dense, proximal term mu",
              lambda setup, weights: build(setup.task, setup.options.proximal_strength, **setup.optimizers()),
              options=FedProxOptions),
)
