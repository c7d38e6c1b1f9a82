"""tff_sparsify: federated progressive sparsification (FedSparsify) on TensorFlow Federated.

Submodules and the names below load on first use (PEP 562), so that importing the package, or its
command line, does not load TensorFlow. Importing changes nothing in TensorFlow, TFF or logging:
`configure_runtime()` sets up TFF's local runtime for these processes (one computation per CPU core,
a worker that dies with this process); `experiment.run` calls it unless the program did.
"""
import importlib

__version__ = "0.1.0"

_NAMES = {
    "Dataset": "data", "FederatedData": "data", "federate": "data", "from_arrays": "data", "load_dataset": "data",
    "build_model": "models", "wrap_for_pruning": "models",
    "ExperimentConfig": "config",
}
_ALIASES = {"configure_runtime": ("compat", "configure_tff_runtime")}


def __getattr__(name: str):
    if name in _NAMES:
        return getattr(importlib.import_module(f"tff_sparsify.{_NAMES[name]}"), name)
    if name in _ALIASES:
        module, attribute = _ALIASES[name]
        return getattr(importlib.import_module(f"tff_sparsify.{module}"), attribute)
    try:
        return importlib.import_module(f"tff_sparsify.{name}")
    except ModuleNotFoundError as error:
        if error.name != f"tff_sparsify.{name}":
            raise
        raise AttributeError(f"module 'tff_sparsify' has no attribute {name!r}") from None


def __dir__():
    return sorted([*globals(), *_NAMES, *_ALIASES])
