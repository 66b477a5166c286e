"""DICOM out (RT Dose, Parametric Map, Segmentation) checked by independent readers and the standard's validator.

The reference CT is a synthetic virtual patient written by the project's exporter feet first supine (FFS: its slices
and rows run against patient z and x), on a grid with an off-centre origin and unequal spacings along z, y and x.
The maps live on other grids in that CT's patient space: a coarser dose grid centred on the CT, a grid with its z
axis reversed and one turned about z. Dose values are an analytic function of the patient coordinates (LPS mm),
so a reader that places a voxel elsewhere reads another value and the test fails.
"""

from __future__ import annotations

import copy
import shutil
import subprocess
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
import xarray as xr

from cohort_dosimetry.grid import Grid, set_sitk_geometry
from cohort_dosimetry.io import dose_grid, ingest, read_ct_series, read_seg
from cohort_dosimetry.io._export import (
    MODEL_NAME,
    SUMMATION_TYPES,
    reference_series,
    write_dose_rate_map,
    write_rt_dose,
    write_seg,
)
from cohort_dosimetry.io._export_scans import export_scans
from cohort_dosimetry.phantoms import export_dicom, make_virtual_patient
from cohort_dosimetry.store import open_cohort

requires_dciodvfy = pytest.mark.skipif(
    shutil.which("dciodvfy") is None,
    reason="dciodvfy not installed (Debian package dicom3tools: apt-get install -y dicom3tools)",
)
requires_dcm2niix = pytest.mark.skipif(
    shutil.which("dcm2niix") is None, reason="dcm2niix not installed (Debian package dcm2niix)"
)

CT_GRID = Grid((24, 30, 34), (10.0, 15.64, 14.0))
CT_ORIGIN_MM = (-97.5, -251.3, -219.0)  # (z, y, x): off centre, so that no axis is symmetric about 0
DOSE_SPACING_MM = (12.5, 18.0, 16.5)
#: highdicom's direction (columns: array axes in x, y, z) of a volume whose axes run to head, posterior, left
HPL_DIRECTION = np.array([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])


def dose_at(xyz: np.ndarray) -> np.ndarray:
    """Absorbed dose (Gy) at patient points (..., 3) in LPS (x, y, z) mm: positive, different along every axis."""
    x, y, z = xyz[..., 0], xyz[..., 1], xyz[..., 2]
    return 5.0 + 0.004 * x - 0.007 * y + 0.011 * z + 1.5 * np.exp(-((x - 40) ** 2 + (y + 30) ** 2 + z**2) / 8e3)


def voxel_centres_xyz(grid: Grid) -> np.ndarray:
    """Voxel centres (z, y, x, 3) of ``grid`` in LPS (x, y, z) mm, from the Grid's own definition."""
    index = np.stack(np.meshgrid(*(np.arange(n) for n in grid.shape), indexing="ij"), axis=-1).astype(float)
    zyx = np.asarray(grid.origin_mm) + (index * np.asarray(grid.spacing_mm)) @ np.asarray(grid.direction)
    return zyx[..., ::-1]


def sitk_centres_xyz(image) -> np.ndarray:
    """Voxel centres (z, y, x, 3) of a SimpleITK image as SimpleITK places them (x, y, z) mm."""
    nx, ny, nz = image.GetSize()
    points = [image.TransformIndexToPhysicalPoint((i, j, k)) for k in range(nz) for j in range(ny) for i in range(nx)]
    return np.asarray(points).reshape(nz, ny, nx, 3)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """(CT slice datasets, CT grid as the project's reader gives it, virtual patient) of one FFS scan."""
    patient = make_virtual_patient(11, grid=CT_GRID, hours=(24.0,))
    patient.attrs["origin_mm"] = list(CT_ORIGIN_MM)
    out = tmp_path_factory.mktemp("reference")
    result = export_dicom(patient, out, patient_position="FFS")
    files = sorted(result.scans[0].ct_dir.glob("*.dcm"))
    ct = [pydicom.dcmread(f, stop_before_pixels=True) for f in files]
    assert ct[0].PatientPosition == "FFS"
    return ct, read_ct_series(files).grid, patient, out


@pytest.fixture(scope="module")
def dose_on_grid(reference):
    ct, ct_grid, *_ = reference
    grid = dose_grid(ct_grid, DOSE_SPACING_MM)
    assert grid.is_axial and grid.shape != ct_grid.shape
    return grid, dose_at(voxel_centres_xyz(grid))


def _dciodvfy(path: Path) -> list[str]:
    run = subprocess.run(["dciodvfy", "-new", str(path)], capture_output=True, text=True, timeout=60)
    return (run.stdout + run.stderr).splitlines()


