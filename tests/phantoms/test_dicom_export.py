"""DICOM export of virtual patients: round trips through independent readers, UIDs, identity, dciodvfy.

The patients here are tiny synthetic Datasets of the exact form ``make_virtual_patient`` returns (anisotropic
spacing, an off-centre origin and unequal axis lengths, so that any swap of axes or of (row, col) shows), with
a liver lesion that leaves a hole in the liver ROI and organs that leave holes in the body ROI.
"""

from __future__ import annotations

import datetime as dt
import shutil
import subprocess
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
import xarray as xr
from matplotlib.path import Path as PolygonPath

from cohort_dosimetry.cli import main as cli_main
from cohort_dosimetry.grid import Grid
from cohort_dosimetry.io import read_nm
from cohort_dosimetry.phantoms import make_virtual_patient
from cohort_dosimetry.phantoms._dicom_export import cohort_plan, export_cohort, export_dicom, read_ground_truth
from cohort_dosimetry.phantoms._identity import synthetic_identity
from cohort_dosimetry.phantoms._virtual_patient import DEFAULT_HOURS
from cohort_dosimetry.physics import nuclide

requires_dciodvfy = pytest.mark.skipif(
    shutil.which("dciodvfy") is None,
    reason="dciodvfy not installed (Debian package dicom3tools: apt-get install -y dicom3tools)",
)

SHAPE = (7, 22, 26)  # (z, y, x)
SPACING_MM = (2.5, 3.25, 4.0)
ORIGIN_MM = (-30.0, -41.0, 17.5)
NAMES = {1: "body", 2: "lung_left", 4: "liver", 5: "kidney_left", 6: "kidney_right", 9: "vertebra_L3", 101: "lesion_1"}
INJECTION = dt.datetime(2024, 3, 5, 9, 30, 0)


def make_patient(seed: int, hours=(4.0, 24.0, 96.0)) -> xr.Dataset:
    """A tiny virtual patient with the variables, coordinates and attrs of ``make_virtual_patient``."""
    rng = np.random.default_rng(seed)
    z, y, x = np.meshgrid(*(np.arange(n, dtype=float) for n in SHAPE), indexing="ij")
    labels = np.zeros(SHAPE, dtype=np.int16)
    labels[((y - 11) / 9.5) ** 2 + ((x - 12.5) / 11.5) ** 2 <= 1] = 1
    labels[(z >= 1) & (((y - 7) / 3.5) ** 2 + ((x - 20) / 3.2) ** 2 <= 1)] = 2
    labels[(z <= 5) & (((y - 12) / 4.5) ** 2 + ((x - 6) / 4.5) ** 2 <= 1)] = 4
    labels[(z <= 4) & (z >= 2) & ((y - 12) ** 2 + (x - 6) ** 2 <= 2.5)] = 101  # a lesion inside the liver
    labels[(z >= 2) & (((y - 16) / 2) ** 2 + ((x - 17) / 1.6) ** 2 <= 1)] = 5
    labels[(z >= 2) & (((y - 16) / 2) ** 2 + ((x - 8.5) / 1.6) ** 2 <= 1)] = 6
    labels[(np.abs(y - 18) <= 1) & (np.abs(x - 12.5) <= 1.5)] = 9
    hu_of = {0: -1000.0, 1: 20.0, 2: -800.0, 4: 60.0, 5: 35.0, 6: 35.0, 9: 700.0, 101: 45.0}
    ct_hu = np.vectorize(hu_of.get)(labels) + rng.normal(0.0, 12.0, SHAPE)
    density = np.clip(1.0 + ct_hu / 1000.0, 0.001, None).astype(np.float32)
    uptake = {0: 0.0, 1: 1.0, 2: 0.3, 4: 8.0, 5: 12.0, 6: 11.0, 9: 1.5, 101: 60.0}
    shape_map = np.vectorize(uptake.get)(labels) * rng.uniform(0.7, 1.3, SHAPE)
    decay = np.exp(-np.log(2) * np.asarray(hours) / 70.0)
    activity_true = 2.0e4 * decay[:, None, None, None] * shape_map
    activity = np.clip(activity_true * rng.normal(1.0, 0.15, activity_true.shape), 0.0, None)
    coords = {"timepoint": np.arange(len(hours)), "hours_post_injection": ("timepoint", np.asarray(hours))}
    ds = xr.Dataset(
        {
            "ct_hu": (("z", "y", "x"), ct_hu.astype(np.float32), {"units": "HU"}),
            "density": (("z", "y", "x"), density, {"units": "g/cm3"}),
            "labels": (("z", "y", "x"), labels, {"names": dict(NAMES)}),
            "activity": (("timepoint", "z", "y", "x"), activity.astype(np.float32), {"units": "Bq/mL"}),
            "activity_true": (("timepoint", "z", "y", "x"), activity_true.astype(np.float32), {"units": "Bq/mL"}),
        },
        coords=coords,
        attrs={
            "seed": seed,
            "spacing_mm": SPACING_MM,
            "origin_mm": ORIGIN_MM,
            "administered_activity_bq": 7.4e9,
            "nuclide": "Lu177",
            "sex": "female",
            "n_views": 12,
            "seconds_per_view": 25.0,
        },
    )
    return ds


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    patient = make_patient(seed=7)
    out = tmp_path_factory.mktemp("cohort")
    result = export_dicom(patient, out, patient_index=3, injection_datetime=INJECTION)
    return patient, result


