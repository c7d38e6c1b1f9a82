"""FedSparsify learning processes on TFF (see `builders`)."""
from tff_sparsify.learning.builders import (
    build_fed_avg,
    build_fedsparsify_global,
    build_fedsparsify_local,
)
from tff_sparsify.learning.task import ModelTask, WeightsLayout
