"""Result files: atomic writes (a file or directory is either the old one or the complete new one),
and reading them back."""
from __future__ import annotations

import csv
import json
import os
import shutil
import tempfile
from typing import Any, Callable


def atomic_write(path: str, write: Callable[[str], None], suffix: str = "") -> None:
    """Writes through `write(tmp_path)` beside `path`, then renames the result to `path`."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=suffix)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_bytes(path: str, content: bytes) -> None:
    def write(tmp):
        with open(tmp, "wb") as f:
            f.write(content)

    atomic_write(path, write)


def write_text(path: str, text: str) -> None:
    write_bytes(path, text.encode())


def write_json(path: str, value: Any) -> None:
    write_text(path, json.dumps(value, indent=2))


def read_json(path: str) -> Any:
    """The JSON value in `path`, or None if there is no such file."""
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def atomic_directory(directory: str, write: Callable[[str], None]) -> None:
    """Writes through `write(tmp_dir)` then renames it to `directory`, replacing any previous one."""
    parent = os.path.dirname(os.path.abspath(directory))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(dir=parent, prefix=".tmp-")
    try:
        write(tmp)
        if os.path.exists(directory):
            old = tempfile.mkdtemp(dir=parent, prefix=".old-")
            os.replace(directory, old)  # rename(2) replaces the empty directory `old`.
            os.replace(tmp, directory)
            shutil.rmtree(old)
        else:
            os.replace(tmp, directory)
    finally:
        if os.path.exists(tmp):
            shutil.rmtree(tmp)


def write_csv(path: str, rows: list[dict]) -> None:
    """Writes dict rows (the first row's keys are the columns) as CSV."""

    def write(tmp):
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)

    atomic_write(path, write)
