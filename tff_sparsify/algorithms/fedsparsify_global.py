"""FedSparsify-Global (Stripelis et al., 2022, "Federated Progressive Sparsification (Purge-Merge-Tune)+",
section 3): the server prunes the averaged model by global magnitude to the scheduled sparsity s(t)
(eq. 1) after every round; clients train within the broadcast masks."""
from __future__ import annotations

import tff_sparsify as ts
from tff_sparsify.algorithms.base import Algorithm, Blocked


def build(task, schedule, *, block_size: tuple[int, int] = (1, 1), **optimizers):
    """FedSparsify-Global's learning process of `task`, pruning to `schedule` in blocks of `block_size`
    ((1, 1): the paper's unstructured pruning)."""
    return ts.learning.compose(task, mask_update=ts.learning.ScheduledMagnitude(schedule, block_size), **optimizers)


def _build_process(setup, weights):
    options = setup.options
    return build(setup.task, options.schedule(setup.config.rounds), block_size=options.block_shape,
                 **setup.optimizers())


ALGORITHMS = (
    Algorithm("fedsparsify_global", "FedSparsify-Global (Stripelis et al., 2022): the server prunes to s(t)",
              _build_process, options=Blocked, run_prefix="global"),
)
