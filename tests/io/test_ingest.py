"""Ingest of whole (synthetic) cohorts: truth, bad input, re-runs, pseudonymisation, the CLI.

All patients here are synthetic virtual patients written by tests/io/dicom_factory.py, not patient data.
"""

from __future__ import annotations

import datetime as dt
import logging
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest
from pydicom.uid import generate_uid

from cohort_dosimetry.cli import main as cli_main
from cohort_dosimetry.constants import COMPACT_SPACING_MM
from cohort_dosimetry.io import ingest
from cohort_dosimetry.store import open_cohort, pseudonymise_patient_id, validate_cohort
from tests.io import dicom_factory as factory

KEY = "ingest-test-key-0123456789"


@pytest.fixture(autouse=True)
def _pseudonym_key(monkeypatch):
    monkeypatch.setenv("COHORT_DOSIMETRY_PSEUDONYM_KEY", KEY)


def _pseudonym(patient_id: str) -> str:
    return pseudonymise_patient_id(patient_id, KEY)


# ------------------------------------------------------------------------------------------------ ground truth
@pytest.mark.parametrize("grid", ["ct", "compact"])
def test_geometry_and_total_activity_match_the_truth(tmp_path, grid):
    # time points written out of order: tp1..tp3 must follow acquisition time, not folder order
    patient = factory.write_patient(tmp_path / "dicom", seed=5, hours=(96.0, 4.0, 24.0))
    report = ingest(tmp_path / "dicom", tmp_path / "cohort", grid=grid)
    assert set(report.loc[report["timepoint"] != "", "status"]) == {"written"}
    cohort = open_cohort(tmp_path / "cohort")
    pseudonym = _pseudonym(patient.patient_id)
    assert cohort.scans() == [(pseudonym, "tp1"), (pseudonym, "tp2"), (pseudonym, "tp3")]
    by_hours = dict(zip(patient.hours, patient.total_activity_bq))
    for (p, tp), hours in zip(cohort.scans(), (4.0, 24.0, 96.0)):
        scan = cohort.scan(p, tp)
        attrs = scan.attrs
        assert attrs["hours_post_injection"] == pytest.approx(hours)
        assert attrs["injection_datetime"] == factory.INJECTION.isoformat()
        assert attrs["acquisition_datetime"] == (factory.INJECTION + dt.timedelta(hours=hours)).isoformat()
        assert attrs["administered_activity_bq"] == pytest.approx(7.4e9)
        assert attrs["nuclide"] == "Lu177"
        spacing = np.asarray(attrs["spacing_mm"])
        total_bq = float(scan["activity"].sum()) * np.prod(spacing) / 1000.0
        assert total_bq == pytest.approx(by_hours[hours], rel=0.01)
        # The factory's liver box holds the lesion: the lesion's voxels are a region of liver and lesion_1
        # (storage_schema/README.md, "Labels"), and liver_healthy is the liver without it.
        labels_attrs = scan["labels"].attrs
        assert labels_attrs["names"] == {1: "body", 4: "liver", 10000: "liver+lesion_1"}
        assert labels_attrs["vois"] == {"body": [1], "liver": [4, 10000], "lesion_1": [10000], "liver_healthy": [4]}
        truth = {"body": [1], "liver": [4, 101], "lesion_1": [101], "liver_healthy": [4]}  # patient.labels values
        if grid == "ct":
            assert attrs["spacing_mm"] == pytest.approx(patient.ct_spacing)
            assert attrs["origin_mm"] == pytest.approx(patient.ct_origin_xyz[::-1])
            np.testing.assert_array_equal(scan["ct_hu"].values, patient.ct_hu)
            np.testing.assert_array_equal(scan["labels"].values, np.where(patient.labels == 101, 10000, patient.labels))
        else:
            assert attrs["spacing_mm"] == pytest.approx(COMPACT_SPACING_MM)
            extent = np.asarray(scan["ct_hu"].shape) * spacing
            ct_extent = np.asarray(patient.ct_shape) * np.asarray(patient.ct_spacing)
            assert np.all(extent >= ct_extent) and np.all(extent - ct_extent < spacing)
            # every VOI keeps about its volume (the lesion is 8 CT voxels = 0.288 mL, the liver 480 = 17.3 mL)
            for voi, values in labels_attrs["vois"].items():
                truth_ml = np.count_nonzero(np.isin(patient.labels, truth[voi])) * np.prod(patient.ct_spacing) / 1000
                ml = np.count_nonzero(np.isin(scan["labels"].values, values)) * np.prod(spacing) / 1000
                assert ml == pytest.approx(truth_ml, rel=0.5 if voi == "lesion_1" else 0.2)
        density = scan["density"].values
        assert density[scan["labels"].values == 4].mean() == pytest.approx(0.00069 * 60 + 1.03107, abs=0.02)


