"""Patient positions: one virtual patient scanned head first or feet first, supine or prone, ingests to the same arrays.

The scanner keeps its image axes fixed to the gantry, so turning the patient only changes how the same anatomy is
stored: ImageOrientationPatient (the values CT scanners write per Patient Position (0018,5100), listed below), the
order of the slices and the pixels within them. Each export is checked against the virtual patient's own arrays
through the DICOM pixel-to-patient formula (PS3.3 C.7.6.2.1.1), then ingested (onto the CT grid and the compact grid,
contours from the SEG and from the RTSTRUCT) and compared across positions; independent readers (SimpleITK/GDCM and
dcm2niix) must find the same landmarks at the same patient coordinates.
"""

from __future__ import annotations

import datetime as dt
import shutil
import subprocess

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid

from cohort_dosimetry.constants import COMPACT_SPACING_MM
from cohort_dosimetry.io import ingest
from cohort_dosimetry.phantoms import export_dicom
from cohort_dosimetry.store import open_cohort
from tests.io import dicom_factory as factory
from tests.phantoms.test_dicom_export import INJECTION, ORIGIN_MM, SHAPE, SPACING_MM, requires_dciodvfy
from tests.phantoms.test_dicom_export import make_patient as make_small_patient

KEY = "patient-position-test-key-0123"
#: ImageOrientationPatient (row cosine, column cosine) written by CT scanners per patient position
ORIENTATION = {
    "HFS": (1, 0, 0, 0, 1, 0),
    "FFS": (-1, 0, 0, 0, 1, 0),
    "HFP": (-1, 0, 0, 0, -1, 0),
    "FFP": (1, 0, 0, 0, -1, 0),
}
POSITIONS = tuple(ORIENTATION)
HOURS = 24.0

requires_dcm2niix = pytest.mark.skipif(
    shutil.which("dcm2niix") is None, reason="dcm2niix not installed (Debian package dcm2niix)"
)


@pytest.fixture(scope="module")
def patient():
    return make_small_patient(seed=11, hours=(HOURS,))


@pytest.fixture(scope="module")
def exports(patient, tmp_path_factory):
    """Position -> (PatientExport, its folder): the same virtual patient exported in each position."""
    out = {}
    for position in POSITIONS:
        folder = tmp_path_factory.mktemp(f"export_{position}")
        out[position] = (
            export_dicom(patient, folder, patient_index=0, injection_datetime=INJECTION, patient_position=position),
            folder,
        )
    return out


@pytest.fixture(scope="module")
def ingested(exports, tmp_path_factory):
    """(position, grid, contours) -> (scan Dataset loaded, its attrs, report) for grid "ct"/"compact" with the SEG and
    grid "ct" with the RTSTRUCT (the SEG left out of a copy of the export)."""
    out = {}
    for position, (result, _) in exports.items():
        rtstruct_only = tmp_path_factory.mktemp(f"rtstruct_{position}")
        shutil.copytree(result.dicom_dir, rtstruct_only / "dicom", ignore=shutil.ignore_patterns("SEG"))
        for grid, contours, dicom_dir in (
            ("ct", "SEG", result.dicom_dir),
            ("compact", "SEG", result.dicom_dir),
            ("ct", "RTSTRUCT", rtstruct_only / "dicom"),
        ):
            cohort_dir = tmp_path_factory.mktemp(f"cohort_{position}_{grid}_{contours}")
            report = ingest(dicom_dir, cohort_dir, grid=grid, key=KEY)
            cohort = open_cohort(cohort_dir)
            assert len(cohort.scans()) == 1, (position, grid, contours, report["message"].tolist())
            scan = cohort.scan(*cohort.scans()[0]).load()
            out[position, grid, contours] = scan, dict(scan.attrs), report
    return out


