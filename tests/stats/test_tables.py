"""Cohort tables through the store, on a tiny synthetic cohort with known kinetics."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from cohort_dosimetry.stats import compute_cohort_tables, lins_ccc, scan_tables
from tests.stats._cohort_factory import NAMES, PATIENTS, exact_absorbed_dose_gy, make_cohort


@pytest.fixture(scope="module")
def cohort_and_tables(tmp_path_factory):
    cohort, anatomy = make_cohort(tmp_path_factory.mktemp("stats") / "cohort")
    return cohort, anatomy, compute_cohort_tables(cohort, progress=False)


def test_tables_are_written_with_units_and_one_row_per_scan_voi_method(cohort_and_tables):
    cohort, _, tables = cohort_and_tables
    voi_stats = cohort.voi_stats()
    n_scans = sum(len(hours) for hours in PATIENTS.values())
    assert len(voi_stats) == n_scans * len(NAMES) * 3
    assert set(voi_stats.voi_type) == {"body", "liver", "kidney", "lesion"}
    assert (voi_stats.units == "Gy/s").all()
    assert cohort.table_units("voi_stats")["dr90"] == "Gy/s" and cohort.table_units("voi_stats")["volume_ml"] == "mL"
    assert cohort.table_units("concordance")["nrmse"] == "1"
    assert cohort.table_units("absorbed_dose")["absorbed_dose_gy"] == "Gy"
    assert len(cohort.concordance()) == n_scans * len(NAMES) * 3  # pairs dvk-cnn, dvk-mc, cnn-mc
    assert len(cohort.absorbed_dose()) == len(tables["absorbed_dose"])


def test_voi_stats_equal_numpy_on_the_stored_maps(cohort_and_tables):
    cohort, _, _ = cohort_and_tables
    voi_stats = cohort.voi_stats().set_index(["patient", "timepoint", "voi", "method"])
    scan = cohort.scan("PA", "tp2")
    labels = scan["labels"].values
    for method in ("dvk", "cnn", "mc"):
        values = scan[f"dose_rate_{method}"].values[labels == 5].astype(np.float64)
        row = voi_stats.loc[("PA", "tp2", "kidney_left", method)]
        assert row["mean"] == pytest.approx(values.mean(), rel=1e-12)
        assert row["dr70"] == -np.quantile(-values, 0.7, method="inverted_cdf")
        assert row["hours_post_injection"] == scan.attrs["hours_post_injection"]


def test_concordance_of_a_scaled_map(cohort_and_tables):
    cohort, _, _ = cohort_and_tables
    table = cohort.concordance().set_index(["patient", "timepoint", "voi", "method_a", "method_b"])
    scan = cohort.scan("PB", "tp1")
    mask = scan["labels"].values == 4
    dvk, mc = scan["dose_rate_dvk"].values[mask], scan["dose_rate_mc"].values[mask]
    row = table.loc[("PB", "tp1", "liver", "dvk", "mc")]
    assert row["slope"] == pytest.approx(0.9, rel=1e-6) and row["pearson_r2"] == pytest.approx(1.0, rel=1e-9)
    assert row["mean_error"] == pytest.approx(0.1, rel=1e-5) and row["nrmse"] == pytest.approx(0.1, rel=1e-5)
    assert row["ccc"] == pytest.approx(lins_ccc(dvk, mc), rel=1e-9)
    assert row["n_voxels"] == mask.sum()


def test_absorbed_dose_recovers_the_known_kinetics(cohort_and_tables):
    _, anatomy, tables = cohort_and_tables
    chosen = tables["absorbed_dose"].query("selected").set_index(["patient", "voi", "method"])
    labels, texture = anatomy["PA"]
    for label, voi in NAMES.items():
        exact = exact_absorbed_dose_gy(voi, texture[labels == label].mean())
        row = chosen.loc[("PA", voi, "mc")]
        assert row["model"] == "bi_exp" and row["n_timepoints"] == 4
        assert row["absorbed_dose_gy"] == pytest.approx(exact, rel=1e-4)
        # DVK = 0.9 MC voxel by voxel, and integration is linear.
        assert chosen.loc[("PA", voi, "dvk"), "absorbed_dose_gy"] == pytest.approx(0.9 * exact, rel=1e-4)
    assert (chosen.xs("PB", level="patient")["model"] == "mono_exp").all()
    assert chosen.xs("PB", level="patient")["reason"].str.contains("AIC").all()
    assert (chosen.xs("PC", level="patient")["model"] == "hanscheid").all()


def test_scan_errors_name_the_scan(cohort_and_tables):
    cohort, _, _ = cohort_and_tables
    scan = cohort.scan("PA", "tp1")
    with pytest.raises(ValueError, match="scan PA/tp1: no dose-rate map"):
        scan_tables(scan[["labels"]].assign_attrs(scan.attrs), "PA", "tp1")
    relabelled = scan.copy()
    relabelled["labels"] = scan["labels"].copy(data=np.where(scan["labels"].values == 5, 7, scan["labels"].values))
    relabelled["labels"].attrs["names"] = {k: v for k, v in NAMES.items() if k != 5}
    with pytest.raises(ValueError, match=r"scan PA/tp1: labels \[7\] occur in the label map but have no VOI name"):
        scan_tables(relabelled, "PA", "tp1")
    wrong_units = scan.copy()
    wrong_units["dose_rate_mc"] = scan["dose_rate_mc"].copy().assign_attrs(units="mGy/h")
    with pytest.raises(ValueError, match="scan PA/tp1: dose_rate_mc is in 'mGy/h'"):
        scan_tables(wrong_units, "PA", "tp1")


def test_scans_without_dose_rates_are_skipped_with_a_warning(tmp_path):
    cohort, _ = make_cohort(tmp_path / "cohort")
    scan = cohort.scan("PC", "tp1")
    attrs = {
        k: v
        for k, v in cohort.scan_attrs("PC", "tp1").items()
        if k not in ("status", "version", "written_utc", "provenance")
    }
    ingest_only = xr.Dataset({name: scan[name].load() for name in ("ct_hu", "density", "activity", "labels")})
    cohort.write_scan("PD", "tp1", ingest_only, {**attrs, "source_hash": "sha256:PDtp1"})
    with pytest.warns(RuntimeWarning, match="without any dose-rate map skipped: PD/tp1"):
        tables = compute_cohort_tables(cohort, progress=False)
    assert "PD" not in set(tables["voi_stats"].patient)


def test_each_cycle_is_integrated_on_its_own_and_the_total_sums_them(tmp_path):
    cohort, anatomy = make_cohort(tmp_path / "cohort", second_cycle=("PA", "PC"))
    tables = compute_cohort_tables(cohort, progress=False)
    voi_stats = tables["voi_stats"]
    cycle_of = {("PA", f"tp{i}"): 1 if i <= 4 else 2 for i in range(1, 9)} | {("PC", "tp1"): 1, ("PC", "tp2"): 2}
    for (patient, timepoint), group in voi_stats[voi_stats.patient != "PB"].groupby(["patient", "timepoint"]):
        assert set(group["cycle"]) == {cycle_of[(patient, timepoint)]}
        assert set(group["nuclide"]) == {"Lu177"}
    chosen = tables["absorbed_dose"].query("selected").set_index(["patient", "cycle", "voi", "method"])
    totals = tables["absorbed_dose_total"].set_index(["patient", "voi", "method"])
    labels, texture = anatomy["PA"]
    for label, voi in NAMES.items():
        exact = exact_absorbed_dose_gy(voi, texture[labels == label].mean())
        for cycle in (1, 2):  # the same kinetics in both cycles, each hour counted from its own injection
            row = chosen.loc[("PA", cycle, voi, "mc")]
            assert row["n_timepoints"] == 4 and row["absorbed_dose_gy"] == pytest.approx(exact, rel=1e-4)
        total = totals.loc[("PA", voi, "mc")]
        assert total["absorbed_dose_gy"] == pytest.approx(2 * exact, rel=1e-4)
        assert total["cycles"] == "1,2" and total["n_cycles"] == 2
    hanscheid = chosen.loc[("PC", 1, "liver", "mc"), "absorbed_dose_gy"]
    assert chosen.loc[("PC", 2, "liver", "mc"), "model"] == "hanscheid"
    assert totals.loc[("PC", "liver", "mc"), "absorbed_dose_gy"] == pytest.approx(
        hanscheid + chosen.loc[("PC", 2, "liver", "mc"), "absorbed_dose_gy"], rel=1e-12
    )
    assert np.isnan(totals.loc[("PC", "liver", "mc"), "uncertainty_gy"])  # Hanscheid's has no statistical model
    assert totals.loc[("PB", "liver", "mc"), "cycles"] == "1"
    assert cohort.table_units("absorbed_dose_total")["absorbed_dose_gy"] == "Gy"
    assert len(cohort.absorbed_dose_total()) == len(totals)
