"""tff_sparsify: federated progressive sparsification (FedSparsify) on TensorFlow Federated."""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # Before TensorFlow loads: hide its C++ info logs.

from tff_sparsify import compat, data, models, partitions
from tff_sparsify.data import Dataset, FederatedData, federate, load_dataset
from tff_sparsify.models import build_model, wrap_for_pruning

__version__ = "0.1.0"
