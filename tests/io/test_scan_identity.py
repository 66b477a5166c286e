"""A scan is its SPECT series: labels across deliveries, versions, concurrent ingests, and therapy cycles.

All patients are synthetic virtual patients written by tests/io/dicom_factory.py, not patient data.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import multiprocessing
import shutil
import time
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import pydicom
import pytest
import xarray as xr
from pydicom.uid import generate_uid

from cohort_dosimetry.io import ingest
from cohort_dosimetry.stats import NOT_INTEGRATED, compute_cohort_tables, fit_time_activity
from cohort_dosimetry.store import open_cohort, pseudonymise_patient_id, validate_cohort
from tests.io import _ingest_workers
from tests.io import dicom_factory as factory

KEY = "scan-identity-test-key-0123456789"
#: Lu-177 DOTATATE cycles are 8 weeks apart.
SECOND_INJECTION = factory.INJECTION + dt.timedelta(weeks=8)
#: Dose-rate per activity concentration of the stand-in dose maps (Gy/s per Bq/mL); any constant serves.
GY_S_PER_BQ_ML = 2.0e-11


@pytest.fixture(autouse=True)
def _pseudonym_key(monkeypatch):
    monkeypatch.setenv("COHORT_DOSIMETRY_PSEUDONYM_KEY", KEY)


def _pseudonym(patient_id: str) -> str:
    return pseudonymise_patient_id(patient_id, KEY)


def _series_key(nm_file) -> str:
    """HMAC-SHA256 of the SPECT's SeriesInstanceUID under the pseudonym key, as the store schema describes it."""
    uid = str(pydicom.dcmread(nm_file, stop_before_pixels=True).SeriesInstanceUID)
    return "H" + hmac.new(KEY.encode(), uid.encode(), hashlib.sha256).hexdigest()[:24]


def _scan_rows(report):
    """{SPECT series: (timepoint, status)} of the scan rows of an ingest report."""
    rows = report[report["status"].isin(["written", "new_version", "unchanged", "rejected"])]
    return dict(zip(rows["source"], zip(rows["timepoint"], rows["status"])))


def test_labels_follow_the_spect_series_across_deliveries_and_a_changed_file_is_a_new_version(tmp_path):
    patient = factory.write_patient(tmp_path / "all", seed=21, hours=(4.0, 24.0, 96.0, 168.0))
    pseudonym = _pseudonym(patient.patient_id)
    # the first delivery holds two of the four studies: 24 h and 168 h
    for t in (1, 3):
        shutil.copytree(tmp_path / "all" / f"{patient.patient_id}_{t}", tmp_path / "part" / f"study_{t}")
    cohort_dir = tmp_path / "cohort"
    first = _scan_rows(ingest(tmp_path / "part", cohort_dir, grid="ct"))
    assert sorted(first.values()) == [("tp1", "written"), ("tp2", "written")]
    cohort = open_cohort(cohort_dir)
    hours_of = {t: cohort.scan_attrs(pseudonym, t)["hours_post_injection"] for t in ("tp1", "tp2")}
    assert hours_of == {"tp1": pytest.approx(24.0), "tp2": pytest.approx(168.0)}  # in acquisition order

    # the whole folder: the two known series keep their labels untouched, the two new ones get the next labels
    second = ingest(tmp_path / "all", cohort_dir, grid="ct")
    rows = _scan_rows(second)
    assert sorted(rows.values()) == [("tp1", "unchanged"), ("tp2", "unchanged"), ("tp3", "written"), ("tp4", "written")]
    label_of_hours = {
        round(cohort.scan_attrs(pseudonym, t)["hours_post_injection"]): t for t in cohort.timepoints(pseudonym)
    }
    assert label_of_hours == {24: "tp1", 168: "tp2", 4: "tp3", 96: "tp4"}
    for t in ("tp1", "tp2", "tp3", "tp4"):
        assert cohort.scan_versions(pseudonym, t) == [1]
    for nm_file, hours in zip(patient.nm_files, patient.hours):
        label = label_of_hours[round(hours)]
        key = _series_key(nm_file)
        assert cohort.scan_attrs(pseudonym, label)["spect_series_key"] == key
        assert cohort.timepoint_of(pseudonym, key) == label
        uid = str(pydicom.dcmread(nm_file, stop_before_pixels=True).SeriesInstanceUID)
        assert uid not in (cohort.store_path / "scans" / pseudonym / label / "v0001" / "zarr.json").read_text()
    assert {cohort.scan_attrs(pseudonym, t)["cycle"] for t in cohort.timepoints(pseudonym)} == {1}

    # the 96 h SPECT recalibrated (10 % more activity): a new version of its own label, nothing else changes
    nm = patient.nm_files[2]
    ds = pydicom.dcmread(nm)
    ds.RescaleSlope = float(ds.RescaleSlope) * 1.1
    ds.save_as(nm)
    third = _scan_rows(ingest(tmp_path / "all", cohort_dir, grid="ct"))
    assert sorted(third.values()) == [
        ("tp1", "unchanged"),
        ("tp2", "unchanged"),
        ("tp3", "unchanged"),
        ("tp4", "new_version"),
    ]
    assert cohort.scans() == [(pseudonym, t) for t in ("tp1", "tp2", "tp3", "tp4")]
    assert cohort.scan_versions(pseudonym, "tp4") == [1, 2]
    old = float(cohort.scan(pseudonym, "tp4", version=1)["activity"].sum())
    assert float(cohort.scan(pseudonym, "tp4")["activity"].sum()) / old == pytest.approx(1.1, rel=1e-3)
    assert validate_cohort(cohort_dir) == []


