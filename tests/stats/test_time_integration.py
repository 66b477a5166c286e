"""Time integration: analytic curves, the selection rule, Hanscheid's formula and virtual patients' kinetics."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.integrate import quad

from cohort_dosimetry.stats import (
    NOT_INTEGRATED,
    absorbed_dose,
    absorbed_dose_total,
    fit_time_activity,
    hanscheid_absorbed_dose_gy,
)
from cohort_dosimetry.stats._time_integration import physical_decay_per_h

LN2 = np.log(2.0)
PROTOCOL_H = np.array([4.0, 24.0, 96.0, 168.0])  # the paper's 4 time points in the first week
DENSE_H = np.array([1.0, 4.0, 12.0, 24.0, 48.0, 96.0, 144.0, 192.0])


def bi_exp(t, a, washout_half_life_h, uptake_half_life_h):
    return a * (np.exp(-LN2 / washout_half_life_h * t) - np.exp(-LN2 / uptake_half_life_h * t))


def exact_dose_gy(curve) -> float:
    """Independent truth: adaptive quadrature of the dose-rate curve (Gy/s over hours) from 0 to infinity."""
    return quad(curve, 0, np.inf, limit=200)[0] * 3600.0


def test_physical_decay_is_lu177_from_icrp107():
    # Lu-177 half-life 6.647 d (ICRP-107; docs/physics.md).
    assert physical_decay_per_h() == pytest.approx(LN2 / (6.647 * 24), rel=1e-3)


@pytest.mark.parametrize(("washout_h", "uptake_h"), [(45.0, 1.0), (70.0, 3.0), (100.0, 12.0)])
def test_bi_exponential_curve_with_four_time_points_integrates_exactly(washout_h, uptake_h):
    curve = lambda t: bi_exp(t, 2e-6, washout_h, uptake_h)  # noqa: E731
    fit = fit_time_activity(PROTOCOL_H, curve(PROTOCOL_H))
    assert fit.selected == "bi_exp"
    assert "AIC" in fit.reason and "AICc is undefined" in fit.reason
    assert fit.absorbed_dose_gy == pytest.approx(exact_dose_gy(curve), rel=1e-4)
    np.testing.assert_allclose(fit.fits["bi_exp"].dose_rate(PROTOCOL_H), curve(PROTOCOL_H), rtol=1e-4)


def test_mono_exponential_curve_integrates_exactly_whichever_model_is_chosen():
    curve = lambda t: 3e-6 * np.exp(-LN2 / 60.0 * t)  # noqa: E731
    fit = fit_time_activity(PROTOCOL_H, curve(PROTOCOL_H))
    assert fit.fits["mono_exp"].absorbed_dose_gy == pytest.approx(exact_dose_gy(curve), rel=1e-6)
    assert fit.absorbed_dose_gy == pytest.approx(exact_dose_gy(curve), rel=1e-3)


@pytest.mark.parametrize("seed", range(5))
def test_aicc_picks_the_generating_model_on_clean_data(seed):
    """1 % noise on 8 time points, where AICc is defined for both fitted models."""
    rng = np.random.default_rng(seed)
    mono = 3e-6 * np.exp(-LN2 / 60.0 * DENSE_H)
    bi = bi_exp(DENSE_H, 3e-6, 60.0, 10.0)
    noisy_mono = mono * (1 + 0.01 * rng.standard_normal(DENSE_H.size))
    noisy_bi = bi * (1 + 0.01 * rng.standard_normal(DENSE_H.size))
    mono_fit, bi_fit = fit_time_activity(DENSE_H, noisy_mono), fit_time_activity(DENSE_H, noisy_bi)
    assert mono_fit.selected == "mono_exp" and mono_fit.reason.startswith("lowest AICc")
    assert bi_fit.selected == "bi_exp" and bi_fit.reason.startswith("lowest AICc")
    aicc = bi_fit.fits["bi_exp"].aicc
    rss = np.sum(((bi_fit.fits["bi_exp"].dose_rate(DENSE_H) - noisy_bi) / noisy_bi) ** 2)  # relative residuals
    n, p = DENSE_H.size, 3
    assert aicc == pytest.approx(n * np.log(rss / n) + 2 * p + 2 * p * (p + 1) / (n - p - 1), rel=1e-6)


def test_uncertainty_from_the_fit_covariance_matches_the_spread_over_noise_realisations():
    rng = np.random.default_rng(7)
    clean = 3e-6 * np.exp(-LN2 / 60.0 * DENSE_H)
    doses, reported = [], []
    for _ in range(100):
        fit = fit_time_activity(DENSE_H, clean * (1 + 0.03 * rng.standard_normal(DENSE_H.size))).fits["mono_exp"]
        doses.append(fit.absorbed_dose_gy)
        reported.append(fit.uncertainty_gy)
    assert np.median(reported) == pytest.approx(np.std(doses), rel=0.25)


def test_hanscheid_single_time_point_against_the_exact_integral():
    t = 96.0
    for effective_h in (40.0, 60.0, 96.0, 125.0):
        curve = lambda s, h=effective_h: 2e-6 * np.exp(-LN2 / h * s)  # noqa: E731
        fit = fit_time_activity([t], [curve(t)])
        assert fit.selected == "hanscheid" and np.isnan(fit.uncertainty_gy)
        # Expected ratio estimate/exact = 2 x exp(-x) / ln 2 with x = t ln2 / T: exact at T = t, within 10 %
        # for T between 0.41 t and 1.31 t.
        x = t * LN2 / effective_h
        ratio = fit.absorbed_dose_gy / exact_dose_gy(curve)
        assert ratio == pytest.approx(2 * x * np.exp(-x) / LN2, rel=1e-6)
        assert abs(ratio - 1) < 0.10
    assert hanscheid_absorbed_dose_gy(96.0, 1e-6) == pytest.approx(1e-6 * 2 * 96 / LN2 * 3600)


def test_single_time_point_outside_every_window_gives_no_dose_with_the_reason():
    # 24 h: before Hanscheid's 72-120 h window and before every class's Madsen window (kidney's starts at 67 h).
    for voi_class in (None, "kidney_left", "liver", "lesion_2", "lung"):
        fit = fit_time_activity([24.0], [1e-6], voi_class=voi_class)
        assert fit.selected == NOT_INTEGRATED and np.isnan(fit.absorbed_dose_gy)
        assert (
            "no single-time-point method applies" in fit.reason and "outside Hanscheid's window 72-120 h" in fit.reason
        )
    table = absorbed_dose(
        pd.DataFrame(
            [
                {"patient": "P1", "voi": "liver", "method": "mc", "hours_post_injection": 24.0, "mean": 1e-6},
                {"patient": "P2", "voi": "liver", "method": "mc", "hours_post_injection": 96.0, "mean": 1e-6},
            ]
        )
    ).set_index("patient")
    assert table.loc["P1", "model"] == NOT_INTEGRATED and bool(table.loc["P1", "selected"])
    assert np.isnan(table.loc["P1", "absorbed_dose_gy"]) and "Madsen's window" in table.loc["P1", "reason"]
    assert table.loc["P2", "model"] == "hanscheid"
    assert np.isnan(absorbed_dose_total(table.reset_index()).set_index("patient").loc["P1", "absorbed_dose_gy"])


def test_single_time_point_outside_hanscheids_window_uses_the_class_prior_inside_madsens():
    # Kidney prior 50 h (Sandstrom 2013), Madsen window 67-75 h: a scan at 70 h. Independent truth: the exact
    # integral of a mono-exponential with the prior's half-life through the measured point, r(t) exp(l t) / l.
    t, rate, prior_h = 70.0, 1e-6, 50.0
    fit = fit_time_activity([t], [rate], voi_class="kidney_right")
    assert fit.selected == "madsen" and "Madsen" in fit.reason
    curve = lambda s: rate * np.exp(-LN2 / prior_h * (s - t))  # noqa: E731
    assert fit.absorbed_dose_gy == pytest.approx(exact_dose_gy(curve), rel=1e-9)
    model_curve = fit.fits["madsen"].dose_rate
    assert exact_dose_gy(model_curve) == pytest.approx(fit.absorbed_dose_gy, rel=1e-9)
    # Without a class prior (or for another nuclide: the priors are Lu-177 DOTATATE's) there is no dose at 70 h.
    assert fit_time_activity([t], [rate]).selected == NOT_INTEGRATED
    assert fit_time_activity([t], [rate], "Y90", voi_class="kidney_right").selected == NOT_INTEGRATED


def test_trapezoid_with_physical_tail_when_no_fit_can_be_judged():
    l_p = physical_decay_per_h()
    fit = fit_time_activity([24.0, 48.0], [2e-6, 1e-6])
    assert fit.selected == "trapezoid"
    assert "no fitted model has a residual degree of freedom" in fit.reason
    # Hand-worked: triangle 0-24 h (24 * 2e-6 / 2), trapezoid 24-48 h (24 * 1.5e-6), tail 1e-6 / l_p; h -> s.
    expected = (24 * 2e-6 / 2 + 24 * 1.5e-6 + 1e-6 / l_p) * 3600
    assert fit.absorbed_dose_gy == pytest.approx(expected, rel=1e-12)
    curve = fit.fits["trapezoid"].dose_rate
    by_quadrature = (quad(curve, 0, 48, points=[24])[0] + quad(curve, 48, np.inf)[0]) * 3600
    assert by_quadrature == pytest.approx(expected, rel=1e-9)


def test_three_time_points_use_aic_for_the_only_judgeable_model():
    fit = fit_time_activity([4.0, 24.0, 96.0], 1e-6 * np.exp(-LN2 / 50 * np.array([4.0, 24.0, 96.0])))
    assert fit.selected == "mono_exp"
    assert "bi_exp: passes through all 3 points" in fit.reason


@pytest.mark.parametrize(
    ("hours", "rates", "message"),
    [
        ([], [], "non-empty"),
        ([4, 24], [1e-6], "matching"),
        ([4, 4], [1e-6, 2e-6], "distinct"),
        ([0, 24], [1e-6, 2e-6], "> 0"),
        ([4, 24], [np.nan, 1e-6], "non-finite"),
    ],
)
def test_bad_curves_are_clear_errors(hours, rates, message):
    with pytest.raises(ValueError, match=message):
        fit_time_activity(hours, rates)


def test_absorbed_dose_table_has_one_selected_row_per_curve():
    hours = PROTOCOL_H
    rows = []
    for patient, washout in (("P1", 50.0), ("P2", 80.0)):
        for hour, rate in zip(hours, bi_exp(hours, 1e-6, washout, 2.0)):
            rows.append(
                {"patient": patient, "voi": "kidney_left", "method": "mc", "hours_post_injection": hour, "mean": rate}
            )
    rows.append({"patient": "P3", "voi": "lesion_1", "method": "mc", "hours_post_injection": 96.0, "mean": 1e-6})
    rows.append({"patient": "P3", "voi": "lesion_2", "method": "mc", "hours_post_injection": 96.0, "mean": np.nan})
    table = absorbed_dose(pd.DataFrame(rows))
    chosen = table[table.selected].set_index("patient")
    assert list(chosen.index) == ["P1", "P2", "P3"]  # the all-NaN curve gets no row
    assert chosen.loc["P3", "model"] == "hanscheid" and chosen.loc["P3", "n_timepoints"] == 1
    for patient, washout in (("P1", 50.0), ("P2", 80.0)):
        exact = exact_dose_gy(lambda t, w=washout: bi_exp(t, 1e-6, w, 2.0))
        assert chosen.loc[patient, "absorbed_dose_gy"] == pytest.approx(exact, rel=1e-4)
        assert chosen.loc[patient, "n_timepoints"] == 4
    assert table.groupby(["patient", "voi", "method"]).selected.sum().eq(1).all()


@pytest.mark.parametrize("seed", [2, 3])
def test_virtual_patients_kidneys_and_large_lesions_within_5_percent(seed):
    """Synthetic virtual patients (no patient data) with the phantoms' known compartment kinetics.

    Each VOI's mean dose-rate at the 4 protocol times is built from the true activity (local deposition of the
    electron energy, ICRP-107), optionally blurred by a SPECT-like Gaussian (FWHM 10 mm) so that neighbouring
    compartments with other kinetics spill in. Truth: the analytic integral of every compartment's uptake-washout
    model, weighted the same way. Kidneys and lesions of at least 20 mL must be within 5 %.
    """
    from scipy.ndimage import gaussian_filter

    from cohort_dosimetry.grid import Grid
    from cohort_dosimetry.phantoms import compartment_activity_bq, make_anatomy
    from cohort_dosimetry.physics import nuclide
    from cohort_dosimetry.stats import VoiIndex

    anatomy = make_anatomy(seed, Grid((65, 64, 64), (6.0, 7.82, 7.82)))  # the compact field of view, 2x coarser
    spacing = np.array(anatomy.attrs["spacing_mm"])
    voxel_ml = float(np.prod(spacing)) / 1000.0
    # Gy/s per (Bq/mL)/(g/mL): x 1000 g/kg x electron energy per decay (ICRP-107, MeV) x 1.602176634e-13 J/MeV
    # (CODATA 2018, exact).
    gy_s_per_bq_g = 1000.0 * nuclide("Lu177").energy_per_decay_mev("electron") * 1.602176634e-13
    index = VoiIndex(anatomy["labels"], anatomy["labels"].attrs["names"])
    density = anatomy["density"].values
    activity_bq = compartment_activity_bq(anatomy, PROTOCOL_H).values  # (timepoint, compartment)
    # The uptake-washout model's integral (phantoms._kinetics docstring), written out here as the truth.
    decay = LN2 / (nuclide("Lu177").half_life_s / 3600.0)
    k_up = LN2 / anatomy["uptake_half_life_h"].values
    k_wash = LN2 / anatomy["washout_half_life_h"].values
    cumulated_bq_s = (
        anatomy["fraction"].values
        * anatomy.attrs["administered_activity_bq"]
        * (1 / (k_wash + decay) - 1 / (k_up + decay))
        * 3600.0
    )
    volume_ml = index.n_voxels * voxel_ml
    checked = [
        j
        for j, name in enumerate(index.names)
        if name.startswith("kidney") or (name.startswith("lesion") and volume_ml[j] >= 20.0)
    ]
    checked_names = [index.names[j] for j in checked]
    assert {"kidney_left", "kidney_right"} <= set(checked_names) and any(n.startswith("lesion") for n in checked_names)
    for fwhm_mm in (0.0, 10.0):
        weights = []
        for shape in anatomy["compartments"].values:
            if fwhm_mm:
                shape = gaussian_filter(shape, fwhm_mm / 2.3548 / spacing)
            weights.append(index.sums(index.values(shape / voxel_ml / density * gy_s_per_bq_g)) / index.n_voxels)
        weights = np.array(weights)  # (compartment, voi): mean dose-rate per Bq in the compartment
        curves, exact = activity_bq @ weights, cumulated_bq_s @ weights  # (timepoint, voi) Gy/s; (voi,) Gy
        for j in checked:
            fit = fit_time_activity(PROTOCOL_H, curves[:, j])
            assert fit.absorbed_dose_gy == pytest.approx(exact[j], rel=0.05), (index.names[j], fwhm_mm, fit.reason)


def _curve_rows(patient, cycle, hours, rates, nuclide="Lu177", voi="kidney_left", first_label=1):
    return [
        {
            "patient": patient,
            "timepoint": f"tp{first_label + k}",
            "cycle": cycle,
            "voi": voi,
            "method": "mc",
            "hours_post_injection": hour,
            "mean": rate,
            "nuclide": nuclide,
        }
        for k, (hour, rate) in enumerate(zip(hours, rates))
    ]


def test_each_cycle_is_its_own_curve_and_the_total_is_their_sum():
    hours = PROTOCOL_H
    first, second = bi_exp(hours, 1e-6, 50.0, 2.0), bi_exp(hours, 0.8e-6, 60.0, 2.0)
    rows = _curve_rows("P1", 1, hours, first) + _curve_rows("P1", 2, hours, second, first_label=5)
    table = absorbed_dose(pd.DataFrame(rows))  # the same hours in both cycles: one curve each, not one with repeats
    chosen = table[table.selected].set_index("cycle")
    assert list(chosen.index) == [1, 2] and (chosen["n_timepoints"] == 4).all()
    exact = {
        1: exact_dose_gy(lambda t: bi_exp(t, 1e-6, 50.0, 2.0)),
        2: exact_dose_gy(lambda t: bi_exp(t, 0.8e-6, 60.0, 2.0)),
    }
    for cycle in (1, 2):
        assert chosen.loc[cycle, "absorbed_dose_gy"] == pytest.approx(exact[cycle], rel=1e-4)
    total = absorbed_dose_total(table).set_index(["patient", "voi", "method"]).loc[("P1", "kidney_left", "mc")]
    assert total["absorbed_dose_gy"] == pytest.approx(exact[1] + exact[2], rel=1e-4)
    assert total["uncertainty_gy"] == pytest.approx(np.hypot(*chosen["uncertainty_gy"]), rel=1e-12, nan_ok=True)
    assert total["n_cycles"] == 2 and total["cycles"] == "1,2" and total["reason"] == ""


def test_a_curve_that_cannot_be_integrated_gets_a_row_naming_its_scans_and_the_others_go_on():
    good = bi_exp(PROTOCOL_H, 1e-6, 50.0, 2.0)
    rows = (
        _curve_rows("P1", 1, [24.0, 96.0, 96.0], [2e-6, 1e-6, 1.1e-6])  # two reconstructions at 96 h
        + _curve_rows("P1", 2, PROTOCOL_H, good, first_label=4)
        + _curve_rows("P2", 1, PROTOCOL_H[:2], good[:2], nuclide="Lu177")
        + _curve_rows("P2", 1, PROTOCOL_H[2:], good[2:], nuclide="Tc99m", first_label=3)
        + _curve_rows("P3", 1, PROTOCOL_H, good, nuclide="Y90")
    )
    table = absorbed_dose(pd.DataFrame(rows))
    chosen = table[table.selected].set_index(["patient", "cycle"])
    assert table.groupby(["patient", "cycle", "voi", "method"]).selected.sum().eq(1).all()
    doubled = chosen.loc[("P1", 1)]
    assert doubled["model"] == NOT_INTEGRATED and np.isnan(doubled["absorbed_dose_gy"])
    assert doubled["n_timepoints"] == 3
    assert "distinct" in doubled["reason"] and "P1/tp2 (96 h), P1/tp3 (96 h)" in doubled["reason"]
    mixed = chosen.loc[("P2", 1)]
    assert mixed["model"] == NOT_INTEGRATED and "different nuclides ['Lu177', 'Tc99m']" in mixed["reason"]
    # the other curves go on, each with its own nuclide's physical decay
    assert chosen.loc[("P1", 2), "absorbed_dose_gy"] == pytest.approx(
        exact_dose_gy(lambda t: bi_exp(t, 1e-6, 50.0, 2.0)), rel=1e-4
    )
    y90 = fit_time_activity(PROTOCOL_H, good, "Y90")
    assert chosen.loc[("P3", 1), "absorbed_dose_gy"] == pytest.approx(y90.absorbed_dose_gy, rel=1e-12)
    assert physical_decay_per_h("Y90") != pytest.approx(physical_decay_per_h("Lu177"), rel=0.1)
    totals = absorbed_dose_total(table).set_index("patient")
    assert np.isnan(totals.loc["P1", "absorbed_dose_gy"]) and totals.loc["P1", "cycles"] == "1,2"
    assert totals.loc["P1", "reason"].startswith("cycle 1: not integrated")
    assert totals.loc["P3", "absorbed_dose_gy"] == pytest.approx(y90.absorbed_dose_gy, rel=1e-12)


def test_a_total_is_nan_when_a_cycle_has_no_curve_of_the_voi():
    good = bi_exp(PROTOCOL_H, 1e-6, 50.0, 2.0)
    rows = (
        _curve_rows("P1", 1, PROTOCOL_H, good)
        + _curve_rows("P1", 1, PROTOCOL_H, good, voi="liver")
        + _curve_rows("P1", 2, PROTOCOL_H, good, voi="liver", first_label=5)
    )
    totals = absorbed_dose_total(absorbed_dose(pd.DataFrame(rows))).set_index("voi")
    assert np.isnan(totals.loc["kidney_left", "absorbed_dose_gy"])
    assert totals.loc["kidney_left", "reason"] == "cycle 2: no mc curve of kidney_left"
    assert totals.loc["liver", "absorbed_dose_gy"] == pytest.approx(
        2 * exact_dose_gy(lambda t: bi_exp(t, 1e-6, 50.0, 2.0)), rel=1e-4
    )