# ----------------------------------------------------------------------------------------------- bad input
def _write_scan(
    root: Path,
    patient: factory.Patient,
    hours: float = 24.0,
    ct: dict | None = None,
    nm: dict | None = None,
    with_ct: bool = True,
    nm_activity=None,
) -> dict:
    when = factory.INJECTION + dt.timedelta(hours=hours)
    study, frame, ct_series = generate_uid(), generate_uid(), generate_uid()
    folder = root / patient.patient_id
    if with_ct:
        factory.write_ct(patient, folder / "ct", study, ct_series, frame, when, **(ct or {}))
        factory.write_rtstruct(patient, folder / "rs.dcm", study, ct_series, frame, when)
    shape, origin, spacing = factory.nm_grid(patient)
    activity = factory.activity_on_nm_grid(patient, shape, origin, spacing, hours, seed=1)
    activity = nm_activity(activity) if nm_activity else activity
    factory.write_nm(patient, folder / "nm.dcm", study, frame, hours, activity, origin, spacing, **(nm or {}))
    return dict(folder=folder, study=study, frame=frame, ct_series=ct_series)


def _corrupt_one_ct_file(info):
    victim = sorted((info["folder"] / "ct").iterdir())[3]
    data = victim.read_bytes()
    victim.write_bytes(data[:132] + bytes(range(256)) * 2)  # keeps the DICM preamble, the rest is garbage


def _truncate_one_ct_file(info):
    victim = sorted((info["folder"] / "ct").iterdir())[5]
    victim.write_bytes(victim.read_bytes()[:-300])


def _conflicting_ct_copy(info):
    """A second file of one CT slice (same SOP Instance UID) in another folder, one pixel different: both decode."""
    original = sorted((info["folder"] / "ct").iterdir())[4]
    ds = pydicom.dcmread(original)
    pixels = ds.pixel_array.copy()
    pixels[3, 3] += 7
    ds.PixelData = pixels.tobytes()
    (info["folder"] / "ct_resent").mkdir()
    ds.save_as(info["folder"] / "ct_resent" / original.name)


def _spect_as_ga68_pet(info):
    """The SPECT rewritten as single-frame PT slices of a Ga-68 PET (SNOMED CT 35337001, half-life 67.71 min)."""
    factory.nm_to_pt_slices(
        info["folder"] / "nm.dcm", info["folder"] / "pet", ("35337001", "SCT", "^68^Gallium"), 67.71 * 60
    )


def _second_patient_in_series(info):
    victim = sorted((info["folder"] / "ct").iterdir())[2]
    ds = pydicom.dcmread(victim)
    ds.PatientID = "H99999999"
    ds.save_as(victim)


