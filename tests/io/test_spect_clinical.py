"""SPECT as clinical systems write it: the radionuclide, decay-corrected values, negative voxels, Real World Value
Mapping units and PT-modality slices, read against the truth the factory wrote (synthetic patients, not patient data).

Independent truth: the Lu-177 half-life of ICRP-107 (6.647 d) typed here, the decay law, and the values the factory
put into the files.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pydicom
import pytest
from pydicom.uid import generate_uid

from cohort_dosimetry.grid import Grid
from cohort_dosimetry.io import IngestError, Volume, discover_studies, ingest, read_nm, resample_to_grid
from cohort_dosimetry.io._nm import acquisition_duration_s
from cohort_dosimetry.store import open_cohort
from tests.io import dicom_factory as factory

LAMBDA_PER_S = np.log(2.0) / (6.647 * 86400.0)  # Lu-177, ICRP-107
TC99M = ("72454006", "SCT", "^99m^Technetium")  # SNOMED CT codes of DICOM PS3.16 CID 18 / CID 4020
GA68 = ("35337001", "SCT", "^68^Gallium")
HOURS = 48.0
ACQUIRED = factory.INJECTION + dt.timedelta(hours=HOURS)


@pytest.fixture
def patient():
    return factory.make_patient(seed=21)


def _truth(patient, hours=HOURS, seed=2):
    """Bq/mL at the acquisition start on the NM grid, and the grid's origin (x, y, z) and spacing (z, y, x)."""
    shape, origin, spacing = factory.nm_grid(patient)
    return factory.activity_on_nm_grid(patient, shape, origin, spacing, hours, seed=seed), origin, spacing


def _write_nm(tmp_path, patient, values, origin, spacing, name="nm.dcm", hours=HOURS, **kwargs):
    path = tmp_path / name
    factory.write_nm(patient, path, generate_uid(), generate_uid(), hours, values, origin, spacing, **kwargs)
    return path


def _held(values, slope):
    """What a file stores for ``values`` at ``slope``: rounded to whole multiples of it (float64)."""
    return np.round(np.asarray(values, dtype=np.float64) / slope) * slope


# --------------------------------------------------------------------------------------------------- nuclide
@pytest.mark.parametrize(
    ("header", "nuclide", "where"),
    [
        (
            dict(nuclide_code=TC99M, half_life_s=6.0067 * 3600, radiopharmaceutical_name="Tc99m MDP"),
            "Tc-99m",
            "Radionuclide Code Sequence (SCT 72454006 '^99m^Technetium')",
        ),
        (
            dict(nuclide_code=None, half_life_s=None, radiopharmaceutical_name="I-131 sodium iodide"),
            "I-131",
            "Radiopharmaceutical 'I-131 sodium iodide'",
        ),
        (dict(nuclide_code=None, half_life_s=109.77 * 60), "F-18", "Radionuclide Half Life 6586.2 s"),
        (dict(nuclide_code=("C-145A4", "SRT", "^111^Indium"), half_life_s=None), "In-111", "SRT C-145A4"),
        (dict(nuclide_code=("14691008", "SCT", "^90^Yttrium"), half_life_s=64.0 * 3600), "Y-90", "SCT 14691008"),
        (dict(nuclide_code=None, half_life_s=None, radiopharmaceutical_name="68Ga-DOTATOC"), "Ga-68", "68Ga-DOTATOC"),
    ],
    ids=["tc99m-code", "i131-name", "f18-half-life", "in111-legacy-code", "y90-code", "ga68-name"],
)
def test_a_study_of_another_nuclide_is_refused_naming_the_nuclide_and_where_it_was_read(
    tmp_path, patient, header, nuclide, where
):
    truth, origin, spacing = _truth(patient)
    path = _write_nm(tmp_path, patient, truth, origin, spacing, **header)
    with pytest.raises(IngestError) as info:
        read_nm([path], subject="SPECT tp1")
    assert info.value.subject == "SPECT tp1"
    assert f"the radionuclide is {nuclide} (" in info.value.problem
    assert where in info.value.problem
    assert "only Lu-177 is dosed" in info.value.problem