def _expected_origin_xyz(k: int = 0) -> tuple[float, float, float]:
    return ORIGIN_MM[2], ORIGIN_MM[1], ORIGIN_MM[0] + k * SPACING_MM[0]


def _read_ct_series_pydicom(folder: Path) -> list[pydicom.Dataset]:
    slices = [pydicom.dcmread(f) for f in folder.glob("*.dcm")]
    return sorted(slices, key=lambda d: float(d.ImagePositionPatient[2]))


# ---------------------------------------------------------------------------------------------------------------
# CT


def test_ct_round_trip_pydicom(exported):
    patient, result = exported
    for scan in result.scans:
        slices = _read_ct_series_pydicom(scan.ct_dir)
        assert len(slices) == SHAPE[0]
        hu = np.stack([s.pixel_array * float(s.RescaleSlope) + float(s.RescaleIntercept) for s in slices])
        np.testing.assert_allclose(hu, patient["ct_hu"].values, atol=0.5 + 1e-3)
        for k, s in enumerate(slices):
            np.testing.assert_allclose([float(v) for v in s.ImagePositionPatient], _expected_origin_xyz(k))
            assert [float(v) for v in s.ImageOrientationPatient] == [1, 0, 0, 0, 1, 0]
            np.testing.assert_allclose([float(v) for v in s.PixelSpacing], SPACING_MM[1:])  # (row, col) = (y, x)
            assert float(s.SliceThickness) == SPACING_MM[0]
            assert s.FrameOfReferenceUID == scan.frame_of_reference_uid
            assert s.StudyInstanceUID == scan.study_instance_uid
            assert s.AcquisitionDateTime == scan.acquisition_datetime.strftime("%Y%m%d%H%M%S")


def test_ct_round_trip_simpleitk(exported):
    patient, result = exported
    for scan in result.scans:
        reader = sitk.ImageSeriesReader()
        reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(scan.ct_dir)))
        image = reader.Execute()
        np.testing.assert_allclose(sitk.GetArrayFromImage(image), patient["ct_hu"].values, atol=0.5 + 1e-3)
        np.testing.assert_allclose(image.GetOrigin(), _expected_origin_xyz(), atol=1e-6)
        np.testing.assert_allclose(image.GetSpacing(), SPACING_MM[::-1], atol=1e-6)
        np.testing.assert_allclose(image.GetDirection(), np.eye(3).ravel(), atol=1e-9)


# ---------------------------------------------------------------------------------------------------------------
# NM


