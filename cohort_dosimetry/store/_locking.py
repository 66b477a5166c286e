"""Advisory file locks (``fcntl.flock``) that serialise writers of one scan or one table.

``flock`` locks belong to the open file and the kernel drops them when the process dies, even by SIGKILL,
so a crashed writer never leaves a stale lock behind. Lock files are never deleted (deleting a lock file
while another process waits on it would let two writers in).

A writer waits for a lock at most :func:`lock_timeout_s` seconds (:data:`DEFAULT_LOCK_TIMEOUT_S`, or the
``COHORT_DOSIMETRY_LOCK_TIMEOUT_S`` environment variable, or :func:`lock_timeout` around the code that writes), then
raises :class:`LockTimeout` naming the lock's owner (scan, patient or table) and how long it waited. The store's
locks are held for the seconds a write takes, so a wait of minutes means a stuck writer.
"""

from __future__ import annotations

import contextvars
import fcntl
import math
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

#: Seconds a writer waits for a store lock before it gives up (:class:`LockTimeout`) when nothing else is configured.
DEFAULT_LOCK_TIMEOUT_S = 600.0
#: Environment variable that sets the wait (seconds; "inf" waits forever) for processes that do not set it in code.
LOCK_TIMEOUT_ENV = "COHORT_DOSIMETRY_LOCK_TIMEOUT_S"

_timeout_s: contextvars.ContextVar[float | None] = contextvars.ContextVar("cohort_lock_timeout_s", default=None)


class LockTimeout(TimeoutError):
    """A store lock stayed held by another process (or thread) for longer than the lock timeout.

    ``owner``: what the lock guards ("scan P001/tp2", "patient P001", "table runs", "the store's root");
    ``path``: the lock file; ``waited_s``: seconds waited.
    """

    def __init__(self, path: Path, waited_s: float):
        self.path, self.waited_s, self.owner = Path(path), float(waited_s), lock_owner(path)
        super().__init__(
            f"{self.owner}: its lock ({self.path.parent.name}/{self.path.name}) was held by another writer for "
            f"{self.waited_s:g} s, the lock timeout (set with {LOCK_TIMEOUT_ENV} or the run's --lock-timeout); "
            "a writer that holds a store lock that long is stuck"
        )

    def __reduce__(self):  # the error crosses processes (Dask workers): rebuild it from its own arguments
        return type(self), (self.path, self.waited_s)


def lock_owner(path: Path) -> str:
    """What a lock file guards, in words: ``scan.P1.tp2.lock`` -> "scan P1/tp2", ``patient.P1.lock`` ->
    "patient P1", ``table.runs.lock`` -> "table runs", ``compute.P1.tp2.mc.lock`` -> "the mc map of scan P1/tp2",
    ``root.lock`` -> "the store's root"."""
    parts = Path(path).name.split(".")[:-1]
    if parts[:1] == ["scan"] and len(parts) == 3:
        return f"scan {parts[1]}/{parts[2]}"
    if parts[:1] == ["compute"] and len(parts) == 4:
        return f"the {parts[3]} map of scan {parts[1]}/{parts[2]}"
    if parts[:1] in (["patient"], ["table"]) and len(parts) == 2:
        return f"{parts[0]} {parts[1]}"
    if parts == ["root"]:
        return "the store's root"
    return f"lock {'.'.join(parts)}"


def lock_timeout_s() -> float:
    """Seconds a writer waits for a lock here: the innermost :func:`lock_timeout`, else
    ``$COHORT_DOSIMETRY_LOCK_TIMEOUT_S``, else :data:`DEFAULT_LOCK_TIMEOUT_S` (``math.inf``: wait forever)."""
    value = _timeout_s.get()
    if value is not None:
        return value
    env = os.environ.get(LOCK_TIMEOUT_ENV, "").strip()
    if env:
        try:
            value = float(env)
        except ValueError:
            raise ValueError(f"{LOCK_TIMEOUT_ENV}={env!r} is not a number of seconds") from None
        if not value > 0:
            raise ValueError(f"{LOCK_TIMEOUT_ENV}={env!r}: the lock timeout must be positive")
        return value
    return DEFAULT_LOCK_TIMEOUT_S


@contextmanager
def lock_timeout(seconds: float | None) -> Iterator[None]:
    """Within the ``with`` block (this thread or task), wait at most ``seconds`` for any store lock (``math.inf``:
    forever; None: leave the configured wait)."""
    if seconds is not None and not seconds > 0:
        raise ValueError(f"a lock timeout must be positive seconds, got {seconds!r}")
    token = _timeout_s.set(float(seconds)) if seconds is not None else None
    try:
        yield
    finally:
        if token is not None:
            _timeout_s.reset(token)


def _flock_within(fd: int, path: Path, timeout: float) -> None:
    """Take the exclusive flock on ``fd`` within ``timeout`` seconds or raise :class:`LockTimeout`."""
    if math.isinf(timeout):
        fcntl.flock(fd, fcntl.LOCK_EX)
        return
    t0 = time.monotonic()
    pause = 0.01
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            waited = time.monotonic() - t0
            if waited >= timeout:
                raise LockTimeout(path, round(waited, 1)) from None
            time.sleep(min(pause, timeout - waited))
            pause = min(pause * 2, 0.25)


def lock_file(store_path: Path, *owner: str) -> Path:
    """The lock file of a scan (``"scan", patient, timepoint``), a patient (``"patient", patient``) or a table
    (``"table", name``) of a store."""
    return store_path / ".locks" / ".".join((*owner, "lock"))


@contextmanager
def exclusive_lock(path: Path, timeout: float | None = None) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created if missing) for the ``with`` block; waits for other holders at
    most ``timeout`` seconds (None: :func:`lock_timeout_s`; ``math.inf``: forever), then raises :class:`LockTimeout`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        _flock_within(fd, path, lock_timeout_s() if timeout is None else timeout)
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