@pytest.mark.parametrize(
    ("header", "said"),
    [
        (
            dict(half_life_s=6.0 * 3600),
            [
                "Radionuclide Code Sequence (SCT 447553000 '^177^Lutetium') says Lu-177",
                "Radionuclide Half Life 21600 s (6.00 h) says Tc-99m",
            ],
        ),
        (dict(radiopharmaceutical_name="Tc99m MDP"), ["says Lu-177", "Radiopharmaceutical 'Tc99m MDP' says Tc-99m"]),
        (dict(half_life_s=6.647 * 86400 * 1.03), ["says Lu-177", "matches no known nuclide within 2 %"]),
    ],
    ids=["code-vs-half-life", "code-vs-name", "half-life-3-percent-off"],
)
def test_sources_that_contradict_each_other_are_refused_naming_both(tmp_path, patient, header, said):
    truth, origin, spacing = _truth(patient)
    path = _write_nm(tmp_path, patient, truth, origin, spacing, **header)
    with pytest.raises(IngestError) as info:
        read_nm([path])
    assert "the radionuclide sources disagree" in info.value.problem
    for part in said:
        assert part in info.value.problem


def test_a_radionuclide_code_that_names_nothing_known_is_refused(tmp_path, patient):
    truth, origin, spacing = _truth(patient)
    path = _write_nm(
        tmp_path, patient, truth, origin, spacing, nuclide_code=("X-0001", "99LOCAL", "Isotope X"), half_life_s=None
    )
    with pytest.raises(IngestError, match="not recognised: Radionuclide Code Sequence \\(99LOCAL X-0001"):
        read_nm([path])


@pytest.mark.parametrize(
    ("header", "source"),
    [
        (dict(), "RadionuclideCodeSequence (SCT 447553000), RadionuclideHalfLife"),
        (
            dict(nuclide_code=("C-101ED", "SRT", "^177^Lutetium"), half_life_s=None),
            "RadionuclideCodeSequence (SRT C-101ED)",
        ),
        (
            dict(nuclide_code=None, half_life_s=None, radiopharmaceutical_name="[177Lu]Lu-PSMA-617"),
            "Radiopharmaceutical",
        ),
        (dict(nuclide_code=None, half_life_s=None, radiopharmaceutical_name="LUTATHERA"), "Radiopharmaceutical"),
        (dict(nuclide_code=None, half_life_s=6.647 * 86400 * 1.008), "RadionuclideHalfLife"),
        (dict(half_life_s=6.734 * 86400), "RadionuclideCodeSequence (SCT 447553000), RadionuclideHalfLife"),
        (
            dict(nuclide_code=("LU177", "99LOCAL", "Lu177"), radiopharmaceutical_name="Lu-177 DOTATATE"),
            "RadionuclideCodeSequence (99LOCAL LU177), Radiopharmaceutical, RadionuclideHalfLife",
        ),
    ],
    ids=[
        "sct-code",
        "legacy-srt-code",
        "bracket-name",
        "product-name",
        "half-life-within-1-percent",
        "older-vendor-half-life-6.734-d",
        "local-code",
    ],
)
def test_lu177_is_recognised_from_each_source_without_a_note(tmp_path, patient, header, source):
    truth, origin, spacing = _truth(patient)
    spect = read_nm([_write_nm(tmp_path, patient, truth, origin, spacing, **header)])
    assert spect.nuclide == "Lu177"
    assert spect.nuclide_source == source
    assert spect.notes == ()


def test_no_nuclide_information_is_lu177_with_a_warning_unless_the_user_states_it(tmp_path, patient):
    truth, origin, spacing = _truth(patient)
    path = _write_nm(tmp_path, patient, truth, origin, spacing, nuclide_code=None, half_life_s=None)
    assumed = read_nm([path])
    assert assumed.nuclide == "Lu177" and assumed.nuclide_source.startswith("assumed")
    assert [n for n in assumed.notes if "the header names no radionuclide" in n and "ingested as Lu-177" in n]
    stated = read_nm([path], nuclide="Lu-177")
    assert stated.nuclide == "Lu177" and stated.nuclide_source.startswith("stated by the user")
    assert stated.notes == ()
    with pytest.raises(IngestError, match="the stated nuclide Tc-99m is not dosed"):
        read_nm([path], nuclide="Tc99m")
    with pytest.raises(IngestError, match="not a nuclide name"):
        read_nm([path], nuclide="Lutetium")
    # a statement never overrides a header that names another nuclide
    other = _write_nm(tmp_path, patient, truth, origin, spacing, name="tc.dcm", nuclide_code=TC99M, half_life_s=None)
    with pytest.raises(IngestError, match="the radionuclide is Tc-99m"):
        read_nm([other], nuclide="Lu177")


