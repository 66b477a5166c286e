"""Clinical contours: TG-263 and local ROI names, overlapping ROIs, statistics over each ROI's own contour.

The patient is a synthetic box phantom (tests/io/dicom_factory.py), not patient data. Its RTSTRUCT is written here
with pydicom the way a planning system writes one: each ROI on its own, overlapping freely (External around
everything, Liver around its GTVs), one CLOSED_PLANAR rectangle per slice through the midpoints between voxel centres,
so every ROI's voxels on the CT grid are known exactly.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import generate_uid

from cohort_dosimetry.grid import Grid
from cohort_dosimetry.io import ingest, read_ct_series, read_rtstruct, read_seg
from cohort_dosimetry.stats import scan_tables
from cohort_dosimetry.store import open_cohort, validate_cohort
from tests.io import dicom_factory as factory

HOURS = 24.0
#: ROI name as a clinic writes it -> its box (z, y, x) of CT voxel indices, in the order of the structure set.
#: The factory's CT is 14 x 20 x 22 voxels; its body fills [1:13, 2:18, 2:20].
ROIS = {
    "External": np.s_[1:13, 2:18, 2:20],
    "Liver": np.s_[3:9, 5:13, 4:14],
    "GTV_1": np.s_[5:7, 7:9, 7:9],  # inside the liver
    "Kidney_L": np.s_[4:8, 6:11, 15:18],
    "Bowel_Bag": np.s_[6:11, 10:16, 10:17],  # overlaps the liver and the kidney
    "L2": np.s_[9:12, 14:17, 9:12],
    "Lesion": np.s_[4:5, 6:7, 6:7],  # one CT voxel inside the liver: unnumbered, it gets the next free number
}
#: The VOI each ROI must become (independent of the code's synonym table).
VOI_OF = {
    "External": "external",
    "Liver": "liver",
    "GTV_1": "lesion_1",
    "Kidney_L": "kidney_left",
    "Bowel_Bag": "Bowel_Bag",
    "L2": "vertebra_L2",
    "Lesion": "lesion_2",
}
VOI_CLASS = {
    "external": "body",
    "liver": "liver",
    "lesion_1": "lesion",
    "kidney_left": "kidney",
    "Bowel_Bag": "other",
    "vertebra_L2": "vertebra",
    "lesion_2": "lesion",
    "liver_healthy": "liver",
}


@pytest.fixture(autouse=True)
def _pseudonym_key(monkeypatch):
    monkeypatch.setenv("COHORT_DOSIMETRY_PSEUDONYM_KEY", "clinical-contours-key-0123")


def _masks(shape) -> dict[str, np.ndarray]:
    """Every VOI's voxels (z, y, x) on the CT grid, computed from the boxes alone; liver_healthy = liver - lesions."""
    masks = {}
    for roi, box in ROIS.items():
        mask = np.zeros(shape, dtype=bool)
        mask[box] = True
        masks[VOI_OF[roi]] = mask
    masks["liver_healthy"] = masks["liver"] & ~masks["lesion_1"] & ~masks["lesion_2"]
    return masks


def _write_rtstruct(
    patient: factory.Patient, path: Path, study_uid: str, ct_series_uid: str, frame_uid: str, when: dt.datetime
) -> None:
    ds = factory._base(patient, "RTSTRUCT", factory.RTSTRUCT_STORAGE, study_uid, generate_uid(), frame_uid, when, 3)
    del ds.FrameOfReferenceUID
    series = Dataset()
    series.SeriesInstanceUID = ct_series_uid
    study = Dataset()
    study.ReferencedSOPInstanceUID = study_uid
    study.RTReferencedSeriesSequence = Sequence([series])
    frame = Dataset()
    frame.FrameOfReferenceUID = frame_uid
    frame.RTReferencedStudySequence = Sequence([study])
    ds.ReferencedFrameOfReferenceSequence = Sequence([frame])
    dz, dy, dx = patient.ct_spacing
    x0, y0, z0 = patient.ct_origin_xyz
    rois, contours = [], []
    for number, (name, (zs, ys, xs)) in enumerate(ROIS.items(), start=1):
        roi = Dataset()
        roi.ROINumber, roi.ROIName, roi.ReferencedFrameOfReferenceUID = number, name, frame_uid
        rois.append(roi)
        items = []
        xa, xb = x0 + (xs.start - 0.5) * dx, x0 + (xs.stop - 0.5) * dx
        ya, yb = y0 + (ys.start - 0.5) * dy, y0 + (ys.stop - 0.5) * dy
        for k in range(zs.start, zs.stop):
            contour = Dataset()
            contour.ContourGeometricType = "CLOSED_PLANAR"
            contour.NumberOfContourPoints = 4
            z = z0 + k * dz
            contour.ContourData = [xa, ya, z, xb, ya, z, xb, yb, z, xa, yb, z]
            items.append(contour)
        roi_contour = Dataset()
        roi_contour.ReferencedROINumber = number
        roi_contour.ContourSequence = Sequence(items)
        contours.append(roi_contour)
    ds.StructureSetROISequence = Sequence(rois)
    ds.ROIContourSequence = Sequence(contours)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)


