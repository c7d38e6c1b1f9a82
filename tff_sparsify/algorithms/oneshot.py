"""OneShot pruning, a baseline of the FedSparsify paper (Stripelis et al., 2022, section 5): dense
federated training, one global magnitude prune to s_f at the end of round T - F, then F rounds of
fine-tuning within the mask (`oneshot`: F = 0, pruned after the last round; `oneshot_finetune`:
F = `fine_tune_rounds`)."""
from __future__ import annotations

import dataclasses

import tff_sparsify as ts
from tff_sparsify import checks
from tff_sparsify.core import schedules
from tff_sparsify.algorithms.base import Algorithm, Pruned


@dataclasses.dataclass(frozen=True)
class FineTuneOptions(Pruned):
    fine_tune_rounds: int = 10  # Rounds within the mask after the prune.

    def check_rounds(self, rounds: int) -> None:
        checks.integer("fine_tune_rounds", self.fine_tune_rounds, 1, rounds - 1, hint=" (rounds - 1)")


def build(task, final_sparsity: float, total_rounds: int, *, fine_tune_rounds: int = 0, **optimizers):
    """OneShot's learning process of `task`: pruned once to `final_sparsity` at the end of round
    `total_rounds - fine_tune_rounds`."""
    schedule = schedules.OneShotSchedule(final_sparsity, total_rounds, total_rounds - fine_tune_rounds)
    return ts.learning.compose(task, mask_update=ts.learning.ScheduledMagnitude(schedule), **optimizers)


def _build_process(setup, weights):
    fine_tune = getattr(setup.options, "fine_tune_rounds", 0)
    return build(setup.task, setup.options.final_sparsity, setup.config.rounds, fine_tune_rounds=fine_tune,
                 **setup.optimizers())


ALGORITHMS = (
    Algorithm("oneshot", "OneShot (Stripelis et al., 2022): dense training, one magnitude prune to s_f after the last round",
              _build_process, options=Pruned),
    Algorithm("oneshot_finetune", "OneShot with fine-tuning: the prune at round T - fine_tune_rounds, then training within the mask",
              _build_process, options=FineTuneOptions),
)