def _truth_index(position_xyz, orientation, pixel_spacing, shape_rc) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Index (z, y, x) into the virtual patient's arrays of every pixel (row, col) of one image plane, from its
    ImagePositionPatient, ImageOrientationPatient and PixelSpacing by PS3.3 C.7.6.2.1.1; asserts each pixel centre
    lies on a voxel centre of the virtual patient."""
    row_cosine, column_cosine = np.asarray(orientation[:3], float), np.asarray(orientation[3:], float)
    rows, cols = np.meshgrid(np.arange(shape_rc[0]), np.arange(shape_rc[1]), indexing="ij")
    xyz = (
        np.asarray(position_xyz, float)
        + cols[..., None] * pixel_spacing[1] * row_cosine
        + rows[..., None] * pixel_spacing[0] * column_cosine
    )
    continuous = (xyz[..., ::-1] - np.asarray(ORIGIN_MM)) / np.asarray(SPACING_MM)  # (z, y, x)
    index = np.rint(continuous).astype(int)
    np.testing.assert_allclose(continuous, index, atol=1e-6)
    assert index.min() >= 0 and np.all(index.max(axis=(0, 1)) < np.asarray(SHAPE))
    return index[..., 0], index[..., 1], index[..., 2]


def _floats(values) -> list[float]:
    return [float(v) for v in values]


# ---------------------------------------------------------------------------------------------------------------
# the exported files


def test_ct_slices_are_stored_as_the_scanner_writes_them(patient, exports):
    truth = np.rint(patient["ct_hu"].values)
    for position, (result, _) in exports.items():
        slices = sorted(
            (pydicom.dcmread(f) for f in result.scans[0].ct_dir.glob("*.dcm")), key=lambda d: int(d.InstanceNumber)
        )
        assert len(slices) == SHAPE[0]
        first = slices[0]
        assert first.PatientPosition == position
        orientation = _floats(first.ImageOrientationPatient)
        assert orientation == list(ORIENTATION[position])
        normal = np.cross(orientation[:3], orientation[3:])
        assert normal[2] == (1 if position.startswith("HF") else -1)  # head first: slices run to the head
        origin = np.asarray(_floats(first.ImagePositionPatient))
        for k, ds in enumerate(slices):
            assert _floats(ds.ImageOrientationPatient) == orientation
            # InstanceNumber runs along the slice normal, one slice spacing apart
            np.testing.assert_allclose(_floats(ds.ImagePositionPatient), origin + k * SPACING_MM[0] * normal, atol=1e-6)
            iz, iy, ix = _truth_index(
                ds.ImagePositionPatient, orientation, _floats(ds.PixelSpacing), (ds.Rows, ds.Columns)
            )
            hu = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
            np.testing.assert_array_equal(hu, truth[iz, iy, ix], err_msg=f"{position} slice {k + 1}")


def test_nm_frames_are_stored_as_the_scanner_writes_them(patient, exports):
    truth = patient["activity"].isel(timepoint=0).values
    for position, (result, _) in exports.items():
        nm = pydicom.dcmread(result.scans[0].nm_file)
        assert "PatientPosition" not in nm  # NM states the position by codes (PS3.3 C.8.4.6)
        orientation_codes = nm.PatientOrientationCodeSequence[0]
        modifier = orientation_codes.PatientOrientationModifierCodeSequence[0]
        supine = codes.cid20.Supine if position.endswith("S") else codes.cid20.Prone
        head_first = codes.cid21.Headfirst if position.startswith("HF") else codes.cid21.FeetFirst
        assert (modifier.CodeValue, modifier.CodeMeaning) == (supine.value, supine.meaning)
        gantry = nm.PatientGantryRelationshipCodeSequence[0]
        assert (gantry.CodeValue, gantry.CodeMeaning) == (head_first.value, head_first.meaning)
        detector = nm.DetectorInformationSequence[0]
        orientation = _floats(detector.ImageOrientationPatient)
        assert orientation == list(ORIENTATION[position])
        # a positive SpacingBetweenSlices stacks the frames along row x column cosine (PS3.3 C.8.4.15)
        spacing = float(nm.SpacingBetweenSlices)
        assert spacing > 0
        normal = np.cross(orientation[:3], orientation[3:])
        slope = float(nm.RescaleSlope)
        frames = nm.pixel_array * slope
        for k in range(int(nm.NumberOfFrames)):
            position_xyz = np.asarray(_floats(detector.ImagePositionPatient)) + k * spacing * normal
            iz, iy, ix = _truth_index(position_xyz, orientation, _floats(nm.PixelSpacing), (nm.Rows, nm.Columns))
            np.testing.assert_allclose(
                frames[k],
                truth[iz, iy, ix],
                atol=slope / 2 * (1 + 1e-6),
                rtol=1e-6,
                err_msg=f"{position} frame {k + 1}",
            )


def test_contours_stay_in_patient_coordinates_and_reference_their_ct_slice(exports):
    hfs = pydicom.dcmread(exports["HFS"][0].scans[0].rtstruct_file)
    hfs_points = [c.ContourData for roi in hfs.ROIContourSequence for c in roi.ContourSequence]
    for position, (result, _) in exports.items():
        scan = result.scans[0]
        ct_z = {
            ds.SOPInstanceUID: float(ds.ImagePositionPatient[2])
            for ds in (pydicom.dcmread(f, stop_before_pixels=True) for f in scan.ct_dir.glob("*.dcm"))
        }
        rs = pydicom.dcmread(scan.rtstruct_file)
        points = []
        for roi in rs.ROIContourSequence:
            for contour in roi.ContourSequence:
                z = float(contour.ContourData[2])
                assert ct_z[contour.ContourImageSequence[0].ReferencedSOPInstanceUID] == pytest.approx(z), position
                points.append(contour.ContourData)
        assert points == hfs_points, position


def test_seg_frames_map_onto_the_labels(patient, exports):
    labels = patient["labels"].values
    for position, (result, _) in exports.items():
        seg = pydicom.dcmread(result.scans[0].seg_file)
        names = {int(s.SegmentNumber): s.SegmentLabel for s in seg.SegmentSequence}
        value_of = {name: value for value, name in patient["labels"].attrs["names"].items()}
        shared = seg.SharedFunctionalGroupsSequence[0]
        orientation = _floats(shared.PlaneOrientationSequence[0].ImageOrientationPatient)
        assert orientation == list(ORIENTATION[position])
        pixel_spacing = _floats(shared.PixelMeasuresSequence[0].PixelSpacing)
        frames = seg.pixel_array.reshape(-1, seg.Rows, seg.Columns)
        painted = {}
        for frame, item in zip(frames, seg.PerFrameFunctionalGroupsSequence):
            number = int(item.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
            iz, iy, ix = _truth_index(
                item.PlanePositionSequence[0].ImagePositionPatient, orientation, pixel_spacing, (seg.Rows, seg.Columns)
            )
            mask = painted.setdefault(number, np.zeros(SHAPE, dtype=bool))
            mask[iz[frame > 0], iy[frame > 0], ix[frame > 0]] = True
        for number, mask in painted.items():
            name = names[number]
            np.testing.assert_array_equal(mask, labels == value_of[name], err_msg=f"{position} {name}")


@requires_dciodvfy
def test_dciodvfy_reports_no_errors_for_feet_first_prone(exports):
    scan = exports["FFP"][0].scans[0]
    objects = {
        "CTImage": next(scan.ct_dir.glob("*.dcm")),
        "NMImage": scan.nm_file,
        "RTStructureSet": scan.rtstruct_file,
        "Segmentation": scan.seg_file,
    }
    for iod, f in objects.items():
        run = subprocess.run(["dciodvfy", "-new", str(f)], capture_output=True, text=True, timeout=60)
        report = (run.stdout + run.stderr).splitlines()
        assert iod in report, f"dciodvfy did not recognise {f} as {iod}"
        errors = [line for line in report if line.startswith("Error")]
        assert not errors, f"{iod} {f}:\n" + "\n".join(errors)


def test_an_unknown_patient_position_is_refused_by_name(patient, tmp_path):
    with pytest.raises(ValueError, match=r"virtual patient 0 \(seed 11\): patient position 'HFDL' is not one of"):
        export_dicom(patient, tmp_path, patient_position="HFDL")
    assert not (tmp_path / "dicom").exists()


# ---------------------------------------------------------------------------------------------------------------
# ingest


@pytest.mark.parametrize("grid", ["ct", "compact"])
def test_every_position_ingests_to_the_same_arrays(patient, ingested, grid):
    reference, reference_attrs, _ = ingested["HFS", grid, "SEG"]
    for position in POSITIONS:
        scan, attrs, report = ingested[position, grid, "SEG"]
        assert not (report["severity"] == "warning").any(), report["message"].tolist()
        # the dose grid is the standard axial one whatever the position
        assert attrs["direction"] == pytest.approx(list(np.eye(3).ravel()))
        assert attrs["spacing_mm"] == pytest.approx(reference_attrs["spacing_mm"])
        assert attrs["origin_mm"] == pytest.approx(reference_attrs["origin_mm"], abs=1e-6)
        assert attrs["ct_patient_position"] == position
        sign_x, sign_y = ORIENTATION[position][0], ORIENTATION[position][4]
        assert attrs["ct_direction"] == pytest.approx(list(np.diag([sign_x * sign_y, sign_y, sign_x]).ravel()))
        for name in ("ct_hu", "density", "activity"):
            np.testing.assert_allclose(
                scan[name].values, reference[name].values, rtol=1e-6, atol=1e-3, err_msg=f"{position} {grid} {name}"
            )
        np.testing.assert_array_equal(scan["labels"].values, reference["labels"].values, err_msg=position)
        assert scan["labels"].attrs["names"] == reference["labels"].attrs["names"]

    truth_bq = float(patient["activity"].isel(timepoint=0).values.astype(np.float64).sum()) * np.prod(SPACING_MM)
    stored_bq = float(reference["activity"].values.astype(np.float64).sum()) * np.prod(reference_attrs["spacing_mm"])
    assert stored_bq / 1000.0 == pytest.approx(truth_bq / 1000.0, rel=1e-3)  # Bq: mm3 -> mL
    if grid == "ct":  # the dose grid is the virtual patient's own grid: the arrays themselves come back
        assert reference_attrs["origin_mm"] == pytest.approx(ORIGIN_MM)
        assert reference_attrs["spacing_mm"] == pytest.approx(SPACING_MM)
        np.testing.assert_array_equal(reference["ct_hu"].values, np.rint(patient["ct_hu"].values))
        np.testing.assert_array_equal(reference["labels"].values, patient["labels"].values)
        truth = patient["activity"].isel(timepoint=0).values
        np.testing.assert_allclose(reference["activity"].values, truth, rtol=1e-6, atol=truth.max() / 65535)
    else:
        assert reference_attrs["spacing_mm"] == pytest.approx(COMPACT_SPACING_MM)


def test_rtstruct_contours_give_the_labels_in_every_position(patient, ingested):
    for position in POSITIONS:
        scan, attrs, _ = ingested[position, "ct", "RTSTRUCT"]
        assert attrs["contours_from"] == "RTSTRUCT"
        np.testing.assert_array_equal(scan["labels"].values, patient["labels"].values, err_msg=position)


def test_an_oblique_ct_keeps_its_orientation_with_a_warning(tmp_path):
    # the CT turned 3 degrees about the patient's long axis: no axial grid holds its voxels
    angle = np.radians(3.0)
    row, column = (np.cos(angle), np.sin(angle), 0.0), (-np.sin(angle), np.cos(angle), 0.0)
    patient = factory.make_patient(seed=3)
    when = factory.INJECTION + dt.timedelta(hours=HOURS)
    study, frame, series = generate_uid(), generate_uid(), generate_uid()
    folder = tmp_path / "dicom"
    factory.write_ct(patient, folder / "ct", study, series, frame, when, orientation=row + column)
    factory.write_rtstruct(patient, folder / "rs.dcm", study, series, frame, when)
    shape, origin, spacing = factory.nm_grid(patient)
    activity = factory.activity_on_nm_grid(patient, shape, origin, spacing, HOURS, seed=1)
    factory.write_nm(patient, folder / "nm.dcm", study, frame, HOURS, activity, origin, spacing)
    report = ingest(folder, tmp_path / "cohort", grid="compact", key=KEY)
    rows = report[report["message"].str.contains("oblique CT", regex=False)]
    assert list(rows["severity"]) == ["warning"] and list(rows["status"]) == ["written"]
    assert "3.00 degrees" in rows["message"].iloc[0]
    cohort = open_cohort(tmp_path / "cohort")
    attrs = cohort.scan_attrs(*cohort.scans()[0])
    # rows (z, y, x) of the grid's direction: the slice normal, the column cosine, the row cosine, each as (z, y, x)
    expected = [(1.0, 0.0, 0.0), tuple(column[::-1]), tuple(row[::-1])]
    assert attrs["direction"] == pytest.approx(np.ravel(expected).tolist())


# ---------------------------------------------------------------------------------------------------------------
# independent readers


def _landmarks_mm(array: np.ndarray, physical_point) -> dict[str, np.ndarray]:
    """Centres (x, y, z) mm of the vertebra (HU > 400), of the body (HU > -900) of a CT array (z, y, x), through the
    reader's own index-to-patient mapping ``physical_point((i, j, k))``."""
    out = {}
    for name, mask in (("vertebra", array > 400), ("body", array > -900)):
        points = np.array([physical_point((int(i), int(j), int(k))) for k, j, i in np.argwhere(mask)])
        out[name] = points.mean(axis=0)
    return out


