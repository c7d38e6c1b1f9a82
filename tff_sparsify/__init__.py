"""tff_sparsify: federated progressive sparsification (FedSparsify) on TensorFlow Federated.

Submodules and the names below load on first use (PEP 562), so that importing the package, or its
command line, does not load TensorFlow; the modules that run TFF computations set up TFF's runtime
when they load (`tff_sparsify.compat`).
"""
import importlib
import os

# Before TensorFlow loads: hide its C++ logs, among them the "Unable to register cuDNN/cuFFT/cuBLAS
# factory" errors TensorFlow 2.14 prints at every import on a CPU machine (errors that matter reach
# Python as exceptions). TF_CPP_MIN_LOG_LEVEL=0 in the environment shows them all.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

__version__ = "0.1.0"

_NAMES = {
    "Dataset": "data", "FederatedData": "data", "federate": "data", "from_arrays": "data", "load_dataset": "data",
    "build_model": "models", "wrap_for_pruning": "models",
}


def __getattr__(name: str):
    if name in _NAMES:
        return getattr(importlib.import_module(f"tff_sparsify.{_NAMES[name]}"), name)
    try:
        return importlib.import_module(f"tff_sparsify.{name}")
    except ModuleNotFoundError as error:
        if error.name != f"tff_sparsify.{name}":
            raise
        raise AttributeError(f"module 'tff_sparsify' has no attribute {name!r}") from None


def __dir__():
    return sorted([*globals(), *_NAMES])
