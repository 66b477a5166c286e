"""Discovery: grouping and the SPECT-CT pairing rules, on synthetic virtual patients (not patient data)."""

from __future__ import annotations

import datetime as dt

from pydicom.uid import generate_uid

from cohort_dosimetry.io import discover_studies
from tests.io import dicom_factory as factory


def _scan_parts(root, patient, study, frame, hours, ct_hours=None, ct_frame=None):
    """A CT (at ct_hours, in ct_frame) with its RTSTRUCT, and a SPECT at hours in frame; returns the CT series UID."""
    ct_series = generate_uid()
    when = factory.INJECTION + dt.timedelta(hours=ct_hours if ct_hours is not None else hours)
    folder = root / f"{hours:g}h_ct{ct_hours}"
    factory.write_ct(patient, folder / "ct", study, ct_series, ct_frame or frame, when)
    factory.write_rtstruct(patient, folder / "rs", study, ct_series, ct_frame or frame, when)
    shape, origin, spacing = factory.nm_grid(patient)
    activity = factory.activity_on_nm_grid(patient, shape, origin, spacing, hours, seed=0)
    factory.write_nm(patient, folder / "nm", study, frame, hours, activity, origin, spacing)
    return ct_series


def test_spect_pairs_with_the_ct_of_its_frame_of_reference(tmp_path):
    patient = factory.make_patient(seed=1)
    study, frame_a, frame_b = generate_uid(), generate_uid(), generate_uid()
    ct_a = _scan_parts(tmp_path, patient, study, frame_a, hours=24.0)
    ct_b = _scan_parts(tmp_path, patient, study, frame_b, hours=25.0)
    discovery = discover_studies(tmp_path)
    # in acquisition order; discovery names no time points (ingest labels them by SPECT series)
    assert [s.spect.acquired for s in discovery.scans] == [factory.INJECTION + dt.timedelta(hours=h) for h in (24, 25)]
    assert not hasattr(discovery.scans[0], "timepoint")
    # the injection of each SPECT, from its Radiopharmaceutical Information Sequence
    assert {(s.spect.injection_datetime, s.spect.administered_activity_bq) for s in discovery.scans} == {
        (factory.INJECTION, 7.4e9)
    }
    assert {s.ct.injection_datetime for s in discovery.scans} == {None}
    assert [s.ct.series_uid for s in discovery.scans] == [ct_a, ct_b]
    assert {s.ct_pairing for s in discovery.scans} == {"same frame of reference"}
    assert [s.contours.referenced_series for s in discovery.scans] == [{ct_a}, {ct_b}]


def test_without_a_shared_frame_the_nearest_ct_of_the_study_is_taken(tmp_path):
    patient = factory.make_patient(seed=2)
    study = generate_uid()
    # the SPECT at 24 h has its own frame of reference; two CTs of the study at 20 h and 30 h have others
    _scan_parts(tmp_path, patient, study, generate_uid(), hours=24.0, ct_hours=30.0, ct_frame=generate_uid())
    near = generate_uid()
    factory.write_ct(
        patient, tmp_path / "other_ct", study, near, generate_uid(), factory.INJECTION + dt.timedelta(hours=23.0)
    )
    discovery = discover_studies(tmp_path)
    (scan,) = discovery.scans
    assert scan.ct_pairing == "same study, nearest time"
    assert scan.ct.series_uid == near
    assert scan.contours is None  # the RTSTRUCT references the 30 h CT, not the one chosen


def test_spect_of_another_study_without_ct_is_planned_without_ct(tmp_path):
    patient = factory.make_patient(seed=3)
    _scan_parts(tmp_path, patient, generate_uid(), generate_uid(), hours=24.0, ct_frame=generate_uid())
    for item in (tmp_path).rglob("*"):
        if item.parent.name == "ct":
            item.unlink()
    (scan,) = discover_studies(tmp_path).scans
    assert scan.ct is None and scan.ct_pairing == "no CT"


def test_non_dicom_files_are_noted_per_folder_and_identifying_strings_collected(tmp_path):
    patient = factory.make_patient(seed=4, name="Testwood^Claire", patient_id="H77777777", birth_date="19490101")
    _scan_parts(tmp_path, patient, generate_uid(), generate_uid(), hours=4.0)
    (tmp_path / "notes").mkdir()
    for i in range(3):
        (tmp_path / "notes" / f"n{i}.txt").write_text("not DICOM")
    discovery = discover_studies(tmp_path)
    rows = [p for p in discovery.problems if p.subject == "notes"]
    assert len(rows) == 1 and rows[0].severity == "info" and rows[0].problem.startswith("3 non-DICOM")
    assert {"Testwood^Claire", "Testwood", "Claire", "H77777777", "19490101"} <= discovery.identifying_strings