def _errors(report: list[str]) -> list[str]:
    return [line for line in report if line.startswith("Error")]


# ---------------------------------------------------------------------------------------------------------------
# RT Dose


def test_rt_dose_header_identity_and_references(reference, dose_on_grid, tmp_path):
    ct, *_ = reference
    grid, dose = dose_on_grid
    path = write_rt_dose(dose, grid, ct, tmp_path / "RD.dcm", "CYCLE", "absorbed dose cycle 1, DVK")
    rd = pydicom.dcmread(path)
    assert rd.SOPClassUID == pydicom.uid.RTDoseStorage and rd.Modality == "RTDOSE"
    assert (rd.DoseUnits, rd.DoseType, rd.DoseSummationType) == ("GY", "PHYSICAL", "CYCLE")
    assert rd.FrameOfReferenceUID == ct[0].FrameOfReferenceUID
    for keyword in (
        "PatientName",
        "PatientID",
        "PatientBirthDate",
        "PatientSex",
        "StudyInstanceUID",
        "StudyDate",
        "AccessionNumber",
    ):
        assert rd.get(keyword) == ct[0].get(keyword), keyword
    assert rd.SeriesInstanceUID != ct[0].SeriesInstanceUID and rd.ManufacturerModelName == MODEL_NAME
    assert {item.ReferencedSOPInstanceUID for item in rd.ReferencedImageSequence} == {s.SOPInstanceUID for s in ct}
    assert rd.ReferencedSeriesSequence[0].SeriesInstanceUID == ct[0].SeriesInstanceUID
    assert "ReferencedRTPlanSequence" not in rd
    assert (rd.BitsAllocated, rd.BitsStored, rd.HighBit, rd.PixelRepresentation) == (32, 32, 31, 0)
    offsets = np.asarray(rd.GridFrameOffsetVector, dtype=float)
    np.testing.assert_allclose(offsets, np.arange(grid.shape[0]) * grid.spacing_mm[0])
    scaling = float(rd.DoseGridScaling)
    assert dose.max() / (2**31 - 1) <= scaling <= dose.max() / (2**31 - 1) * (1 + 1e-9)
    stored = rd.pixel_array
    assert stored.max() == 2**31 - 1  # the full range is used
    np.testing.assert_array_less(np.abs(stored * scaling - dose), scaling / 2 * (1 + 1e-6) + 1e-12)
    np.testing.assert_allclose([float(v) for v in rd.ImagePositionPatient], grid.origin_mm[::-1], atol=1e-6)
    assert [float(v) for v in rd.ImageOrientationPatient] == [1, 0, 0, 0, 1, 0]
    np.testing.assert_allclose([float(v) for v in rd.PixelSpacing], grid.spacing_mm[1:])


def test_rt_dose_simpleitk_geometry_and_values(reference, dose_on_grid, tmp_path):
    ct, *_ = reference
    grid, dose = dose_on_grid
    image = sitk.ReadImage(str(write_rt_dose(dose, grid, ct, tmp_path / "RD.dcm")))
    np.testing.assert_allclose(image.GetOrigin(), grid.origin_mm[::-1], atol=1e-4)
    np.testing.assert_allclose(image.GetSpacing(), grid.spacing_mm[::-1], atol=1e-6)
    np.testing.assert_allclose(image.GetDirection(), np.eye(3).ravel(), atol=1e-9)
    # SimpleITK (GDCM) returns the stored integers; DoseGridScaling is applied here, from its own metadata.
    scaling = float(image.GetMetaData("3004|000e"))
    values = sitk.GetArrayFromImage(image).astype(np.float64) * scaling
    truth = dose_at(sitk_centres_xyz(image))
    assert np.abs(values - truth).max() <= scaling / 2 * (1 + 1e-6) + 1e-12