def test_nm_round_trip_pydicom_and_metadata(exported):
    patient, result = exported
    for k, scan in enumerate(result.scans):
        nm = pydicom.dcmread(scan.nm_file)
        slope = float(nm.RescaleSlope)
        bqml = nm.pixel_array * slope + float(nm.RescaleIntercept)
        truth = patient["activity"].isel(timepoint=k).values
        assert bqml.shape == SHAPE
        assert slope <= truth.max() / 65535 * (1 + 1e-9) + 1e-12  # the full 16 bits are used
        np.testing.assert_allclose(bqml, truth, atol=slope / 2 * (1 + 1e-6), rtol=1e-6)
        mapping = nm.RealWorldValueMappingSequence[0]
        assert mapping.MeasurementUnitsCodeSequence[0].CodeValue == "Bq/ml"
        assert mapping.RealWorldValueSlope == pytest.approx(slope)
        assert nm.Units == "BQML"
        assert list(nm.ImageType)[2:] == ["RECON TOMO", "EMISSION"]
        assert nm.NumberOfFrames == SHAPE[0]
        assert nm.FrameIncrementPointer == 0x00540080
        assert float(nm.SpacingBetweenSlices) == SPACING_MM[0]
        np.testing.assert_allclose([float(v) for v in nm.PixelSpacing], SPACING_MM[1:])  # (row, col) = (y, x)
        detector = nm.DetectorInformationSequence[0]
        np.testing.assert_allclose([float(v) for v in detector.ImagePositionPatient], _expected_origin_xyz())
        assert [float(v) for v in detector.ImageOrientationPatient] == [1, 0, 0, 0, 1, 0]
        pharm = nm.RadiopharmaceuticalInformationSequence[0]
        assert pharm.RadiopharmaceuticalStartDateTime == INJECTION.strftime("%Y%m%d%H%M%S")
        assert float(pharm.RadionuclideTotalDose) == pytest.approx(patient.attrs["administered_activity_bq"])
        assert float(pharm.RadionuclideHalfLife) == pytest.approx(nuclide("Lu177").half_life_s, rel=1e-6)
        assert pharm.RadionuclideCodeSequence[0].CodeMeaning == "^177^Lutetium"
        acquired = dt.datetime.strptime(nm.AcquisitionDateTime, "%Y%m%d%H%M%S")
        assert (acquired - INJECTION).total_seconds() / 3600 == pytest.approx(patient.hours_post_injection[k])
        assert nm.FrameOfReferenceUID == scan.frame_of_reference_uid
        (rotation,) = nm.RotationInformationSequence  # the simulated acquisition: 12 views of 25 s over 360 degrees
        assert (rotation.NumberOfFramesInRotation, rotation.ActualFrameDuration) == (12, 25000)
        assert float(rotation.ScanArc) == 360 and float(rotation.AngularStep) == 30 and nm.NumberOfDetectors == 1
        assert read_nm([scan.nm_file]).acquisition_duration_s == 300.0


def test_nm_round_trip_simpleitk(exported):
    patient, result = exported
    for k, scan in enumerate(result.scans):
        image = sitk.ReadImage(str(scan.nm_file))
        slope = float(pydicom.dcmread(scan.nm_file, stop_before_pixels=True).RescaleSlope)
        np.testing.assert_allclose(
            sitk.GetArrayFromImage(image),
            patient["activity"].isel(timepoint=k).values,
            atol=slope / 2 * (1 + 1e-6),
            rtol=1e-6,
        )
        np.testing.assert_allclose(image.GetOrigin(), _expected_origin_xyz(), atol=1e-6)
        np.testing.assert_allclose(image.GetSpacing(), SPACING_MM[::-1], atol=1e-6)
        np.testing.assert_allclose(image.GetDirection(), np.eye(3).ravel(), atol=1e-9)


# ---------------------------------------------------------------------------------------------------------------
# VOIs


def _rasterise_rtstruct(rs: pydicom.Dataset) -> dict[str, np.ndarray]:
    """ROI name -> mask (z, y, x): voxel centres inside an odd number of the slice's contours (even-odd rule)."""
    zc, yc, xc = (o + s * np.arange(n) for o, s, n in zip(ORIGIN_MM, SPACING_MM, SHAPE))
    centres = np.column_stack([g.ravel() for g in np.meshgrid(xc, yc, indexing="xy")])  # (y*x, 2) of (x, y)
    names = {roi.ROINumber: roi.ROIName for roi in rs.StructureSetROISequence}
    masks = {}
    for roi in rs.ROIContourSequence:
        inside = np.zeros(SHAPE, dtype=np.int32)
        for contour in roi.ContourSequence:
            xyz = np.asarray(contour.ContourData, dtype=float).reshape(-1, 3)
            k = np.flatnonzero(np.isclose(zc, xyz[0, 2]))
            assert len(k) == 1 and np.allclose(xyz[:, 2], xyz[0, 2]), "contour not on one CT slice"
            inside[k[0]] += PolygonPath(xyz[:, :2]).contains_points(centres).reshape(SHAPE[1:])
        masks[names[roi.ReferencedROINumber]] = inside % 2 == 1
    return masks