BAD_CASES = {
    # name: (writer kwargs, edit after writing, expected message, subject fragment)
    "corrupt-file": ({}, _corrupt_one_ct_file, "corrupt DICOM file", "/ct/img"),
    "truncated-pixel-data": ({}, _truncate_one_ct_file, "pixel data unreadable", "CT series"),
    "missing-slice": (dict(ct=dict(drop_slice=7)), None, "missing slice", "CT series"),
    "inconsistent-spacing": (dict(ct=dict(spacing_jitter={7: 1.3})), None, "non-uniform slice spacing", "CT series"),
    "gantry-tilt": (dict(ct=dict(tilt_mm_per_slice=0.4)), None, "gantry tilt", "CT series"),
    "non-orthogonal": (dict(ct=dict(orientation=(1, 0, 0, 0.1, 0.995, 0))), None, "non-orthogonal", "CT series"),
    "spect-without-ct": (dict(with_ct=False), None, "SPECT without CT", "NM series"),
    "nan-values": (dict(nm=dict(slope=float("nan"))), None, "NaN or infinite", "NM series"),
    "unknown-units": (dict(nm=dict(units="MGMLCC")), None, "unknown NM units MGMLCC", "NM series"),
    "counts-without-calibration": (dict(nm=dict(units="CNTS")), None, "counts calibration", "NM series"),
    "implausible-size": (
        dict(nm=dict(rows_cols_frames_override=(8192, 8192, 4096))),
        None,
        "implausible image size",
        "NM series",
    ),
    "two-patients-in-series": ({}, _second_patient_in_series, "different patients", "CT series"),
    "conflicting-copies": (
        {},
        _conflicting_ct_copy,
        "hold the same SOP Instance UID with different content",
        "CT series",
    ),
    # the CT covers only the lower half of the body: about a quarter of the SPECT's activity lies beyond it
    "ct-short-of-spect": (dict(ct=dict(n_slices=7)), None, "does not cover the SPECT", "NM series"),
    "foreign-nuclide": (
        dict(nm=dict(nuclide_code=("72454006", "SCT", "^99m^Technetium"), half_life_s=6.0067 * 3600)),
        None,
        "the radionuclide is Tc-99m",
        "NM series",
    ),
    "contradicting-nuclide-sources": (
        dict(nm=dict(half_life_s=6.0 * 3600)),
        None,
        "the radionuclide sources disagree",
        "NM series",
    ),
    "pet-nuclide-in-pt": ({}, _spect_as_ga68_pet, "the radionuclide is Ga-68", "PT series"),
}


def _exact_copy_of_a_ct_slice(info):
    original = sorted((info["folder"] / "ct").iterdir())[4]
    (info["folder"] / "resent").mkdir()
    shutil.copy(original, info["folder"] / "resent" / "copy_of_slice.dcm")


