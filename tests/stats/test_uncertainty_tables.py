"""The absorbed dose's uncertainty components in the cohort tables: the count noise of a trapezoid against its
analytic sum, the calibration, the reasons for what is missing, the sum over cycles, and the run options reaching the
table (synthetic rows and a synthetic test cohort, not patient data).

Independent truth: the trapezoid's weights written out here, the Lu-177 half-life of ICRP-107 (6.647 d) typed here,
Poisson counts N = A (MBq) x sensitivity x duration, and the single-time-point dose's proportionality to its one
dose-rate (its count noise is D / sqrt(N)).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cohort_dosimetry import pipeline
from cohort_dosimetry.cli import main
from cohort_dosimetry.stats import absorbed_dose, absorbed_dose_total, write_report
from tests.stats._cohort_factory import SPACING_MM, make_cohort

L_PHYSICAL_PER_H = np.log(2.0) / (6.647 * 24.0)  # Lu-177, ICRP-107
SENSITIVITY = 9.0  # cps/MBq


def _rows(voi: str, cycle: int, durations_s, activities_bq, hours=(24.0, 96.0), rates=(2e-6, 1.2e-6)) -> list[dict]:
    return [
        {
            "patient": "PX",
            "timepoint": f"tp{k + 1 + 2 * (cycle - 1)}",
            "cycle": cycle,
            "hours_post_injection": h,
            "nuclide": "Lu177",
            "voi": voi,
            "method": "mc",
            "mean": r,
            "activity_bq": a,
            "acquisition_duration_s": t,
        }
        for k, (h, r, a, t) in enumerate(zip(hours, rates, activities_bq, durations_s))
    ]


def test_count_noise_of_a_trapezoid_is_the_analytic_sum_and_what_is_missing_is_named():
    activities, durations = np.array([40e6, 25e6]), np.array([3600.0, 2400.0])  # Bq; s
    rows = _rows("liver", 1, durations, activities) + _rows("kidney_left", 1, [3600.0, np.nan], activities)
    table = absorbed_dose(pd.DataFrame(rows), sensitivity_cps_per_mbq=SENSITIVITY, calibration_uncertainty=0.05)
    chosen = table.query("selected").set_index("voi")
    liver = chosen.loc["liver"]
    assert liver["model"] == "trapezoid"  # two time points
    rates, hours = np.array([2e-6, 1.2e-6]), np.array([24.0, 96.0])
    weights = np.array([hours[1] / 2, (hours[1] - hours[0]) / 2 + 1 / L_PHYSICAL_PER_H])  # h; D = 3600 w . r
    counts = activities / 1e6 * SENSITIVITY * durations
    assert liver["absorbed_dose_gy"] == pytest.approx(3600 * weights @ rates, rel=1e-9)
    expected_counts_gy = 3600 * np.sqrt(np.sum((weights * rates) ** 2 / counts))
    assert liver["uncertainty_counts_gy"] == pytest.approx(expected_counts_gy, rel=1e-6)
    assert np.isnan(liver["uncertainty_fit_gy"])  # the trapezoid has no statistical model
    assert liver["uncertainty_calibration_gy"] == pytest.approx(0.05 * liver["absorbed_dose_gy"], rel=1e-12)
    assert liver["uncertainty_gy"] == pytest.approx(np.hypot(expected_counts_gy, 0.05 * liver["absorbed_dose_gy"]))
    kidney = chosen.loc["kidney_left"]
    assert np.isnan(kidney["uncertainty_counts_gy"]) and np.isnan(kidney["uncertainty_gy"])
    assert "no acquisition duration in the NM header of PX/tp2" in kidney["uncertainty_note"]


def test_without_the_options_nothing_is_claimed_and_the_total_is_the_fit():
    hours = np.array([4.0, 24.0, 96.0, 168.0])
    rates = 3e-6 * np.exp(-np.log(2) / 60.0 * hours) * np.array([1.01, 0.98, 1.02, 0.99])
    rows = _rows("liver", 1, [3600.0] * 4, [4e7] * 4, hours=hours, rates=rates)
    chosen = absorbed_dose(pd.DataFrame(rows)).query("selected").iloc[0]
    assert chosen["model"] == "mono_exp" and np.isfinite(chosen["uncertainty_fit_gy"])
    assert np.isnan(chosen["uncertainty_counts_gy"]) and np.isnan(chosen["uncertainty_calibration_gy"])
    assert chosen["uncertainty_gy"] == chosen["uncertainty_fit_gy"]
    assert "no camera sensitivity given" in chosen["uncertainty_note"]
    assert "calibration uncertainty not given" in chosen["uncertainty_note"]
    with pytest.raises(ValueError, match="sensitivity must be positive"):
        absorbed_dose(pd.DataFrame(rows), sensitivity_cps_per_mbq=0.0)


def test_over_cycles_the_count_noise_adds_in_quadrature_and_the_calibration_linearly():
    activities, durations = [40e6, 25e6], [3600.0, 2400.0]
    rows = _rows("liver", 1, durations, activities) + _rows("liver", 2, durations, activities)
    table = absorbed_dose(pd.DataFrame(rows), sensitivity_cps_per_mbq=SENSITIVITY, calibration_uncertainty=0.05)
    chosen = table.query("selected").set_index("cycle")
    total = absorbed_dose_total(table).iloc[0]
    counts_gy, calibration_gy = chosen["uncertainty_counts_gy"], chosen["uncertainty_calibration_gy"]
    expected = np.sqrt(np.sum(counts_gy**2) + np.sum(calibration_gy) ** 2)
    assert total["uncertainty_gy"] == pytest.approx(expected, rel=1e-12)
    assert total["uncertainty_gy"] > np.sqrt(np.sum(chosen["uncertainty_gy"] ** 2))  # more than all in quadrature


def test_the_stats_options_reach_the_tables_and_the_flow_path_gives_the_same(tmp_path):
    cohort, anatomy = make_cohort(tmp_path / "cohort", acquisition_duration_s=1800.0)
    argv = ["stats", str(cohort.path), "--quiet", "--sensitivity-cps-per-mbq", "9", "--calibration-uncertainty"]
    with pytest.raises(SystemExit):  # a percentage given as a number is refused
        main([*argv, "5"])
    assert main([*argv, "0.05"]) == 0
    voi_stats = cohort.voi_stats()
    labels, _ = anatomy["PC"]
    liver_bq = np.count_nonzero(labels == 4) * np.prod(SPACING_MM) / 1000.0 * 1.0  # 1 Bq/mL in every voxel
    activity = voi_stats.query("patient == 'PC' and voi == 'liver'")["activity_bq"]
    assert len(activity) == 3 and activity.to_numpy() == pytest.approx(liver_bq, rel=1e-12)  # one per method
    assert (voi_stats["acquisition_duration_s"] == 1800.0).all()
    chosen = cohort.absorbed_dose().query("selected").set_index(["patient", "cycle", "voi", "method"])
    dosed = chosen[np.isfinite(chosen["absorbed_dose_gy"])]
    np.testing.assert_allclose(dosed["uncertainty_calibration_gy"], 0.05 * dosed["absorbed_dose_gy"], rtol=1e-12)
    assert np.isfinite(dosed["uncertainty_counts_gy"]).all()
    # one time point: the dose is proportional to its dose-rate, so its count noise is D / sqrt(N)
    single = dosed.loc[("PC", 1, "liver", "mc")]
    n_counts = liver_bq / 1e6 * 9.0 * 1800.0
    assert single["model"] == "hanscheid"
    assert single["uncertainty_counts_gy"] == pytest.approx(single["absorbed_dose_gy"] / np.sqrt(n_counts), rel=1e-6)
    assert single["uncertainty_gy"] == pytest.approx(
        np.hypot(single["uncertainty_counts_gy"], single["uncertainty_calibration_gy"]), rel=1e-12
    )
    text = write_report(cohort).read_text(encoding="utf-8")
    assert "the relative calibration uncertainty given to the run, 5 %" in text
    assert f"estimated for {len(dosed)} of {len(dosed)} chosen doses" in text
    # the flows' path: per-scan statistics, then the tables with the same options (patient PC's one scan: cheap)
    pipeline.write_cohort_tables(cohort.path, [pipeline.scan_statistics(cohort.path, "PC", "tp1")], [], 9.0, 0.05)
    again = cohort.absorbed_dose().query("selected").set_index(["patient", "cycle", "voi", "method"])
    columns = ["absorbed_dose_gy", "uncertainty_gy", "uncertainty_counts_gy", "uncertainty_calibration_gy"]
    pd.testing.assert_frame_equal(again[columns], chosen.loc[["PC"], columns])


def test_the_run_options_become_flow_parameters():
    from cohort_dosimetry.cli import build_parser
    from cohort_dosimetry.commands.run import flow_parameters

    argv = ["run", "in", "out", "--sensitivity-cps-per-mbq", "7.5"]
    args = build_parser(argv).parse_args(argv)
    parameters = flow_parameters(args)
    assert parameters["sensitivity_cps_per_mbq"] == 7.5 and parameters["calibration_uncertainty"] is None
