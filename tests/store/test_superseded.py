"""Recomputed derived arrays supersede the old ones (kept readable with their provenance), a writer that dies
part-way through a replacement is rolled back, and the compute lock's wait is bounded."""

from __future__ import annotations

import os
import pickle
import threading

import numpy as np
import pytest

from cohort_dosimetry.store import Cohort, LockTimeout, MapLockTimeout, open_cohort, validate_cohort

from ._factory import make_dose_rate, make_scan


@pytest.fixture
def scan_with_dvk(cohort):
    """Scan P1/tp1 holding a DVK map (seed 2) recorded as made with settings "a"."""
    ds, attrs = make_scan(seed=1)
    cohort.write_scan("P1", "tp1", ds, attrs)
    record = cohort.write_arrays("P1", "tp1", make_dose_rate(seed=2), {"method": "dvk", "settings": "a"})
    return cohort, record


def test_a_replaced_map_stays_readable_with_its_provenance_and_the_new_one_names_it(scan_with_dvk):
    cohort, first = scan_with_dvk
    assert "supersedes" not in first and cohort.superseded_maps("P1", "tp1") == []

    second = cohort.write_arrays("P1", "tp1", make_dose_rate(seed=3), {"method": "dvk", "settings": "b"})
    third = cohort.write_arrays("P1", "tp1", make_dose_rate(seed=4), {"method": "dvk", "settings": "c"})
    assert (second["supersedes"], third["supersedes"]) == ("superseded/s0001", "superseded/s0002")
    scan = cohort.scan("P1", "tp1")
    np.testing.assert_array_equal(scan["dose_rate_dvk"].values, make_dose_rate(seed=4)["dose_rate_dvk"].values)
    assert scan.attrs["provenance"]["dose_rate_dvk"] == third

    slots = cohort.superseded_maps("P1", "tp1")
    assert [s["slot"] for s in slots] == ["s0001", "s0002"]
    assert [s["provenance"]["dose_rate_dvk"] for s in slots] == [first, second]
    assert slots[1]["superseded_utc"] == third["written_utc"]
    for slot, seed in (("s0001", 2), ("s0002", 3)):
        old = cohort.superseded_dataset("P1", "tp1", slot)
        np.testing.assert_array_equal(old["dose_rate_dvk"].values, make_dose_rate(seed=seed)["dose_rate_dvk"].values)
        assert old["dose_rate_dvk"].attrs["units"] == "Gy/s"
    assert set(scan.data_vars) == {"activity", "ct_hu", "density", "labels", "dose_rate_dvk"}
    with pytest.raises(KeyError, match="no superseded slot s0003"):
        cohort.superseded_dataset("P1", "tp1", "s0003")
    assert validate_cohort(cohort.path) == []
    assert not any((cohort.store_path / ".staging").iterdir())


def test_the_two_mc_arrays_are_superseded_together_in_one_slot(cohort):
    ds, attrs = make_scan(seed=1)
    cohort.write_scan("P1", "tp1", ds, attrs)
    mc = make_dose_rate(seed=5, name="dose_rate_mc").assign(
        dose_rate_mc_uncertainty=make_dose_rate(seed=6)["dose_rate_dvk"].assign_attrs(units="1")
    )
    cohort.write_arrays("P1", "tp1", mc, {"method": "mc", "n_decays": 1000})
    cohort.write_arrays("P1", "tp1", mc, {"method": "mc", "n_decays": 2000})
    (slot,) = cohort.superseded_maps("P1", "tp1")
    assert sorted(slot["provenance"]) == ["dose_rate_mc", "dose_rate_mc_uncertainty"]
    assert {r["n_decays"] for r in slot["provenance"].values()} == {1000}
    assert validate_cohort(cohort.path) == []


class _Died(Exception):
    """Stands for the writer's death: the files stay as they are at that point, the lock is released."""


