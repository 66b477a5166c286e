"""Store locks wait a bounded time: a writer that finds a lock held longer than the lock timeout fails with an error
naming what the lock guards and how long it waited."""

from __future__ import annotations

import fcntl
import math
import os
import time

import pytest

from cohort_dosimetry.store import LOCK_TIMEOUT_ENV, LockTimeout, lock_timeout
from cohort_dosimetry.store._locking import DEFAULT_LOCK_TIMEOUT_S, exclusive_lock, lock_file, lock_timeout_s

from ._factory import make_scan


@pytest.fixture
def held(tmp_path):
    """Hold the lock of a file through a second open file description (flock locks belong to it, so this process's
    own exclusive_lock waits for it as for another process's)."""
    fds = []

    def hold(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(fd, fcntl.LOCK_EX)
        fds.append(fd)

    yield hold
    for fd in fds:
        os.close(fd)


def test_a_held_scan_lock_times_out_naming_the_scan_and_the_wait(tmp_path, held):
    path = lock_file(tmp_path, "scan", "P1", "tp2")
    held(path)
    t0 = time.monotonic()
    with pytest.raises(LockTimeout) as err:
        with exclusive_lock(path, timeout=0.5):
            pytest.fail("the lock is held elsewhere")
    assert 0.5 <= time.monotonic() - t0 < 3
    assert err.value.owner == "scan P1/tp2" and err.value.path == path and err.value.waited_s >= 0.5
    assert str(err.value).startswith("scan P1/tp2: its lock (.locks/scan.P1.tp2.lock) was held by another writer for")
    assert isinstance(err.value, TimeoutError)


def test_the_wait_comes_from_the_innermost_setting_then_the_environment_then_the_default(monkeypatch):
    monkeypatch.delenv(LOCK_TIMEOUT_ENV, raising=False)
    assert lock_timeout_s() == DEFAULT_LOCK_TIMEOUT_S
    monkeypatch.setenv(LOCK_TIMEOUT_ENV, "42")
    assert lock_timeout_s() == 42.0
    with lock_timeout(7):
        assert lock_timeout_s() == 7.0
        with lock_timeout(None):  # None keeps what is configured
            assert lock_timeout_s() == 7.0
        with lock_timeout(math.inf):
            assert lock_timeout_s() == math.inf
    assert lock_timeout_s() == 42.0
    monkeypatch.setenv(LOCK_TIMEOUT_ENV, "soon")
    with pytest.raises(ValueError, match=f"{LOCK_TIMEOUT_ENV}='soon' is not a number of seconds"):
        lock_timeout_s()
    with pytest.raises(ValueError, match="positive"):
        with lock_timeout(0):
            pass


def test_a_free_lock_is_taken_at_once_and_a_released_one_after_its_holder_lets_go(tmp_path, held):
    path = lock_file(tmp_path, "table", "runs")
    with lock_timeout(0.2), exclusive_lock(path):
        pass
    fd = os.open(path, os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)
    os.close(fd)  # released: the next writer gets it within its wait
    with lock_timeout(0.2), exclusive_lock(path):
        pass


def test_write_scan_behind_a_held_patient_lock_fails_after_the_configured_wait(cohort, held):
    held(lock_file(cohort.store_path, "patient", "P1"))
    ds, attrs = make_scan(seed=1)
    with lock_timeout(0.3), pytest.raises(LockTimeout, match=r"^patient P1: its lock \(.locks/patient.P1.lock\)"):
        cohort.write_scan("P1", "tp1", ds, attrs)
    assert cohort.scans() == []


def test_the_error_crosses_processes_whole(tmp_path):
    """A lock timeout in a Dask worker reaches the flow pickled: it must come back as the same error."""
    import pickle

    err = pickle.loads(pickle.dumps(LockTimeout(lock_file(tmp_path, "scan", "P1", "tp2"), 3.0)))
    assert type(err) is LockTimeout and err.owner == "scan P1/tp2" and err.waited_s == 3.0
    assert str(err).startswith("scan P1/tp2: its lock (.locks/scan.P1.tp2.lock) was held by another writer for 3 s")
