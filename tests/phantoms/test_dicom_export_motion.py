"""DICOM export of virtual patients that move between scans (synthetic): every study carries its own time point's CT
and contours, the ground truth keeps the motion, and the ingest reads each scan's moved anatomy back.

Checks read the files with pydicom, highdicom and matplotlib's point-in-polygon test, independently of the writer.
"""

from __future__ import annotations

import highdicom as hd
import numpy as np
import pydicom
import pytest
from matplotlib.path import Path as PolygonPath

from cohort_dosimetry.grid import Grid
from cohort_dosimetry.phantoms import (
    cohort_plan,
    export_cohort,
    export_dicom,
    make_virtual_patient,
    motion_points,
    move_patient,
    read_ground_truth,
)

# A coarse abdomen (240 x 450 x 450 mm) keeps the tests cheap; anatomy, SPECT model and motion are the real ones.
GRID = Grid((40, 36, 36), (6.0, 12.5, 12.5))
HOURS = (4, 24, 96)
SEED = 11


@pytest.fixture(scope="module")
def patients():
    static = make_virtual_patient(SEED, grid=GRID, hours=HOURS)
    moved = move_patient(static, seed=SEED)
    moved["activity_true_unmoved"] = static["activity_true"]
    return static, moved


@pytest.fixture(scope="module")
def exported(patients, tmp_path_factory):
    _, moved = patients
    out = tmp_path_factory.mktemp("moved")
    return export_dicom(moved, out, patient_index=2), out


def _ct_hu(folder) -> np.ndarray:
    slices = sorted((pydicom.dcmread(f) for f in folder.glob("*.dcm")), key=lambda d: float(d.ImagePositionPatient[2]))
    return np.stack([s.pixel_array * float(s.RescaleSlope) + float(s.RescaleIntercept) for s in slices])


def _rasterise_rtstruct(rs: pydicom.Dataset, grid: Grid) -> dict[str, np.ndarray]:
    """ROI name -> mask (z, y, x): voxel centres inside an odd number of the slice's contours (even-odd rule)."""
    zc, yc, xc = grid.axes_mm()
    centres = np.column_stack([g.ravel() for g in np.meshgrid(xc, yc, indexing="xy")])  # (y*x, 2) of (x, y)
    names = {roi.ROINumber: roi.ROIName for roi in rs.StructureSetROISequence}
    masks = {}
    for roi in rs.ROIContourSequence:
        inside = np.zeros(grid.shape, dtype=np.int32)
        for contour in roi.ContourSequence:
            xyz = np.asarray(contour.ContourData, dtype=float).reshape(-1, 3)
            (k,) = np.flatnonzero(np.isclose(zc, xyz[0, 2]))
            inside[k] += PolygonPath(xyz[:, :2]).contains_points(centres).reshape(grid.shape[1:])
        masks[names[roi.ReferencedROINumber]] = inside % 2 == 1
    return masks


def test_each_study_holds_its_own_time_points_ct_and_contours(patients, exported):
    _, moved = patients
    result, _ = exported
    names = moved["labels"].attrs["names"]
    labels = moved["labels"].values
    assert (labels[1] != labels[0]).mean() > 0.02 and (labels[2] != labels[1]).mean() > 0.02  # they do move
    for k, scan in enumerate(result.scans):
        np.testing.assert_array_equal(_ct_hu(scan.ct_dir), moved["ct_hu"].values[k])
        nm = pydicom.dcmread(scan.nm_file)
        slope = float(nm.RescaleSlope)
        np.testing.assert_allclose(nm.pixel_array * slope, moved["activity"].values[k], atol=slope / 2 * (1 + 1e-6))
        present = {names[v] for v in np.unique(labels[k]).tolist() if v}
        masks = _rasterise_rtstruct(pydicom.dcmread(scan.rtstruct_file), GRID)
        assert set(masks) == present
        for value, name in names.items():
            if name in present:
                np.testing.assert_array_equal(masks[name], labels[k] == value, err_msg=f"RTSTRUCT {k}: {name}")
        seg = hd.seg.segread(scan.seg_file)
        ct = sorted(
            (pydicom.dcmread(f, stop_before_pixels=True) for f in scan.ct_dir.glob("*.dcm")),
            key=lambda d: float(d.ImagePositionPatient[2]),
        )
        segments = {seg.get_segment_description(n).segment_label: n for n in seg.get_segment_numbers()}
        assert set(segments) == present
        pixels = seg.get_pixels_by_source_instance(
            source_sop_instance_uids=[d.SOPInstanceUID for d in ct],
            segment_numbers=[segments[names[v]] for v in sorted(names) if names[v] in present],
            assert_missing_frames_are_empty=True,
        )
        for i, value in enumerate(v for v in sorted(names) if names[v] in present):
            np.testing.assert_array_equal(pixels[..., i].astype(bool), labels[k] == value, err_msg=f"SEG {k}")