def test_concurrent_ingests_of_disjoint_studies_of_one_patient_give_distinct_labels(tmp_path):
    patient = factory.write_patient(tmp_path / "all", seed=22, hours=(4.0, 24.0, 96.0, 168.0))
    for t in range(4):
        shutil.copytree(tmp_path / "all" / f"{patient.patient_id}_{t}", tmp_path / "ab"[t % 2] / f"study_{t}")
    cohort_dir = tmp_path / "cohort"
    open_cohort(cohort_dir, create=True)
    ready, start = [tmp_path / "ready_a", tmp_path / "ready_b"], tmp_path / "start"
    spawn = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=2, mp_context=spawn) as pool:
        futures = [
            pool.submit(
                _ingest_workers.ingest_with_slow_allocation,
                str(tmp_path / folder),
                str(cohort_dir),
                KEY,
                0.4,
                str(flag),
                str(start),
            )
            for folder, flag in zip("ab", ready)
        ]
        deadline = time.monotonic() + 120
        while not all(flag.exists() for flag in ready):
            assert time.monotonic() < deadline, "the ingests did not start"
            time.sleep(0.01)
        start.touch()
        results = [future.result(timeout=300) for future in futures]
    statuses = [status for rows in results for _, _, status in rows.values()]
    assert statuses == ["written"] * 4, results
    pseudonym = _pseudonym(patient.patient_id)
    cohort = open_cohort(cohort_dir)
    assert cohort.timepoints(pseudonym) == ["tp1", "tp2", "tp3", "tp4"]
    keys = {cohort.scan_attrs(pseudonym, t)["spect_series_key"] for t in cohort.timepoints(pseudonym)}
    assert keys == {_series_key(nm) for nm in patient.nm_files}
    assert all(cohort.scan_versions(pseudonym, t) == [1] for t in cohort.timepoints(pseudonym))
    assert validate_cohort(cohort_dir) == []


def _write_dose_rates(cohort) -> None:
    """Stand-in DVK maps proportional to the activity, so each VOI's mean dose-rate follows its activity."""
    for patient, timepoint in cohort.scans():
        activity = cohort.scan(patient, timepoint)["activity"]
        maps = xr.Dataset({"dose_rate_dvk": (activity.dims, activity.values * GY_S_PER_BQ_ML, {"units": "Gy/s"})})
        cohort.write_arrays(patient, timepoint, maps, {"method": "dvk", "note": "activity x constant (test)"})


def _lesion_curve(cohort, patient: str, timepoints, truth: factory.Patient) -> tuple[list[float], list[float]]:
    """(hours, mean lesion dose-rate in Gy/s) of the scans, read back with numpy over the lesion's voxels as the
    factory wrote them (the dose grid is the CT grid)."""
    hours, means = [], []
    for timepoint in timepoints:
        scan = cohort.scan(patient, timepoint)
        lesion = truth.labels == 101
        hours.append(scan.attrs["hours_post_injection"])
        means.append(float(scan["dose_rate_dvk"].values[lesion].astype(np.float64).mean()))
    return hours, means