def _die_at(monkeypatch, point: str) -> None:
    """Make write_arrays stop at ``point`` of a replacement, leaving its files as a killed writer would."""
    original_update = Cohort._update_provenance
    original_rename = os.rename

    def update(self, vdir, staging, add=None, remove=()):
        if (point == "before_delist" and remove) or (point == "before_listing" and add):
            raise _Died(point)
        return original_update(self, vdir, staging, add=add, remove=remove)

    def rename(src, dst, *args, **kwargs):
        src, dst = str(src), str(dst)
        moving_old = "/superseded/s" in dst and src.endswith("/dose_rate_dvk")
        moving_new = ".staging/" in src and src.endswith("/dose_rate_dvk") and "/superseded/" not in dst
        if (point == "before_moving_old" and moving_old) or (point == "before_moving_new" and moving_new):
            raise _Died(point)
        return original_rename(src, dst, *args, **kwargs)

    monkeypatch.setattr(Cohort, "_update_provenance", update)
    monkeypatch.setattr(os, "rename", rename)


@pytest.mark.parametrize("point", ["before_delist", "before_moving_old", "before_moving_new", "before_listing"])
def test_a_writer_dying_during_a_replacement_is_rolled_back_to_the_old_map(scan_with_dvk, monkeypatch, point):
    cohort, first = scan_with_dvk
    with monkeypatch.context() as m:
        _die_at(m, point)
        with pytest.raises(_Died):
            cohort.write_arrays("P1", "tp1", make_dose_rate(seed=3), {"method": "dvk", "settings": "b"})
    problems = validate_cohort(cohort.path)
    assert problems and any("leftover of an interrupted write" in p for p in problems), problems

    reopened = open_cohort(cohort.path)  # the writer is gone: its replacement is rolled back
    assert validate_cohort(cohort.path) == []
    scan = reopened.scan("P1", "tp1")
    np.testing.assert_array_equal(scan["dose_rate_dvk"].values, make_dose_rate(seed=2)["dose_rate_dvk"].values)
    assert scan.attrs["provenance"]["dose_rate_dvk"] == first
    assert reopened.superseded_maps("P1", "tp1") == []
    assert not (reopened.store_path / "scans" / "P1" / "tp1" / "v0001" / "superseded" / "s0001").exists()
    assert not any((reopened.store_path / ".staging").iterdir())

    again = reopened.write_arrays("P1", "tp1", make_dose_rate(seed=3), {"method": "dvk", "settings": "b"})
    assert again["supersedes"] == "superseded/s0001"
    assert reopened.superseded_maps("P1", "tp1")[0]["provenance"]["dose_rate_dvk"] == first
    assert validate_cohort(cohort.path) == []


def test_waiting_for_another_runs_map_is_bounded_and_names_the_scan_and_the_map(scan_with_dvk):
    cohort, _ = scan_with_dvk
    held, release = threading.Event(), threading.Event()

    def hold():
        with cohort.compute_lock("P1", "tp1", "mc"):
            held.set()
            release.wait(60)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert held.wait(60)
        with pytest.raises(MapLockTimeout) as err:
            with cohort.compute_lock("P1", "tp1", "mc", timeout_s=0.3):
                pass
        assert isinstance(err.value, LockTimeout) and isinstance(err.value, TimeoutError)
        assert "scan P1/tp1: waited" in str(err.value) and "its mc map" in str(err.value)
        assert err.value.waited_s >= 0.3
        moved = pickle.loads(pickle.dumps(err.value))  # as a Dask worker hands it back
        assert (type(moved), str(moved), moved.method) == (MapLockTimeout, str(err.value), "mc")
        with cohort.compute_lock("P1", "tp1", "dvk", timeout_s=0.3):  # another map of the scan is not held
            pass
    finally:
        release.set()
        holder.join(60)
    with cohort.compute_lock("P1", "tp1", "mc", timeout_s=5):  # free again once the holder is done
        pass
