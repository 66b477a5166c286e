"""Child-process bodies for the concurrent-ingest tests (importable, so they run under 'spawn')."""

from __future__ import annotations

import time
from pathlib import Path


def ingest_with_slow_allocation(
    dicom_dir: str, cohort_dir: str, key: str, pause_s: float, ready_flag: str, start_flag: str
) -> dict[str, tuple[str, str, str]]:
    """Ingest ``dicom_dir``, starting together with the other process, with every label allocation held open for
    ``pause_s`` (between choosing the next free label and writing it): a second ingest that does not wait for the
    patient's lock there would choose the same label. Returns {SPECT series: (patient, timepoint, status)}."""
    from cohort_dosimetry.io import ingest
    from cohort_dosimetry.store import Cohort

    original = Cohort.next_timepoint

    def slow_next_timepoint(self, patient):
        label = original(self, patient)
        time.sleep(pause_s)
        return label

    Cohort.next_timepoint = slow_next_timepoint
    Path(ready_flag).touch()
    deadline = time.monotonic() + 60
    while not Path(start_flag).exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{start_flag} never appeared")
        time.sleep(0.005)
    report = ingest(dicom_dir, cohort_dir, key=key, grid="ct")
    rows = report[report["status"].isin(["written", "new_version", "unchanged", "rejected"])]
    return {r.source: (r.patient, r.timepoint, r.status) for r in rows.itertuples()}
