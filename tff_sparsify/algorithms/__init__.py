"""The algorithms, one module each, looked up by name.

Every module of this package that defines `ALGORITHMS` (a tuple of `base.Algorithm`) is registered
when the package loads, so adding an algorithm to the library is adding one module (and its test);
`register` adds one defined elsewhere, e.g. in your own project, before `ExperimentConfig` names it.
The modules are pure Python at import: TensorFlow loads when a process is built.
"""
from __future__ import annotations

import importlib
import pkgutil
import re

from tff_sparsify import checks
from tff_sparsify.algorithms.base import Algorithm, Blocked, Options, Pruned, Scheduled, Setup  # noqa: F401

_REGISTRY: dict[str, Algorithm] = {}


def register(algorithm: Algorithm) -> Algorithm:
    """Makes `algorithm` known by its name (to `ExperimentConfig`, the runner, grid and report);
    returns it. A name already taken by another algorithm is refused."""
    if not isinstance(algorithm, Algorithm):
        raise TypeError(f"algorithm must be an Algorithm, got {type(algorithm).__name__}")
    if not re.fullmatch(r"[a-z][a-z0-9_]*", algorithm.name):
        raise ValueError(f"an algorithm's name must be lowercase letters, digits and _, got {algorithm.name!r}")
    if _REGISTRY.get(algorithm.name, algorithm) != algorithm:
        raise ValueError(f"algorithm {algorithm.name!r} is already registered")
    _REGISTRY[algorithm.name] = algorithm
    return algorithm


def get(name: str) -> Algorithm:
    """The algorithm called `name`; a ValueError naming the known ones otherwise."""
    checks.choice("algorithm", name, names())
    return _REGISTRY[name]


def names() -> tuple[str, ...]:
    return tuple(_REGISTRY)


def option_owners() -> dict[str, tuple[str, ...]]:
    """Every algorithm option's name -> the algorithms that take it."""
    owners: dict[str, list[str]] = {}
    for algorithm in _REGISTRY.values():
        for name in algorithm.option_names():
            owners.setdefault(name, []).append(algorithm.name)
    return {name: tuple(algorithms) for name, algorithms in owners.items()}


for _module in pkgutil.iter_modules(__path__):
    for _algorithm in getattr(importlib.import_module(f"{__name__}.{_module.name}"), "ALGORITHMS", ()):
        register(_algorithm)