@pytest.mark.parametrize("turn", ["reversed_z", "turned_about_z"])
def test_rt_dose_other_orientations_land_in_place(reference, tmp_path, turn):
    """A grid whose z axis runs against the slice normal is written with its frames reversed; a grid turned 25
    degrees about z writes oblique cosines. SimpleITK must find every dose value at its patient position."""
    ct, ct_grid, *_ = reference
    base = dose_grid(ct_grid, DOSE_SPACING_MM)
    if turn == "reversed_z":
        top = np.asarray(base.origin_mm) + np.array([(base.shape[0] - 1) * base.spacing_mm[0], 0, 0])
        grid = Grid(base.shape, base.spacing_mm, tuple(top), ((-1, 0, 0), (0, 1, 0), (0, 0, 1)))
    else:
        c, s = np.cos(np.radians(25)), np.sin(np.radians(25))
        grid = Grid(base.shape, base.spacing_mm, base.origin_mm, ((1, 0, 0), (0, c, s), (0, -s, c)))
    dose = dose_at(voxel_centres_xyz(grid))
    path = write_rt_dose(dose, grid, ct, tmp_path / "RD.dcm")
    offsets = np.asarray(pydicom.dcmread(path).GridFrameOffsetVector, dtype=float)
    assert offsets[0] == 0 and np.all(np.diff(offsets) > 0)
    image = sitk.ReadImage(str(path))
    scaling = float(image.GetMetaData("3004|000e"))
    values = sitk.GetArrayFromImage(image).astype(np.float64) * scaling
    assert np.abs(values - dose_at(sitk_centres_xyz(image))).max() <= scaling / 2 * (1 + 1e-6) + 1e-12


def test_rt_dose_16_bits(reference, dose_on_grid, tmp_path):
    ct, *_ = reference
    grid, dose = dose_on_grid
    rd = pydicom.dcmread(write_rt_dose(dose, grid, ct, tmp_path / "RD.dcm", bits=16))
    scaling = float(rd.DoseGridScaling)
    assert rd.BitsAllocated == 16 and dose.max() / 65535 <= scaling <= dose.max() / 65535 * (1 + 1e-9)
    assert np.abs(rd.pixel_array * scaling - dose).max() <= scaling / 2 * (1 + 1e-6)


@requires_dciodvfy
@pytest.mark.parametrize("summation_type", sorted(SUMMATION_TYPES))
def test_rt_dose_dciodvfy_reports_no_errors(reference, dose_on_grid, tmp_path, summation_type):
    """dciodvfy of dicom3tools 1.00 (2022) aborts on 32-bit pixel data (an assertion in its pixel-data reader), so it
    checks the 16-bit object; the 32-bit one differs only in the pixel attributes, as checked here."""
    ct, *_ = reference
    grid, dose = dose_on_grid
    uids = {"series_instance_uid": hd.UID(), "sop_instance_uid": hd.UID()}
    path16 = write_rt_dose(dose, grid, ct, tmp_path / "RD16.dcm", summation_type, bits=16, **uids)
    report = _dciodvfy(path16)
    assert "RTDose" in report, "\n".join(report)
    assert not _errors(report), "\n".join(report)
    warnings = [line for line in report if line.startswith("Warning")]
    assert warnings == [
        f"Warning - </DoseSummationType(3004,000a)[1]> - Unrecognized defined term = <{summation_type}>"
    ], "\n".join(report)
    path32 = write_rt_dose(dose, grid, ct, tmp_path / "RD32.dcm", summation_type, bits=32, **uids)
    a, b = pydicom.dcmread(path16), pydicom.dcmread(path32)
    pixel = {
        "BitsAllocated",
        "BitsStored",
        "HighBit",
        "DoseGridScaling",
        "PixelData",
        "ContentTime",
        "ContentDate",
        "InstanceCreationTime",
        "InstanceCreationDate",
    }
    differ = {e.keyword for e in a if e.keyword not in pixel and b.get(e.keyword) != e.value}
    assert differ == set() and set(a.dir()) == set(b.dir())


