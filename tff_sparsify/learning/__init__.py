"""FedSparsify learning processes on TFF (see `builders`)."""
from tff_sparsify.learning.builders import (
    build_fed_avg,
    build_fed_prox,
    build_fedsparsify_global,
    build_fedsparsify_local,
    build_fixed_mask,
    build_one_shot,
    build_prune_fl,
    build_random,
)
from tff_sparsify.learning.task import ModelTask, WeightsLayout