def test_ground_truth_keeps_the_motion(patients, exported, tmp_path):
    static, moved = patients
    result, _ = exported
    truth = read_ground_truth(result.ground_truth)
    assert truth.attrs["moves"] is True
    for name in ("motion_seed", "max_shift_mm", "max_rotation_deg", "organ_displacement_mm", "reference_timepoint"):
        assert truth.attrs[name] == moved.attrs[name], name
    assert truth.attrs["motion_seed"] == SEED and truth.attrs["reference_timepoint"] == 0
    np.testing.assert_array_equal(truth["labels"].values, static["labels"].values)  # the reference anatomy
    np.testing.assert_array_equal(truth["density"].values, static["density"].values)
    np.testing.assert_array_equal(truth["activity_true"].values, moved["activity_true"].values)  # what was imaged
    np.testing.assert_array_equal(truth["activity_true_unmoved"].values, static["activity_true"].values)
    assert truth["activity_true_unmoved"].attrs["units"] == "Bq/mL"
    np.testing.assert_array_equal(truth["labels_moved"].values, moved["labels"].values)
    assert truth["labels_moved"].attrs["names"] == truth["labels"].attrs["names"] == static["labels"].attrs["names"]
    assert truth["displacement_true"].dims == ("timepoint", "component", "z", "y", "x")
    assert list(truth["component"].values) == ["z", "y", "x"]
    np.testing.assert_allclose(
        truth["displacement_true"].values, moved["displacement_true"].values, rtol=0, atol=2.0**-11 + 1e-6
    )
    assert list(truth["organ"].values) == list(moved["organ"].values)
    points = np.random.default_rng(0).uniform(-100.0, 100.0, size=(50, 3))
    for t in range(len(HOURS)):
        np.testing.assert_array_equal(motion_points(truth, t, points), motion_points(moved, t, points))
    # the static export of the same patient: no motion in its truth, and no UID shared with the moved export
    plain = export_dicom(static, tmp_path, patient_index=2)
    plain_truth = read_ground_truth(plain.ground_truth)
    assert plain_truth.attrs["moves"] is False and "displacement_true" not in plain_truth
    moved_uids = {s.study_instance_uid for s in result.scans} | {s.frame_of_reference_uid for s in result.scans}
    assert not moved_uids & (
        {s.study_instance_uid for s in plain.scans} | {s.frame_of_reference_uid for s in plain.scans}
    )
    for moved_scan, plain_scan in zip(result.scans, plain.scans):
        a = pydicom.dcmread(moved_scan.seg_file, stop_before_pixels=True)
        b = pydicom.dcmread(plain_scan.seg_file, stop_before_pixels=True)
        assert a.SOPInstanceUID != b.SOPInstanceUID and a.PatientID == b.PatientID


def test_a_moved_patient_without_its_unmoved_truth_is_refused(patients, tmp_path):
    _, moved = patients
    with pytest.raises(ValueError, match=rf"seed {SEED}\).*moved patient.*lacks activity_true_unmoved"):
        export_dicom(moved.drop_vars("activity_true_unmoved"), tmp_path)
    assert not (tmp_path / "dicom").exists()


def test_ingest_reads_each_scans_moved_anatomy(patients, exported, tmp_path, monkeypatch):
    from cohort_dosimetry.io import ingest
    from cohort_dosimetry.store import open_cohort

    monkeypatch.setenv("COHORT_DOSIMETRY_PSEUDONYM_KEY", "motion-export-test-key-00")
    _, moved = patients
    _, out = exported
    report = ingest(out, tmp_path / "cohort", grid="ct")
    assert not (report["severity"] == "error").any(), report["message"].tolist()
    cohort = open_cohort(tmp_path / "cohort")
    scans = cohort.scans()
    assert len(scans) == len(HOURS)
    for k, (p, tp) in enumerate(scans):
        scan = cohort.scan(p, tp)
        assert scan.attrs["hours_post_injection"] == pytest.approx(HOURS[k])
        np.testing.assert_array_equal(scan["labels"].values, moved["labels"].values[k])
        np.testing.assert_array_equal(scan["ct_hu"].values, moved["ct_hu"].values[k])


def test_export_cohort_moves_each_patient_with_its_own_seed(tmp_path):
    grid = Grid((24, 32, 32), (10.0, 15.64, 15.64))
    cohort = export_cohort(tmp_path, n_patients=1, seed=4, grid=grid, progress=False, workers=1, motion=True)
    ((patient_seed, hours),) = cohort_plan(1, 4)
    static = make_virtual_patient(patient_seed, grid=grid, hours=hours)
    moved = move_patient(static, seed=patient_seed)
    truth = read_ground_truth(cohort.patients[0].ground_truth)
    assert truth.attrs["moves"] is True and truth.attrs["motion_seed"] == patient_seed
    np.testing.assert_array_equal(truth["labels_moved"].values, moved["labels"].values)
    np.testing.assert_array_equal(truth["activity_true"].values, moved["activity_true"].values)
    np.testing.assert_array_equal(truth["activity_true_unmoved"].values, static["activity_true"].values)
    for k, scan in enumerate(cohort.patients[0].scans):
        np.testing.assert_array_equal(_ct_hu(scan.ct_dir), moved["ct_hu"].values[k])
