"""Single-time-point absorbed dose: Hänscheid's and Madsen's formulas on analytic mono-exponentials, their accuracy
windows, and the choice between them."""

from __future__ import annotations

import numpy as np
import pytest

from cohort_dosimetry.stats._single_timepoint import (
    HANSCHEID_WINDOW_H,
    PRIORS,
    HalfLifePrior,
    hanscheid_accuracy_band_h,
    hanscheid_ratio,
    madsen_ratio,
    madsen_window_h,
    single_timepoint_dose,
)

LN2 = np.log(2.0)


def mono(amplitude_gy_s: float, half_life_h: float):
    """A mono-exponential dose-rate curve and its exact integral (Gy)."""
    rate = LN2 / half_life_h
    return (lambda t: amplitude_gy_s * np.exp(-rate * t)), amplitude_gy_s / rate * 3600.0


@pytest.mark.parametrize("hours", [72.0, 96.0, 120.0])
def test_hanscheid_is_exact_when_the_effective_half_life_equals_the_scan_time(hours):
    curve, exact = mono(2e-6, hours)
    dose, method, reason = single_timepoint_dose(hours, curve(hours))
    assert method == "hanscheid" and "Hanscheid" in reason
    assert dose == pytest.approx(exact, rel=1e-12)


def test_hanscheid_accuracy_band_is_041_to_131_times_the_scan_time():
    low, high = hanscheid_accuracy_band_h(96.0)
    assert low / 96.0 == pytest.approx(0.41, abs=0.005) and high / 96.0 == pytest.approx(1.31, abs=0.005)
    for half_life in (low, high):  # at the band's edges the analytic curve is estimated 10 % low
        curve, exact = mono(1e-6, half_life)
        assert single_timepoint_dose(96.0, curve(96.0)).dose_gy / exact == pytest.approx(0.9, rel=1e-9)
    assert hanscheid_ratio(96.0, 96.0 * LN2) == pytest.approx(2 / np.e / LN2)  # the maximum, 1.062


@pytest.mark.parametrize("voi_class", sorted(PRIORS))
def test_madsen_is_exact_for_the_prior_and_least_sensitive_at_its_optimal_time(voi_class):
    prior = PRIORS[voi_class]
    t_opt = prior.effective_half_life_h / LN2
    window = madsen_window_h(prior)
    assert window[0] <= t_opt <= window[1]
    curve, exact = mono(1e-6, prior.effective_half_life_h)
    dose, method, _ = single_timepoint_dose(t_opt, curve(t_opt), voi_class, method="madsen")
    assert method == "madsen" and dose == pytest.approx(exact, rel=1e-12)
    # first-order insensitivity at t_opt: a 5 % error of the half-life costs about 0.125 % (second order)
    for factor in (0.95, 1.05):
        error = madsen_ratio(t_opt, prior.effective_half_life_h * factor, prior.effective_half_life_h) - 1
        assert abs(error) < 0.0015


@pytest.mark.parametrize("voi_class", sorted(PRIORS))
def test_madsen_window_edges_reach_ten_percent_over_the_published_range(voi_class):
    prior = PRIORS[voi_class]
    half_lives = np.linspace(*prior.range_h, 2001)
    for edge in madsen_window_h(prior):
        worst = np.abs(madsen_ratio(edge, half_lives, prior.effective_half_life_h) - 1).max()
        assert worst == pytest.approx(0.10, abs=2e-3)
    inside = np.mean(madsen_window_h(prior))
    assert np.abs(madsen_ratio(inside, half_lives, prior.effective_half_life_h) - 1).max() < 0.10


def test_choice_between_methods_and_refusal_outside_every_window():
    kidney = PRIORS["kidney"]
    low, high = madsen_window_h(kidney)
    assert HANSCHEID_WINDOW_H == (72.0, 120.0) and low < 72.0 < high  # the kidney window starts before 72 h
    curve, _ = mono(1e-6, 50.0)
    assert single_timepoint_dose(96.0, curve(96.0), "kidney_left").method == "hanscheid"  # a VOI name works
    dose, method, reason = single_timepoint_dose(70.0, curve(70.0), "kidney_left")
    assert method == "madsen" and "Sandström" in reason
    dose, method, reason = single_timepoint_dose(24.0, curve(24.0), "kidney")
    assert np.isnan(dose) and method == "none"
    assert "Hanscheid's window 72-120 h" in reason and "Madsen's window" in reason
    dose, method, reason = single_timepoint_dose(24.0, curve(24.0), "vertebra_L2")
    assert np.isnan(dose) and "no prior effective half-life" in reason
    assert np.isnan(single_timepoint_dose(168.0, 1e-6, "lesion_1", method="madsen").dose_gy)  # lesion: 82-134 h
    assert single_timepoint_dose(130.0, 1e-6, "lesion_1").method == "madsen"
    assert single_timepoint_dose(96.0, 1e-6, "lesion_1", method="madsen").method == "madsen"


def test_priors_are_checked():
    with pytest.raises(ValueError, match="low <= prior <= high"):
        HalfLifePrior(100.0, (20.0, 80.0), "test")
    with pytest.raises(ValueError, match="shorter than the physical"):
        single_timepoint_dose(200.0, 1e-6, prior=HalfLifePrior(170.0, (150.0, 200.0), "test"))
    with pytest.raises(ValueError, match="method"):
        single_timepoint_dose(96.0, 1e-6, method="trapezoid")
