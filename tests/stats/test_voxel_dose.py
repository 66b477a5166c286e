"""Voxel-level time integration: analytic curves, the tail rules, linearity against the VOI-level integration,
per-VOI dose statistics, and the agreement with the VOI-level result on a synthetic virtual patient."""

from __future__ import annotations

import numpy as np
import pytest

from cohort_dosimetry.grid import Grid
from cohort_dosimetry.stats import VoiIndex, fit_time_activity
from cohort_dosimetry.stats._time_integration import physical_decay_per_h
from cohort_dosimetry.stats._voxel_dose import (
    RULE_CODES,
    compare_with_voi_integration,
    dose_statistics,
    dose_volume_histogram,
    integrate_curve,
    integrate_voxels,
)

LN2 = np.log(2.0)
PROTOCOL_H = np.array([4.0, 24.0, 96.0, 168.0])
#: Local deposition of Lu-177's electron energy, 147.9 keV per decay (ICRP-107, docs/physics.md), in soft tissue of
#: 1.04 g/cm3: Gy/s per Bq/mL. Dose-rates proportional to activity stand in for DVK here (linear in the activity).
GY_S_PER_BQ_ML = 147.9e3 * 1.602176634e-19 / 1.04e-3


def trapezoid_from_origin_h(t, r) -> float:
    """Independent truth of the trapezoid part: numpy's trapezoid through (0, 0) and the points."""
    return float(np.trapezoid(np.concatenate([[0.0], r]), np.concatenate([[0.0], t])))


def as_voxels(curves: np.ndarray) -> np.ndarray:
    """(t, m) curves -> (t, 1, 1, m) dose-rate maps."""
    return curves[:, None, None, :]


def test_mono_exponential_voxels_get_the_exact_tail_and_trapezoid():
    half_lives = np.array([20.0, 50.0, 80.0, 150.0])  # all faster than the physical 159.5 h
    amplitude = np.array([1e-6, 3e-6, 2e-6, 5e-7])
    rates = LN2 / half_lives
    curves = amplitude * np.exp(-np.outer(PROTOCOL_H, rates))
    result = integrate_voxels(as_voxels(curves), PROTOCOL_H)
    assert np.all(result.rule == RULE_CODES["fitted_tail"])
    np.testing.assert_allclose(result.tail_rate_per_h.ravel(), rates, rtol=1e-6)
    # tail = exact integral of a e^{-l t} from t_n to infinity
    expected = [(trapezoid_from_origin_h(PROTOCOL_H, c) + c[-1] / k) * 3600 for c, k in zip(curves.T, rates)]
    np.testing.assert_allclose(result.dose_gy.ravel(), expected, rtol=1e-6)
    assert result.counts["fitted_tail"] == 4 and result.dose_gy.dtype == np.float32


def test_dense_sampling_converges_to_the_exact_integral():
    """Mono-exponential from t = 0: with dense points the trapezoid + fitted tail tends to a / l."""
    t = np.linspace(0.01, 400.0, 4000)
    rate = LN2 / 60.0
    curve = 2e-6 * np.exp(-rate * t)
    dose, rule, fitted_rate = integrate_curve(t, curve)
    assert rule == "fitted_tail" and fitted_rate == pytest.approx(rate, rel=1e-6)
    # the error left: the first 0.01 h start from (0, 0) instead of (0, a), a * 0.01 / 2 (5.8e-5 relative)
    exact = 2e-6 / rate * 3600
    assert dose == pytest.approx(exact - 2e-6 * 0.01 / 2 * 3600, rel=1e-5)
    assert dose == pytest.approx(exact, rel=1e-4)


