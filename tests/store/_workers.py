"""Child-process bodies for the crash and concurrency tests (importable, so they run under 'spawn')."""

from __future__ import annotations

import os
import time
from pathlib import Path

from cohort_dosimetry.store import open_cohort

from ._factory import make_dose_rate, make_scan


def _pause_forever(paused_flag: Path) -> None:
    """Tell the parent we reached the kill point, then wait to be killed."""
    paused_flag.write_text(str(os.getpid()))
    time.sleep(600)


def write_scan_until(cohort_dir: str, kill_point: str, paused_flag: str) -> None:
    """Write scan P1/tp1 (seed 1), pausing at ``kill_point`` so the parent can SIGKILL this process there.

    kill points: "chunks" (after some chunks of the staged scan are written), "publish" (staged scan complete,
    just before the publishing rename), "provenance" (in write_arrays: the new array moved into the scan group,
    before the attrs that declare it are rewritten).
    """
    import zarr.storage

    from cohort_dosimetry.store._cohort import Cohort

    flag = Path(paused_flag)
    cohort = open_cohort(cohort_dir)
    if kill_point == "chunks":
        original_set = zarr.storage.LocalStore.set
        written = []

        async def set_then_pause(self, key, value, *args, **kwargs):
            await original_set(self, key, value, *args, **kwargs)
            if "/c/" in key:
                written.append(key)
                if len(written) == 3:
                    _pause_forever(flag)

        zarr.storage.LocalStore.set = set_then_pause
    elif kill_point == "publish":
        original_rename = os.rename

        def pause_then_rename(src, dst, *args, **kwargs):
            if ".staging" in str(src):
                _pause_forever(flag)
            return original_rename(src, dst, *args, **kwargs)

        os.rename = pause_then_rename
    elif kill_point == "provenance":
        ds, attrs = make_scan(seed=1)
        cohort.write_scan("P1", "tp1", ds, attrs)
        original_update = Cohort._update_provenance

        def pause_then_update(self, vdir, staging, add=None, remove=()):
            if add:
                _pause_forever(flag)
            return original_update(self, vdir, staging, add=add, remove=remove)

        Cohort._update_provenance = pause_then_update
        cohort.write_arrays("P1", "tp1", make_dose_rate(seed=2), {"method": "dvk"})
        return
    ds, attrs = make_scan(seed=1)
    cohort.write_scan("P1", "tp1", ds, attrs)


def _wait_for_start(start_flag: Path) -> None:
    deadline = time.monotonic() + 60
    while not start_flag.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{start_flag} never appeared")
        time.sleep(0.005)


def write_dose_rate_repeatedly(cohort_dir: str, name: str, seeds: list[int], ready_flag: str, start_flag: str) -> None:
    """Write ``name`` into scan P1/tp1 once per seed, starting together with the other writer."""
    cohort = open_cohort(cohort_dir)
    Path(ready_flag).touch()
    _wait_for_start(Path(start_flag))
    for seed in seeds:
        cohort.write_arrays("P1", "tp1", make_dose_rate(seed=seed, name=name), {"method": name, "seed": seed})


def write_same_scan(cohort_dir: str, ready_flag: str, start_flag: str) -> str:
    """Write scan P1/tp1 (seed 1) starting together with the other writer; returns the outcome."""
    cohort = open_cohort(cohort_dir)
    ds, attrs = make_scan(seed=1)
    Path(ready_flag).touch()
    _wait_for_start(Path(start_flag))
    return cohort.write_scan("P1", "tp1", ds, attrs)


def write_several_scans(cohort_dir: str, seeds: list[int], ready_flag: str, start_flag: str) -> None:
    """Write scans P{seed}/tp1 from ``make_scan(seed)``, one after the other, while the parent reads."""
    cohort = open_cohort(cohort_dir)
    Path(ready_flag).touch()
    _wait_for_start(Path(start_flag))
    for seed in seeds:
        ds, attrs = make_scan(seed=seed)
        cohort.write_scan(f"P{seed}", "tp1", ds, attrs)


def create_cohort(cohort_dir: str, ready_flag: str, start_flag: str) -> str:
    """Create (or open) the cohort at ``cohort_dir`` together with the other process; returns its created stamp."""
    Path(ready_flag).touch()
    _wait_for_start(Path(start_flag))
    return open_cohort(cohort_dir, create=True).attrs["created"]