def test_rtstruct_rasterises_to_labels(exported):
    patient, result = exported
    labels = patient["labels"].values
    for scan in result.scans:
        rs = pydicom.dcmread(scan.rtstruct_file)
        ct_uids = {pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID for f in scan.ct_dir.glob("*.dcm")}
        for roi in rs.ROIContourSequence:
            for contour in roi.ContourSequence:
                assert contour.ContourImageSequence[0].ReferencedSOPInstanceUID in ct_uids
        masks = _rasterise_rtstruct(rs)
        assert set(masks) == set(NAMES.values())
        for value, name in NAMES.items():
            truth = labels == value
            # Contours run between voxel centres, so the masks match exactly; a voxel off at an edge would fail.
            mismatch = np.count_nonzero(masks[name] != truth)
            assert mismatch == 0, f"{name}: {mismatch} of {truth.sum()} voxels differ"
        frame = rs.ReferencedFrameOfReferenceSequence[0]
        assert frame.FrameOfReferenceUID == scan.frame_of_reference_uid


def test_seg_matches_labels_exactly_and_references_ct(exported):
    patient, result = exported
    labels = patient["labels"].values
    for scan in result.scans:
        seg = hd.seg.segread(scan.seg_file)
        ct_files = sorted(scan.ct_dir.glob("*.dcm"))
        ct = [pydicom.dcmread(f, stop_before_pixels=True) for f in ct_files]
        assert seg.FrameOfReferenceUID == scan.frame_of_reference_uid
        referenced = {item.SeriesInstanceUID for item in seg.ReferencedSeriesSequence}
        assert referenced == {ct[0].SeriesInstanceUID}
        ct_by_z = sorted(ct, key=lambda d: float(d.ImagePositionPatient[2]))
        source_uids = [d.SOPInstanceUID for d in ct_by_z]
        by_label = {}
        for number in seg.get_segment_numbers():
            name = seg.get_segment_description(number).segment_label
            masks = seg.get_pixels_by_source_instance(
                source_sop_instance_uids=source_uids, segment_numbers=[number], assert_missing_frames_are_empty=True
            )
            by_label[name] = masks[..., 0].astype(bool)
        assert set(by_label) == set(NAMES.values())
        for value, name in NAMES.items():
            np.testing.assert_array_equal(by_label[name], labels == value, err_msg=name)


# ---------------------------------------------------------------------------------------------------------------
# identity, UIDs, ground truth


def test_synthetic_identity_reaches_every_object(exported):
    patient, result = exported
    ident = synthetic_identity(patient.attrs["seed"], "F")
    assert ident.sex == "F" and "^" in ident.patient_name
    files = [
        f
        for scan in result.scans
        for f in (*scan.ct_dir.glob("*.dcm"), scan.nm_file, scan.rtstruct_file, scan.seg_file)
    ]
    for f in files:
        ds = pydicom.dcmread(f, stop_before_pixels=True)
        assert str(ds.PatientName) == ident.patient_name, f
        assert ds.PatientID == ident.patient_id, f
        assert ds.PatientBirthDate == ident.birth_date.strftime("%Y%m%d"), f
        assert ds.PatientSex == "F", f
        raw = f.read_bytes()  # what an ingest test would grep for
        assert ident.patient_name.encode() in raw and ident.patient_id.encode() in raw


def test_synthetic_identity_is_seeded():
    identities = [synthetic_identity(seed) for seed in range(40)]
    assert synthetic_identity(11) == identities[11]
    assert len({i.patient_id for i in identities}) == 40
    assert {i.sex for i in identities} == {"F", "M"}
    assert synthetic_identity(11, "male").sex == "M" and synthetic_identity(11, "F").sex == "F"
    for ident in identities:
        assert 40 <= ident.age_at(dt.date(2024, 6, 1)) <= 80
    with pytest.raises(ValueError, match="seed 3.*sex 'X'"):
        synthetic_identity(3, "X")