def test_rising_or_slow_last_points_fall_back_to_the_physical_floor():
    l_p = physical_decay_per_h()
    rising = np.array([1e-6, 2e-6, 3e-6, 4e-6])
    slow = 1e-6 * np.exp(-0.5 * l_p * PROTOCOL_H)  # decreasing but slower than physical decay
    zero_tail = np.array([1e-6, 5e-7, 0.0, 0.0])
    not_finite = np.array([1e-6, np.nan, 1e-7, 1e-8])
    result = integrate_voxels(as_voxels(np.stack([rising, slow, zero_tail, not_finite], axis=1)), PROTOCOL_H)
    names = [
        "physical_tail_not_decreasing",
        "physical_tail_slower_than_decay",
        "physical_tail_nonpositive",
        "not_finite",
    ]
    assert result.rule.ravel().tolist() == [RULE_CODES[name] for name in names]
    for i, curve in enumerate([rising, slow, zero_tail]):
        expected = (trapezoid_from_origin_h(PROTOCOL_H, curve) + curve[-1] / l_p) * 3600
        assert result.dose_gy.ravel()[i] == pytest.approx(expected, rel=1e-6)
    assert np.isnan(result.dose_gy.ravel()[3])
    assert result.counts == {
        "not_finite": 1,
        "fitted_tail": 0,
        "physical_tail_not_decreasing": 1,
        "physical_tail_slower_than_decay": 1,
        "physical_tail_nonpositive": 1,
        "physical_tail_requested": 0,
    }


def test_only_the_last_points_decide_the_tail():
    """An uptake phase at 4 h does not stop the fit: with 4 scans the tail is fitted to the last 3."""
    curve = 3e-6 * (np.exp(-LN2 / 50.0 * PROTOCOL_H) - np.exp(-LN2 / 2.0 * PROTOCOL_H))
    assert curve[0] < curve[1]
    result = integrate_voxels(as_voxels(curve[:, None]), PROTOCOL_H)
    assert result.tail_points == 3 and result.rule.ravel()[0] == RULE_CODES["fitted_tail"]


def test_linearity_mean_of_voxels_equals_integral_of_mean_curve_when_rules_agree(rng):
    # Voxels of one shape (one effective half-life) with random amplitudes: same fitted rate everywhere.
    shape = np.exp(-LN2 / 70.0 * PROTOCOL_H) - np.exp(-LN2 / 1.5 * PROTOCOL_H)
    curves = np.outer(shape, rng.uniform(0.2, 5.0, 500) * 1e-6)
    result = integrate_voxels(as_voxels(curves), PROTOCOL_H)
    assert np.all(result.rule == RULE_CODES["fitted_tail"])
    assert result.dose_gy.mean(dtype=np.float64) == pytest.approx(
        integrate_curve(PROTOCOL_H, curves.mean(1))[0], rel=1e-6
    )
    # Voxels of any shapes, all with the physical tail: the mean equals the VOI-level trapezoid exactly.
    mixed = rng.uniform(0.0, 1.0, (4, 500)) * 1e-6
    physical = integrate_voxels(as_voxels(mixed), PROTOCOL_H, tail="physical")
    voi_level = fit_time_activity(PROTOCOL_H, mixed.mean(1)).fits["trapezoid"].absorbed_dose_gy
    assert physical.dose_gy.mean(dtype=np.float64) == pytest.approx(voi_level, rel=1e-6)


def test_mixed_rules_stay_within_the_tail_bound(rng):
    """Default rule on mixed voxels: 0 <= trapezoid(mean curve) - mean dose <= F (module docstring)."""
    rates = LN2 / rng.uniform(30.0, 140.0, 400)
    curves = np.exp(-np.outer(PROTOCOL_H, rates)) * rng.uniform(0.5, 2.0, 400) * 1e-6
    curves[:, :150] *= 1 + 0.4 * rng.standard_normal((4, 150))  # noisy voxels, some of them rising
    labels = np.ones((1, 1, 400), dtype=np.int16)
    result = integrate_voxels(as_voxels(curves), PROTOCOL_H)
    assert 0 < result.counts["fitted_tail"] < 400
    table = compare_with_voi_integration(as_voxels(curves), PROTOCOL_H, result, labels, {1: "voi"})
    row = table.iloc[0]
    difference = row.voi_trapezoid_gy - row.voxel_mean_gy
    assert 0 <= difference <= row.tail_bound_gy * (1 + 1e-6)
    assert row.within_tolerance


