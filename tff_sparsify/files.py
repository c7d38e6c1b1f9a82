"""Result files: atomic writes (a file or directory is either the old one or the complete new one),
and reading them back."""
from __future__ import annotations

import contextlib
import csv
import fcntl
import json
import os
import shutil
import tempfile
from typing import Any, Callable

from tff_sparsify.errors import DirectoryInUseError

LOCK_FILE = ".lock"
_UMASK = os.umask(0o022)
os.umask(_UMASK)  # Read, not changed.


def atomic_write(path: str, write: Callable[[str], None], suffix: str = "") -> None:
    """Writes through `write(tmp_path)` beside `path`, then renames the result to `path`."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=suffix)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_UMASK)  # As `open` would create it (mkstemp makes it private).
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


@contextlib.contextmanager
def exclusive_lock(directory: str):
    """Holds an exclusive lock on `directory` (created if needed) for the `with` block; raises
    `DirectoryInUseError`, naming the directory and the holder's process id, if another process (or
    another open lock in this one) holds it. The lock is released when the holder exits, however. A
    directory created here that holds nothing but the lock file at the end is removed again (by the
    holder, before it releases the lock), and so are the parents created for it that are empty then."""
    if os.path.exists(directory) and not os.path.isdir(directory):
        raise NotADirectoryError(f"{directory!r} is a file, not a directory")
    created = _missing_folders(directory)
    path = os.path.join(directory, LOCK_FILE)
    fd = _lock(directory, path)
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        if created and os.listdir(directory) == [LOCK_FILE]:
            os.remove(path)
            with contextlib.suppress(OSError):  # Something appeared meanwhile: the folder stays.
                for folder in created:  # The directory, then its parents made for it.
                    os.rmdir(folder)
        os.close(fd)


def _missing_folders(directory: str) -> list[str]:
    """`directory` and those of its parents that do not exist yet, deepest first."""
    missing, folder = [], os.path.abspath(directory)
    while not os.path.exists(folder) and folder != os.path.dirname(folder):
        missing.append(folder)
        folder = os.path.dirname(folder)
    return missing


def _lock(directory: str, path: str) -> int:
    """An open descriptor of `path` holding its exclusive lock. A lock file removed by its previous
    holder after we opened it is locked again under its new inode, so two holders never coexist."""
    while True:
        os.makedirs(directory, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise DirectoryInUseError(
                f"{directory!r} is in use by another run (process {holder}); wait for it to end or use "
                "another output directory"
            ) from None
        with contextlib.suppress(FileNotFoundError):
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                return fd
        os.close(fd)


def remove_temporaries(directory: str) -> None:
    """Removes what `atomic_write` and `atomic_directory` leave in `directory` when their process is
    killed mid-write (`.tmp-*`, `.old-*`); call it only while holding the directory's lock."""
    for name in os.listdir(directory):
        if name.startswith((".tmp-", ".old-")):
            path = os.path.join(directory, name)
            shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)


def write_bytes(path: str, content: bytes) -> None:
    def write(tmp):
        with open(tmp, "wb") as f:
            f.write(content)

    atomic_write(path, write)


def write_text(path: str, text: str) -> None:
    write_bytes(path, text.encode())


def write_json(path: str, value: Any) -> None:
    """Writes strict JSON: a NaN or infinity is an error, not an invalid file."""
    write_text(path, json.dumps(value, indent=2, allow_nan=False))


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
    """Writes dict rows as CSV. The columns are every row's keys in the order they first appear (a
    history resumed from an older version has fields its first rows lack: their cells stay empty)."""
    columns = list(dict.fromkeys(key for row in rows for key in row))

    def write(tmp):
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=columns)
            writer.writeheader()
            writer.writerows(rows)

    atomic_write(path, write)