def _all_uids(result) -> dict[str, str]:
    uids = {}
    for k, scan in enumerate(result.scans):
        for f in (*sorted(scan.ct_dir.glob("*.dcm")), scan.nm_file, scan.rtstruct_file, scan.seg_file):
            ds = pydicom.dcmread(f, stop_before_pixels=True)
            rel = f"{k}/{f.parent.name}/{f.name}"
            for kw in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "FrameOfReferenceUID"):
                uids[f"{rel}:{kw}"] = getattr(ds, kw, None)
    return uids


def test_uids_are_deterministic_from_the_seed_and_consistent(exported, tmp_path):
    patient, result = exported
    again = export_dicom(make_patient(seed=7), tmp_path / "again", patient_index=3, injection_datetime=INJECTION)
    other = export_dicom(make_patient(seed=8), tmp_path / "other", patient_index=3, injection_datetime=INJECTION)
    first, second, third = _all_uids(result), _all_uids(again), _all_uids(other)
    assert first == second
    assert not set(first.values()) & set(third.values())
    for key, uid in first.items():
        if key.endswith("SOPInstanceUID"):
            assert list(first.values()).count(uid) == 1, f"{key} is not unique"
        if uid is not None:
            assert pydicom.uid.UID(uid).is_valid, key
    for k, scan in enumerate(result.scans):
        per_object = {
            kw: {v for key, v in first.items() if key.startswith(f"{k}/") and key.endswith(kw)}
            for kw in ("StudyInstanceUID", "FrameOfReferenceUID")
        }
        assert per_object["StudyInstanceUID"] == {scan.study_instance_uid}  # one study per time point
        assert per_object["FrameOfReferenceUID"] == {scan.frame_of_reference_uid}  # CT, NM, RTSTRUCT, SEG
    assert len({s.study_instance_uid for s in result.scans}) == len(result.scans)


def test_ground_truth_round_trip(exported):
    patient, result = exported
    truth = read_ground_truth(result.ground_truth)
    assert result.ground_truth.parent.name == "ground_truth"
    assert "dicom" not in result.ground_truth.parts
    np.testing.assert_array_equal(truth["activity_true"].values, patient["activity_true"].values)
    np.testing.assert_array_equal(truth["labels"].values, patient["labels"].values)
    np.testing.assert_array_equal(truth["density"].values, patient["density"].values)
    np.testing.assert_array_equal(truth["hours_post_injection"].values, patient["hours_post_injection"].values)
    assert truth["labels"].attrs["names"] == NAMES
    assert truth["activity_true"].attrs["units"] == "Bq/mL"
    assert truth.attrs["study_instance_uids"] == [s.study_instance_uid for s in result.scans]
    assert tuple(truth.attrs["spacing_mm"]) == SPACING_MM


def test_bad_input_names_the_patient_and_problem(tmp_path):
    patient = make_patient(seed=7)
    with pytest.raises(ValueError, match=r"patient 0 \(seed 7\).*lacks activity_true"):
        export_dicom(patient.drop_vars("activity_true"), tmp_path)
    unnamed = patient.copy()
    unnamed["labels"].attrs["names"] = {k: v for k, v in NAMES.items() if k != 5}
    with pytest.raises(ValueError, match=r"seed 7.*label values \[5\] have no name"):
        export_dicom(unnamed, tmp_path)
    negative = patient.copy(deep=True)
    negative["activity"][1, 0, 0, 0] = -3.0
    with pytest.raises(ValueError, match=r"seed 7\), scan 2 \(24 h\): activity must be finite and >= 0"):
        export_dicom(negative, tmp_path)
    with pytest.raises(ValueError, match=r"seed 7\).*label 4.*'hepar' is not a VOI name"):
        renamed = patient.copy()
        renamed["labels"].attrs["names"] = {**NAMES, 4: "hepar"}
        export_dicom(renamed, tmp_path)
    assert not (tmp_path / "dicom").exists(), "a rejected patient must leave no partial export"
    export_dicom(patient, tmp_path / "first")
    with pytest.raises(FileExistsError, match="patient_00 already holds an export"):
        export_dicom(patient, tmp_path / "first")


