"""Argument checks shared by the modules, with one wording for every error: "`name` must be ...,
got `value`". Pure Python."""
from __future__ import annotations

import numbers
import os


def integer(name: str, value, minimum: int = 1, maximum: int | None = None, hint: str = "") -> int:
    """`value` as an int; a ValueError naming `name` and the allowed range (plus `hint`) unless it
    is an integer (not a bool) in [`minimum`, `maximum`]."""
    if (isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum
            or (maximum is not None and value > maximum)):
        bound = f">= {minimum}" if maximum is None else f"in [{minimum}, {maximum}]"
        raise ValueError(f"{name} must be an integer {bound}, got {value!r}{hint}")
    return int(value)


def fraction(name: str, value) -> float:
    """`value` as a float in [0, 1) (a sparsity, a momentum); a ValueError naming `name` otherwise."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 <= value < 1:
        raise ValueError(f"{name} must be in [0, 1), got {value!r}")
    return float(value)


def choice(name: str, value, choices: tuple) -> None:
    """A ValueError naming `name` unless `value` is one of `choices`."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")


def file(name: str, path: str, kind: str) -> None:
    """An OSError naming `name` and `path` unless `path` is a file: a directory is not a `kind`
    (IsADirectoryError), and anything else is no such file (FileNotFoundError)."""
    if os.path.isdir(path):
        raise IsADirectoryError(f"{name} {path!r}: a directory, not a {kind}")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{name} {path!r}: no such file")
