"""tff_sparsify: federated progressive sparsification (FedSparsify) on TensorFlow Federated."""
from tff_sparsify import compat, data, models, partitions
from tff_sparsify.data import Dataset, FederatedData, federate, load_dataset
from tff_sparsify.models import build_model, wrap_for_pruning

__version__ = "0.1.0"
