"""A virtual patient exported to DICOM by the phantoms package and ingested back equals the generator's Dataset.

Synthetic virtual patients stand in for patient data.
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from cohort_dosimetry.grid import Grid
from cohort_dosimetry.io import ingest
from cohort_dosimetry.phantoms import export_dicom, make_virtual_patient
from cohort_dosimetry.store import open_cohort, validate_cohort

# A coarse grid keeps the test fast; the anatomy and SPECT model are the real ones.
SMALL_GRID = Grid((44, 40, 40), (6.0, 12.5, 12.5))
HOURS = (4, 24)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    patient = make_virtual_patient(3, grid=SMALL_GRID, hours=HOURS)
    out = tmp_path_factory.mktemp("export")
    export_dicom(patient, out)
    return patient, out


def test_export_then_ingest_gives_back_the_generator_dataset(exported, tmp_path, monkeypatch):
    monkeypatch.setenv("COHORT_DOSIMETRY_PSEUDONYM_KEY", "end-to-end-test-key-000")
    patient, out = exported
    report = ingest(
        out, tmp_path / "cohort", grid="ct"
    )  # the whole export folder: ground truth must be ignored quietly
    assert not (report["severity"] == "error").any(), report["message"].tolist()
    assert report.loc[report["source"] == "ground_truth", "severity"].tolist() == ["info"]
    cohort = open_cohort(tmp_path / "cohort")
    assert [tp for _, tp in cohort.scans()] == ["tp1", "tp2"]
    for k, (p, tp) in enumerate(cohort.scans()):
        scan = cohort.scan(p, tp)
        assert scan.attrs["hours_post_injection"] == pytest.approx(HOURS[k])
        assert scan.attrs["spacing_mm"] == pytest.approx(patient.attrs["spacing_mm"])
        assert scan.attrs["origin_mm"] == pytest.approx(patient.attrs["origin_mm"])
        assert scan.attrs["administered_activity_bq"] == pytest.approx(patient.attrs["administered_activity_bq"])
        assert scan.attrs["contours_from"] == "SEG"
        assert scan.attrs["synthetic"] is True  # the exporter's mark survives: reports can say "not patient data"
        # the simulated acquisition's projection time, through the NM header's Rotation Information Sequence
        seconds = patient.attrs["n_views"] * patient.attrs["seconds_per_view"]
        assert scan.attrs["acquisition_duration_s"] == pytest.approx(seconds) and seconds == 120 * 30.0
        np.testing.assert_array_equal(scan["ct_hu"].values, patient["ct_hu"].values)
        np.testing.assert_array_equal(scan["labels"].values, patient["labels"].values)
        assert scan["labels"].attrs["names"] == patient["labels"].attrs["names"]
        truth = patient["activity"].isel(timepoint=k).values.astype(np.float64)
        ingested = scan["activity"].values.astype(np.float64)
        assert ingested.sum() == pytest.approx(truth.sum(), rel=1e-3)  # same grid: only rescale quantisation
        np.testing.assert_allclose(ingested, truth, atol=1e-4 * truth.max())
    assert validate_cohort(tmp_path / "cohort") == []


def test_rtstruct_alone_gives_the_same_labels_as_seg(exported, tmp_path, monkeypatch):
    monkeypatch.setenv("COHORT_DOSIMETRY_PSEUDONYM_KEY", "end-to-end-test-key-000")
    patient, out = exported
    copy = tmp_path / "dicom"
    shutil.copytree(out / "dicom", copy, ignore=shutil.ignore_patterns("SEG"))
    ingest(copy, tmp_path / "cohort", grid="ct")
    cohort = open_cohort(tmp_path / "cohort")
    for p, tp in cohort.scans():
        scan = cohort.scan(p, tp)
        assert scan.attrs["contours_from"] == "RTSTRUCT"
        np.testing.assert_array_equal(scan["labels"].values, patient["labels"].values)