def _broken_copy_of_the_spect(info):
    data = (info["folder"] / "nm.dcm").read_bytes()
    (info["folder"] / "resent").mkdir()
    (info["folder"] / "resent" / "nm_copy.dcm").write_bytes(data[: len(data) - len(data) // 4])


def _clinical_roi_name(info):
    ds = pydicom.dcmread(info["folder"] / "rs.dcm")
    for roi in ds.StructureSetROISequence:
        if roi.ROIName == "liver":
            roi.ROIName = "Leber"
    ds.save_as(info["folder"] / "rs.dcm")


_LU177_DECAY_24H = 2.0 ** (24.0 / (6.647 * 24.0))  # ICRP-107 half-life 6.647 d

#: Inputs that are taken, changed or noted, never refused: case -> (_write_scan kwargs, edit of the written files,
#: severity and words of the report row, what its source names).
REPORTED_CASES = {
    "exact-duplicate-file": ({}, _exact_copy_of_a_ct_slice, "info", "exact copy of", "copy_of_slice.dcm"),
    "broken-copy-beside-the-good-file": ({}, _broken_copy_of_the_spect, "warning", "broken copy of", "nm_copy.dcm"),
    "negative-voxels": (
        dict(nm=dict(signed=True), nm_activity=lambda a: a - 0.02 * a.max()),
        None,
        "warning",
        "were negative",
        "NM series",
    ),
    "decay-corrected-to-administration": (
        dict(nm=dict(decay_correction="ADMIN", decay_factor=_LU177_DECAY_24H)),
        None,
        "warning",
        "decay correction undone",
        "NM series",
    ),
    "no-nuclide-information": (
        dict(nm=dict(nuclide_code=None, half_life_s=None)),
        None,
        "warning",
        "ingested as Lu-177",
        "NM series",
    ),
    "roi-name-outside-the-vocabulary": (
        {},
        _clinical_roi_name,
        "info",
        "kept as written with VOI class other: 'Leber'",
        "NM series",
    ),
}


def test_inputs_taken_with_a_report_row_land_once_and_say_what_was_done(tmp_path):
    root = tmp_path / "dicom"
    ids = {}
    for number, (case, (kwargs, edit, _, _, _)) in enumerate(REPORTED_CASES.items()):
        patient = factory.make_patient(
            seed=40 + number,
            patient_id=f"H4{number:07d}",
            name=f"Taken^Case{number}",
            birth_date=f"1960{number % 12 + 1:02d}11",
        )
        info = _write_scan(root, patient, **kwargs)
        if edit:
            edit(info)
        ids[case] = patient.patient_id
    report = ingest(root, tmp_path / "cohort", grid="ct")
    cohort = open_cohort(tmp_path / "cohort")
    assert sorted(p for p, _ in cohort.scans()) == sorted(_pseudonym(i) for i in ids.values())
    assert not (report["severity"] == "error").any(), report[report["severity"] == "error"].to_dict("records")
    for case, (_, _, severity, words, subject) in REPORTED_CASES.items():
        rows = report[(report["patient"] == _pseudonym(ids[case])) & report["message"].str.contains(words, regex=False)]
        assert len(rows) == 1, (case, report[report["patient"] == _pseudonym(ids[case])]["message"].tolist())
        assert rows["severity"].iloc[0] == severity, case
        assert subject in rows["source"].iloc[0], (case, rows["source"].iloc[0])
    assert validate_cohort(tmp_path / "cohort") == []


def test_bad_inputs_are_reported_and_the_good_scans_land(tmp_path):
    root = tmp_path / "dicom"
    good = factory.write_patient(
        root / "good", seed=11, hours=(4.0, 24.0), patient_id="H20000001", name="Goodwin^Greta", birth_date="19610304"
    )
    bad_ids = {}
    for number, (case, (kwargs, edit, _, _)) in enumerate(BAD_CASES.items()):
        patient = factory.make_patient(
            seed=number,
            patient_id=f"H3{number:07d}",
            name=f"Badcase^Number{number}",
            birth_date=f"1950{number % 12 + 1:02d}15",
        )
        info = _write_scan(root / "bad", patient, **kwargs)
        if edit:
            edit(info)
        bad_ids[case] = patient.patient_id
    (root / "README.txt").write_text("exported from PACS\n")
    report = ingest(root, tmp_path / "cohort", grid="ct")

    cohort = open_cohort(tmp_path / "cohort")
    assert cohort.scans() == [(_pseudonym(good.patient_id), "tp1"), (_pseudonym(good.patient_id), "tp2")]
    for case, (_, _, message, subject) in BAD_CASES.items():
        rows = report[report["message"].str.contains(message, regex=False)]
        assert len(rows), f"{case}: no report row says {message!r}"
        assert (rows["severity"] == "error").all() and (rows["status"] == "rejected").all(), case
        assert rows["source"].str.contains(subject, regex=False).any(), (case, rows["source"].tolist())
        pseudonym = _pseudonym(bad_ids[case])
        assert not any(p == pseudonym for p, _ in cohort.scans()), f"{case}: a scan landed"
    assert ((report["severity"] == "info") & report["message"].str.contains("non-DICOM")).any()
    assert report["message"].str.contains("unexpected").sum() == 0, report["message"].tolist()
    stored = cohort.ingest_report()
    assert len(stored) == len(report)
    assert validate_cohort(tmp_path / "cohort") == []


def test_a_ct_a_little_short_of_the_spect_lands_with_a_warning(tmp_path):
    from cohort_dosimetry.io._ingest import OUTSIDE_ACTIVITY_REFUSAL_FRACTION, OUTSIDE_ACTIVITY_WARNING_FRACTION

    # the CT lacks the last 3 of its 14 slices, the top one of the body among them
    patient = factory.make_patient(seed=3)
    info = _write_scan(tmp_path / "dicom", patient, ct=dict(n_slices=11))
    report = ingest(tmp_path / "dicom", tmp_path / "cohort", grid="ct")
    # truth from the files: activity in the NM voxels whose centres lie beyond the CT slab actually written
    nm = pydicom.dcmread(info["folder"] / "nm.dcm")
    activity = nm.pixel_array.astype(np.float64) * float(nm.RescaleSlope)
    first_z = float(nm.DetectorInformationSequence[0].ImagePositionPatient[2])
    z = first_z + float(nm.SpacingBetweenSlices) * np.arange(int(nm.NumberOfFrames))
    dz, z0 = patient.ct_spacing[0], patient.ct_origin_xyz[2]
    beyond = (z < z0 - dz / 2) | (z >= z0 + (11 - 0.5) * dz)
    expected = activity[beyond].sum() / activity.sum()
    assert OUTSIDE_ACTIVITY_WARNING_FRACTION < expected < OUTSIDE_ACTIVITY_REFUSAL_FRACTION  # the case is what it says
    rows = report[report["message"].str.contains("outside the CT's extent", regex=False)]
    assert list(rows["severity"]) == ["warning"] and list(rows["status"]) == ["written"]
    percent = float(rows["message"].iloc[0].split(" % ")[0])
    assert percent == pytest.approx(100 * expected, abs=0.1)
    cohort = open_cohort(tmp_path / "cohort")
    attrs = cohort.scan_attrs(_pseudonym(patient.patient_id), "tp1")
    voxel_ml = float(nm.SpacingBetweenSlices) * float(nm.PixelSpacing[0]) * float(nm.PixelSpacing[1]) / 1000.0
    assert attrs["activity_outside_grid_bq"] == pytest.approx(activity[beyond].sum() * voxel_ml, rel=1e-3)


def test_external_rtdose_is_recorded_as_given(tmp_path):
    patient = factory.make_patient(seed=9)
    info = _write_scan(tmp_path / "dicom", patient, hours=24.0)
    dose = np.linspace(0.0, 12.5, patient.labels.size).reshape(patient.labels.shape)
    factory.write_rtdose(
        patient,
        tmp_path / "dicom" / "dose",
        info["study"],
        info["frame"],
        factory.INJECTION + dt.timedelta(hours=24),
        dose,
    )
    report = ingest(tmp_path / "dicom", tmp_path / "cohort", grid="ct")
    cohort = open_cohort(tmp_path / "cohort")
    attrs = cohort.scan_attrs(*cohort.scans()[0])
    assert attrs["external_dose"] == {
        "dose_units": "GY",
        "dose_type": "PHYSICAL",
        "summation_type": "PLAN",
        "max": pytest.approx(12.5, abs=1e-4),
    }
    assert report["message"].str.contains("external dose found (GY, PHYSICAL, PLAN)", regex=False).any()


# ------------------------------------------------------------------------------------------------- re-runs
def test_rerun_is_a_no_op_and_a_changed_file_makes_a_new_version(tmp_path):
    patient = factory.write_patient(tmp_path / "dicom", seed=2, hours=(4.0, 24.0))
    ingest(tmp_path / "dicom", tmp_path / "cohort", grid="compact")
    cohort = open_cohort(tmp_path / "cohort")
    before = {scan: cohort.scan_attrs(*scan)["written_utc"] for scan in cohort.scans()}

    again = ingest(tmp_path / "dicom", tmp_path / "cohort", grid="compact")
    assert list(again.loc[again["timepoint"] != "", "status"]) == ["unchanged", "unchanged"]
    assert {scan: cohort.scan_attrs(*scan)["written_utc"] for scan in cohort.scans()} == before

    nm = patient.nm_files[1]  # the 24 h SPECT: recalibrated, 10 % more activity
    ds = pydicom.dcmread(nm)
    ds.RescaleSlope = float(ds.RescaleSlope) * 1.1
    ds.save_as(nm)
    third = ingest(tmp_path / "dicom", tmp_path / "cohort", grid="compact")
    scans = third[third["timepoint"] != ""]
    statuses = dict(zip(scans["timepoint"], scans["status"]))
    assert statuses == {"tp1": "unchanged", "tp2": "new_version"}
    pseudonym = _pseudonym(patient.patient_id)
    assert cohort.scan_versions(pseudonym, "tp2") == [1, 2]
    old = float(cohort.scan(pseudonym, "tp2", version=1)["activity"].sum())
    new = float(cohort.scan(pseudonym, "tp2")["activity"].sum())
    assert new / old == pytest.approx(1.1, rel=1e-3)


# ------------------------------------------------------------------------------------------ pseudonymisation
def test_no_name_id_or_birth_date_reaches_the_store_tables_or_logs(tmp_path):
    root = tmp_path / "dicom"
    patients = [
        factory.write_patient(
            root, seed=7, hours=(4.0,), patient_id="H40718263", name="Samplesen^Ingrid", birth_date="19570923"
        ),
        factory.write_patient(
            root, seed=8, hours=(24.0,), patient_id="H51122334", name="Voxelberg^Tomas", birth_date="19630511"
        ),
    ]
    # a bad file in a folder named after the patient: its path must not leak through the report either
    (root / "Samplesen_Ingrid_19570923").mkdir()
    (root / "Samplesen_Ingrid_19570923" / "broken.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"\xff" * 64)
    log_file = tmp_path / "ingest.log"
    handler = logging.FileHandler(log_file)
    logger = logging.getLogger()  # every logger, pydicom's included, and warnings
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logging.captureWarnings(True)
    try:
        report = ingest(root, tmp_path / "cohort", workers=2, grid="ct")
    finally:
        logging.captureWarnings(False)
        logger.removeHandler(handler)
        logger.setLevel(old_level)
        handler.close()
    assert len(open_cohort(tmp_path / "cohort").scans()) == 2
    assert log_file.stat().st_size > 0
    secrets = set()
    for p in patients:
        family, given = p.name.split("^")
        born = dt.datetime.strptime(p.birth_date, "%Y%m%d").date()
        secrets |= {p.name, family, given, p.patient_id, p.birth_date, born.isoformat()}
    texts = [log_file.read_bytes()]
    for path in (tmp_path / "cohort").rglob("*"):
        if path.is_file():
            texts.append(path.read_bytes())
    for table in (tmp_path / "cohort" / "tables").glob("*.parquet"):
        texts.append(pd.read_parquet(table).to_csv().encode())
    texts.append(report.to_csv().encode())
    for secret in secrets:
        for text in texts:
            assert secret.lower().encode() not in text.lower(), f"{secret!r} leaked"
    assert report["source"].str.contains("[redacted]", regex=False).any()


# ------------------------------------------------------------------------------------------------------ CLI
def test_cli_ingests_and_summarises(tmp_path, capsys):
    factory.write_patient(tmp_path / "dicom", seed=4, hours=(4.0, 24.0))
    (tmp_path / "dicom" / "extra.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"\x01" * 40)
    code = cli_main(["ingest", str(tmp_path / "dicom"), str(tmp_path / "cohort"), "--grid", "6,7.5,7.5"])
    out = capsys.readouterr().out
    assert code == 1  # one file was rejected
    assert "written         2 scans" in out
    assert "corrupt DICOM file" in out
    cohort = open_cohort(tmp_path / "cohort")
    assert cohort.scan_attrs(*cohort.scans()[0])["spacing_mm"] == pytest.approx((6.0, 7.5, 7.5))
    code = cli_main(["ingest", str(tmp_path / "dicom"), str(tmp_path / "cohort"), "--grid", "6,7.5,7.5"])
    assert "unchanged       2 scans" in capsys.readouterr().out
