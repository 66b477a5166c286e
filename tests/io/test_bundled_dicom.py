"""pydicom's bundled real DICOM files (CT, RTDOSE, RTSTRUCT, SEG, NM) are read or rejected with a clear message."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from cohort_dosimetry.grid import Grid
from cohort_dosimetry.io import (
    IngestError,
    discover_studies,
    ingest,
    read_ct_series,
    read_nm,
    read_rtdose,
    read_rtstruct,
    read_seg,
)

DATA_DIR = Path(get_testdata_file("CT_small.dcm")).parent


def _bundled(modality: str) -> list[Path]:
    found = []
    for path in sorted(DATA_DIR.glob("*.dcm")):
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
        except Exception:
            continue
        if ds.get("Modality") == modality:
            found.append(path)
    return found


CT_FILES = _bundled("CT")
RTDOSE_FILES = _bundled("RTDOSE")
RTSTRUCT_FILES = _bundled("RTSTRUCT")
SEG_FILES = _bundled("SEG")
NM_FILES = _bundled("NM")


def test_the_named_files_are_among_them():
    names = {p.name for p in CT_FILES + RTDOSE_FILES + RTSTRUCT_FILES}
    assert {"CT_small.dcm", "rtdose.dcm", "rtstruct.dcm"} <= names


def _read_or_reject(reader, *args):
    """Call a reader; only an IngestError naming the file is an acceptable failure."""
    try:
        return reader(*args)
    except IngestError as exc:
        assert exc.subject and exc.problem, "an IngestError must name the file and the problem"
        return exc


def test_a_real_tilted_ct_is_rejected_for_its_gantry_tilt():
    path = Path(get_testdata_file("J2K_pixelrep_mismatch.dcm"))  # GantryDetectorTilt -22 degrees
    with pytest.raises(IngestError, match="gantry tilt of -22 degrees"):
        read_ct_series([path], path.name)


@pytest.mark.parametrize("path", CT_FILES, ids=lambda p: p.name)
def test_ct_files_are_read_or_rejected_clearly(path):
    result = _read_or_reject(read_ct_series, [path], path.name)
    if isinstance(result, IngestError):
        assert path.name in str(result)
        assert "unexpected" not in result.problem
        return
    ds = pydicom.dcmread(path)
    expected = ds.pixel_array.astype(np.float32) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    np.testing.assert_array_equal(result.array[0], expected)
    assert result.grid.spacing_mm[1:] == tuple(float(v) for v in ds.PixelSpacing)
    assert result.grid.origin_mm == tuple(float(v) for v in ds.ImagePositionPatient[::-1])


def test_ct_small_is_read():
    volume = read_ct_series([Path(get_testdata_file("CT_small.dcm"))])
    assert volume.array.shape == (1, 128, 128)
    assert volume.units == "HU"


@pytest.mark.parametrize("path", RTDOSE_FILES, ids=lambda p: p.name)
def test_rtdose_files_are_read_or_rejected_clearly(path):
    result = _read_or_reject(read_rtdose, path, path.name)
    if isinstance(result, IngestError):
        assert path.name in str(result)
        return
    ds = pydicom.dcmread(path)
    assert result.dose.units == str(ds.DoseUnits).upper()
    assert result.dose_type == str(ds.DoseType)
    np.testing.assert_allclose(result.dose.array.max(), ds.pixel_array.max() * float(ds.DoseGridScaling), rtol=1e-6)
    if int(ds.get("NumberOfFrames", 1)) > 1:
        offsets = np.asarray(ds.GridFrameOffsetVector, dtype=float)
        assert result.dose.grid.spacing_mm[0] == pytest.approx(abs(offsets[1] - offsets[0]))


def test_rtdose_is_read():
    dose = read_rtdose(Path(get_testdata_file("rtdose.dcm")))
    assert dose.dose.array.shape == (15, 10, 10)
    assert dose.dose.units == "RELATIVE"  # as written in the file (DoseUnits), not converted


@pytest.mark.parametrize("path", RTSTRUCT_FILES, ids=lambda p: p.name)
def test_rtstruct_files_are_rasterised_or_rejected_clearly(path):
    ds = pydicom.dcmread(path, force=True)
    # A reference grid around the contours: 5 mm voxels covering every contour point, slices at the contour planes.
    points = np.concatenate(
        [
            np.asarray(c.ContourData, float).reshape(-1, 3)
            for roi in ds.ROIContourSequence
            for c in roi.get("ContourSequence", [])
        ]
    )
    planes = np.unique(points[:, 2])
    dz = float(np.min(np.diff(planes))) if planes.size > 1 else 1.0
    lo, hi = points.min(axis=0) - 10, points.max(axis=0) + 10
    shape = (int(round((planes.max() - planes.min()) / dz)) + 1, *(int(v) for v in np.ceil((hi - lo)[1::-1] / 5)))
    grid = Grid(shape, (dz, 5.0, 5.0), (float(planes.min()), float(lo[1]), float(lo[0])))
    result = _read_or_reject(read_rtstruct, path, grid, path.name)
    if isinstance(result, IngestError):
        return
    names = {str(r.ROIName).strip() for r in ds.StructureSetROISequence}
    # every VOI is a ROI of the file: under its own name or, renamed to the vocabulary, recorded in source_names
    assert {result.source_names.get(voi, voi) for voi in result.vois if voi not in result.derived} <= names
    assert result.names, "the contours cover the reference grid, so some ROI must have voxels"
    assert set(np.unique(result.labels.array)) == {0, *result.names}


@pytest.mark.parametrize("path", SEG_FILES, ids=lambda p: p.name)
def test_seg_files_are_read_or_rejected_clearly(path):
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    frame = ds.PerFrameFunctionalGroupsSequence[0]
    position = [float(v) for v in frame.PlanePositionSequence[0].ImagePositionPatient]
    measures = ds.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0]
    grid = Grid(
        (1, int(ds.Rows), int(ds.Columns)),
        (float(measures.get("SliceThickness", 1.0)), *(float(v) for v in measures.PixelSpacing)),
        tuple(position[::-1]),
    )
    result = _read_or_reject(read_seg, path, grid, path.name)
    if isinstance(result, IngestError):
        assert path.name in str(result)
        return
    assert result.names
    assert np.count_nonzero(result.labels.array) > 0


@pytest.mark.parametrize("path", NM_FILES, ids=lambda p: p.name)
def test_planar_nm_files_are_rejected_clearly(path):
    with pytest.raises(IngestError) as info:
        read_nm([path], subject=path.name)
    assert path.name in str(info.value)


def test_ingest_of_all_bundled_files_reports_without_traceback(tmp_path, monkeypatch):
    monkeypatch.setenv("COHORT_DOSIMETRY_PSEUDONYM_KEY", "bundled-files-test-key")
    folder = tmp_path / "dicom"
    folder.mkdir()
    for path in CT_FILES + RTDOSE_FILES + RTSTRUCT_FILES + SEG_FILES + NM_FILES:
        shutil.copy(path, folder / path.name)
    discovery = discover_studies(folder)
    report = ingest(folder, tmp_path / "cohort", grid="ct")
    assert len(report) > 0
    assert not report["message"].str.contains("Traceback|unexpected", regex=True).any(), report["message"].tolist()
    # none of these patients has a SPECT, so nothing is written and the NM files are reported as not reconstructed
    assert not discovery.scans
    assert report["status"].isin(["rejected", "ignored"]).all()
    nm_rows = report[report["source"].str.startswith("NM series")]
    assert len(nm_rows) and nm_rows["message"].str.contains("not a reconstructed SPECT").all()