def _truth_landmarks(patient) -> dict[str, np.ndarray]:
    """The same landmarks from the virtual patient's labels: the vertebra label, every label (lungs included)."""
    labels = patient["labels"].values
    out = {}
    for name, mask in (("vertebra", labels == 9), ("body", labels > 0)):
        zyx = np.asarray(ORIGIN_MM) + np.argwhere(mask) * np.asarray(SPACING_MM)
        out[name] = zyx.mean(axis=0)[::-1]
    return out


def _activity_centre_mm(image: sitk.Image) -> np.ndarray:
    array = sitk.GetArrayFromImage(image).astype(np.float64)
    points = np.array(
        [image.TransformIndexToPhysicalPoint((int(i), int(j), int(k))) for k, j, i in np.ndindex(*array.shape)]
    )
    return (points * array.ravel()[:, None]).sum(axis=0) / array.sum()


def test_simpleitk_finds_the_landmarks_at_the_same_place_in_every_position(patient, exports):
    truth = _truth_landmarks(patient)
    activity = patient["activity"].isel(timepoint=0).values.astype(np.float64)
    zyx = np.asarray(ORIGIN_MM) + np.argwhere(np.ones(SHAPE, bool)) * np.asarray(SPACING_MM)
    activity_centre = (zyx * activity.ravel()[:, None]).sum(axis=0)[::-1] / activity.sum()
    for position, (result, _) in exports.items():
        reader = sitk.ImageSeriesReader()
        reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(result.scans[0].ct_dir)))
        image = reader.Execute()
        if position != "HFS":  # the reader does see a different storage order
            assert not np.allclose(image.GetDirection(), np.eye(3).ravel())
        for name, centre in _landmarks_mm(sitk.GetArrayFromImage(image), image.TransformIndexToPhysicalPoint).items():
            np.testing.assert_allclose(centre, truth[name], atol=1e-6, err_msg=f"{position} {name}")
        nm = sitk.ReadImage(str(result.scans[0].nm_file))
        np.testing.assert_allclose(_activity_centre_mm(nm), activity_centre, atol=0.01, err_msg=position)


@requires_dcm2niix
def test_dcm2niix_finds_the_landmarks_at_the_same_place_in_every_position(patient, exports, tmp_path):
    truth = _truth_landmarks(patient)
    for position, (result, _) in exports.items():
        out = tmp_path / position
        out.mkdir()
        run = subprocess.run(
            ["dcm2niix", "-z", "n", "-b", "n", "-f", "ct", "-o", str(out), str(result.scans[0].ct_dir)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert run.returncode == 0, run.stdout + run.stderr
        (nifti,) = out.glob("*.nii")
        image = sitk.ReadImage(str(nifti))  # NIfTI's RAS becomes ITK's LPS on reading
        for name, centre in _landmarks_mm(sitk.GetArrayFromImage(image), image.TransformIndexToPhysicalPoint).items():
            np.testing.assert_allclose(centre, truth[name], atol=1e-3, err_msg=f"{position} {name}")