# ------------------------------------------------------------------------------------------ decay correction
def test_admin_corrected_values_come_back_as_the_activity_at_the_acquisition_start(tmp_path, patient):
    truth, origin, spacing = _truth(patient)
    elapsed_s = HOURS * 3600.0
    written = truth * np.exp(LAMBDA_PER_S * elapsed_s)  # decay-corrected back to the administration
    slope = float(written.max()) / 60000.0
    path = _write_nm(
        tmp_path,
        patient,
        written,
        origin,
        spacing,
        slope=slope,
        decay_correction="ADMIN",
        decay_factor=float(np.exp(LAMBDA_PER_S * elapsed_s)),
    )
    spect = read_nm([path])
    array = spect.activity.array.astype(np.float64)
    assert array.sum() == pytest.approx(truth.sum(dtype=np.float64), rel=1e-3)
    np.testing.assert_allclose(array, truth, atol=slope)  # within the file's quantisation
    np.testing.assert_allclose(array, _held(written, slope) * np.exp(-LAMBDA_PER_S * elapsed_s), rtol=1e-5)
    decay = spect.decay
    assert decay["decay_correction_in_file"] == "ADMIN"
    assert decay["decay_correction_applied"] == pytest.approx(np.exp(-LAMBDA_PER_S * elapsed_s), rel=1e-6)
    assert decay["decay_correction_reference_datetime"] == factory.INJECTION.isoformat()
    assert decay["activity_reference_datetime"] == ACQUIRED.isoformat()
    assert decay["decay_factor_in_file"] == pytest.approx(np.exp(LAMBDA_PER_S * elapsed_s))
    assert [n for n in spect.notes if n.startswith("decay correction undone: ") and "ADMIN" in n]
    assert not [n for n in spect.notes if "disagrees" in n]


def test_the_decay_correction_datetime_is_the_reference_the_file_corrected_to(tmp_path, patient):
    truth, origin, spacing = _truth(patient)
    reference = factory.INJECTION + dt.timedelta(hours=1.5)  # e.g. the dose calibrator's time
    elapsed_s = (ACQUIRED - reference).total_seconds()
    written = truth * np.exp(LAMBDA_PER_S * elapsed_s)
    slope = float(written.max()) / 60000.0
    path = _write_nm(
        tmp_path,
        patient,
        written,
        origin,
        spacing,
        slope=slope,
        decay_correction="ADMIN",
        decay_correction_datetime=reference,
        decay_factor=1.5,
    )  # a wrong factor: reported, not used
    spect = read_nm([path])
    np.testing.assert_allclose(
        spect.activity.array, _held(written, slope) * np.exp(-LAMBDA_PER_S * elapsed_s), rtol=1e-5
    )
    assert spect.decay["decay_correction_reference_datetime"] == reference.isoformat()
    implied = np.exp(LAMBDA_PER_S * elapsed_s)
    (note,) = [n for n in spect.notes if "disagrees" in n]
    assert f"Decay Factor 1.5 in the file disagrees with the {implied:.6g} implied" in note


def test_none_a_mean_over_the_acquisition_is_brought_to_its_start(tmp_path, patient):
    truth, origin, spacing = _truth(patient)
    views, ms_per_view = 64, 60000  # 64 min of acquisition, as the Rotation Information Sequence says
    duration_s = views * ms_per_view / 1000.0
    x = LAMBDA_PER_S * duration_s
    mean = truth * (1 - np.exp(-x)) / x  # what the camera saw on average over the acquisition
    slope = float(mean.max()) / 60000.0
    path = _write_nm(
        tmp_path, patient, mean, origin, spacing, slope=slope, decay_correction="NONE", rotation=(ms_per_view, views)
    )
    spect = read_nm([path])
    np.testing.assert_allclose(spect.activity.array, _held(mean, slope) * x / (1 - np.exp(-x)), rtol=1e-5)
    # the correction (0.23 %) is far above what quantisation leaves in the total
    assert spect.activity.array.sum(dtype=np.float64) == pytest.approx(truth.sum(dtype=np.float64), rel=2e-5)
    assert spect.decay["decay_frame_duration_s"] == pytest.approx(duration_s)
    assert spect.decay["decay_correction_applied"] == pytest.approx(x / (1 - np.exp(-x)), rel=1e-9)


