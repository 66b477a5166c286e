"""Dask worker preload (``dask worker --preload``) for the cluster tests: a worker that starts to build a scan whose
SPECT Series Instance UID is listed in the file named by ``$COHORT_TEST_CRASH_SERIES`` kills itself with SIGKILL,
as the kernel's out-of-memory killer does to a worker whose build outgrows the machine: no cleanup, no report."""

from __future__ import annotations

import os
import signal
from pathlib import Path

from cohort_dosimetry.io import _ingest


def _build_scan_or_die(job):
    listed = os.environ.get("COHORT_TEST_CRASH_SERIES", "")
    if listed and Path(listed).is_file() and job.sources.spect.series_uid in Path(listed).read_text().split():
        os.kill(os.getpid(), signal.SIGKILL)
    return _ingest._build_scan_unpatched(job)


# Dask may run a preload more than once in a process: patch once.
if not hasattr(_ingest, "_build_scan_unpatched"):
    _ingest._build_scan_unpatched = _ingest._build_scan
    _ingest._build_scan = _build_scan_or_die
