"""VOI absorbed-dose uncertainty: analytic propagation for the trapezoid, the calibration factor, a Monte Carlo check
of the count-noise propagation through a fit, and the counts attributed to a VOI."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import numpy as np
import pytest

from cohort_dosimetry.stats import fit_time_activity
from cohort_dosimetry.stats._time_integration import physical_decay_per_h
from cohort_dosimetry.stats._uncertainty import voi_counts, voi_dose_uncertainty

LN2 = np.log(2.0)


def test_count_noise_through_the_trapezoid_is_the_analytic_sum():
    hours = np.array([24.0, 96.0])  # two points: the trapezoid with physical tail is selected
    rates = np.array([2e-6, 1.2e-6])
    counts = np.array([4e6, 1e6])
    result = voi_dose_uncertainty(hours, rates, counts, 0.05)
    assert result.model == "trapezoid" and np.isnan(result.fit_gy)
    # D = 3600 (w1 r1 + w2 r2), w1 = t2 / 2, w2 = (t2 - t1) / 2 + 1 / l_p
    weights = np.array([96.0 / 2, 72.0 / 2 + 1 / physical_decay_per_h()])
    assert result.absorbed_dose_gy == pytest.approx(3600 * weights @ rates, rel=1e-12)
    expected = 3600 * np.sqrt(np.sum((weights * rates / np.sqrt(counts)) ** 2))
    assert result.counts_gy == pytest.approx(expected, rel=1e-6)
    assert result.random_gy == result.counts_gy
    assert result.calibration_gy == pytest.approx(0.05 * result.absorbed_dose_gy, rel=1e-12)
    assert result.total_gy == pytest.approx(np.hypot(result.counts_gy, result.calibration_gy), rel=1e-12)
    assert result.relative()["calibration"] == pytest.approx(0.05)


def test_single_time_point_count_noise_scales_the_dose():
    result = voi_dose_uncertainty([96.0], [1e-6], [2.5e5], 0.0)
    assert result.model == "hanscheid"
    assert result.counts_gy == pytest.approx(result.absorbed_dose_gy / 500.0, rel=1e-6)  # 1 / sqrt(2.5e5)
    assert result.total_gy == pytest.approx(result.counts_gy)


def test_systematic_factors_add_in_quadrature():
    hours = np.array([4.0, 24.0, 96.0, 168.0])
    rates = 3e-6 * np.exp(-LN2 / 60.0 * hours) * np.array([1.01, 0.98, 1.02, 0.99])
    result = voi_dose_uncertainty(hours, rates, [2e7, 1.2e7, 5e6, 2.5e6], 0.05, other_relative={"recovery": 0.10})
    assert result.other_gy["recovery"] == pytest.approx(0.10 * result.absorbed_dose_gy)
    expected = np.sqrt(result.random_gy**2 + result.calibration_gy**2 + result.other_gy["recovery"] ** 2)
    assert result.total_gy == pytest.approx(expected, rel=1e-12)
    assert result.random_gy == max(result.fit_gy, result.counts_gy)
    assert set(result.as_row()) >= {
        "uncertainty_fit_gy",
        "uncertainty_counts_gy",
        "uncertainty_calibration_gy",
        "uncertainty_recovery_gy",
        "uncertainty_total_gy",
    }


def test_count_noise_propagation_matches_monte_carlo_and_the_fit_estimates_the_same_scatter():
    """Mono-exponential at 6 time points with 3 % Poisson-like noise (N = 1111 counts per point): the spread of the
    refitted dose over noise realisations equals the propagated ``counts_gy``, and the fit's own (residual-based)
    uncertainty estimates the same variance -- which is why the two are not added."""
    rng = np.random.default_rng(7)
    hours = np.array([4.0, 24.0, 48.0, 96.0, 144.0, 168.0])
    clean = 3e-6 * np.exp(-LN2 / 60.0 * hours)
    counts = np.full(hours.size, 1 / 0.03**2)
    fit = dataclasses.replace(fit_time_activity(hours, clean), selected="mono_exp")
    propagated = voi_dose_uncertainty(hours, clean, counts, fit=fit).counts_gy
    doses, fit_variances = [], []
    for _ in range(300):
        noisy = clean * (1 + 0.03 * rng.standard_normal(hours.size))
        mono = fit_time_activity(hours, noisy).fits["mono_exp"]
        doses.append(mono.absorbed_dose_gy)
        fit_variances.append(mono.uncertainty_gy**2)
    assert np.std(doses, ddof=1) == pytest.approx(propagated, rel=0.15)
    assert np.sqrt(np.mean(fit_variances)) == pytest.approx(propagated, rel=0.15)


def test_voi_counts_from_a_calibration_or_total_counts():
    activity = np.array([400e6, 100e6])  # Bq
    calibration = SimpleNamespace(sensitivity_cps_per_mbq=10.0, acquisition_duration_s=1200.0)
    np.testing.assert_allclose(voi_counts(activity, calibration=calibration), [400 * 10 * 1200, 100 * 10 * 1200])
    np.testing.assert_allclose(voi_counts(activity, total_counts=[2e7, 4e6], total_activity_bq=[4e9, 2e9]), [2e6, 2e5])
    with pytest.raises(ValueError, match="counts calibration"):
        voi_counts(activity)
    with pytest.raises(ValueError, match="> 0"):
        voi_dose_uncertainty([24.0, 96.0], [1e-6, 5e-7], [1e6, 0.0])
