"""Writers killed with SIGKILL, staging leftovers, and two writers at once (real child processes)."""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from cohort_dosimetry.store import open_cohort, validate_cohort

from . import _workers
from ._factory import make_dose_rate, make_scan

SPAWN = multiprocessing.get_context("spawn")  # no fork: the parent may hold dask/zarr threads


def _wait_for(path: Path, process, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        assert process.is_alive(), f"child exited with {process.exitcode} before reaching its kill point"
        assert time.monotonic() < deadline, f"child never reached its kill point ({path})"
        time.sleep(0.01)


@pytest.mark.parametrize("kill_point", ["chunks", "publish", "provenance"])
def test_sigkill_during_a_write_leaves_a_valid_store_and_a_rerun_completes(cohort, tmp_path, kill_point):
    paused = tmp_path / "paused"
    child = SPAWN.Process(target=_workers.write_scan_until, args=(str(cohort.path), kill_point, str(paused)))
    child.start()
    try:
        _wait_for(paused, child)
        # The writer is alive, inside its write: readers see nothing of what it is writing.
        if kill_point == "provenance":
            assert cohort.scans() == [("P1", "tp1")]
            assert not cohort.has_arrays("P1", "tp1", ["dose_rate_dvk"])
            assert "dose_rate_dvk" not in open_cohort(cohort.path).scan("P1", "tp1")
        else:
            assert open_cohort(cohort.path).scans() == []
        assert validate_cohort(cohort.path) == []  # a live writer's staging is not a problem
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.join(30)
    assert child.exitcode == -signal.SIGKILL

    leftovers = validate_cohort(cohort.path)
    assert leftovers and all(
        "leftover of an interrupted write" in p or "not listed in the scan's provenance" in p for p in leftovers
    ), leftovers
    reopened = open_cohort(cohort.path)  # removes the dead writer's staging (and its half-published arrays)
    assert validate_cohort(cohort.path) == []

    ds, attrs = make_scan(seed=1)
    if kill_point == "provenance":
        assert reopened.scans() == [("P1", "tp1")]
        assert not reopened.has_arrays("P1", "tp1", ["dose_rate_dvk"])
        assert reopened.write_scan("P1", "tp1", ds, attrs) == "unchanged"
        reopened.write_arrays("P1", "tp1", make_dose_rate(seed=2), {"method": "dvk"})
        assert reopened.has_arrays("P1", "tp1", ["dose_rate_dvk"])
    else:
        assert reopened.scans() == []
        assert reopened.write_scan("P1", "tp1", ds, attrs) == "written"
    assert reopened.scans() == [("P1", "tp1")]
    assert reopened.scan_versions("P1", "tp1") == [1]
    np.testing.assert_array_equal(reopened.scan("P1", "tp1")["activity"].values, ds["activity"].values)
    assert validate_cohort(cohort.path) == []
    assert not any((cohort.store_path / ".staging").iterdir())


def test_staging_leftover_is_invisible_reported_and_cleaned_on_open(cohort):
    ds, attrs = make_scan(seed=3)
    cohort.write_scan("P1", "tp1", ds, attrs)
    # Simulate a writer that died after staging a complete scan P2/tp1: copy a published scan into staging.
    import shutil

    staged = cohort.store_path / ".staging" / "scan.P2.tp1.deadbeef0000"
    shutil.copytree(cohort.store_path / "scans" / "P1" / "tp1" / "v0001", staged)

    assert cohort.scans() == [("P1", "tp1")]
    problems = validate_cohort(cohort.path)
    assert len(problems) == 1 and "scan.P2.tp1.deadbeef0000: leftover of an interrupted write" in problems[0]
    assert open_cohort(cohort.path).scans() == [("P1", "tp1")]
    assert not staged.exists()
    assert validate_cohort(cohort.path) == []


def test_a_staging_entry_its_writer_removes_while_the_cleaner_waits_is_no_error(cohort, monkeypatch):
    """A reader opening the cohort lists the staging folder; a writer that was still working then finishes, removes
    its staging entry and releases its lock, and only then does the reader's cleaner take that lock: opening the
    cohort must not fail on the entry that is gone (it did, with FileNotFoundError, while a flow was writing)."""
    import contextlib
    import shutil

    from cohort_dosimetry.store import _cohort

    staged = cohort.store_path / ".staging" / "scan.P2.tp1.0123456789ab"
    staged.mkdir(parents=True)
    real_try_lock = _cohort.try_lock

    @contextlib.contextmanager
    def writer_finishes_first(path):
        shutil.rmtree(staged, ignore_errors=True)  # the writer's last step, under its lock
        with real_try_lock(path) as taken:
            yield taken

    monkeypatch.setattr(_cohort, "try_lock", writer_finishes_first)
    assert open_cohort(cohort.path).scans() == []
    assert not staged.exists()


@pytest.fixture(scope="module")
def two_processes():
    with ProcessPoolExecutor(max_workers=2, mp_context=SPAWN) as pool:
        yield pool


def _start_together(tmp_path: Path, futures_ready: list[Path], start: Path) -> None:
    deadline = time.monotonic() + 120
    while not all(p.exists() for p in futures_ready):
        assert time.monotonic() < deadline, "writers did not start"
        time.sleep(0.01)
    start.touch()


def test_concurrent_write_arrays_from_two_processes_keep_both(cohort, tmp_path, two_processes):
    ds, attrs = make_scan(seed=4)
    cohort.write_scan("P1", "tp1", ds, attrs)
    ready = [tmp_path / "ready_dvk", tmp_path / "ready_cnn"]
    start = tmp_path / "start"
    seeds = {"dose_rate_dvk": [10, 11, 12, 13, 14, 15], "dose_rate_cnn": [20, 21, 22, 23, 24, 25]}
    futures = [
        two_processes.submit(_workers.write_dose_rate_repeatedly, str(cohort.path), name, s, str(r), str(start))
        for (name, s), r in zip(seeds.items(), ready)
    ]
    _start_together(tmp_path, ready, start)
    for future in futures:
        future.result(timeout=120)

    back = open_cohort(cohort.path).scan("P1", "tp1")
    for name, s in seeds.items():
        np.testing.assert_array_equal(back[name].values, make_dose_rate(seed=s[-1], name=name)[name].values)
        assert back.attrs["provenance"][name]["seed"] == s[-1]
    assert validate_cohort(cohort.path) == []
    assert not any((cohort.store_path / ".staging").iterdir())


def test_two_processes_writing_the_same_scan_store_it_once(cohort, tmp_path, two_processes):
    ready = [tmp_path / "ready_a", tmp_path / "ready_b"]
    start = tmp_path / "start"
    futures = [two_processes.submit(_workers.write_same_scan, str(cohort.path), str(r), str(start)) for r in ready]
    _start_together(tmp_path, ready, start)
    outcomes = sorted(f.result(timeout=120) for f in futures)
    assert outcomes == ["unchanged", "written"]
    assert cohort.scans() == [("P1", "tp1")] and cohort.scan_versions("P1", "tp1") == [1]
    assert validate_cohort(cohort.path) == []


def test_a_reader_polling_during_writes_only_ever_sees_complete_scans(cohort, tmp_path, two_processes):
    seeds = list(range(30, 38))
    expected = {f"P{s}": make_scan(seed=s)[0] for s in seeds}
    ready, start = tmp_path / "ready", tmp_path / "start"
    future = two_processes.submit(_workers.write_several_scans, str(cohort.path), seeds, str(ready), str(start))
    _start_together(tmp_path, [ready], start)
    checked = set()  # a published scan never changes, so each is read in full once, as soon as it is listed
    while True:
        done = future.done()
        for patient, timepoint in set(cohort.scans()) - checked:
            scan = cohort.scan(patient, timepoint)
            assert set(scan.data_vars) == {"ct_hu", "density", "activity", "labels"}
            for name in scan.data_vars:
                np.testing.assert_array_equal(scan[name].values, expected[patient][name].values)
            checked.add((patient, timepoint))
        if done:
            break
    future.result()
    assert cohort.scans() == [(f"P{s}", "tp1") for s in seeds] == sorted(checked)


def test_two_processes_creating_one_cohort_make_one_store(tmp_path, two_processes):
    ready = [tmp_path / "ready_a", tmp_path / "ready_b"]
    start = tmp_path / "start"
    target = tmp_path / "cohort"
    futures = [two_processes.submit(_workers.create_cohort, str(target), str(r), str(start)) for r in ready]
    _start_together(tmp_path, ready, start)
    created = {f.result(timeout=120) for f in futures}
    assert len(created) == 1
    assert sorted(p.name for p in target.iterdir()) == ["reports", "store.zarr", "tables"]
    assert validate_cohort(target) == []