def test_a_second_cycle_is_its_own_curve_and_the_total_sums_the_cycles(tmp_path):
    root = tmp_path / "dicom"
    truth = factory.write_patient(root / "cycle_1", seed=31, hours=(4.0, 24.0, 96.0), patient_id="H31000001")
    factory.write_patient(
        root / "cycle_2", seed=31, hours=(24.0, 96.0, 168.0), patient_id="H31000001", injection=SECOND_INJECTION
    )
    pseudonym = _pseudonym("H31000001")
    cohort_dir = tmp_path / "cohort"
    # the second cycle is delivered first: its scans are cycle 1 until the first cycle arrives
    ingest(root / "cycle_2", cohort_dir, grid="ct")
    cohort = open_cohort(cohort_dir)
    assert [cohort.scan_attrs(pseudonym, t)["cycle"] for t in ("tp1", "tp2", "tp3")] == [1, 1, 1]
    report = ingest(root, cohort_dir, grid="ct")
    assert sorted(_scan_rows(report).values()) == [
        ("tp1", "unchanged"),
        ("tp2", "unchanged"),
        ("tp3", "unchanged"),
        ("tp4", "written"),
        ("tp5", "written"),
        ("tp6", "written"),
    ]
    renumbered = report[report["status"] == "cycle_renumbered"]
    assert sorted(renumbered["timepoint"]) == ["tp1", "tp2", "tp3"]
    assert renumbered["message"].str.contains("renumbered from 1 to 2").all()
    expected = {
        "tp1": (2, 24.0),
        "tp2": (2, 96.0),
        "tp3": (2, 168.0),
        "tp4": (1, 4.0),
        "tp5": (1, 24.0),
        "tp6": (1, 96.0),
    }
    for timepoint, (cycle, hours) in expected.items():
        attrs = cohort.scan_attrs(pseudonym, timepoint)
        injection = factory.INJECTION if cycle == 1 else SECOND_INJECTION
        assert attrs["cycle"] == cycle and attrs["injection_datetime"] == injection.isoformat()
        assert attrs["hours_post_injection"] == pytest.approx(hours)  # from its own cycle's injection
        assert attrs["acquisition_datetime"] == (injection + dt.timedelta(hours=hours)).isoformat()
    assert validate_cohort(cohort_dir) == []

    _write_dose_rates(cohort)
    tables = compute_cohort_tables(cohort, progress=False)
    voi_stats = tables["voi_stats"].set_index("timepoint")
    for timepoint, (cycle, _) in expected.items():
        assert (voi_stats.loc[timepoint, "cycle"] == cycle).all()
    chosen = tables["absorbed_dose"].query("selected").set_index(["patient", "cycle", "voi", "method"])
    assert set(chosen.index.get_level_values("cycle")) == {1, 2}
    per_cycle = {}
    for cycle, timepoints in ((1, ("tp4", "tp5", "tp6")), (2, ("tp1", "tp2", "tp3"))):
        hours, means = _lesion_curve(cohort, pseudonym, timepoints, truth)
        by_hand = fit_time_activity(hours, means)
        row = chosen.loc[(pseudonym, cycle, "lesion_1", "dvk")]
        assert row["model"] == by_hand.selected and row["n_timepoints"] == 3
        assert row["absorbed_dose_gy"] == pytest.approx(by_hand.absorbed_dose_gy, rel=1e-9)
        per_cycle[cycle] = by_hand
    total = tables["absorbed_dose_total"].set_index(["patient", "voi", "method"]).loc[(pseudonym, "lesion_1", "dvk")]
    assert total["n_cycles"] == 2 and total["cycles"] == "1,2" and total["reason"] == ""
    assert total["absorbed_dose_gy"] == pytest.approx(sum(f.absorbed_dose_gy for f in per_cycle.values()), rel=1e-9)
    np.testing.assert_allclose(
        total["uncertainty_gy"], np.hypot(per_cycle[1].uncertainty_gy, per_cycle[2].uncertainty_gy), rtol=1e-9
    )
    assert len(cohort.absorbed_dose_total()) == len(tables["absorbed_dose_total"])
    assert validate_cohort(cohort_dir) == []


