"""TFF building blocks of the masked learning processes: the model task, the client work and its
hooks, the server's mask updates and finalizer, the majority-vote aggregator, and `compose`, which
puts them together; `worker_data` lets TFF's worker build the clients' datasets; `batch_norm`
computes BatchNorm statistics over the clients (the final recalibration), `abns` FedTiny's adaptive
BatchNorm selection with it. The algorithms (`tff_sparsify.algorithms`) are compositions of these."""
from tff_sparsify.learning.aggregators import MajorityVoteFactory, MeanPerClientFields
from tff_sparsify.learning.hooks import ClientHooks, LocalPruning, ProximalTerm, SquaredGradients, TopKGradients
from tff_sparsify.learning.mask_updates import (
    KeepMasks, PruneAndGrow, RandomOrder, Readjust, ScheduledMagnitude, VotedMasks,
)
from tff_sparsify.learning.process import compose, masked
from tff_sparsify.learning.task import ModelTask, WeightsLayout