def _write_study(root: Path, seed: int = 21) -> factory.Patient:
    patient = factory.make_patient(seed)
    when = factory.INJECTION + dt.timedelta(hours=HOURS)
    study, frame, ct_series = generate_uid(), generate_uid(), generate_uid()
    factory.write_ct(patient, root / "ct", study, ct_series, frame, when)
    shape, origin, spacing = factory.nm_grid(patient)
    activity = factory.activity_on_nm_grid(patient, shape, origin, spacing, HOURS, seed)
    factory.write_nm(patient, root / "nm" / "spect", study, frame, HOURS, activity, origin, spacing)
    _write_rtstruct(patient, root / "rs.dcm", study, ct_series, frame, when)
    return patient


def test_reader_keeps_every_roi_on_its_own_contour(tmp_path):
    patient = _write_study(tmp_path)
    ct = read_ct_series(sorted((tmp_path / "ct").iterdir()))
    label_map = read_rtstruct(tmp_path / "rs.dcm", ct.grid)
    masks = _masks(patient.ct_shape)
    assert set(label_map.vois) == set(masks)
    for name, mask in masks.items():
        np.testing.assert_array_equal(np.isin(label_map.labels.array, label_map.vois[name]), mask, err_msg=name)
    # one region per combination of ROIs a voxel lies in: a voxel's region says exactly which VOIs hold it
    for value in np.unique(label_map.labels.array[label_map.labels.array > 0]):
        voxel = tuple(np.argwhere(label_map.labels.array == value)[0])
        holding = {name for name, mask in masks.items() if mask[voxel] and name != "liver_healthy"}
        assert label_map.names[int(value)] == "+".join(v for v in label_map.vois if v in holding)
    assert label_map.source_names == {VOI_OF[roi]: roi for roi in ROIS if VOI_OF[roi] != roi}
    assert label_map.derived == {"liver_healthy": "liver minus lesion_1, lesion_2"}
    assert label_map.notes == []  # nothing went wrong; the naming is one note for the whole object, not one per ROI
    assert "'Kidney_L' -> kidney_left" in label_map.naming and "'Bowel_Bag'" in label_map.naming


def test_a_roi_outside_the_dose_grid_is_left_out_with_a_note(tmp_path):
    _write_study(tmp_path)
    ct = read_ct_series(sorted((tmp_path / "ct").iterdir()))
    label_map = read_rtstruct(tmp_path / "rs.dcm", ct.grid)
    head = Grid((9, *ct.grid.shape[1:]), ct.grid.spacing_mm, ct.grid.origin_mm, ct.grid.direction)  # slices 0-8
    on_head = label_map.resampled(head)
    assert on_head.notes == ["VOI 'vertebra_L2' has no voxel on the dose grid (its contour lies outside it); left out"]
    assert set(on_head.vois) == set(VOI_CLASS) - {"vertebra_L2"}
    assert not any("vertebra_L2" in name for name in on_head.names.values())
    masks = {name: mask[:9] for name, mask in _masks(ct.grid.shape).items()}
    for name, values in on_head.vois.items():
        np.testing.assert_array_equal(np.isin(on_head.labels.array, values), masks[name], err_msg=name)


