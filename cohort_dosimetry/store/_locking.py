"""Advisory file locks (``fcntl.flock``) that serialise writers of one scan or one table.

``flock`` locks belong to the open file and the kernel drops them when the process dies, even by SIGKILL,
so a crashed writer never leaves a stale lock behind. Lock files are never deleted (deleting a lock file
while another process waits on it would let two writers in).
"""
from __future__ import annotations

import fcntl
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def lock_file(store_path: Path, *owner: str) -> Path:
    """The lock file of a scan (``"scan", patient, timepoint``), a patient (``"patient", patient``) or a table
    (``"table", name``) of a store."""
    return store_path / ".locks" / ".".join((*owner, "lock"))


@contextmanager
def exclusive_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created if missing) for the ``with`` block; waits for other holders."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


_held = threading.local()


@contextmanager
def reentrant_lock(path: Path) -> Iterator[None]:
    """:func:`exclusive_lock` that the thread holding it may take again (nested ``with`` blocks hold it once).

    ``flock`` locks belong to an open file, so a second ``open`` + ``flock`` of the same file in the same process
    would wait for itself; this lets a method that takes the lock be called by code that already holds it. Other
    threads and processes wait as usual.
    """
    held = getattr(_held, "depth", None)
    if held is None:
        held = _held.depth = {}
    key = os.path.abspath(path)
    if key in held:
        held[key] += 1
        try:
            yield
        finally:
            held[key] -= 1
        return
    with exclusive_lock(path):
        held[key] = 1
        try:
            yield
        finally:
            del held[key]


def lock_is_free(path: Path) -> bool:
    """True if no live process holds the lock on ``path`` (a missing lock file is free)."""
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(fd)
    return True


@contextmanager
def try_lock(path: Path) -> Iterator[bool]:
    """Try to take the exclusive lock on ``path`` without waiting; yields whether it was taken (and holds it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
        else:
            yield True
    finally:
        os.close(fd)