def test_the_acquisition_duration_is_the_rotations_views_times_their_duration_and_never_guessed(tmp_path, patient):
    truth, origin, spacing = _truth(patient)
    spect = read_nm([_write_nm(tmp_path, patient, truth, origin, spacing, rotation=(25000, 96))])
    assert spect.acquisition_duration_s == 96 * 25.0  # views x seconds per view
    assert spect.reading_attrs()["acquisition_duration_s"] == 2400.0  # the scan attr ingest writes
    bare = read_nm([_write_nm(tmp_path, patient, truth, origin, spacing, name="bare.dcm")])
    assert bare.acquisition_duration_s is None and "acquisition_duration_s" not in bare.reading_attrs()
    # two rotations (PS3.3 C.8.4.12: one item per rotation) add up; an item without its duration leaves it unknown
    items = [pydicom.Dataset(), pydicom.Dataset()]
    items[0].ActualFrameDuration, items[0].NumberOfFramesInRotation = 20000, 60
    items[1].ActualFrameDuration, items[1].NumberOfFramesInRotation = 30000, 40
    header = pydicom.Dataset()
    header.RotationInformationSequence = items
    assert acquisition_duration_s(header) == 60 * 20.0 + 40 * 30.0
    del items[1].ActualFrameDuration
    assert acquisition_duration_s(header) is None


def test_none_without_a_duration_keeps_the_values_and_states_the_size_of_the_assumption(tmp_path, patient):
    truth, origin, spacing = _truth(patient)
    slope = float(truth.max()) / 60000.0
    spect = read_nm([_write_nm(tmp_path, patient, truth, origin, spacing, slope=slope, decay_correction="NONE")])
    np.testing.assert_allclose(spect.activity.array, _held(truth, slope), rtol=1e-6)
    assert spect.decay["decay_correction_applied"] == 1.0
    x = LAMBDA_PER_S * 1800.0
    (note,) = [n for n in spect.notes if "without a frame or acquisition duration" in n]
    assert f"decays by {100 * (1 - np.exp(-x)):.2g} %" in note  # 0.22 % in 30 min
    assert f"understates it by about {100 * (x / (1 - np.exp(-x)) - 1):.2g} %" in note


def test_start_and_absent_decay_correction_keep_the_values(tmp_path, patient):
    truth, origin, spacing = _truth(patient)
    slope = float(truth.max()) / 60000.0
    for correction in ("START", None):
        spect = read_nm(
            [
                _write_nm(
                    tmp_path,
                    patient,
                    truth,
                    origin,
                    spacing,
                    name=f"{correction}.dcm",
                    slope=slope,
                    decay_correction=correction,
                    decay_factor=1.0 if correction else None,
                )
            ]
        )
        np.testing.assert_allclose(spect.activity.array, _held(truth, slope), rtol=1e-6)
        assert spect.decay["decay_correction_in_file"] == correction
        assert spect.decay["decay_correction_applied"] == 1.0
        assert spect.notes == ()


# ------------------------------------------------------------------------------------------- negative voxels
def test_negative_voxels_are_clamped_and_their_count_and_activity_reported_exactly(tmp_path, patient):
    truth, origin, spacing = _truth(patient)
    noisy = truth + np.random.default_rng(5).normal(0.0, 400.0, truth.shape)  # FBP undershoot around zero
    slope = float(np.abs(noisy).max()) / 30000.0
    spect = read_nm([_write_nm(tmp_path, patient, noisy, origin, spacing, slope=slope, signed=True)])
    held = _held(noisy, slope)
    negative = held < 0
    voxel_ml = float(np.prod(spacing)) / 1000.0
    assert negative.sum() > 10
    assert spect.negative_voxels_clamped == int(negative.sum())
    assert spect.negative_activity_removed_bq == pytest.approx(-held[negative].sum() * voxel_ml, rel=1e-5)
    np.testing.assert_allclose(spect.activity.array, np.maximum(held, 0.0), rtol=1e-6)
    assert spect.activity.array.min() == 0.0
    assert [n for n in spect.notes if f"{int(negative.sum())} SPECT voxels were negative" in n]


