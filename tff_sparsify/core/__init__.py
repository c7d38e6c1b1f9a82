"""The papers' math, without TFF: the sparsity schedule (eq. 1), global magnitude and random pruning,
SNIP and GraSP scores, FedTiny's candidate masks and prune-and-grow, the data partitions, and the
communication accounting (appendix C).

Submodules load on first use (PEP 562): `schedules` and `partitions` are pure Python, the others load
TensorFlow.
"""
import importlib

_MODULES = ("metrics", "partitions", "prune_grow", "pruning", "saliency", "schedules")


def __getattr__(name: str):
    if name in _MODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), *_MODULES])