def test_statistics_of_overlapping_clinical_rois_are_over_their_own_contours(tmp_path):
    patient = _write_study(tmp_path / "dicom")
    report = ingest(tmp_path / "dicom", tmp_path / "cohort", grid="ct")
    assert not (report["severity"] == "error").any(), report["message"].tolist()
    cohort = open_cohort(tmp_path / "cohort")
    [(p, t)] = cohort.scans()
    # the ingest report tells the renaming once per scan, naming every renamed ROI and the one kept as written
    naming = report[report["message"].str.contains("ROI names mapped", regex=False)]
    assert len(naming) == 1 and naming["severity"].iloc[0] == "info"
    for roi in ("External", "Liver", "GTV_1", "Kidney_L", "L2", "Lesion", "Bowel_Bag"):
        assert repr(roi) in naming["message"].iloc[0]
    # a known dose-rate gradient (Gy/s) on the CT grid
    z, y, x = np.meshgrid(*(np.arange(n, dtype=np.float64) for n in patient.ct_shape), indexing="ij")
    dose_rate = (1e-6 * (1.0 + 0.5 * z + 0.2 * y + 0.1 * x)).astype(np.float32)
    cohort.write_arrays(
        p, t, xr.Dataset({"dose_rate_dvk": (("z", "y", "x"), dose_rate, {"units": "Gy/s"})}), {"method": "dvk"}
    )
    scan = cohort.scan(p, t)
    assert scan["labels"].attrs["source_names"]["kidney_left"] == "Kidney_L"
    stats = scan_tables(scan, p, t)["voi_stats"].set_index("voi")
    masks = _masks(patient.ct_shape)
    voxel_ml = float(np.prod(patient.ct_spacing)) / 1000.0
    assert set(stats.index) == set(masks)
    for name, mask in masks.items():
        row = stats.loc[name]
        assert row["voi_type"] == VOI_CLASS[name], name
        assert row["volume_ml"] == pytest.approx(mask.sum() * voxel_ml, rel=1e-9), name
        assert row["mean"] == pytest.approx(dose_rate[mask].astype(np.float64).mean(), rel=1e-6), name
        assert row["max"] == pytest.approx(float(dose_rate[mask].max()), rel=1e-6), name
    body = np.zeros(patient.ct_shape, dtype=bool)
    body[1:13, 2:18, 2:20] = True  # the factory's body
    assert stats.loc["external", "volume_ml"] == pytest.approx(body.sum() * voxel_ml)
    lesions = ("lesion_1", "lesion_2")
    assert stats.loc["liver_healthy", "volume_ml"] == pytest.approx(
        stats.loc["liver", "volume_ml"] - sum(stats.loc[v, "volume_ml"] for v in lesions)
    )
    numeric = stats[["volume_ml", "mean", "median", "max", "dr10", "dr30", "dr70", "dr90"]].to_numpy(np.float64)
    assert np.isfinite(numeric).all()
    assert validate_cohort(tmp_path / "cohort") == []


def test_on_a_coarser_dose_grid_every_roi_keeps_voxels_and_its_overlaps(tmp_path):
    patient = _write_study(tmp_path / "dicom")
    report = ingest(tmp_path / "dicom", tmp_path / "cohort", grid="compact")
    assert not (report["severity"] == "error").any(), report["message"].tolist()
    cohort = open_cohort(tmp_path / "cohort")
    [(p, t)] = cohort.scans()
    scan = cohort.scan(p, t)
    labels, vois = scan["labels"].values, scan["labels"].attrs["vois"]
    assert set(vois) == set(VOI_CLASS)
    on_grid = {name: np.isin(labels, values) for name, values in vois.items()}
    # the one-voxel lesion (0.036 mL; a compact dose voxel is 0.046 mL) survives by the guard, still inside the liver
    assert scan.attrs["labels_kept_by_guard"] == ["lesion_2"]
    assert on_grid["lesion_2"].sum() == 1
    assert not (on_grid["lesion_2"] & ~on_grid["liver"] & ~on_grid["external"]).any()
    np.testing.assert_array_equal(
        on_grid["liver_healthy"], on_grid["liver"] & ~on_grid["lesion_1"] & ~on_grid["lesion_2"]
    )
    for name in ("lesion_1", "liver", "kidney_left", "Bowel_Bag", "vertebra_L2"):  # every ROI within its contour
        assert (on_grid[name] & ~on_grid["external"]).sum() <= 0.25 * on_grid[name].sum(), name
    masks = _masks(patient.ct_shape)
    spacing = np.asarray(scan.attrs["spacing_mm"])
    for name in ("external", "liver", "kidney_left", "Bowel_Bag"):
        truth_ml = masks[name].sum() * np.prod(patient.ct_spacing) / 1000
        assert on_grid[name].sum() * np.prod(spacing) / 1000 == pytest.approx(truth_ml, rel=0.35), name
    assert validate_cohort(tmp_path / "cohort") == []


