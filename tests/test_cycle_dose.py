"""The per-cycle absorbed-dose step (pipeline.cycle_absorbed_dose) on a tiny synthetic cohort, without Prefect.

Checks against independent truth: without motion the registered, warped and integrated map is the direct voxel
integration of the unwarped maps (registration of a scan onto an identical CT is the identity, and a linear warp at
the voxel centres is exact); a moved time point is mapped back onto the reference (the stored displacement against
the known motion).
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from cohort_dosimetry import pipeline
from cohort_dosimetry.grid import Grid
from cohort_dosimetry.stats import integrate_voxels
from cohort_dosimetry.store import open_cohort

TINY = Grid((24, 32, 32), (3.0, 3.91, 3.91))


@pytest.fixture(scope="module")
def static_cohort(tmp_path_factory):
    """One virtual patient (no motion), 3-4 scans, ingested, with DVK maps."""
    from cohort_dosimetry.io import ingest
    from cohort_dosimetry.phantoms import export_cohort

    root = tmp_path_factory.mktemp("cycle")
    export_cohort(root / "dicom", n_patients=1, seed=3, grid=TINY, spect="fast", progress=False, workers=1)
    ingest(root / "dicom", root / "cohort", grid="ct")
    for patient, timepoint in open_cohort(root / "cohort").scans():
        pipeline.compute_scan_dose(root / "cohort", patient, timepoint, ("dvk",))
    return root / "cohort"


@pytest.fixture
def cohort_dir(static_cohort, tmp_path):
    shutil.copytree(static_cohort, tmp_path / "cohort")
    return tmp_path / "cohort"


def test_without_motion_the_map_is_the_direct_voxel_integration(cohort_dir):
    (patient, cycle), *_ = pipeline.patient_cycles(cohort_dir)
    results = pipeline.cycle_absorbed_dose(cohort_dir, patient, cycle, ("dvk", "mc"))
    status = {r["step"]: (r["status"], r["message"]) for r in results}
    assert status["absorbed_dose_dvk"] == ("done", "")
    assert status["absorbed_dose_mc"][0] == "skipped" and "no mc dose-rate map" in status["absorbed_dose_mc"][1]

    cohort = open_cohort(cohort_dir)
    stored = cohort.cycle(patient, cycle)
    timepoints = stored.attrs["timepoints"]
    hours = [cohort.scan_attrs(patient, t)["hours_post_injection"] for t in timepoints]
    assert hours == sorted(hours) and stored.attrs["reference_timepoint"] == timepoints[0]
    rates = np.stack([cohort.scan(patient, t)["dose_rate_dvk"].values for t in timepoints])
    direct = integrate_voxels(rates, hours, "Lu177")
    body = cohort.scan(patient, timepoints[0])["labels"].values > 0
    mapped = stored["absorbed_dose_dvk"].values
    assert np.allclose(mapped[body], direct.dose_gy[body], rtol=2e-3, atol=1e-3 * direct.dose_gy[body].max())
    assert np.abs(stored["displacement_mm"].values).max() < 0.5  # identical CTs: (nearly) the identity
    for quality in stored.attrs["registration"].values():
        assert quality["dice_min"] > 0.95 and quality["jacobian_min"] > 0

    again = pipeline.cycle_absorbed_dose(cohort_dir, patient, cycle, ("dvk",))
    assert [r["status"] for r in again] == ["skipped"]  # same inputs: the stored maps are kept


def test_a_recomputed_input_map_makes_the_cycle_stale(cohort_dir):
    (patient, cycle), *_ = pipeline.patient_cycles(cohort_dir)
    pipeline.cycle_absorbed_dose(cohort_dir, patient, cycle, ("dvk",))
    cohort = open_cohort(cohort_dir)
    before = cohort.cycle_attrs(patient, cycle)
    last = before["timepoints"][-1]
    doubled = cohort.scan(patient, last)[["dose_rate_dvk"]].load() * 2
    doubled["dose_rate_dvk"].attrs["units"] = "Gy/s"
    cohort.write_arrays(patient, last, doubled, {"method": "dvk", "settings_sha256": "test"})
    (result,) = pipeline.cycle_absorbed_dose(cohort_dir, patient, cycle, ("dvk",))
    after = cohort.cycle_attrs(patient, cycle)
    assert result["status"] == "done" and after["inputs_sha256"] != before["inputs_sha256"]
    assert after["methods"]["dvk"]["inputs"][last]["settings_sha256"] == "test"


@pytest.fixture(scope="module")
def moving_cohort(tmp_path_factory):
    """One virtual patient that moves between its scans (rigid up to 15 mm / 5 degrees, organs up to 8 mm),
    exported as DICOM, ingested on its own grid, with DVK maps; and its ground truth."""
    from cohort_dosimetry.io import ingest
    from cohort_dosimetry.phantoms import export_cohort, read_ground_truth

    root = tmp_path_factory.mktemp("moving")
    grid = Grid((40, 48, 48), (6.0, 7.82, 7.82))
    export = export_cohort(
        root / "dicom", n_patients=1, seed=4, grid=grid, spect="fast", progress=False, workers=1, motion=True
    )
    ingest(root / "dicom", root / "cohort", grid="ct")
    for patient, timepoint in open_cohort(root / "cohort").scans():
        pipeline.compute_scan_dose(root / "cohort", patient, timepoint, ("dvk",))
    truth = read_ground_truth(next((root / "dicom" / "ground_truth").glob("*.zarr")))
    del export
    return root / "cohort", truth


def test_a_moving_patient_is_registered_onto_its_first_scan(moving_cohort):
    cohort_dir, truth = moving_cohort
    (patient, cycle), *_ = pipeline.patient_cycles(cohort_dir)
    (result,) = pipeline.cycle_absorbed_dose(cohort_dir, patient, cycle, ("dvk",))
    assert result["status"] == "done", result
    stored = open_cohort(cohort_dir).cycle(patient, cycle)
    body = truth["labels"].values > 0
    estimated = stored["displacement_mm"].values
    true = truth["displacement_true"].values
    assert estimated.shape == true.shape
    moved = np.linalg.norm(true, axis=1)[:, body].mean(axis=1)
    error = np.linalg.norm(estimated - true, axis=1)[:, body].mean(axis=1)
    assert moved[1:].min() > 4.0  # every later scan moved noticeably
    assert error[0] == 0 and error[1:].max() < 4.0, (error, moved)  # target registration error, mm
    for timepoint, quality in stored.attrs["registration"].items():
        kidneys_spleen = [d for voi, d in quality["dice"].items() if voi.startswith(("kidney", "spleen"))]
        assert min(kidneys_spleen) >= 0.8, (timepoint, quality["dice"])
    # a SPECT-based method's map mean against its own VOI-level result (each scan's own contours, no registration)
    from cohort_dosimetry.stats import compute_cohort_tables

    voxel = compute_cohort_tables(open_cohort(cohort_dir), progress=False)["voxel_absorbed_dose"]
    kidneys = voxel[voxel["voi_type"] == "kidney"]
    assert len(kidneys) == 2 and (kidneys["difference_percent"].abs() < 10).all(), kidneys
    assert (kidneys["same_rule_difference_percent"].abs() < 5).all(), kidneys


def test_cycle_tables_agree_with_the_map(cohort_dir):
    """The DVH and Dx of a VOI from the stored map, against numpy on the map's voxels."""
    from cohort_dosimetry.stats import compute_cohort_tables

    (patient, cycle), *_ = pipeline.patient_cycles(cohort_dir)
    pipeline.cycle_absorbed_dose(cohort_dir, patient, cycle, ("dvk",))
    cohort = open_cohort(cohort_dir)
    tables = compute_cohort_tables(cohort, progress=False)
    stored = cohort.cycle(patient, cycle)
    labels = cohort.scan(patient, stored.attrs["reference_timepoint"])["labels"]
    value = next(k for k, name in labels.attrs["names"].items() if name == "kidney_left")
    doses = np.sort(stored["absorbed_dose_dvk"].values[labels.values == value])[::-1]
    row = tables["voxel_absorbed_dose"].query("voi == 'kidney_left' and method == 'dvk'").iloc[0]
    assert row["mean_gy"] == pytest.approx(doses.mean(), rel=1e-5)
    assert row["d2_gy"] == doses[int(np.ceil(0.02 * doses.size)) - 1]
    assert row["d98_gy"] == doses[int(np.ceil(0.98 * doses.size)) - 1]
    assert row["voi_level_model"] and abs(row["difference_percent"]) < 10
    # no motion: the same rule on the VOI mean curve differs only through the spread of the voxels' tails
    assert abs(row["same_rule_difference_percent"]) < 2, row
    dvh = tables["dose_volume_histograms"].query("voi == 'kidney_left' and method == 'dvk'")
    expected = [(doses >= level).mean() for level in dvh["dose_gy"]]
    np.testing.assert_allclose(dvh["volume_fraction"], expected, atol=1e-12)
    assert len(tables["registrations"]) == len(stored.attrs["timepoints"]) - 1
