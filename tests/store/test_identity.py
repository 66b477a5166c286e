"""Scan identity (one SPECT series per timepoint label), label allocation, therapy cycles, and the schema-1 refusal."""

from __future__ import annotations

import json
import threading
import time

import pytest

from cohort_dosimetry.store import number_cycles, open_cohort, validate_cohort

from ._factory import make_scan


def _write(cohort, patient, timepoint, seed, key=None, **attrs):
    ds, base = make_scan(seed=seed, spect_series_key=key)
    return cohort.write_scan(patient, timepoint, ds, {**base, **attrs})


def test_a_label_belongs_to_one_series(cohort):
    assert _write(cohort, "P1", "tp1", seed=1, key="Hseries-a") == "written"
    with pytest.raises(ValueError) as excinfo:
        _write(cohort, "P1", "tp1", seed=2, key="Hseries-b")
    assert "'Hseries-a'" in str(excinfo.value) and "'Hseries-b'" in str(excinfo.value)
    assert "scan P1/tp1" in str(excinfo.value)
    assert cohort.scan_versions("P1", "tp1") == [1]
    # the same series with other files is a new version of the same label
    assert _write(cohort, "P1", "tp1", seed=3, key="Hseries-a") == "new_version"
    assert cohort.scan_versions("P1", "tp1") == [1, 2]


def test_one_series_has_one_label_per_patient(cohort):
    _write(cohort, "P1", "tp1", seed=1, key="Hseries-a")
    with pytest.raises(ValueError) as excinfo:
        _write(cohort, "P1", "tp2", seed=2, key="Hseries-a")
    assert "scan P1/tp2" in str(excinfo.value) and "P1/tp1" in str(excinfo.value)
    assert cohort.scans() == [("P1", "tp1")]
    _write(cohort, "P2", "tp1", seed=3, key="Hseries-a")  # another patient: keys are per patient
    assert validate_cohort(cohort.path) == []


def test_labels_are_tp_numbers_found_by_series_and_never_reused(cohort):
    assert cohort.next_timepoint("P1") == "tp1"
    assert cohort.timepoint_of("P1", "Hseries-0") is None
    for number in range(1, 11):
        assert cohort.next_timepoint("P1") == f"tp{number}"
        _write(cohort, "P1", f"tp{number}", seed=number, key=f"Hseries-{number}")
    assert cohort.timepoints("P1") == [f"tp{n}" for n in range(1, 11)]  # tp10 after tp9
    assert [t for _, t in cohort.scans()] == cohort.timepoints("P1")
    assert cohort.timepoint_of("P1", "Hseries-7") == "tp7"
    assert cohort.next_timepoint("P1") == "tp11"
    for bad in ("tp0", "tp01", "t1", "baseline"):
        with pytest.raises(ValueError, match="is not a timepoint label"):
            _write(cohort, "P1", bad, seed=20, key="Hseries-20")


def test_the_patient_lock_serialises_allocation_between_threads(cohort):
    """Two writers allocate under the patient lock; the first waits inside, so without the lock both would see tp1."""
    labels = {}

    def writer(key, pause):
        with cohort.patient_lock("P1"):
            timepoint = cohort.timepoint_of("P1", key) or cohort.next_timepoint("P1")
            time.sleep(pause)
            _write(cohort, "P1", timepoint, seed=len(key), key=key)
            labels[key] = timepoint

    first = threading.Thread(target=writer, args=("Hseries-first", 0.3))
    first.start()
    time.sleep(0.05)
    second = threading.Thread(target=writer, args=("Hseries-second-one", 0.0))
    second.start()
    first.join()
    second.join()
    assert labels == {"Hseries-first": "tp1", "Hseries-second-one": "tp2"}


def test_cycles_number_the_injections_in_time_order():
    days = [
        "2026-01-05T09:00:00",
        "2026-03-02T10:00:00",
        "2026-01-05T09:30:00",
        "2026-01-06T20:00:00",
        "2026-04-27T08:00:00",
        "2026-03-03T11:59:00",
    ]
    # Jan 5 09:00, 09:30 and Jan 6 20:00 (35 h later) are one cycle; Mar 2/3 (26 h apart) the next; Apr 27 the third
    assert number_cycles(days) == [1, 2, 1, 1, 3, 2]
    assert number_cycles(["2026-01-05T09:00:00", "2026-01-07T09:00:00"]) == [1, 2]  # 2 days apart: two cycles
    assert number_cycles([]) == []


def test_a_late_earlier_cycle_renumbers_the_stored_scans(cohort):
    second = "2026-03-02T06:00:00"
    first = "2026-01-05T06:00:00"
    with cohort.patient_lock("P1"):
        assert cohort.cycle_for("P1", "tp1", second) == 1
    _write(cohort, "P1", "tp1", seed=1, injection_datetime=second, cycle=1)
    _write(cohort, "P1", "tp2", seed=2, injection_datetime=second, cycle=cohort.cycle_for("P1", "tp2", second))
    assert cohort.scan_attrs("P1", "tp2")["cycle"] == 1
    # the first cycle's scan arrives: it is cycle 1 among the stored injections, the stored ones are now stale
    assert cohort.cycle_for("P1", "tp3", first) == 1
    _write(cohort, "P1", "tp3", seed=3, injection_datetime=first, cycle=1)
    assert any("cycles do not number the injections" in p for p in validate_cohort(cohort.path))
    assert cohort.renumber_cycles("P1") == {"tp1": (1, 2), "tp2": (1, 2)}
    assert [cohort.scan_attrs("P1", t)["cycle"] for t in ("tp1", "tp2", "tp3")] == [2, 2, 1]
    changes = cohort.scan_attrs("P1", "tp1")["cycle_changes"]
    assert [(c["from"], c["to"]) for c in changes] == [(1, 2)]
    assert cohort.renumber_cycles("P1") == {}
    assert validate_cohort(cohort.path) == []
    assert set(cohort.scan("P1", "tp1").data_vars) == {"ct_hu", "density", "activity", "labels"}  # arrays untouched


def test_a_schema_1_store_is_refused_with_the_reason_and_the_remedy(cohort):
    root = cohort.store_path / "zarr.json"
    meta = json.loads(root.read_text())
    meta["attributes"]["schema_version"] = 1
    root.write_text(json.dumps(meta))
    for create in (False, True):
        with pytest.raises(ValueError) as excinfo:
            open_cohort(cohort.path, create=create)
        message = str(excinfo.value)
        assert "has schema_version 1; this software reads version 2" in message
        assert "numbered time points by their position in the folder" in message
        assert "Re-ingest its DICOM into a new cohort directory" in message
    assert "store.zarr: schema_version 1, this validator checks version 2" in validate_cohort(cohort.path)