@requires_dcm2niix
def test_rt_dose_dcm2niix_converts_it(reference, dose_on_grid, tmp_path):
    """dcm2niix (v1.0.20220720) writes the stored integers with scl_slope 1, DoseGridScaling not applied: the values
    are compared after scaling. The NIfTI is read back by SimpleITK and turned to LPS."""
    ct, *_ = reference
    grid, dose = dose_on_grid
    folder = tmp_path / "rd"
    path = write_rt_dose(dose, grid, ct, folder / "RD.dcm")
    run = subprocess.run(
        ["dcm2niix", "-s", "y", "-z", "n", "-f", "dose", "-o", str(tmp_path), str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    image = sitk.DICOMOrient(sitk.ReadImage(str(tmp_path / "dose.nii")), "LPS")
    np.testing.assert_allclose(image.GetOrigin(), grid.origin_mm[::-1], atol=1e-3)
    np.testing.assert_allclose(image.GetSpacing(), grid.spacing_mm[::-1], atol=1e-4)
    np.testing.assert_allclose(image.GetDirection(), np.eye(3).ravel(), atol=1e-6)
    scaling = float(pydicom.dcmread(path).DoseGridScaling)
    values = sitk.GetArrayFromImage(image).astype(np.float64) * scaling
    assert np.abs(values - dose).max() <= scaling / 2 * (1 + 1e-6) + 1e-12


def test_rt_dose_refuses_what_it_cannot_write(reference, dose_on_grid, tmp_path):
    ct, *_ = reference
    grid, dose = dose_on_grid
    with pytest.raises(ValueError, match="Dose Summation Type 'PLAN'.*Referenced RT Plan"):
        write_rt_dose(dose, grid, ct, tmp_path / "a.dcm", "PLAN")
    negative = dose.copy()
    negative[0, 0, 0] = -1e-3
    with pytest.raises(ValueError, match="finite and >= 0"):
        write_rt_dose(negative, grid, ct, tmp_path / "b.dcm")
    with pytest.raises(ValueError, match="shape"):
        write_rt_dose(dose[:-1], grid, ct, tmp_path / "c.dcm")
    with pytest.raises(ValueError, match="bits"):
        write_rt_dose(dose, grid, ct, tmp_path / "d.dcm", bits=8)
    # the grid given as (x, y, z): its centre falls outside the CT
    swapped = Grid(grid.shape, grid.spacing_mm, tuple(np.asarray(grid.origin_mm)[::-1] * 3))
    with pytest.raises(ValueError, match="outside the reference CT's field of view"):
        write_rt_dose(dose, swapped, ct, tmp_path / "e.dcm")
    other = copy.deepcopy(ct[0])
    other.SeriesInstanceUID = hd.UID()
    with pytest.raises(ValueError, match="one CT series: SeriesInstanceUID"):
        write_rt_dose(dose, grid, [*ct, other], tmp_path / "f.dcm")
    assert not list(tmp_path.glob("*.dcm")), "a refused object must leave no file"


def test_reference_series_reads_paths_and_sorts_along_the_normal(reference, tmp_path):
    ct, *_ = reference
    for k, item in enumerate(reversed(ct)):
        item = copy.deepcopy(item)
        item.save_as(tmp_path / f"{k}.dcm", enforce_file_format=True)
    series = reference_series(sorted(tmp_path.glob("*.dcm")))
    # FFS: the normal points to the feet, so positions along it ascend as patient z descends
    z = [float(s.ImagePositionPatient[2]) for s in series]
    assert z == sorted(z, reverse=True) and len(series) == len(ct)


# ---------------------------------------------------------------------------------------------------------------
# Parametric Map (dose rate)


def test_dose_rate_map_round_trip(reference, dose_on_grid, tmp_path):
    ct, *_ = reference
    grid, dose = dose_on_grid
    rate = (dose * 1e-6).astype(np.float32)  # Gy/s
    path = write_dose_rate_map(rate, grid, ct, tmp_path / "PM.dcm", "dose rate, DVK")
    pm = hd.pm.ParametricMap.from_dataset(pydicom.dcmread(path))
    assert pm.FrameOfReferenceUID == ct[0].FrameOfReferenceUID and pm.PatientID == ct[0].PatientID
    assert pm.StudyInstanceUID == ct[0].StudyInstanceUID and str(pm.PatientName) == str(ct[0].PatientName)
    mapping = pm.SharedFunctionalGroupsSequence[0].RealWorldValueMappingSequence[0]
    unit = mapping.MeasurementUnitsCodeSequence[0]
    assert (unit.CodeValue, unit.CodingSchemeDesignator) == ("Gy/s", "UCUM")
    assert float(mapping.RealWorldValueSlope) == 1.0 and float(mapping.RealWorldValueIntercept) == 0.0
    assert "FloatPixelData" in pm and pm.BitsAllocated == 32
    # array axes to head (H), posterior (P), left (L): the Grid's (z, y, x) in standard orientation
    volume = pm.get_volume().to_patient_orientation("HPL")
    np.testing.assert_array_equal(volume.array, rate.astype(np.float64))  # float pixel data, identity mapping: exact
    expected = voxel_centres_xyz(grid)
    np.testing.assert_allclose(volume.position, expected[0, 0, 0], atol=1e-4)
    np.testing.assert_allclose(volume.spacing, grid.spacing_mm, atol=1e-6)
    np.testing.assert_allclose(volume.direction, HPL_DIRECTION, atol=1e-9)
    # each frame's position from the per-frame functional groups: frame k at voxel (k, 0, 0)
    positions = [
        [float(v) for v in f.PlanePositionSequence[0].ImagePositionPatient] for f in pm.PerFrameFunctionalGroupsSequence
    ]
    np.testing.assert_allclose(sorted(positions, key=lambda p: p[2]), expected[:, 0, 0], atol=1e-4)


@requires_dciodvfy
def test_dose_rate_map_dciodvfy_reports_no_errors(reference, dose_on_grid, tmp_path):
    ct, *_ = reference
    grid, dose = dose_on_grid
    report = _dciodvfy(write_dose_rate_map((dose * 1e-6).astype(np.float32), grid, ct, tmp_path / "PM.dcm"))
    assert "ParametricMap" in report, "\n".join(report)
    assert not _errors(report), "\n".join(report)


# ---------------------------------------------------------------------------------------------------------------
# Segmentation


def _labels_on(grid: Grid, patient) -> tuple[np.ndarray, dict[int, str]]:
    """The virtual patient's labels on ``grid`` (nearest voxel centre), and their names."""
    image = sitk.GetImageFromArray(patient["labels"].values.astype(np.int16))
    set_sitk_geometry(image, Grid(CT_GRID.shape, CT_GRID.spacing_mm, CT_ORIGIN_MM))
    on_grid = sitk.Resample(
        image, grid.reference_image(), sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkInt16
    )
    labels = sitk.GetArrayFromImage(on_grid)
    names = {int(k): v for k, v in patient["labels"].attrs["names"].items()}
    return labels, names


def test_seg_round_trip_exact(reference, dose_on_grid, tmp_path):
    ct, _, patient, _ = reference
    grid, _ = dose_on_grid
    labels, names = _labels_on(grid, patient)
    present = {v: n for v, n in names.items() if (labels == v).any()}
    assert len(present) >= 6
    seg = hd.seg.segread(write_seg(labels, names, grid, ct, tmp_path / "SEG.dcm"))
    assert seg.SegmentationType == "BINARY" and seg.FrameOfReferenceUID == ct[0].FrameOfReferenceUID
    assert seg.PatientID == ct[0].PatientID and seg.StudyInstanceUID == ct[0].StudyInstanceUID
    assert {item.SeriesInstanceUID for item in seg.ReferencedSeriesSequence} == {ct[0].SeriesInstanceUID}
    by_name = {seg.get_segment_description(n).segment_label: n for n in seg.get_segment_numbers()}
    assert set(by_name) == set(present.values())
    volume = seg.get_volume(combine_segments=True, relabel=False).to_patient_orientation("HPL")
    np.testing.assert_allclose(volume.position, voxel_centres_xyz(grid)[0, 0, 0], atol=1e-4)
    np.testing.assert_allclose(volume.spacing, grid.spacing_mm, atol=1e-6)
    np.testing.assert_allclose(volume.direction, HPL_DIRECTION, atol=1e-9)
    expected = np.zeros(grid.shape, dtype=int)
    for value, name in present.items():
        expected[labels == value] = by_name[name]
    np.testing.assert_array_equal(volume.array, expected)
    kidney = seg.get_segment_description(by_name["kidney_left"])
    property_type = kidney.SegmentedPropertyTypeCodeSequence[0]
    assert property_type.CodeValue == "64033007"  # SCT Kidney
    assert property_type.SegmentedPropertyTypeModifierCodeSequence[0].CodeValue == "7771000"  # SCT Left
    lesion = next(n for name, n in by_name.items() if name.startswith("lesion"))
    assert seg.get_segment_description(lesion).SegmentedPropertyTypeCodeSequence[0].CodeValue == "52988006"


def test_seg_reads_back_through_the_ingest_reader(reference, dose_on_grid, tmp_path):
    """The project's own SEG reader (ingest) puts the segments back on the grid with their VOI names."""
    ct, _, patient, _ = reference
    grid, _ = dose_on_grid
    labels, names = _labels_on(grid, patient)
    label_map = read_seg(write_seg(labels, names, grid, ct, tmp_path / "SEG.dcm"), grid)
    present = {v: n for v, n in names.items() if (labels == v).any()}
    back = {name: value for value, name in label_map.names.items()}
    assert set(back) == set(present.values())
    for value, name in present.items():
        np.testing.assert_array_equal(label_map.labels.array == back[name], labels == value, err_msg=name)


def test_seg_of_overlapping_vois(reference, dose_on_grid, tmp_path):
    """Regions shared by VOIs (clinical contours: external holds the liver, the liver its lesion): one binary
    segment per VOI, each the union of its regions."""
    ct, *_ = reference
    grid, _ = dose_on_grid
    rng = np.random.default_rng(5)
    labels = rng.choice([0, 1000, 10001, 10002], size=grid.shape, p=[0.4, 0.3, 0.2, 0.1]).astype(np.int16)
    names = {1000: "external", 10001: "external+liver", 10002: "external+liver+lesion_1"}
    vois = {"external": [1000, 10001, 10002], "liver": [10001, 10002], "lesion_1": [10002], "PTV ring": [10002]}
    seg = hd.seg.segread(write_seg(labels, names, grid, ct, tmp_path / "SEG.dcm", vois=vois))
    by_name = {seg.get_segment_description(n).segment_label: n for n in seg.get_segment_numbers()}
    assert set(by_name) == set(vois)
    volume = seg.get_volume(combine_segments=False).to_patient_orientation("HPL")
    for name, values in vois.items():
        mask = volume.get_channel(ReferencedSegmentNumber=by_name[name]).array.astype(bool)
        np.testing.assert_array_equal(mask, np.isin(labels, values), err_msg=name)
    other = seg.get_segment_description(by_name["PTV ring"])
    assert other.SegmentedPropertyCategoryCodeSequence[0].CodeValue == "309825002"  # spatial and relational concept


@requires_dciodvfy
def test_seg_dciodvfy_reports_no_errors(reference, dose_on_grid, tmp_path):
    ct, _, patient, _ = reference
    grid, _ = dose_on_grid
    labels, names = _labels_on(grid, patient)
    report = _dciodvfy(write_seg(labels, names, grid, ct, tmp_path / "SEG.dcm"))
    assert "Segmentation" in report, "\n".join(report)
    assert not _errors(report), "\n".join(report)


# ---------------------------------------------------------------------------------------------------------------
# a cohort's maps on the CTs they were ingested with

KEY = "export-test-key-0001"


@pytest.fixture(scope="module")
def ingested(reference, tmp_path_factory):
    """The FFS reference exported above, ingested on a dose grid of its own spacing, with a dose-rate map written as
    a method would (an analytic function of patient position, Gy/s)."""
    *_, dicom_out = reference
    cohort_dir = tmp_path_factory.mktemp("cohort")
    report = ingest(dicom_out, cohort_dir, grid=DOSE_SPACING_MM, key=KEY)
    assert not (report["severity"] == "error").any(), report["message"].tolist()
    cohort = open_cohort(cohort_dir)
    [(patient, timepoint)] = cohort.scans()
    scan = cohort.scan(patient, timepoint)
    grid = Grid.from_attrs(scan["labels"].shape, scan.attrs)
    rate = (dose_at(voxel_centres_xyz(grid)) * 1e-6).astype(np.float32)
    cohort.write_arrays(
        patient, timepoint, xr.Dataset({"dose_rate_dvk": (("z", "y", "x"), rate, {"units": "Gy/s"})}), {"method": "dvk"}
    )
    return cohort_dir, dicom_out, patient, timepoint, grid, rate


def test_export_scans_writes_seg_and_dose_rate_on_the_ingested_ct(reference, ingested, tmp_path):
    ct, *_ = reference
    cohort_dir, dicom_out, patient, timepoint, grid, rate = ingested
    rows = export_scans(cohort_dir, dicom_out, tmp_path, key=KEY)
    assert rows["status"].tolist() == ["written", "written"], rows.to_string()
    assert sorted(rows["file"]) == [f"{patient}/{timepoint}/PM_dvk.dcm", f"{patient}/{timepoint}/SEG.dcm"]
    assert not rows["message"].str.contains(str(ct[0].PatientName).split("^")[0]).any()  # rows carry no identity
    pm = hd.pm.ParametricMap.from_dataset(pydicom.dcmread(tmp_path / patient / timepoint / "PM_dvk.dcm"))
    assert (pm.PatientID, pm.StudyInstanceUID, pm.FrameOfReferenceUID) == (
        ct[0].PatientID,
        ct[0].StudyInstanceUID,
        ct[0].FrameOfReferenceUID,
    )
    volume = pm.get_volume().to_patient_orientation("HPL")
    np.testing.assert_array_equal(volume.array, rate.astype(np.float64))
    np.testing.assert_allclose(volume.position, voxel_centres_xyz(grid)[0, 0, 0], atol=1e-4)
    scan = open_cohort(cohort_dir).scan(patient, timepoint)
    label_map = read_seg(tmp_path / patient / timepoint / "SEG.dcm", grid)
    back = {name: value for value, name in label_map.names.items()}
    for value, name in scan["labels"].attrs["names"].items():
        np.testing.assert_array_equal(label_map.labels.array == back[name], scan["labels"].values == value, name)
    again = export_scans(cohort_dir, dicom_out, tmp_path / "again", key=KEY)  # same maps: same UIDs
    first = pydicom.dcmread(tmp_path / patient / timepoint / "PM_dvk.dcm", stop_before_pixels=True)
    second = pydicom.dcmread(tmp_path / "again" / again["file"].iloc[-1], stop_before_pixels=True)
    assert (first.SOPInstanceUID, first.SeriesInstanceUID) == (second.SOPInstanceUID, second.SeriesInstanceUID)


def test_export_scans_refuses_a_ct_that_changed_and_filters_patients(ingested, tmp_path):
    cohort_dir, dicom_out, patient, timepoint, _, _ = ingested
    assert export_scans(cohort_dir, dicom_out, tmp_path / "none", patients=["P-unknown"], key=KEY)[
        ["patient", "status"]
    ].values.tolist() == [["P-unknown", "refused"]]
    changed = tmp_path / "dicom"
    shutil.copytree(dicom_out / "dicom", changed)
    first = sorted(changed.rglob("CT/*.dcm"))[0]
    ds = pydicom.dcmread(first)
    ds.WindowCenter = 50  # one header changed: the file's hash is not the ingested one
    ds.save_as(first, enforce_file_format=True)
    rows = export_scans(cohort_dir, changed, tmp_path / "out", patients=[patient], key=KEY)
    assert rows[["patient", "timepoint", "status"]].values.tolist() == [[patient, timepoint, "refused"]]
    assert "differs from the CT the scan was ingested with" in rows["message"].iloc[0]
    assert not (tmp_path / "out").exists()


def test_export_command(ingested, tmp_path, monkeypatch, capsys):
    import cohort_dosimetry.io

    if not hasattr(cohort_dosimetry.io, "export_scans"):
        pytest.skip("cohort_dosimetry.io does not export export_scans: the export command cannot run")
    from cohort_dosimetry.cli import main as cli_main

    cohort_dir, dicom_out, patient, timepoint, _, _ = ingested
    monkeypatch.setenv("COHORT_DOSIMETRY_PSEUDONYM_KEY", KEY)
    assert cli_main(["export", str(cohort_dir), str(tmp_path), "--dicom", str(dicom_out), "--patient", patient]) == 0
    assert "2 DICOM objects of 1 scans" in capsys.readouterr().out
    assert (tmp_path / patient / timepoint / "SEG.dcm").is_file()


# ---------------------------------------------------------------------------------------------------------------
# a cycle's absorbed-dose maps as RT Dose on the reference scan's CT


@pytest.fixture(scope="module")
def cycle_exported(ingested, tmp_path_factory):
    """A copy of the ingested cohort with a stored cycle (absorbed-dose maps of two methods on the scan's grid, an
    analytic function of patient position in Gy, as ``pipeline.cycle_absorbed_dose`` stores them), exported."""
    cohort_dir, dicom_out, patient, timepoint, grid, _ = ingested
    copy_dir = tmp_path_factory.mktemp("cycle") / "cohort"
    shutil.copytree(cohort_dir, copy_dir)
    cohort = open_cohort(copy_dir)
    attrs = cohort.scan_attrs(patient, timepoint)
    cycle = int(attrs["cycle"])
    doses = {"dvk": dose_at(voxel_centres_xyz(grid)).astype(np.float32)}
    doses["mc"] = (0.9 * doses["dvk"]).astype(np.float32)
    cohort.write_cycle(
        patient,
        cycle,
        xr.Dataset({f"absorbed_dose_{m}": (("z", "y", "x"), d) for m, d in doses.items()}),
        {
            "reference_timepoint": timepoint,
            "timepoints": [timepoint],
            "hours_post_injection": [float(attrs["hours_post_injection"])],
            "scan_versions": {timepoint: int(attrs["version"])},
            **{k: list(np.ravel(attrs[k])) for k in ("spacing_mm", "origin_mm", "direction")},
            "methods": {m: {} for m in doses},
        },
    )
    out = tmp_path_factory.mktemp("cycle_out")
    rows = export_scans(copy_dir, dicom_out, out, key=KEY)
    return copy_dir, dicom_out, patient, timepoint, cycle, grid, doses, rows, out


def test_export_writes_a_cycles_absorbed_dose_as_rt_dose_on_the_reference_ct(reference, cycle_exported):
    ct, *_ = reference
    _, _, patient, timepoint, cycle, grid, doses, rows, out = cycle_exported
    assert (rows["status"] == "written").all(), rows.to_string()
    rt = rows[rows["object"].str.startswith("RTDOSE")]
    assert rt["object"].tolist() == [f"RTDOSE absorbed_dose_{m} cycle {cycle}" for m in ("dvk", "mc")]
    assert rt["file"].tolist() == [f"{patient}/cycle_{cycle}/RTDOSE_{m}.dcm" for m in ("dvk", "mc")]
    assert (rt["timepoint"] == timepoint).all()
    for method, dose in doses.items():
        path = out / patient / f"cycle_{cycle}" / f"RTDOSE_{method}.dcm"
        rd = pydicom.dcmread(path)
        assert (rd.DoseUnits, rd.DoseType, rd.DoseSummationType) == ("GY", "PHYSICAL", "CYCLE")
        assert rd.SeriesDescription == f"absorbed dose, {method}, cycle {cycle}, voxel-level, registered, synthetic"
        assert (rd.FrameOfReferenceUID, rd.StudyInstanceUID, rd.PatientID) == (
            ct[0].FrameOfReferenceUID,
            ct[0].StudyInstanceUID,
            ct[0].PatientID,
        )
        assert rd.ReferencedSeriesSequence[0].SeriesInstanceUID == ct[0].SeriesInstanceUID
        scaling = float(rd.DoseGridScaling)
        np.testing.assert_array_less(np.abs(rd.pixel_array * scaling - dose), scaling / 2 * (1 + 1e-6) + 1e-12)
        np.testing.assert_allclose([float(v) for v in rd.ImagePositionPatient], grid.origin_mm[::-1], atol=1e-4)
        np.testing.assert_allclose([float(v) for v in rd.PixelSpacing], grid.spacing_mm[1:], atol=1e-6)
        np.testing.assert_allclose(
            np.asarray(rd.GridFrameOffsetVector, dtype=float), np.arange(grid.shape[0]) * grid.spacing_mm[0]
        )
    # An independent reader's placement: SimpleITK's voxel centres carry the analytic dose of those points.
    image = sitk.ReadImage(str(out / patient / f"cycle_{cycle}" / "RTDOSE_dvk.dcm"))
    scaling = float(image.GetMetaData("3004|000e"))
    read = sitk.GetArrayFromImage(image) * scaling
    np.testing.assert_allclose(read, dose_at(sitk_centres_xyz(image)), rtol=1e-6, atol=scaling)


@requires_dciodvfy
def test_cycle_rt_dose_dciodvfy_reports_no_errors(cycle_exported, tmp_path):
    """The exported header, checked by dciodvfy on a 16-bit copy (dciodvfy 1.00 aborts on 32-bit pixel data, see
    test_rt_dose_dciodvfy_reports_no_errors)."""
    _, _, patient, _, cycle, *_, out = cycle_exported
    rd = pydicom.dcmread(out / patient / f"cycle_{cycle}" / "RTDOSE_dvk.dcm")
    dose = rd.pixel_array * float(rd.DoseGridScaling)
    scaling = float(f"{dose.max() / (2**16 - 1) * (1 + 1e-7):.8e}")
    rd.BitsAllocated, rd.BitsStored, rd.HighBit = 16, 16, 15
    rd.DoseGridScaling = f"{scaling:.8e}"
    rd.PixelData = np.minimum(np.rint(dose / scaling), 2**16 - 1).astype("<u2").tobytes()
    rd.save_as(tmp_path / "RD16.dcm", enforce_file_format=True)
    report = _dciodvfy(tmp_path / "RD16.dcm")
    assert "RTDose" in report, "\n".join(report)
    assert not _errors(report), "\n".join(report)
    warnings = [line for line in report if line.startswith("Warning")]
    assert warnings == ["Warning - </DoseSummationType(3004,000a)[1]> - Unrecognized defined term = <CYCLE>"], warnings


def test_export_refuses_a_cycle_whose_reference_scan_was_reingested(cycle_exported, tmp_path):
    """The maps lie on the grid of the reference scan's version they were computed from: after a new version of
    that scan they are refused, with the reason; the scan's own objects are still written."""
    copy_dir, dicom_out, patient, timepoint, cycle, *_ = cycle_exported
    stale = tmp_path / "cohort"
    shutil.copytree(copy_dir, stale)
    cohort = open_cohort(stale)
    scan = cohort.scan(patient, timepoint).load()
    attrs = cohort.scan_attrs(patient, timepoint)
    given = {k: v for k, v in attrs.items() if k not in ("status", "version", "written_utc", "provenance")}
    given = {k: v for k, v in given.items() if k not in ("patient", "timepoint")}
    assert cohort.write_scan(patient, timepoint, scan, {**given, "source_hash": "0" * 64}) == "new_version"
    rows = export_scans(stale, dicom_out, tmp_path / "out", key=KEY)
    rt = rows[rows["object"].str.startswith("RTDOSE")]
    assert rt["status"].tolist() == ["refused", "refused"], rows.to_string()
    assert rt["message"].str.contains("the maps belong to another version").all(), rt["message"].tolist()
    assert not (tmp_path / "out" / patient / f"cycle_{cycle}").exists()
    assert (rows.loc[~rows.index.isin(rt.index), "status"] == "written").all(), rows.to_string()
