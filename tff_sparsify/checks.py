"""Argument checks shared by the modules, with one wording for every error: "`name` must be ...,
got `value`". Pure Python."""
from __future__ import annotations

import dataclasses
import math
import numbers
import re
import os
import typing


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


def share(name: str, value) -> float:
    """`value` as a float in (0, 1] (a part of a whole, which may be all of it); a ValueError naming
    `name` otherwise."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 < value <= 1:
        raise ValueError(f"{name} must be in (0, 1], got {value!r}")
    return float(value)


_LOCAL_WORKERS = re.compile(r"local:([1-9][0-9]*)")
_WORKER_ADDRESS = re.compile(r"(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9_.-]+):([0-9]{1,5})")


def workers(name: str, value: str) -> int | list[str]:
    """`"local:N"` -> N, or `"host:port,host:port"` -> the addresses; a ValueError naming `name`."""
    value = value.strip()
    local = _LOCAL_WORKERS.fullmatch(value)
    if local:
        return int(local.group(1))
    addresses = [a.strip() for a in value.split(",")]
    for address in addresses:
        match = _WORKER_ADDRESS.fullmatch(address)
        if not match or not 1 <= int(match.group(2)) <= 65535:
            raise ValueError(f"{name} must be local:N (N >= 1) or host:port[,host:port...] with ports in "
                             f"[1, 65535], got {value!r} ({address!r} does not parse)")
    if len(set(addresses)) != len(addresses):
        raise ValueError(f"{name} names a worker twice: {value!r}")
    return addresses


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


def field_types(instance, skip: tuple[str, ...] = ()) -> None:
    """Each field of the dataclass `instance` (but those in `skip`) holds its annotated type: a real bool, an integer (not
    1.5, not "32"), a finite number, a string; None only where the field is optional. A ValueError
    naming the field otherwise."""
    hints = typing.get_type_hints(type(instance))
    for field in dataclasses.fields(instance):
        if field.name in skip:
            continue
        value, hint = getattr(instance, field.name), hints[field.name]
        optional = type(None) in typing.get_args(hint)
        if value is None and optional:
            continue
        kind = next(t for t in (bool, int, float, str) if t is hint or t in typing.get_args(hint))
        if not _is_kind(value, kind):
            raise ValueError(f"{field.name} must be {_KIND_NAMES[kind]}{' or null' if optional else ''}, "
                             f"got {value!r}")


_KIND_NAMES = {bool: "true or false", int: "an integer", float: "a finite number", str: "a string"}


def _is_kind(value, kind: type) -> bool:
    if kind is bool or isinstance(value, bool):
        return kind is bool and isinstance(value, bool)
    if kind is int:
        return isinstance(value, numbers.Integral)
    if kind is float:
        return isinstance(value, numbers.Real) and math.isfinite(value)
    return isinstance(value, str)
