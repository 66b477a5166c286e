"""A hospital's PACS export, delivered in two parts, through ingest, DVK dose-rates and the statistics.

The folder (``hospital_export.py``) holds what clinical exports hold: renamed and overlapping contours, a JPEG Lossless
CT, a second therapy cycle, a Tc-99m study, an ADMIN-decay-corrected SPECT, negative voxels, a duplicate CT slice and
a broken SPECT copy. Truth is what the virtual-patient exporter wrote before the folder was reshaped.
"""

from __future__ import annotations

import numpy as np
import pytest

from cohort_dosimetry.io import ingest
from cohort_dosimetry.pipeline import compute_scan_dose
from cohort_dosimetry.stats import compute_cohort_tables, fit_time_activity, write_report
from cohort_dosimetry.store import open_cohort, pseudonymise_patient_id, validate_cohort

from .hospital_export import build_hospital_export

KEY = "hospital-export-test-key-0123456789"


@pytest.fixture(scope="module")
def delivered(tmp_path_factory):
    root = tmp_path_factory.mktemp("hospital")
    export = build_hospital_export(root / "dicom")
    cohort_dir = root / "cohort"
    first = ingest(export.part_1, cohort_dir, key=KEY, grid="ct")
    cohort = open_cohort(cohort_dir)
    labels_after_part_1 = {(p, cohort.scan_attrs(p, t)["acquisition_datetime"]): t for p, t in cohort.scans()}
    second = ingest(export.part_2, cohort_dir, key=KEY, grid="ct")
    for patient, timepoint in cohort.scans():
        compute_scan_dose(cohort_dir, patient, timepoint, ("dvk",))
    tables = compute_cohort_tables(cohort, progress=False)
    return export, cohort, first, second, labels_after_part_1, tables


def _pseudonym(patient_id: str) -> str:
    return pseudonymise_patient_id(patient_id, KEY)


def _scan_of(cohort, truth):
    patient = _pseudonym(truth.patient_id)
    matches = [
        t
        for p, t in cohort.scans()
        if p == patient and cohort.scan_attrs(p, t)["acquisition_datetime"] == truth.acquisition.isoformat()
    ]
    return patient, matches


def test_every_good_scan_is_stored_exactly_once(delivered):
    export, cohort, _, _, _, _ = delivered
    assert len(cohort.scans()) == len(export.good) == 8
    for truth in export.good:
        patient, matches = _scan_of(cohort, truth)
        assert len(matches) == 1, (truth, matches)
        assert cohort.scan_versions(patient, matches[0]) == [1], "a second delivery of the same files made a version"
    keys = [cohort.scan_attrs(p, t)["spect_series_key"] for p, t in cohort.scans()]
    assert len(set(keys)) == len(keys)
    assert validate_cohort(cohort.path) == []


def test_labels_are_stable_across_deliveries(delivered):
    export, cohort, first, _, labels_after_part_1, _ = delivered
    assert len(labels_after_part_1) == sum(t.delivered_in_part_1 for t in export.good) == 3
    now = {(p, cohort.scan_attrs(p, t)["acquisition_datetime"]): t for p, t in cohort.scans()}
    for scan, label in labels_after_part_1.items():
        assert now[scan] == label
    assert len(set(now.values()) & set(labels_after_part_1.values())) >= 1
    for patient in {p for p, _ in cohort.scans()}:
        labels = [t for p, t in cohort.scans() if p == patient]
        assert len(labels) == len(set(labels))


def test_hours_and_cycles_count_from_each_cycles_injection(delivered):
    export, cohort, _, _, _, _ = delivered
    for truth in export.good:
        patient, (timepoint,) = _scan_of(cohort, truth)
        attrs = cohort.scan_attrs(patient, timepoint)
        assert attrs["cycle"] == truth.cycle
        assert attrs["hours_post_injection"] == pytest.approx(truth.hours, abs=1e-6)


def test_stored_activity_is_the_acquisitions(delivered):
    """Total activity in the store (dose grid plus what fell outside it) against the exporter's truth: within 1 %
    for the ADMIN-decay-corrected series and for the series with negative voxels too."""
    export, cohort, _, _, _, _ = delivered
    for truth in export.good:
        patient, (timepoint,) = _scan_of(cohort, truth)
        scan = cohort.scan(patient, timepoint)
        voxel_ml = float(np.prod(scan.attrs["spacing_mm"])) / 1000.0
        activity = scan["activity"].values
        assert activity.min() >= 0.0
        stored = float(activity.astype(np.float64).sum()) * voxel_ml + scan.attrs["activity_outside_grid_bq"]
        assert stored == pytest.approx(truth.total_activity_bq, rel=0.01), (
            truth,
            scan.attrs.get("decay_correction_in_file"),
        )


