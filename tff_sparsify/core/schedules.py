"""The FedSparsify sparsity schedule (paper eq. 1).

Pure Python and JSON-serializable. A `SparsitySchedule` maps a round t = 1..T to the target sparsity
after that round: the fraction of prunable weights that are zero once the round's pruning is done,
counting earlier zeros (an absolute target, not an increment):

    t' = f * floor(t / f)
    s(t) = s_f + (s_0 - s_f) * (1 - (t' - t0) / (T - t0)) ** e

with s_f the final sparsity, s_0 the initial sparsity, t0 the start round, T the total number of
rounds, f the pruning frequency and e the exponent. Nothing is pruned before t0; from t0 on, s(t) is
clamped into [s_0, s_f], and s(T) = s_f exactly.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any

from tff_sparsify import checks


@dataclasses.dataclass(frozen=True)
class SparsitySchedule:
    """Target sparsity after each round t = 1..`total_rounds` (paper eq. 1).

    Arguments: `final_sparsity` s_f, `total_rounds` T, `initial_sparsity` s_0, `start_round` t0,
    `frequency` f (the target changes only at multiples of f, and at t0 and T) and `exponent` e.
    Requires 0 <= s_0 <= s_f < 1, T >= 2, 1 <= t0 < T, f >= 1 and e > 0.
    """

    final_sparsity: float
    total_rounds: int
    initial_sparsity: float = 0.0
    start_round: int = 1
    frequency: int = 1
    exponent: float = 3.0

    def __post_init__(self):
        total_rounds = checks.integer("total_rounds", self.total_rounds, 2)
        start_round = checks.integer(
            "start_round", self.start_round, 1, total_rounds - 1,
            hint=f" (pruning must start before the last round, total_rounds = {total_rounds})",
        )
        frequency = checks.integer("frequency", self.frequency, 1)
        checks.fraction("final_sparsity", self.final_sparsity)
        if not 0.0 <= self.initial_sparsity <= self.final_sparsity:
            raise ValueError(
                f"initial_sparsity must be in [0, final_sparsity] = [0, {self.final_sparsity}], "
                f"got {self.initial_sparsity!r}"
            )
        if not (self.exponent > 0 and math.isfinite(self.exponent)):
            raise ValueError(f"exponent must be a finite number > 0, got {self.exponent!r}")
        # Store plain Python numbers, so that `to_dict` is always JSON-serializable.
        for name, value in [
            ("final_sparsity", float(self.final_sparsity)),
            ("total_rounds", total_rounds),
            ("initial_sparsity", float(self.initial_sparsity)),
            ("start_round", start_round),
            ("frequency", frequency),
            ("exponent", float(self.exponent)),
        ]:
            object.__setattr__(self, name, value)

    def __call__(self, round_num: int) -> float:
        """The target sparsity after round `round_num` (1-based), paper eq. 1.

        Returns 0.0 (nothing pruned) before `start_round`; from `start_round` on, eq. 1 clamped into
        [initial_sparsity, final_sparsity]; exactly `final_sparsity` at the last round, also when
        `frequency` does not divide `total_rounds`. Non-decreasing in `round_num`.
        """
        t = checks.integer("round_num", round_num, 1, self.total_rounds)
        if t < self.start_round:
            return 0.0
        if t == self.total_rounds:
            return self.final_sparsity
        t0, s_0, s_f = self.start_round, self.initial_sparsity, self.final_sparsity
        t_prime = self.frequency * (t // self.frequency)
        progress = (t_prime - t0) / (self.total_rounds - t0)
        target = s_f + (s_0 - s_f) * (1.0 - progress) ** self.exponent
        return min(max(target, s_0), s_f)

    def to_dict(self) -> dict[str, Any]:
        """The constructor arguments, JSON-serializable."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, config: dict[str, Any]) -> SparsitySchedule:
        """Inverse of `to_dict`."""
        return cls(**config)


@dataclasses.dataclass(frozen=True)
class OneShotSchedule:
    """The OneShot baselines' target (paper section 5): 0 before `prune_round`, then `final_sparsity`.

    OneShot prunes at the last round (`prune_round = total_rounds`); OneShot with fine-tuning prunes
    at `total_rounds - k` and trains the remaining k rounds within the mask.
    """

    final_sparsity: float
    total_rounds: int
    prune_round: int | None = None  # Default: the last round.

    def __post_init__(self):
        total_rounds = checks.integer("total_rounds", self.total_rounds, 1)
        checks.fraction("final_sparsity", self.final_sparsity)
        prune_round = total_rounds if self.prune_round is None else self.prune_round
        object.__setattr__(self, "prune_round", checks.integer("prune_round", prune_round, 1, total_rounds))
        object.__setattr__(self, "total_rounds", total_rounds)
        object.__setattr__(self, "final_sparsity", float(self.final_sparsity))

    def __call__(self, round_num: int) -> float:
        t = checks.integer("round_num", round_num, 1, self.total_rounds)
        return self.final_sparsity if t >= self.prune_round else 0.0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
