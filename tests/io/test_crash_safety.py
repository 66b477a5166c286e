"""SIGKILL of an ingest in the middle of a store write, then a rerun: the store validates, every scan once.

Synthetic virtual patients (tests/io/dicom_factory.py) stand in for patient data.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from cohort_dosimetry.io import ingest
from cohort_dosimetry.store import open_cohort, validate_cohort
from tests.io import dicom_factory as factory

KEY = "crash-test-key-0123456789"
REPO = Path(__file__).resolve().parents[2]


def _staging_entries(cohort_dir: Path) -> list[str]:
    staging = cohort_dir / "store.zarr" / ".staging"
    return [p.name for p in staging.iterdir()] if staging.is_dir() else []


def test_sigkill_during_a_write_then_rerun_leaves_every_scan_exactly_once(tmp_path, monkeypatch):
    monkeypatch.setenv("COHORT_DOSIMETRY_PSEUDONYM_KEY", KEY)
    root = tmp_path / "dicom"
    n_scans = 0
    for seed in range(3):
        factory.write_patient(
            root,
            seed=seed,
            hours=(4.0, 24.0, 96.0),
            patient_id=f"H5{seed:07d}",
            ct_shape=(40, 64, 64),
            ct_spacing=(3.0, 1.5, 1.5),
        )
        n_scans += 3
    cohort_dir = tmp_path / "cohort"
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from cohort_dosimetry.io import ingest; ingest(sys.argv[1], sys.argv[2], grid='ct')",
            str(root),
            str(cohort_dir),
        ],
        cwd=REPO,
        env={**os.environ, "COHORT_DOSIMETRY_PSEUDONYM_KEY": KEY},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    killed_during_write = False
    seen_complete = set()
    deadline = time.monotonic() + 90
    try:
        while child.poll() is None and time.monotonic() < deadline:
            # wait until at least one scan is published, then kill while the next one is being staged
            if (cohort_dir / "store.zarr").is_dir():
                cohort = open_cohort(cohort_dir)
                for scan in cohort.scans():
                    if scan not in seen_complete:  # a reader never sees a partial scan: all four arrays, loadable
                        ds = cohort.scan(*scan)
                        assert {"ct_hu", "density", "activity", "labels"} <= set(ds.data_vars)
                        _ = ds["activity"].isel(z=0).values  # reading the data must work too
                        seen_complete.add(scan)
                if seen_complete and any(e.startswith("scan.") for e in _staging_entries(cohort_dir)):
                    child.send_signal(signal.SIGKILL)
                    killed_during_write = True
                    break
            time.sleep(0.001)
    finally:
        if child.poll() is None and not killed_during_write:
            child.kill()
        child.wait()
    assert killed_during_write, "the ingest finished before it could be killed in the middle of a write"
    assert child.returncode == -signal.SIGKILL

    cohort = open_cohort(cohort_dir)
    partial = len(cohort.scans())
    assert 1 <= partial < n_scans
    report = ingest(root, cohort_dir, grid="ct")
    scans = cohort.scans()
    assert len(scans) == n_scans == len(set(scans))
    assert all(cohort.scan_versions(*scan) == [1] for scan in scans)
    scan_rows = report[report["timepoint"] != ""].drop_duplicates(["patient", "timepoint"])  # one row per scan
    statuses = scan_rows["status"].value_counts().to_dict()
    assert statuses == {"unchanged": partial, "written": n_scans - partial}
    assert validate_cohort(cohort_dir) == []
    assert _staging_entries(cohort_dir) == []