def test_negative_voxels_are_clamped_and_reported(delivered):
    export, cohort, first, _, _, _ = delivered  # the filtered reconstruction came in the first delivery
    clamped = [cohort.scan_attrs(p, t).get("negative_voxels_clamped", 0) for p, t in cohort.scans()]
    assert sorted(clamped)[-1] == export.negative_voxels
    assert sum(1 for c in clamped if c) == 1
    assert first["message"].str.contains("negative", case=False).any()


def test_every_refusal_names_its_file_and_reason(delivered):
    export, cohort, _, second, _, _ = delivered
    errors = second[second["severity"] == "error"]
    foreign = errors[errors["message"].str.contains(r"Tc-?99m", regex=True, case=False)]
    assert len(foreign) == 1 and foreign["source"].str.contains("NM series").all(), errors.to_dict("records")
    assert not any(p == _pseudonym(export.foreign_nuclide_patient) for p, _ in cohort.scans())
    broken = second[
        second["source"].str.contains(export.broken_file, regex=False)
        | second["message"].str.contains(export.broken_file, regex=False)
    ]
    assert len(broken) >= 1 and (broken["severity"] != "info").all(), broken.to_dict("records")
    duplicate = second[
        second["source"].str.contains(export.duplicate_file, regex=False)
        | second["message"].str.contains(export.duplicate_file, regex=False)
    ]
    assert len(duplicate) >= 1, "the duplicate CT slice is not reported"
    # nothing else was refused: the only errors are the Tc-99m study (and the broken copy if reported as one)
    unexplained = errors.drop(foreign.index).drop(broken.index, errors="ignore")
    assert unexplained.empty, unexplained.to_dict("records")
    assert second["message"].str.contains("unexpected").sum() == 0


def test_every_named_roi_has_finite_statistics_over_its_own_contour(delivered):
    export, cohort, _, _, _, tables = delivered
    stats = tables["voi_stats"]
    for truth in export.good:
        patient, (timepoint,) = _scan_of(cohort, truth)
        rows = stats[(stats["patient"] == patient) & (stats["timepoint"] == timepoint)].set_index("voi")
        expected = set(export.roi_names[truth.patient_id].values()) | {"liver_healthy"}
        assert expected <= set(rows.index), (timepoint, sorted(rows.index))
        assert np.isfinite(rows.loc[sorted(expected), ["mean", "dr10", "dr90", "volume_ml"]].to_numpy()).all()
        assert (rows.loc[sorted(expected), "volume_ml"] > 0).all()
        # overlapping clinical contours: each over its own voxels
        volume = rows["volume_ml"]
        assert volume["liver"] == pytest.approx(volume["liver_healthy"] + volume["lesion_1"], rel=1e-6)
        assert volume["external"] > volume["liver"] + volume["kidney_left"] + volume["kidney_right"]
        assert rows.loc["Bowel_Bag", "voi_type"] == "other"
        assert rows.loc["lesion_1", "mean"] > rows.loc["liver_healthy", "mean"]  # the lesion is the hot spot
        assert rows.loc["lesion_1", "mean"] < rows.loc["liver", "mean"] * 20


def test_absorbed_doses_are_per_cycle_and_summed_per_patient(delivered):
    export, cohort, _, _, _, tables = delivered
    patient_a = _pseudonym(export.good[0].patient_id)
    dose = tables["absorbed_dose"]
    selected = dose[dose["selected"] & (dose["patient"] == patient_a) & (dose["method"] == "dvk")]
    kidney = selected[selected["voi"] == "kidney_left"].set_index("cycle")
    assert sorted(kidney.index) == [1, 2]
    stats = tables["voi_stats"]
    for cycle in (1, 2):
        curve = stats[
            (stats["patient"] == patient_a)
            & (stats["cycle"] == cycle)
            & (stats["voi"] == "kidney_left")
            & (stats["method"] == "dvk")
        ].sort_values("hours_post_injection")
        truth_hours = sorted(
            t.hours for t in export.good if t.patient_id == export.good[0].patient_id and t.cycle == cycle
        )
        assert curve["hours_post_injection"].tolist() == pytest.approx(truth_hours)
        fit = fit_time_activity(curve["hours_post_injection"].to_numpy(), curve["mean"].to_numpy(), "Lu177")
        assert kidney.loc[cycle, "absorbed_dose_gy"] == pytest.approx(fit.fits[fit.selected].absorbed_dose_gy, rel=1e-9)
    total = tables["absorbed_dose_total"]
    row = total[(total["patient"] == patient_a) & (total["voi"] == "kidney_left") & (total["method"] == "dvk")]
    assert len(row) == 1
    assert float(row["absorbed_dose_gy"].iloc[0]) == pytest.approx(kidney["absorbed_dose_gy"].sum(), rel=1e-9)
    assert int(row["n_cycles"].iloc[0]) == 2
    report = write_report(cohort).read_text()
    assert "cycle" in report.lower()