def test_resampling_onto_the_dose_grid_creates_no_negative_activity():
    rng = np.random.default_rng(8)
    values = np.zeros((20, 24, 22), dtype=np.float32)  # sharp-edged hot blocks next to empty voxels
    for _ in range(12):
        z, y, x = rng.integers(0, 18), rng.integers(0, 22), rng.integers(0, 20)
        values[z : z + 3, y : y + 2, x : x + 2] = rng.uniform(1e3, 1e6)
    source = Volume(values, Grid(values.shape, (4.8, 4.8, 4.8), (0.0, 0.0, 0.0)), "Bq/mL")
    angle = np.radians(7.0)
    rotated = ((1.0, 0.0, 0.0), (0.0, np.cos(angle), np.sin(angle)), (0.0, -np.sin(angle), np.cos(angle)))
    for target in (
        Grid((31, 40, 37), (3.0, 2.9, 3.1), (1.3, -2.1, 0.7)),
        Grid((31, 40, 37), (3.0, 2.9, 3.1), (1.3, 5.0, 0.7), rotated),
    ):
        resampled = resample_to_grid(source, target, "activity")
        assert resampled.array.min() >= 0.0
        assert resampled.array.max() > 0.0


# ------------------------------------------------------------------------------ units and vendor layouts
def test_rwvm_and_pt_slices_give_the_activity_of_the_bqml_nm_file(tmp_path, patient):
    truth, origin, spacing = _truth(patient, hours=24.0)
    slope = float(truth.max()) / 60000.0
    frame_slopes = np.maximum(truth.reshape(truth.shape[0], -1).max(axis=1), 1.0) / 60000.0
    pt_slopes = frame_slopes * 2.0  # int16 in PT: half the range of the NM's uint16
    readings = {
        "bqml": read_nm([_write_nm(tmp_path, patient, truth, origin, spacing, "a.dcm", slope=slope)]),
        "rwvm": read_nm(
            [_write_nm(tmp_path, patient, truth, origin, spacing, "b.dcm", units=None, rwvm_units="Bq/ml", slope=slope)]
        ),
        "rwvm-kbq": read_nm(
            [
                _write_nm(
                    tmp_path,
                    patient,
                    truth / 1000.0,
                    origin,
                    spacing,
                    "c.dcm",
                    units="CNTS",
                    rwvm_units="kBq/ml",
                    slope=slope / 1000.0,
                )
            ]
        ),
        "rwvm-per-frame": read_nm(
            [
                _write_nm(
                    tmp_path,
                    patient,
                    truth,
                    origin,
                    spacing,
                    "d.dcm",
                    units=None,
                    rwvm_units="Bq/ml",
                    rwvm_per_frame=True,
                    slope=frame_slopes,
                )
            ]
        ),
        "pt": read_nm(
            factory.write_pt_slices(
                patient, tmp_path / "pt", generate_uid(), generate_uid(), 24.0, truth, origin, spacing, slopes=pt_slopes
            )
        ),
    }
    reference = readings["bqml"]
    for name, spect in readings.items():
        # every file holds the truth to within half its quantisation step
        step = pt_slopes.max() if name == "pt" else slope
        np.testing.assert_allclose(spect.activity.array, truth, atol=0.51 * step, err_msg=name)
        grid, expected = spect.activity.grid, reference.activity.grid
        assert grid.shape == expected.shape, name
        np.testing.assert_allclose(grid.spacing_mm, expected.spacing_mm, rtol=1e-9, err_msg=name)
        np.testing.assert_allclose(grid.origin_mm, expected.origin_mm, atol=1e-9, err_msg=name)
        np.testing.assert_allclose(grid.direction, expected.direction, atol=1e-12, err_msg=name)
        assert spect.nuclide == "Lu177" and spect.notes == (), (name, spect.notes)
    assert readings["rwvm"].value_mapping == "Real World Value Mapping (0040,9096) in Bq/ml"
    assert readings["rwvm-kbq"].value_mapping == "Real World Value Mapping (0040,9096) in kBq/ml"
    assert readings["pt"].modality == "PT" and readings["pt"].value_mapping.startswith("Units BQML")
    assert readings["pt"].decay["decay_correction_in_file"] == "START"