def test_user_mapping_renames_rois_before_the_synonyms(tmp_path):
    _write_study(tmp_path / "dicom")
    report = ingest(
        tmp_path / "dicom", tmp_path / "cohort", grid="ct", roi_names={"Bowel_Bag": "spleen", "Lesion": "lesion_7"}
    )
    assert not (report["severity"] == "error").any(), report["message"].tolist()
    cohort = open_cohort(tmp_path / "cohort")
    [(p, t)] = cohort.scans()
    labels = cohort.scan(p, t)["labels"]
    assert {"spleen", "lesion_7", "lesion_1"} <= set(labels.attrs["vois"])
    assert "Bowel_Bag" not in labels.attrs["vois"]
    assert labels.attrs["source_names"]["spleen"] == "Bowel_Bag"
    assert labels.attrs["derived"] == {"liver_healthy": "liver minus lesion_1, lesion_7"}


def test_overlapping_seg_segments_each_keep_their_voxels(tmp_path):
    """A DICOM SEG (highdicom) whose segments overlap, as an auto-segmentation tool writes them."""
    import highdicom as hd
    import pydicom
    from pydicom.sr.codedict import codes

    patient = factory.make_patient(22)
    study, frame, ct_series = generate_uid(), generate_uid(), generate_uid()
    factory.write_ct(patient, tmp_path / "ct", study, ct_series, frame, factory.INJECTION)
    slices = sorted(
        (pydicom.dcmread(p) for p in (tmp_path / "ct").iterdir()), key=lambda ds: float(ds.ImagePositionPatient[2])
    )
    for ds in slices:  # study attributes a SEG copies from its source images (type 2: may be empty)
        ds.AccessionNumber, ds.StudyID, ds.ReferringPhysicianName = "", "", ""
    segments = ["BODY", "Liver", "GTV_1", "Kidney_L"]
    masks = _masks(patient.ct_shape)
    truth = {name: masks[VOI_OF["External" if name == "BODY" else name]] for name in segments}
    pixels = np.stack([truth[name] for name in segments], axis=-1)  # (z, y, x, segment), overlapping
    algorithm = hd.AlgorithmIdentificationSequence(
        name="test", family=codes.cid7162.ArtificialIntelligence, version="1"
    )
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=k,
            segment_label=name,
            segmented_property_category=codes.SCT.AnatomicalStructure,
            segmented_property_type=codes.SCT.Organ,
            algorithm_type="AUTOMATIC",
            algorithm_identification=algorithm,
        )
        for k, name in enumerate(segments, start=1)
    ]
    seg = hd.seg.Segmentation(
        source_images=slices,
        pixel_array=pixels,
        segmentation_type="BINARY",
        segment_descriptions=descriptions,
        series_instance_uid=generate_uid(),
        series_number=5,
        sop_instance_uid=generate_uid(),
        instance_number=1,
        manufacturer="test",
        manufacturer_model_name="test",
        software_versions="1",
        device_serial_number="0",
    )
    seg.save_as(tmp_path / "seg.dcm")
    ct = read_ct_series(sorted((tmp_path / "ct").iterdir()))
    label_map = read_seg(tmp_path / "seg.dcm", ct.grid)
    expected = {
        "external": truth["BODY"],
        "liver": truth["Liver"],
        "lesion_1": truth["GTV_1"],
        "kidney_left": truth["Kidney_L"],
        "liver_healthy": truth["Liver"] & ~truth["GTV_1"],
    }
    assert set(label_map.vois) == set(expected)
    for name, mask in expected.items():
        np.testing.assert_array_equal(np.isin(label_map.labels.array, label_map.vois[name]), mask, err_msg=name)