def _study(root, patient, hours, injection=factory.INJECTION, spects=1):
    """One study: a CT with its RTSTRUCT and ``spects`` reconstructions of one SPECT acquisition ``hours`` after
    ``injection``."""
    when = injection + dt.timedelta(hours=hours)
    study, frame, ct_series = generate_uid(), generate_uid(), generate_uid()
    folder = root / f"{patient.patient_id}_{hours:g}h_{injection:%m%d%H%M}"
    factory.write_ct(patient, folder / "ct", study, ct_series, frame, when)
    factory.write_rtstruct(patient, folder / "rs.dcm", study, ct_series, frame, when)
    shape, origin, spacing = factory.nm_grid(patient)
    for k in range(spects):
        activity = factory.activity_on_nm_grid(patient, shape, origin, spacing, hours, seed=k)
        factory.write_nm(
            patient, folder / f"nm{k}.dcm", study, frame, hours, activity, origin, spacing, injection=injection
        )


def test_two_reconstructions_of_one_acquisition_leave_one_curve_without_dose_and_the_rest_go_on(tmp_path):
    root = tmp_path / "dicom"
    doubled = factory.make_patient(seed=41, patient_id="H41000001")
    _study(root, doubled, 24.0)
    _study(root, doubled, 96.0, spects=2)  # two reconstructions (e.g. OSEM settings) of the 96 h acquisition
    other = factory.write_patient(root / "other", seed=42, hours=(24.0, 96.0), patient_id="H42000002")
    cohort_dir = tmp_path / "cohort"
    report = ingest(root, cohort_dir, grid="ct")
    pseudonym = _pseudonym(doubled.patient_id)
    cohort = open_cohort(cohort_dir)
    assert cohort.timepoints(pseudonym) == ["tp1", "tp2", "tp3"]  # one label per series
    assert not (report["severity"] == "error").any(), report["message"].tolist()
    _write_dose_rates(cohort)
    tables = compute_cohort_tables(cohort, progress=False)  # does not fail
    chosen = tables["absorbed_dose"].query("selected").set_index(["patient", "cycle", "voi", "method"])
    failed = chosen.loc[(pseudonym, 1, "lesion_1", "dvk")]
    assert failed["model"] == NOT_INTEGRATED and np.isnan(failed["absorbed_dose_gy"])
    assert "distinct" in failed["reason"]
    assert f"{pseudonym}/tp2 (96 h)" in failed["reason"] and f"{pseudonym}/tp3 (96 h)" in failed["reason"]
    total = tables["absorbed_dose_total"].set_index(["patient", "voi", "method"])
    assert np.isnan(total.loc[(pseudonym, "lesion_1", "dvk"), "absorbed_dose_gy"])
    assert "cycle 1: not integrated" in total.loc[(pseudonym, "lesion_1", "dvk"), "reason"]
    # the other patient's curves go on
    other_pseudonym = _pseudonym(other.patient_id)
    hours, means = _lesion_curve(cohort, other_pseudonym, ("tp1", "tp2"), other)
    row = chosen.loc[(other_pseudonym, 1, "lesion_1", "dvk")]
    assert row["absorbed_dose_gy"] == pytest.approx(fit_time_activity(hours, means).absorbed_dose_gy, rel=1e-9)
    assert total.loc[(other_pseudonym, "lesion_1", "dvk"), "absorbed_dose_gy"] == pytest.approx(
        row["absorbed_dose_gy"], rel=1e-12
    )


def test_scans_of_one_cycle_naming_different_injections_are_named_in_a_warning(tmp_path):
    root = tmp_path / "dicom"
    patient = factory.make_patient(seed=51, patient_id="H51000001")
    _study(root, patient, 24.0)
    late = factory.INJECTION + dt.timedelta(minutes=40)  # another workstation's record of the same injection
    _study(root, patient, 96.0, injection=late)
    _study(root, patient, 24.0, injection=SECOND_INJECTION)
    report = ingest(root, tmp_path / "cohort", grid="ct")
    cohort = open_cohort(tmp_path / "cohort")
    pseudonym = _pseudonym(patient.patient_id)
    assert [cohort.scan_attrs(pseudonym, t)["cycle"] for t in ("tp1", "tp2", "tp3")] == [1, 1, 2]
    assert cohort.scan_attrs(pseudonym, "tp2")["hours_post_injection"] == pytest.approx(96.0)  # from its own header
    warnings = report[(report["severity"] == "warning") & report["message"].str.contains("name different injections")]
    assert len(warnings) == 1
    message = warnings["message"].iloc[0]
    assert "therapy cycle 1" in message
    assert f"tp1: injected {factory.INJECTION.isoformat()}" in message
    assert f"tp2: injected {late.isoformat()}" in message
    assert "tp3" not in message
