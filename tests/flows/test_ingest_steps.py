"""Ingest in steps, as the ingest flow runs it: discovery and labels once (the plan), one step per scan in any order
and any process, then the report. A scan whose step never returns fails alone, named; a store lock held by another
process makes a writer fail after the lock timeout, naming the scan and the lock."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from cohort_dosimetry import pipeline
from cohort_dosimetry.store import LockTimeout, lock_timeout, open_cohort
from cohort_dosimetry.store._locking import lock_file

_HOLD = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o644)
fcntl.flock(fd, fcntl.LOCK_EX)
print("held", flush=True)
time.sleep(120)
"""


@pytest.fixture
def hold_lock():
    """Hold a store lock file in another process until the test ends."""
    procs = []

    def hold(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        proc = subprocess.Popen([sys.executable, "-c", _HOLD, str(path)], stdout=subprocess.PIPE, text=True)
        procs.append(proc)
        assert proc.stdout.readline().strip() == "held"

    yield hold
    for proc in procs:
        proc.kill()
        proc.wait()


@pytest.fixture
def key(monkeypatch):
    monkeypatch.setenv("COHORT_DOSIMETRY_PSEUDONYM_KEY", "test-key-ingest-steps-0123")


def test_scans_landing_in_any_order_are_labelled_in_time_order_and_a_lost_one_fails_alone(tiny_dicom, tmp_path, key):
    cohort_dir = tmp_path / "cohort"
    plan = pipeline.plan_cohort_ingest(tiny_dicom, cohort_dir, grid="ct")
    assert len(plan.scans) >= 6 and all(scan.planned_timepoint and not scan.timepoint for scan in plan.scans)
    lost = plan.scans[1]  # its worker died: the step never returned
    outcomes = [pipeline.ingest_planned_scan(cohort_dir, scan) for scan in reversed(plan.scans) if scan is not lost]
    outcomes.append(pipeline.failed_planned_scan(lost, "its worker died"))
    results = pipeline.finish_cohort_ingest(cohort_dir, plan, outcomes)

    cohort = open_cohort(cohort_dir)
    assert len(cohort.scans()) == len(plan.scans) - 1
    for patient in {scan.patient for scan in plan.scans}:
        labels = cohort.timepoints(patient)  # in label order
        times = [cohort.scan_attrs(patient, t)["acquisition_datetime"] for t in labels]
        assert times == sorted(times), (labels, times)  # written last to first, labelled first to last
    assert lost.planned_timepoint not in cohort.timepoints(lost.patient)  # its label stays unused
    failed = [r for r in results if r["status"] == "failed"]  # named by patient and SPECT series: it has no label
    assert failed == [
        pipeline.StepResult("ingest", lost.patient, "", "failed", 0.0, f"{lost.subject}: its worker died").as_dict()
    ]
    assert sorted(r["status"] for r in results) == ["done"] * (len(plan.scans) - 1) + ["failed"]
    report = cohort.ingest_report()
    assert report.loc[report["status"] == "rejected", "source"].tolist() == [lost.subject]
    assert (report["status"] == "written").sum() >= len(plan.scans) - 1


def test_a_patient_lock_held_by_another_process_fails_the_scan_after_the_lock_timeout(
    tiny_dicom, tmp_path, key, hold_lock
):
    cohort_dir = tmp_path / "cohort"
    plan = pipeline.plan_cohort_ingest(tiny_dicom, cohort_dir, grid="ct")
    scan = plan.scans[0]
    hold_lock(lock_file(open_cohort(cohort_dir).store_path, "patient", scan.patient))
    t0 = time.monotonic()
    outcome = pipeline.ingest_planned_scan(cohort_dir, scan, lock_timeout_s=1)
    assert time.monotonic() - t0 >= 1
    (row,) = outcome["rows"]
    assert row["status"] == "rejected" and row["source"] == scan.subject and row["patient"] == scan.patient
    assert (
        f"waited too long to write it: patient {scan.patient}: its lock (.locks/patient.{scan.patient}.lock) "
        "was held by another writer for 1"
    ) in row["message"], row["message"]
    assert open_cohort(cohort_dir).scans() == []


def test_a_scan_lock_held_by_another_process_fails_a_dose_writer_naming_the_scan(cohort_copy, hold_lock):
    cohort = open_cohort(cohort_copy)
    patient, timepoint = cohort.scans()[0]
    hold_lock(lock_file(cohort.store_path, "scan", patient, timepoint))
    with lock_timeout(1), pytest.raises(LockTimeout, match=rf"^scan {patient}/{timepoint}: its lock .* for 1"):
        pipeline.compute_scan_dose(cohort_copy, patient, timepoint, ("dvk",), device="cpu")
    assert not cohort.has_arrays(patient, timepoint, ["dose_rate_dvk"])


def test_two_cycles_landing_last_to_first_get_their_cycles_and_labels_in_time_order(tmp_path, key):
    """Written in parallel, a second cycle's scans may land before the first's: at the end every scan has the cycle
    and label of its place in time, each scan row states its final cycle, and no warning claims that an earlier
    injection arrived late."""
    import datetime as dt

    from tests.io import dicom_factory as factory

    root = tmp_path / "dicom"
    factory.write_patient(root / "cycle_1", seed=31, hours=(4.0, 96.0), patient_id="H31000001")
    factory.write_patient(
        root / "cycle_2",
        seed=31,
        hours=(24.0, 168.0),
        patient_id="H31000001",
        injection=factory.INJECTION + dt.timedelta(weeks=8),
    )
    cohort_dir = tmp_path / "cohort"
    plan = pipeline.plan_cohort_ingest(root, cohort_dir, grid="ct")
    assert len(plan.scans) == 4
    outcomes = [pipeline.ingest_planned_scan(cohort_dir, scan) for scan in reversed(plan.scans)]
    pipeline.finish_cohort_ingest(cohort_dir, plan, outcomes)

    cohort = open_cohort(cohort_dir)
    (patient,) = {scan.patient for scan in plan.scans}
    attrs = [cohort.scan_attrs(patient, t) for t in cohort.timepoints(patient)]
    assert cohort.timepoints(patient) == ["tp1", "tp2", "tp3", "tp4"]
    assert [a["hours_post_injection"] for a in attrs] == pytest.approx([4.0, 96.0, 24.0, 168.0])
    assert [a["cycle"] for a in attrs] == [1, 1, 2, 2]
    report = cohort.ingest_report()
    renumbered = report[report["status"] == "cycle_renumbered"]
    assert sorted(renumbered["timepoint"]) == ["tp3", "tp4"] and set(renumbered["severity"]) == {"info"}
    assert renumbered["message"].str.startswith("therapy cycle 1 -> 2: written before a scan of an earlier").all()
    paired = report[report["message"].str.startswith("paired with")].set_index("timepoint")["message"]
    for timepoint, a in zip(cohort.timepoints(patient), attrs):
        assert paired[timepoint].endswith(f"; therapy cycle {a['cycle']}"), paired[timepoint]
