"""Fixtures for the flow tests: one Prefect test server per session and a tiny synthetic DICOM cohort.

The cohort is made of synthetic virtual patients on a small grid with the compact spacing (so the shipped CNN
weights apply), exported as DICOM exactly as `cohort-dosimetry synth` does.
"""

from __future__ import annotations

import os
import shutil

import pytest

os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

TINY_GRID = dict(shape=(24, 32, 32), spacing_mm=(3.0, 3.91, 3.91))


@pytest.fixture(scope="session")
def prefect_api():
    """The Prefect test harness (a temporary API server), exported so that worker processes report to it."""
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        url = PREFECT_API_URL.value()
        old = os.environ.get("PREFECT_API_URL")
        os.environ["PREFECT_API_URL"] = url
        try:
            yield url
        finally:
            if old is None:
                os.environ.pop("PREFECT_API_URL", None)
            else:
                os.environ["PREFECT_API_URL"] = old


@pytest.fixture(scope="session")
def tiny_dicom(tmp_path_factory):
    """DICOM of 2 synthetic virtual patients (3-4 time points each) on a 24x32x32 grid."""
    from cohort_dosimetry.grid import Grid
    from cohort_dosimetry.phantoms import export_cohort

    out = tmp_path_factory.mktemp("dicom")
    export_cohort(out, n_patients=2, seed=5, grid=Grid(**TINY_GRID), spect="fast", progress=False)
    return out


@pytest.fixture(scope="session")
def ingested(tiny_dicom, tmp_path_factory):
    """A cohort store with the tiny cohort ingested once (tests copy it instead of ingesting again)."""
    from cohort_dosimetry.io import ingest

    cohort = tmp_path_factory.mktemp("ingested") / "cohort"
    ingest(tiny_dicom, cohort, grid="ct")
    return cohort


@pytest.fixture
def cohort_copy(ingested, tmp_path):
    dst = tmp_path / "cohort"
    shutil.copytree(ingested, dst)
    return dst