def test_cohort_plan_matches_the_published_cohort():
    plans = cohort_plan(12, seed=0)
    assert sum(len(hours) for _, hours in plans) == 42
    assert sorted(len(h) for _, h in plans) == [3] * 6 + [4] * 6
    assert all(set(h) <= set(DEFAULT_HOURS) and list(h) == sorted(h) for _, h in plans)
    assert len({s for s, _ in plans}) == 12
    assert plans == cohort_plan(12, seed=0) and plans != cohort_plan(12, seed=1)


def _check_cohort(cohort, n_patients: int, seed: int, grid) -> None:
    """Every planned scan is on disk and matches a fresh run of the generator; truth and identity per patient."""
    plans = cohort_plan(n_patients, seed)
    assert [p.patient_index for p in cohort.patients] == list(range(n_patients))
    assert cohort.n_scans == sum(len(hours) for _, hours in plans)
    assert len({p.patient_id for p in cohort.patients}) == n_patients
    for patient, (patient_seed, hours) in zip(cohort.patients, plans):
        generated = make_virtual_patient(patient_seed, grid=grid, hours=hours)
        assert [s.hours_post_injection for s in patient.scans] == list(hours)
        truth = read_ground_truth(patient.ground_truth)
        np.testing.assert_array_equal(truth["activity_true"].values, generated["activity_true"].values)
        np.testing.assert_array_equal(truth["labels"].values, generated["labels"].values)
        ident = synthetic_identity(patient_seed, generated.attrs["sex"])
        assert ident.patient_id == patient.patient_id == truth.attrs["patient_id"]
        for k, scan in enumerate(patient.scans):
            nm = pydicom.dcmread(scan.nm_file)
            slope = float(nm.RescaleSlope)
            np.testing.assert_allclose(
                nm.pixel_array * slope,
                generated["activity"].isel(timepoint=k).values,
                atol=slope / 2 * (1 + 1e-6),
                rtol=1e-6,
            )
            assert nm.PatientSex == generated.attrs["sex"] and str(nm.PatientName) == ident.patient_name
            image = sitk.ReadImage(str(scan.nm_file))
            np.testing.assert_allclose(image.GetOrigin(), generated.attrs["origin_mm"][::-1], atol=1e-4)
            np.testing.assert_allclose(image.GetSpacing(), generated.attrs["spacing_mm"][::-1], atol=1e-6)
            assert len(list(scan.ct_dir.glob("*.dcm"))) == generated.sizes["z"]
            assert scan.rtstruct_file.is_file() and scan.seg_file.is_file()


def test_export_cohort_with_the_generator(tmp_path):
    grid = Grid((24, 32, 32), (10.0, 15.64, 15.64))
    cohort = export_cohort(tmp_path, n_patients=2, seed=4, grid=grid, progress=False, workers=1)
    _check_cohort(cohort, 2, 4, grid)


@pytest.mark.slow
def test_synth_cli_writes_the_cohort_with_two_processes(tmp_path, capsys):
    assert cli_main(["synth", str(tmp_path), "--patients", "2", "--seed", "3", "--workers", "2"]) == 0
    printed = capsys.readouterr().out
    n_scans = sum(len(hours) for _, hours in cohort_plan(2, 3))
    assert f"{n_scans} scans of 2 synthetic virtual patients" in printed
    patients = sorted((tmp_path / "dicom").iterdir())
    assert [p.name for p in patients] == ["patient_00", "patient_01"]
    assert len(list((tmp_path / "ground_truth").glob("*.zarr"))) == 2


# ---------------------------------------------------------------------------------------------------------------
# dciodvfy (the DICOM standard's validator)


@requires_dciodvfy
def test_dciodvfy_reports_no_errors(exported):
    _, result = exported
    scan = result.scans[0]
    objects = {
        "CTImage": next(scan.ct_dir.glob("*.dcm")),
        "NMImage": scan.nm_file,
        "RTStructureSet": scan.rtstruct_file,
        "Segmentation": scan.seg_file,
    }
    for iod, f in objects.items():
        run = subprocess.run(["dciodvfy", "-new", str(f)], capture_output=True, text=True, timeout=60)
        report = (run.stdout + run.stderr).splitlines()
        assert iod in report, f"dciodvfy did not recognise {f} as {iod}:\n" + "\n".join(report)
        errors = [line for line in report if line.startswith("Error")]
        assert not errors, f"{iod} {f}:\n" + "\n".join(errors)