def test_a_rwvm_that_disagrees_with_units_bqml_is_used_and_reported(tmp_path, patient):
    truth, origin, spacing = _truth(patient, hours=24.0)
    slope = float(truth.max()) / 60000.0
    spect = read_nm(
        [_write_nm(tmp_path, patient, truth, origin, spacing, units="BQML", rwvm_units="Bq/ml", slope=slope)]
    )  # the factory leaves RescaleSlope 1 beside the mapping
    np.testing.assert_allclose(spect.activity.array, _held(truth, slope), rtol=1e-6)
    assert [n for n in spect.notes if "Real World Value Mapping" in n and "disagree" in n]


def test_pt_beds_acquired_later_under_none_are_decayed_back_to_the_series_start(tmp_path, patient):
    truth, origin, spacing = _truth(patient)
    bed_s = 600.0  # two beds of 10 min, the second starting when the first ends
    x = LAMBDA_PER_S * bed_s
    second = np.arange(truth.shape[0]) >= truth.shape[0] // 2
    seen = truth * ((1 - np.exp(-x)) / x) * np.where(second, np.exp(-x), 1.0)[:, None, None]
    slopes = np.maximum(np.abs(seen).reshape(seen.shape[0], -1).max(axis=1), 1.0) / 30000.0
    paths = factory.write_pt_slices(
        patient,
        tmp_path / "pt",
        generate_uid(),
        generate_uid(),
        HOURS,
        seen,
        origin,
        spacing,
        slopes=slopes,
        decay_correction="NONE",
        frame_duration_ms=bed_s * 1000,
    )
    z_second = origin[2] + (truth.shape[0] // 2) * spacing[0]
    for path in paths:
        ds = pydicom.dcmread(path)
        if float(ds.ImagePositionPatient[2]) >= z_second - 1e-6:
            ds.AcquisitionTime = (ACQUIRED + dt.timedelta(seconds=bed_s)).strftime("%H%M%S")
            ds.save_as(path)
    spect = read_nm(paths)
    held = np.stack([_held(seen[k], slopes[k]) for k in range(seen.shape[0])])
    factors = (x / (1 - np.exp(-x))) * np.where(second, np.exp(x), 1.0)
    np.testing.assert_allclose(spect.activity.array, held * factors[:, None, None], rtol=1e-5)
    assert spect.acquisition_datetime == ACQUIRED
    assert spect.decay["decay_correction_applied"] == pytest.approx(list(factors), rel=1e-9)


def test_pet_and_suv_pt_series_are_not_taken_for_spect(tmp_path, patient):
    truth, origin, spacing = _truth(patient, hours=1.0)
    pet = factory.write_pt_slices(
        patient,
        tmp_path / "dicom" / "pet",
        generate_uid(),
        generate_uid(),
        1.0,
        truth,
        origin,
        spacing,
        nuclide_code=GA68,
        half_life_s=67.71 * 60,
        radiopharmaceutical_name="Ga68 DOTATATE",
    )
    suv = factory.write_pt_slices(
        patient, tmp_path / "dicom" / "suv", generate_uid(), generate_uid(), 1.0, truth, origin, spacing, units="GML"
    )
    with pytest.raises(IngestError, match="the radionuclide is Ga-68"):
        read_nm(pet)
    with pytest.raises(IngestError, match="PT units GML are not activity concentration"):
        read_nm(suv)
    discovery = discover_studies(tmp_path / "dicom")
    assert discovery.scans == []
    problems = {p.subject.split(" in ")[1]: p for p in discovery.problems if p.subject.startswith("PT series")}
    assert problems["pet"].severity == "error" and "the radionuclide is Ga-68" in problems["pet"].problem
    assert problems["suv"].severity == "warning" and "not in activity concentration" in problems["suv"].problem


def test_the_virtual_patient_exporters_nm_reads_without_notes(tmp_path):
    from cohort_dosimetry.phantoms import export_dicom
    from tests.phantoms.test_dicom_export import INJECTION, make_patient

    export = export_dicom(make_patient(seed=4, hours=(24.0,)), tmp_path, injection_datetime=INJECTION)
    spect = read_nm([export.scans[0].nm_file])
    assert spect.notes == ()
    assert spect.nuclide == "Lu177"
    assert spect.nuclide_source.startswith("RadionuclideCodeSequence (SCT 447553000), Radiopharmaceutical")
    assert spect.decay["decay_correction_applied"] == 1.0 and spect.negative_voxels_clamped == 0


# ----------------------------------------------------------------------------------------------- ingest
def _scan_folder(root, patient, hours):
    when = factory.INJECTION + dt.timedelta(hours=hours)
    study, frame, ct_series = generate_uid(), generate_uid(), generate_uid()
    folder = root / patient.patient_id
    factory.write_ct(patient, folder / "ct", study, ct_series, frame, when)
    factory.write_rtstruct(patient, folder / "rs.dcm", study, ct_series, frame, when)
    truth, origin, spacing = _truth(patient, hours)
    return folder, truth, origin, spacing, study, frame


def test_ingest_records_what_was_read_and_undone_and_reports_it(tmp_path, monkeypatch):
    monkeypatch.setenv("COHORT_DOSIMETRY_PSEUDONYM_KEY", "spect-clinical-test-key")
    root = tmp_path / "dicom"
    # patient A: ADMIN-corrected values with FBP undershoot; patient B: no nuclide in the header
    a = factory.make_patient(seed=31, patient_id="H50000001", name="Decayson^Ada")
    folder, truth, origin, spacing, study, frame = _scan_folder(root, a, HOURS)
    elapsed_s = HOURS * 3600.0
    noisy = (truth + np.random.default_rng(3).normal(0.0, 300.0, truth.shape)) * np.exp(LAMBDA_PER_S * elapsed_s)
    slope = float(np.abs(noisy).max()) / 30000.0
    factory.write_nm(
        a,
        folder / "nm.dcm",
        study,
        frame,
        HOURS,
        noisy,
        origin,
        spacing,
        slope=slope,
        signed=True,
        decay_correction="ADMIN",
    )
    held = _held(noisy, slope) * np.exp(-LAMBDA_PER_S * elapsed_s)
    b = factory.make_patient(seed=32, patient_id="H50000002", name="Nameless^Bo")
    folder, truth, origin, spacing, study, frame = _scan_folder(root, b, 24.0)
    factory.write_nm(
        b, folder / "nm.dcm", study, frame, 24.0, truth, origin, spacing, nuclide_code=None, half_life_s=None
    )

    report = ingest(root, tmp_path / "cohort", grid="ct")
    cohort = open_cohort(tmp_path / "cohort")
    assert len(cohort.scans()) == 2, report["message"].tolist()
    scan_attrs = [cohort.scan_attrs(*scan) for scan in cohort.scans()]
    attrs_a, attrs_b = sorted(scan_attrs, key=lambda attrs: attrs["hours_post_injection"], reverse=True)  # 48 h, 24 h
    voxel_ml = float(np.prod(spacing)) / 1000.0
    assert attrs_a["negative_voxels_clamped"] == int((held < 0).sum()) > 0
    assert attrs_a["negative_activity_removed_bq"] == pytest.approx(-held[held < 0].sum() * voxel_ml, rel=1e-4)
    assert attrs_a["decay_correction_in_file"] == "ADMIN"
    assert attrs_a["decay_correction_applied"] == pytest.approx(np.exp(-LAMBDA_PER_S * elapsed_s), rel=1e-6)
    assert attrs_a["activity_reference_datetime"] == attrs_a["acquisition_datetime"] == ACQUIRED.isoformat()
    assert attrs_a["nuclide"] == "Lu177" and attrs_a["nuclide_source"].startswith("RadionuclideCodeSequence")
    assert attrs_b["nuclide"] == "Lu177" and attrs_b["nuclide_source"].startswith("assumed")
    for scan in cohort.scans():
        assert float(cohort.scan(*scan)["activity"].min()) >= 0.0
    warnings = report.loc[report["severity"] == "warning", "message"]
    assert warnings.str.contains("SPECT voxels were negative").sum() == 1
    assert warnings.str.contains("decay correction undone").sum() == 1
    assert warnings.str.contains("the header names no radionuclide").sum() == 1

    stated = ingest(root / b.patient_id, tmp_path / "cohort_stated", nuclide="Lu177", grid="ct")
    assert not stated["message"].str.contains("names no radionuclide").any()
    cohort = open_cohort(tmp_path / "cohort_stated")
    assert cohort.scan_attrs(*cohort.scans()[0])["nuclide_source"].startswith("stated by the user")