def test_integration_is_independent_of_slab_size_and_time_order(rng):
    maps = rng.uniform(0.0, 1e-6, (4, 7, 5, 6)).astype(np.float32)
    whole = integrate_voxels(maps, PROTOCOL_H)
    slabs = integrate_voxels(maps[::-1], PROTOCOL_H[::-1], slab_voxels=31)  # 1 slice per slab, reversed times
    np.testing.assert_array_equal(whole.dose_gy, slabs.dose_gy)
    np.testing.assert_array_equal(whole.rule, slabs.rule)


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match=">= 2 time points"):
        integrate_voxels(np.ones((1, 2, 2, 2)), [96.0])
    with pytest.raises(ValueError, match="one time per"):
        integrate_voxels(np.ones((3, 2, 2, 2)), PROTOCOL_H)
    with pytest.raises(ValueError, match="distinct"):
        integrate_voxels(np.ones((2, 2, 2, 2)), [24.0, 24.0])


def test_dose_statistics_follow_the_drx_convention(rng):
    dose = rng.gamma(2.0, 3.0, (6, 7, 8)).astype(np.float32)
    labels = rng.integers(0, 3, dose.shape).astype(np.int16)
    names = {1: "liver", 2: "kidney_left", 3: "spleen"}  # spleen: empty
    table = dose_statistics(dose, labels, names, (2.0, 2.0, 2.0)).set_index("voi")
    for label, name in [(1, "liver"), (2, "kidney_left")]:
        d = dose[labels == label].astype(np.float64)
        assert table.loc[name, "mean"] == pytest.approx(d.mean(), rel=1e-9)
        assert table.loc[name, "volume_ml"] == pytest.approx(d.size * 8e-3)
        for x in (2, 50, 98):  # the minimum dose of the hottest x %
            assert table.loc[name, f"d{x}"] == -np.quantile(-d, x / 100, method="inverted_cdf")
            assert np.mean(d >= table.loc[name, f"d{x}"]) >= x / 100
    assert table.loc["spleen", "n_voxels"] == 0 and np.isnan(table.loc["spleen", "d50"])
    dvh = dose_volume_histogram(dose, labels, names, np.linspace(0, 40, 81))
    assert dvh.dims == ("voi", "dose_gy")
    assert float(dvh.sel(voi="liver", dose_gy=0.0)) == 1.0
    d50 = table.loc["liver", "d50"]
    assert float(dvh.sel(voi="liver").where(dvh.dose_gy <= d50, drop=True).min()) >= 0.5


@pytest.fixture(scope="module")
def virtual_patient():
    from cohort_dosimetry.phantoms import make_virtual_patient

    return make_virtual_patient(3, Grid((44, 40, 40), (6.0, 12.5, 12.5)))


@pytest.mark.parametrize("activity", ["activity_true", "activity"])
def test_virtual_patient_voxel_mean_agrees_with_voi_level_integration(virtual_patient, activity):
    """Synthetic virtual patient, no motion, dose-rate proportional to activity: the stated tolerances hold."""
    hours = virtual_patient.hours_post_injection.values
    rates = virtual_patient[activity].values * GY_S_PER_BQ_ML
    index = VoiIndex.from_labels(virtual_patient.labels)
    # 1. Physical tail everywhere: exact (float32 rounding).
    physical = integrate_voxels(rates, hours, tail="physical")
    table = compare_with_voi_integration(rates, hours, physical, index=index)
    np.testing.assert_allclose(table.voxel_mean_gy, table.voi_trapezoid_gy, rtol=1e-5)
    assert (table.n_fitted_tail == 0).all()
    # 2 and 3. Default rule: within F of the VOI-level trapezoid, within F + |selected - trapezoid| of the selection.
    result = integrate_voxels(rates, hours)
    table = compare_with_voi_integration(rates, hours, result, index=index)
    assert table.within_tolerance.all(), table
    assert (table.voi_trapezoid_gy >= table.voxel_mean_gy * (1 - 1e-5)).all()
    assert sum(result.counts.values()) == rates[0].size
