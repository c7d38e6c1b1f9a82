"""FedSparsify-Local (Stripelis et al., 2022, "Federated Progressive Sparsification (Purge-Merge-Tune)+",
section 3): every client prunes its trained model by global magnitude to s(t) (eq. 1) and uploads it
with its mask; the server keeps a position when at least a quorum of the clients kept it and averages
it there (majority vote, eq. 2)."""
from __future__ import annotations

import dataclasses

import tff_sparsify as ts
from tff_sparsify import checks
from tff_sparsify.algorithms.base import Algorithm, Blocked

AVERAGE_OVER = ("all", "keepers")


@dataclasses.dataclass(frozen=True)
class LocalOptions(Blocked):
    quorum: float = 0.5  # Keep share needed to keep a position (eq. 2: a majority).
    vote_average_over: str = "all"  # The paper's "all" participants, or only the "keepers".

    def __post_init__(self):
        super().__post_init__()
        if not 0 < self.quorum <= 1:
            raise ValueError(f"quorum must be in (0, 1], got {self.quorum!r}")
        checks.choice("vote_average_over", self.vote_average_over, AVERAGE_OVER)


def build(task, schedule, *, quorum: float = 0.5, average_over: str = "all",
          block_size: tuple[int, int] = (1, 1), **optimizers):
    """FedSparsify-Local's learning process of `task`: clients prune to `schedule` (in blocks of
    `block_size`), the server merges by majority vote (`learning.MajorityVoteFactory`)."""
    learning = ts.learning
    return learning.compose(
        task,
        hooks=learning.ClientHooks(after_training=learning.LocalPruning(schedule, block_size)),
        aggregator_factory=learning.MajorityVoteFactory(quorum=quorum, average_over=average_over),
        mask_update=learning.VotedMasks(),
        **optimizers,
    )


def _build_process(setup, weights):
    options = setup.options
    return build(setup.task, options.schedule(setup.config.rounds), quorum=options.quorum,
                 average_over=options.vote_average_over, block_size=options.block_shape, **setup.optimizers())


ALGORITHMS = (
    Algorithm("fedsparsify_local", "FedSparsify-Local (Stripelis et al., 2022): clients prune to s(t), majority vote",
              _build_process, options=LocalOptions, run_prefix="local", uploads_masks=True),
)
