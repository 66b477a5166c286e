"""Uncertainty of a VOI's absorbed dose, structured after the EANM practical guidance on uncertainty analysis.

Source: Gear J I et al., "EANM practical guidance on uncertainty analysis for molecular radiotherapy absorbed dose
calculations", Eur J Nucl Med Mol Imaging 45:2456-2474 (2018). Its framework: the absorbed dose is the time-integrated
activity times a dose factor; the time-integrated activity is the area under a time-activity curve fitted to a
sequence of activity values; each activity value comes from a count rate, a calibration factor and a recovery
coefficient; the uncertainties of these quantities are propagated through the chain with the law of propagation of
uncertainty (GUM, JCGM 100:2008), with the fit's parameter covariance for the curve.

Here the time-activity curve is a VOI's mean dose-rate curve (Gy/s; the dose factor is inside the dose-rate map, so
its uncertainty -- DVK against Monte Carlo, the CNN -- is a matter of the method comparison tables, not of this
module), integrated by :func:`._time_integration.fit_time_activity`. Components, each reported in Gy (1 sd):

(a) ``fit_gy``: time integration, from the selected model's parameter covariance (the existing fit: relative
    residuals, covariance scaled by the residual variance) through the gradient of the integral (delta method). NaN
    for the trapezoid and single-time-point estimates, which have no statistical model of the data.
(b) ``counts_gy``: count noise. A VOI with ``N_i`` counts at time point ``i`` has relative standard deviation
    ``s_i = 1 / sqrt(N_i)`` (Poisson), independent between time points. It is propagated through the same
    integration (same model): ``counts_gy^2 = sum_i (dD / d ln r_i)^2 s_i^2``, the derivatives by central differences
    of the refitted integral (exact for the trapezoid, which is linear). ``N_i``: the counts attributed to the VOI
    in proportion to its activity (:func:`voi_counts`, from a counts calibration -- sensitivity x acquisition time,
    as :class:`cohort_dosimetry.io.CountsCalibration` holds it -- or from a scan's total counts). This is the
    Poisson limit: reconstruction (OSEM, scatter correction) adds noise, so (b) is a lower bound of the count noise.
(c) ``calibration_gy``: the user-given relative calibration uncertainty ``u_cal`` (e.g. 0.05). The calibration
    factor is common to every time point (fully correlated), so it scales the whole curve and the dose with it:
    ``calibration_gy = u_cal D`` (for every model: the fits use relative residuals, so a common factor leaves the
    fitted shape unchanged). Further systematic factors common to all time points (a recovery coefficient, a VOI
    volume error) can be given as ``other_relative`` and are treated the same way.

Combination. (a) and (b) are not independent: (a) is estimated from the scatter of the measured points about the
model, and that scatter contains the count noise that (b) predicts (with only count noise, the expected residual
variance is the one (b) assumes, and (a) estimates (b)). They are not added; the random part is
``random_gy = max(a, b)`` over the finite ones: (b) is a floor (few residual degrees of freedom can make (a)
accidentally small), and an (a) above it says there is scatter beyond Poisson noise (model misfit, reconstruction
noise). The random part and the systematic factors are independent and add in quadrature:

    total_gy = sqrt(random_gy^2 + calibration_gy^2 + sum_k other_k^2)

Not included: the choice of model (the selection rule and its alternatives are in the ``absorbed_dose`` table),
registration and partial-volume effects unless given as ``other_relative``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from ._metrics import VoiIndex
from ._time_integration import (
    N_PARAMETERS,
    TimeActivityFit,
    _fitted_model,
    _trapezoid,
    fit_time_activity,
    physical_decay_per_h,
)

#: Relative step of the central differences of the integral with respect to each dose-rate.
DIFFERENCE_STEP = 1e-3


@dataclass(frozen=True)
class DoseUncertainty:
    """A VOI absorbed dose and its uncertainty components (Gy, 1 sd; module docstring for each)."""

    model: str
    absorbed_dose_gy: float
    fit_gy: float
    counts_gy: float
    calibration_gy: float
    random_gy: float
    total_gy: float
    other_gy: dict[str, float] = field(default_factory=dict)
    note: str = ""

    def relative(self) -> dict[str, float]:
        """Every component as a fraction of the absorbed dose."""
        d = self.absorbed_dose_gy
        out = {
            "fit": self.fit_gy / d,
            "counts": self.counts_gy / d,
            "calibration": self.calibration_gy / d,
            "random": self.random_gy / d,
            "total": self.total_gy / d,
        }
        out.update({name: value / d for name, value in self.other_gy.items()})
        return out

    def as_row(self) -> dict[str, object]:
        """A flat row for a table: the components in Gy (``uncertainty_<component>_gy``), model and note."""
        row: dict[str, object] = {
            "model": self.model,
            "absorbed_dose_gy": self.absorbed_dose_gy,
            "uncertainty_fit_gy": self.fit_gy,
            "uncertainty_counts_gy": self.counts_gy,
            "uncertainty_calibration_gy": self.calibration_gy,
            "uncertainty_random_gy": self.random_gy,
            "uncertainty_total_gy": self.total_gy,
        }
        row.update({f"uncertainty_{name}_gy": value for name, value in self.other_gy.items()})
        row["uncertainty_note"] = self.note
        return row


def voi_counts(voi_activity_bq, *, calibration=None, total_counts=None, total_activity_bq=None) -> np.ndarray:
    """Counts attributed to a VOI at each time point, in proportion to its activity.

    ``voi_activity_bq`` (n,): the VOI's activity at each scan (Bq; mean concentration x volume, e.g.
    :func:`voi_activities_bq`). Either ``calibration``: an object with ``sensitivity_cps_per_mbq`` and
    ``acquisition_duration_s`` (one, or a sequence of n, as :class:`cohort_dosimetry.io.CountsCalibration`):
    ``N = A (MBq) x sensitivity x duration``; or ``total_counts`` (n,) of each scan with ``total_activity_bq`` (n,)
    in its field of view: ``N = total_counts x A / total_activity``.
    """
    activity = np.asarray(voi_activity_bq, dtype=np.float64).ravel()
    if calibration is not None:
        calibrations = list(calibration) if isinstance(calibration, (list, tuple)) else [calibration] * activity.size
        if len(calibrations) != activity.size:
            raise ValueError(f"{len(calibrations)} counts calibrations for {activity.size} time points")
        factor = np.array([c.sensitivity_cps_per_mbq * c.acquisition_duration_s for c in calibrations], dtype=float)
        counts = activity * 1e-6 * factor
    elif total_counts is not None and total_activity_bq is not None:
        counts = (
            np.asarray(total_counts, dtype=np.float64).ravel()
            * activity
            / np.asarray(total_activity_bq, dtype=np.float64).ravel()
        )
    else:
        raise ValueError("voi_counts needs a counts calibration, or total counts with the total activity")
    if counts.shape != activity.shape:
        raise ValueError(f"counts for {counts.size} time points, activities for {activity.size}")
    return counts


def voi_activities_bq(activity_bq_ml, index: VoiIndex, spacing_mm) -> np.ndarray:
    """Activity (Bq) of every VOI of ``index`` in one activity-concentration map (z, y, x) in Bq/mL."""
    voxel_ml = float(np.prod(spacing_mm)) / 1000.0
    return index.sums(index.values(activity_bq_ml, "activity map")) * voxel_ml


def _log_sensitivities(t: np.ndarray, r: np.ndarray, model: str, nuclide: str) -> np.ndarray:
    """``dD / d ln r_i`` (Gy) of the given model's integral, by central differences of refits of that model alone
    (as :func:`fit_time_activity` fits it: ``t`` sorted, two or more time points)."""
    l_p = physical_decay_per_h(nuclide)
    if model == "trapezoid":
        refit = _trapezoid
    elif model in N_PARAMETERS:

        def refit(t, r, l_p):
            return _fitted_model(model, t, r, l_p)

    else:
        raise ValueError(f"no refit for model {model!r} of a curve with {t.size} time points")
    out = np.empty(t.size)
    for i in range(t.size):
        values = []
        for sign in (1.0, -1.0):
            perturbed = r.copy()
            perturbed[i] *= 1.0 + sign * DIFFERENCE_STEP
            values.append(refit(t, perturbed, l_p).absorbed_dose_gy)
        out[i] = (values[0] - values[1]) / (2.0 * DIFFERENCE_STEP)
    return out


def voi_dose_uncertainty(
    hours,
    dose_rate_gy_s,
    counts=None,
    calibration_relative: float = 0.0,
    *,
    other_relative: Mapping[str, float] | None = None,
    nuclide: str = "Lu177",
    fit: TimeActivityFit | None = None,
    model: str | None = None,
) -> DoseUncertainty:
    """Absorbed dose of a VOI's mean dose-rate curve and its uncertainty components (module docstring).

    ``hours`` (n,) post injection, ``dose_rate_gy_s`` (n,) the VOI's mean dose-rate (Gy/s), ``counts`` (n,) the
    counts attributed to the VOI at each time point (:func:`voi_counts`; None: count noise not estimated, NaN),
    ``calibration_relative`` the relative standard uncertainty of the calibration (common to all time points),
    ``other_relative`` {name: relative sd} further common factors. ``fit``: the curve's
    :func:`fit_time_activity` result if already computed. ``model``: which of its models (``fit.fits``) the
    components are of; None: the selected one.
    """
    t = np.asarray(hours, dtype=np.float64).ravel()
    r = np.asarray(dose_rate_gy_s, dtype=np.float64).ravel()
    fit = fit or fit_time_activity(t, r, nuclide)
    model = fit.selected if model is None else model
    if model not in fit.fits:
        raise ValueError(f"model {model!r} was not applied to this curve (applied: {sorted(fit.fits)})")
    model_fit = fit.fits[model]
    order = np.argsort(t)
    t, r = t[order], r[order]
    if not (calibration_relative >= 0 and np.isfinite(calibration_relative)):
        raise ValueError(f"calibration_relative must be a finite fraction >= 0, got {calibration_relative}")
    others = dict(other_relative or {})
    if any(not (v >= 0 and np.isfinite(v)) for v in others.values()):
        raise ValueError(f"other_relative must hold finite fractions >= 0, got {others}")
    dose = float(model_fit.absorbed_dose_gy)
    notes = []
    fit_gy = float(model_fit.uncertainty_gy)
    if not np.isfinite(fit_gy):
        notes.append(f"{model}: no fit uncertainty")
    if counts is None:
        counts_gy = float("nan")
        notes.append("no counts given: count noise not estimated")
    else:
        n_counts = np.asarray(counts, dtype=np.float64).ravel()
        if n_counts.shape != t.shape:
            raise ValueError(f"{n_counts.size} count values for {t.size} time points")
        if not np.all(n_counts > 0):
            raise ValueError(f"counts must be > 0 at every time point, got {n_counts}")
        relative_sd = 1.0 / np.sqrt(n_counts[order])
        # one time point: every single-time-point formula is proportional to the dose-rate, dD / d ln r = D
        sensitivity = np.array([dose]) if t.size == 1 else _log_sensitivities(t, r, model, nuclide)
        counts_gy = float(np.sqrt(np.sum((sensitivity * relative_sd) ** 2)))
    finite_random = [v for v in (fit_gy, counts_gy) if np.isfinite(v)]
    random_gy = max(finite_random) if finite_random else float("nan")
    calibration_gy = calibration_relative * abs(dose)
    other_gy = {name: value * abs(dose) for name, value in others.items()}
    total_gy = float(np.sqrt(random_gy**2 + calibration_gy**2 + sum(v**2 for v in other_gy.values())))
    if np.isfinite(random_gy):
        notes.append("random part from " + ("the fit" if random_gy == fit_gy else "count noise"))
    return DoseUncertainty(
        model, dose, fit_gy, counts_gy, calibration_gy, random_gy, total_gy, other_gy, "; ".join(notes)
    )
