"""CT and NM readers against the truth the factory wrote (synthetic virtual patients, not patient data)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import generate_uid

from cohort_dosimetry.io import CountsCalibration, IngestError, read_ct_series, read_nm, read_rtstruct
from tests.io import dicom_factory as factory


def _uids():
    return generate_uid(), generate_uid(), generate_uid()


@pytest.fixture
def patient():
    return factory.make_patient(seed=3)


def _ct_files(folder: Path) -> list[Path]:
    return sorted(folder.iterdir())


def test_ct_is_sorted_by_position_along_the_normal_not_instance_number(tmp_path, patient):
    study, series, frame = _uids()
    factory.write_ct(patient, tmp_path / "ct", study, series, frame, factory.INJECTION)
    files = _ct_files(tmp_path / "ct")
    # the factory writes InstanceNumber in reverse and file names in shuffled order: neither may decide the order
    numbers = [int(pydicom.dcmread(f, stop_before_pixels=True).InstanceNumber) for f in files]
    assert numbers != sorted(numbers) and numbers != sorted(numbers, reverse=True)
    volume = read_ct_series(files)
    np.testing.assert_array_equal(volume.array, patient.ct_hu)
    assert volume.grid.spacing_mm == pytest.approx(patient.ct_spacing)
    assert volume.grid.origin_mm == pytest.approx(patient.ct_origin_xyz[::-1])
    np.testing.assert_allclose(volume.grid.direction, np.eye(3))


def test_ct_with_the_slice_normal_pointing_down_is_still_ordered_along_it(tmp_path, patient):
    # rows along +x, columns along -y: the normal is -z, so slice 0 along the normal is the highest z
    study, series, frame = _uids()
    factory.write_ct(
        patient, tmp_path / "ct", study, series, frame, factory.INJECTION, orientation=(1.0, 0.0, 0.0, 0.0, -1.0, 0.0)
    )
    volume = read_ct_series(_ct_files(tmp_path / "ct"))
    np.testing.assert_array_equal(volume.array, patient.ct_hu[::-1])
    # voxel (0, 0, 0) is the last written slice's first pixel; axis z runs along -z of the patient
    assert volume.grid.origin_mm[0] == pytest.approx(patient.ct_origin_xyz[2] + (patient.ct_shape[0] - 1) * 4.0)
    np.testing.assert_allclose(volume.grid.direction, [[-1, 0, 0], [0, -1, 0], [0, 0, 1]])


@pytest.mark.parametrize(
    ("writer_args", "message"),
    [
        (dict(drop_slice=6), "1 missing slice(s) between positions 120.00 and 128.00 mm"),
        (dict(spacing_jitter={6: 1.1}), "non-uniform slice spacing"),
        (dict(tilt_mm_per_slice=0.5), "gantry tilt"),
        (dict(orientation=(1.0, 0.0, 0.0, 0.2, 0.98, 0.0)), "non-orthogonal image orientation"),
    ],
    ids=["missing-slice", "uneven-spacing", "sheared-tilt", "non-orthogonal"],
)
def test_irregular_ct_series_are_rejected_with_a_clear_message(tmp_path, patient, writer_args, message):
    study, series, frame = _uids()
    factory.write_ct(patient, tmp_path / "ct", study, series, frame, factory.INJECTION, **writer_args)
    with pytest.raises(IngestError) as info:
        read_ct_series(_ct_files(tmp_path / "ct"), "CT of patient X")
    assert message in info.value.problem
    assert info.value.subject == "CT of patient X"


def test_gantry_tilt_attribute_is_rejected(tmp_path, patient):
    study, series, frame = _uids()
    factory.write_ct(patient, tmp_path / "ct", study, series, frame, factory.INJECTION)
    for f in _ct_files(tmp_path / "ct"):
        ds = pydicom.dcmread(f)
        ds.GantryDetectorTilt = 12.5
        ds.save_as(f)
    with pytest.raises(IngestError, match="gantry tilt of 12.5 degrees"):
        read_ct_series(_ct_files(tmp_path / "ct"))


def _nm(tmp_path, patient, hours=48.0, **kwargs):
    shape, origin, spacing = factory.nm_grid(patient)
    activity = factory.activity_on_nm_grid(patient, shape, origin, spacing, hours, seed=1)
    path = tmp_path / "nm.dcm"
    factory.write_nm(patient, path, generate_uid(), generate_uid(), hours, activity, origin, spacing, **kwargs)
    return path, activity, origin, spacing


def test_nm_multiframe_bqml_geometry_values_and_radiopharmaceutical(tmp_path, patient):
    path, activity, origin, spacing = _nm(tmp_path, patient, hours=48.0)
    spect = read_nm([path])
    slope = float(activity.max()) / 60000.0
    np.testing.assert_allclose(spect.activity.array, np.round(activity / slope) * slope, rtol=1e-6)
    assert spect.activity.units == "Bq/mL"
    assert spect.activity.grid.spacing_mm == pytest.approx(spacing)
    assert spect.activity.grid.origin_mm == pytest.approx(origin[::-1])
    assert spect.hours_post_injection == pytest.approx(48.0)
    assert spect.injection_datetime == factory.INJECTION
    assert spect.acquisition_datetime == factory.INJECTION + dt.timedelta(hours=48)
    assert spect.administered_activity_bq == pytest.approx(7.4e9)
    assert spect.nuclide == "Lu177"
    assert spect.units_in_file == "BQML"


def test_nm_single_frame_series_matches_the_multiframe_file(tmp_path, patient):
    path, activity, origin, spacing = _nm(tmp_path, patient)
    multi = pydicom.dcmread(path)
    frames = multi.pixel_array
    files = []
    for k in range(frames.shape[0]):
        single = pydicom.dcmread(path)
        single.NumberOfFrames = 1
        single.SOPInstanceUID = generate_uid()
        single.DetectorInformationSequence[0].ImagePositionPatient = [origin[0], origin[1], origin[2] + k * spacing[0]]
        single.PixelData = frames[k].tobytes()
        files.append(tmp_path / f"slice_{(7 * k) % frames.shape[0]:02d}_{k}")
        single.save_as(files[-1])
    spect_multi = read_nm([path])
    spect_single = read_nm(files[::-1])
    np.testing.assert_array_equal(spect_single.activity.array, spect_multi.activity.array)
    assert spect_single.activity.grid.origin_mm == pytest.approx(spect_multi.activity.grid.origin_mm)
    assert spect_single.activity.grid.spacing_mm == pytest.approx(spect_multi.activity.grid.spacing_mm)


def test_nm_counts_need_a_calibration_and_convert_with_it(tmp_path, patient):
    path, activity, origin, spacing = _nm(tmp_path, patient, units="CNTS", slope=1.0)
    with pytest.raises(IngestError, match="counts calibration"):
        read_nm([path])
    calibration = CountsCalibration(sensitivity_cps_per_mbq=12.0, acquisition_duration_s=1800.0)
    spect = read_nm([path], calibration)
    counts = pydicom.dcmread(path).pixel_array.astype(np.float64).sum()
    voxel_ml = float(np.prod(spacing)) / 1000.0
    # total activity (MBq) = total counts / (sensitivity x duration)
    total_mbq = spect.activity.array.sum(dtype=np.float64) * voxel_ml / 1e6
    assert total_mbq == pytest.approx(counts / (12.0 * 1800.0), rel=1e-5)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(units="PROPCNTS"), "unknown NM units PROPCNTS"),
        (dict(slope=float("nan")), "NaN or infinite"),
        (dict(image_type=("ORIGINAL", "PRIMARY", "TOMO", "EMISSION")), "not a reconstructed tomographic image"),
        (dict(radiopharmaceutical=False), "no Radiopharmaceutical Information Sequence"),
        (dict(rows_cols_frames_override=(4096, 4096, 4096)), "implausible image size"),
    ],
    ids=["unknown-units", "nan", "projections", "no-radiopharmaceutical", "implausible-size"],
)
def test_bad_nm_is_rejected_with_a_clear_message(tmp_path, patient, kwargs, message):
    path, *_ = _nm(tmp_path, patient, **kwargs)
    with pytest.raises(IngestError) as info:
        read_nm([path], subject="SPECT tp1")
    assert message in info.value.problem
    assert info.value.subject == "SPECT tp1"


def test_rtstruct_rasterises_exactly_and_maps_clinical_names(tmp_path, patient):
    study, series, frame = _uids()
    factory.write_ct(patient, tmp_path / "ct", study, series, frame, factory.INJECTION)
    ct = read_ct_series(_ct_files(tmp_path / "ct"))
    names = {1: "BODY", 4: "Liver", 101: "Lesion_1", 7: "tumour bed"}
    patient.labels[0, 0:2, 0:2] = 7  # a structure outside the vocabulary
    factory.write_rtstruct(patient, tmp_path / "rs.dcm", study, series, frame, factory.INJECTION, names)
    label_map = read_rtstruct(tmp_path / "rs.dcm", ct.grid)
    # Each ROI is the box around its label's voxels: BODY's box holds the liver, the liver's box the lesion.
    expected = {
        "external": np.isin(patient.labels, (1, 4, 101)),
        "liver": np.isin(patient.labels, (4, 101)),
        "lesion_1": patient.labels == 101,
        "tumour bed": patient.labels == 7,
        "liver_healthy": patient.labels == 4,
    }
    assert list(label_map.vois) == ["external", "liver", "lesion_1", "tumour bed", "liver_healthy"]
    for name, mask in expected.items():
        np.testing.assert_array_equal(np.isin(label_map.labels.array, label_map.vois[name]), mask, err_msg=name)
    assert label_map.source_names == {"external": "BODY", "liver": "Liver", "lesion_1": "Lesion_1"}
    assert label_map.derived == {"liver_healthy": "liver minus lesion_1"}
    assert not [note for note in label_map.notes if "ROI names mapped" in note]  # naming is information, not a problem
    mapping = [label_map.naming]
    assert "ROI names mapped" in mapping[0]
    assert "'BODY' -> external" in mapping[0] and "'Lesion_1' -> lesion_1" in mapping[0]
    assert "kept as written with VOI class other: 'tumour bed'" in mapping[0]
