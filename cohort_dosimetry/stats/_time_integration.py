"""Time integration of a VOI's mean dose-rate into absorbed dose, with model selection by AICc.

Input: the mean dose-rate of one VOI (Gy/s) at ``n`` times ``t_i`` (hours post injection). Output: the absorbed dose
``D = integral_0^inf dose_rate(t) dt`` in Gy (hours are converted to seconds: x 3600) from one of these models:

``mono_exp``   ``r(t) = a exp(-l t)``; 2 parameters; ``D = a / l``. Assumes instantaneous uptake.
``bi_exp``     ``r(t) = a (exp(-l_w t) - exp(-l_u t))``, ``l_u > l_w``: uptake and washout, 3 parameters;
               ``D = a (1/l_w - 1/l_u)``. The phantoms' compartment model (physical decay included in both rates).
``trapezoid``  linear from ``(0, 0)`` (no activity at injection) through the measured points, then physical decay
               from the last point: tail ``r(t_n) / l_p``. No fitted parameters.
``hanscheid``  one time point at 72-120 h (Hanscheid et al., J Nucl Med 59:75, 2018, "a single measurement after
               4 days"): ``D = r(t) 2 t / ln 2``. This is the exact integral of a mono-exponential whose effective
               half-life equals ``t``; for an effective half-life ``T`` the ratio estimate/exact is
               ``2 x exp(-x) / ln 2`` with ``x = t ln 2 / T``: 1 at ``T = t``, at most 1.062 (at ``T = t ln 2``),
               within 10 % for ``0.41 t < T < 1.31 t`` (39 h to 125 h for a scan at 96 h); a VOI that keeps its
               activity (``T`` = 159.5 h, physical) is underestimated by 21 %.
``madsen``     one time point outside Hanscheid's window (Madsen et al., Med Phys 45:2318, 2018):
               ``D = r(t) exp(l t) / l``, ``l = ln 2 / T_prior``, with the prior effective half-life of the VOI's
               class (kidney 50 h, Sandström et al., J Nucl Med 54:33, 2013; liver and spleen 66 h, Garske-Román et
               al., Eur J Nucl Med Mol Imaging 45:970, 2018; lesions 85 h, Ilan et al., J Nucl Med 56:177, 2015),
               only for scan times at which it stays within 10 % over the class's published range of half-lives
               (kidney 67-75 h, liver and spleen 60-108 h, lesions 82-134 h; derived in
               :mod:`._single_timepoint`, :func:`~._single_timepoint.madsen_window_h`).

Washout rates are bounded below by the Lu-177 physical decay constant ``l_p`` (biological clearance can only add to
it; half-life from ICRP-107 via :func:`cohort_dosimetry.physics.nuclide`).

Fits: least squares of relative residuals ``sum(((model - r_i) / r_i)^2)`` (proportional error model: the error of a
VOI's mean dose-rate scales with it) with ``scipy.optimize.curve_fit`` (trust-region reflective, bounds above); the
bi-exponential is started from the best point of a (washout, uptake) rate grid and from the log-slope, and the lower
residual kept. Fits need every ``r_i > 0``; otherwise only the trapezoid applies. ``RSS`` below is this relative
residual sum.

Model selection (documented rule, reported with every result):

* Candidates: the fitted models with at least one residual degree of freedom, ``n >= p + 1`` (``p`` curve
  parameters: mono-exponential from 3 time points, bi-exponential from 4). A fit through every point (``n = p``)
  cannot be judged against the data and is not a candidate.
* Criterion: ``AICc = n ln(RSS / n) + 2p + 2p(p + 1) / (n - p - 1)`` (Burnham & Anderson 2002; Glatting et al.,
  Med Phys 34:4285, 2007; ``K = p``, the residual variance not counted) when it is defined for every candidate
  (``n >= p + 2``). Its correction term is infinite at ``n = p + 1``, which would rule out the bi-exponential for the
  common 4-time-point protocol for no reason but the protocol's length; in that case all candidates are ranked by
  the uncorrected ``AIC = n ln(RSS / n) + 2p`` instead. The reason string says which criterion was used.
* Lowest criterion wins. Without any candidate (``n = 2``, or every fit failed) the trapezoid with physical tail is
  chosen; with ``n = 1``, the single-time-point rule of :mod:`._single_timepoint`: Hanscheid's formula for a scan at
  72-120 h, else Madsen's with the VOI class's prior effective half-life inside that prior's window, else no
  absorbed dose (model ``none``, NaN, the reason naming the windows missed; ``stats.NOT_INTEGRATED``).
* The criteria compare residuals: on noise-free data every adequate model reaches rounding level and the ranking is
  meaningless.

Uncertainty (one standard deviation, Gy): for fitted models, propagated from the fit's parameter covariance (residual
variance estimate, ``absolute_sigma=False``) through the analytic gradient of the integral (delta method); NaN when the
fit has no residual degrees of freedom (``n = p``). The trapezoid and the single-time-point estimates carry no
statistical model of the data, so their uncertainty is NaN: their error is the systematic one of their assumptions
stated above (within 10 % inside their windows for the stated half-lives).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import OptimizeWarning, curve_fit

SECONDS_PER_HOUR = 3600.0

#: Curve parameters of every fitted model (used by AICc).
N_PARAMETERS = {"mono_exp": 2, "bi_exp": 3}


def physical_decay_per_h(nuclide: str = "Lu177") -> float:
    """Physical decay constant (1/h) of the nuclide, from ICRP-107 via the physics package."""
    from cohort_dosimetry.physics import nuclide as get_nuclide

    return float(np.log(2.0) / (get_nuclide(nuclide).half_life_s / SECONDS_PER_HOUR))


@dataclass(frozen=True)
class ModelFit:
    """One time-integration model applied to one curve.

    ``absorbed_dose_gy`` and ``uncertainty_gy`` (1 sd; NaN where not estimable), ``aic`` and ``aicc`` (NaN where
    undefined: ``aic`` needs ``n >= p + 1``, ``aicc`` ``n >= p + 2``), ``parameters`` (dose-rates in Gy/s, rates in
    1/h), ``note`` (why a fit failed or has no AICc; empty otherwise).
    """

    model: str
    absorbed_dose_gy: float
    uncertainty_gy: float = float("nan")
    aic: float = float("nan")
    aicc: float = float("nan")
    parameters: dict[str, float | np.ndarray] = field(default_factory=dict)  # trapezoid: arrays of its knots
    note: str = ""

    def dose_rate(self, hours) -> np.ndarray:
        """The model curve (Gy/s) at the given hours post injection."""
        t = np.asarray(hours, dtype=np.float64)
        p = self.parameters
        if self.model == "mono_exp":
            return p["a_gy_s"] * np.exp(-p["l_per_h"] * t)
        if self.model == "bi_exp":
            return p["a_gy_s"] * (np.exp(-p["l_washout_per_h"] * t) - np.exp(-p["l_uptake_per_h"] * t))
        if self.model == "hanscheid":
            return p["r_gy_s"] * 2.0 ** (1.0 - t / p["t_h"])
        if self.model == "madsen":
            return p["r_gy_s"] * np.exp(-p["l_per_h"] * (t - p["t_h"]))
        if self.model == "trapezoid":
            knots_t = np.concatenate([[0.0], p["hours"]])
            knots_r = np.concatenate([[0.0], p["dose_rate_gy_s"]])
            t_last, r_last = knots_t[-1], knots_r[-1]
            tail = r_last * np.exp(-p["l_physical_per_h"] * (t - t_last))
            return np.where(t <= t_last, np.interp(t, knots_t, knots_r), tail)
        raise ValueError(f"unknown model {self.model!r}")

    @property
    def fitted(self) -> bool:
        return np.isfinite(self.absorbed_dose_gy)


@dataclass(frozen=True)
class TimeActivityFit:
    """Every model applied to one VOI's curve, and the chosen one with the reason."""

    hours: np.ndarray
    dose_rate_gy_s: np.ndarray
    fits: dict[str, ModelFit]
    selected: str
    reason: str

    @property
    def absorbed_dose_gy(self) -> float:
        return self.fits[self.selected].absorbed_dose_gy

    @property
    def uncertainty_gy(self) -> float:
        return self.fits[self.selected].uncertainty_gy


def _aic(rss: float, n: int, p: int) -> float:
    return n * np.log(rss / n) + 2 * p if n >= p + 1 else float("nan")


def _aicc(rss: float, n: int, p: int) -> float:
    return _aic(rss, n, p) + 2 * p * (p + 1) / (n - p - 1) if n >= p + 2 else float("nan")


def _mono(t, a, lam):
    return a * np.exp(-lam * t)


def _bi(t, a, l_w, delta):
    return a * (np.exp(-l_w * t) - np.exp(-(l_w + delta) * t))


def _bi_grid_start(t: np.ndarray, y: np.ndarray, l_p: float) -> tuple[float, float, float]:
    """Best bi-exponential start on a grid of washout (effective half-life 1 h to physical) and uptake (0.1 h to
    200 h half-life) rates, the amplitude solved exactly for each pair (relative residuals)."""
    l_w = np.geomspace(l_p, np.log(2.0) / 1.0, 24)[:, None, None]
    delta = (np.log(2.0) / np.geomspace(0.1, 200.0, 24))[None, :, None]
    shape = (np.exp(-l_w * t) - np.exp(-(l_w + delta) * t)) / y  # (washout, uptake, time), relative units
    amplitude = shape.sum(axis=-1) / np.maximum((shape**2).sum(axis=-1), 1e-300)
    rss = ((amplitude[..., None] * shape - 1.0) ** 2).sum(axis=-1)
    i, j = np.unravel_index(np.argmin(rss), rss.shape)
    return float(amplitude[i, j]), float(l_w[i, 0, 0]), float(delta[0, j, 0])


def _fit(model: str, t: np.ndarray, y: np.ndarray, l_p: float) -> tuple[np.ndarray, np.ndarray, float]:
    """Least-squares fit on scaled data: (parameters, covariance, RSS). Raises RuntimeError if no start converges."""
    positive = y > 0
    if positive.sum() >= 2:
        slope = np.polyfit(t[positive], np.log(y[positive]), 1)[0]
        l0 = max(-slope, l_p * 1.01)
    else:
        l0 = 2 * l_p
    func: Callable[..., np.ndarray]
    starts: list[tuple[float, ...]]
    if model == "mono_exp":
        func, bounds = _mono, ([0.0, l_p], [np.inf, np.inf])
        starts = [(y.max() * np.exp(l0 * t[np.argmax(y)]), l0)]
    else:
        func, bounds = _bi, ([0.0, l_p, 1e-6], [np.inf, np.inf, np.inf])
        starts = [_bi_grid_start(t, y, l_p)]
        shape = _bi(t, 1.0, l0, np.log(2.0) / 2.0)  # washout from the log-slope, 2 h uptake half-life
        starts.append((float(np.dot(shape / y, np.ones_like(y)) / np.dot(shape / y, shape / y)), l0, np.log(2.0) / 2.0))
    best = None
    for p0 in starts:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", OptimizeWarning)
                params, cov = curve_fit(func, t, y, p0=p0, sigma=y, bounds=bounds, method="trf", max_nfev=5000)
        except (RuntimeError, ValueError):
            continue
        rss = float(np.sum(((func(t, *params) - y) / y) ** 2))
        if best is None or rss < best[2]:
            best = (params, cov, rss)
    if best is None:
        raise RuntimeError(f"{model} fit did not converge from any start")
    return best


def _fitted_model(model: str, t: np.ndarray, r: np.ndarray, l_p: float) -> ModelFit:
    n, p = len(t), N_PARAMETERS[model]
    if n < p:
        return ModelFit(model, float("nan"), note=f"needs >= {p} time points, have {n}")
    if np.any(r <= 0):
        return ModelFit(model, float("nan"), note="needs positive dose-rates (relative residuals)")
    scale = float(np.max(np.abs(r)))
    try:
        params, cov, rss = _fit(model, t, r / scale, l_p)
    except RuntimeError as err:
        return ModelFit(model, float("nan"), note=str(err))
    if model == "mono_exp":
        a, lam = params
        integral_h = a / lam
        gradient = np.array([1 / lam, -a / lam**2])
        parameters = {"a_gy_s": a * scale, "l_per_h": lam}
    else:
        a, l_w, delta = params
        l_u = l_w + delta
        integral_h = a * (1 / l_w - 1 / l_u)
        gradient = np.array([1 / l_w - 1 / l_u, a * (-1 / l_w**2 + 1 / l_u**2), a / l_u**2])
        parameters = {"a_gy_s": a * scale, "l_washout_per_h": l_w, "l_uptake_per_h": l_u}
    to_gy = scale * SECONDS_PER_HOUR
    variance = float(gradient @ cov @ gradient) if np.all(np.isfinite(cov)) else float("nan")
    if n == p:
        note = f"passes through all {n} points: no residual to judge it by, not a candidate"
    elif n == p + 1:
        note = f"AICc undefined with {n} time points (needs {p + 2})"
    else:
        note = ""
    return ModelFit(
        model,
        integral_h * to_gy,
        np.sqrt(variance) * to_gy if variance >= 0 else float("nan"),
        _aic(rss, n, p),
        _aicc(rss, n, p),
        parameters,
        note,
    )


def _trapezoid(t: np.ndarray, r: np.ndarray, l_p: float) -> ModelFit:
    knots_t = np.concatenate([[0.0], t])
    knots_r = np.concatenate([[0.0], r])
    integral_h = float(np.sum(np.diff(knots_t) * (knots_r[1:] + knots_r[:-1]) / 2) + r[-1] / l_p)
    return ModelFit(
        "trapezoid",
        integral_h * SECONDS_PER_HOUR,
        parameters={"hours": t, "dose_rate_gy_s": r, "l_physical_per_h": l_p},
        note="no fitted parameters: no AICc, no statistical uncertainty",
    )


def hanscheid_absorbed_dose_gy(hours: float, dose_rate_gy_s: float) -> float:
    """Hanscheid et al. (J Nucl Med 59:75, 2018) single-time-point absorbed dose: ``r(t) * 2 t / ln 2`` (Gy).

    ``hours``: time of the scan post injection (h); ``dose_rate_gy_s``: the VOI's mean dose-rate then (Gy/s). Exact
    for a mono-exponential with effective half-life ``t``; see the module docstring for its error otherwise.
    """
    return float(dose_rate_gy_s * 2.0 * hours / np.log(2.0) * SECONDS_PER_HOUR)


def fit_time_activity(hours, dose_rate_gy_s, nuclide: str = "Lu177", voi_class: str | None = None) -> TimeActivityFit:
    """Apply every time-integration model to one VOI's mean dose-rate curve and choose one (see module docstring).

    ``hours`` (n,) hours post injection, distinct and > 0; ``dose_rate_gy_s`` (n,) mean dose-rate, Gy/s, finite.
    ``voi_class``: the VOI's class or name (``"kidney"``, ``"kidney_left"``), used only with one time point, for the
    Madsen prior (Lu-177 only); None: no prior (one time point outside Hanscheid's window then gets no dose).
    """
    t = np.asarray(hours, dtype=np.float64).ravel()
    r = np.asarray(dose_rate_gy_s, dtype=np.float64).ravel()
    if t.size == 0 or t.shape != r.shape:
        raise ValueError(f"need matching, non-empty hours and dose-rates, got {t.size} and {r.size} values")
    if not (np.all(np.isfinite(t)) and np.all(np.isfinite(r))):
        raise ValueError(f"time-activity curve has non-finite values: hours {t}, dose-rates {r}")
    if np.any(t <= 0) or len(np.unique(t)) != t.size:
        raise ValueError(f"hours post injection must be distinct and > 0, got {t}")
    order = np.argsort(t)
    t, r = t[order], r[order]
    l_p = physical_decay_per_h(nuclide)
    n = t.size
    if n == 1:
        from ._single_timepoint import prior_for, single_timepoint_dose

        # the priors are effective half-lives of Lu-177 DOTATATE: no prior for another nuclide
        lu177 = l_p == physical_decay_per_h("Lu177")
        single = single_timepoint_dose(t[0], r[0], voi_class if lu177 else None, nuclide=nuclide)
        parameters: dict[str, float | np.ndarray] = {"r_gy_s": r[0], "t_h": t[0]}
        if single.method == "madsen":
            prior = prior_for(voi_class)
            assert prior is not None  # Madsen is chosen only with a prior
            parameters["l_per_h"] = float(np.log(2.0) / prior.effective_half_life_h)
        fit = ModelFit(single.method, single.dose_gy, parameters=parameters, note=single.reason)
        return TimeActivityFit(t, r, {single.method: fit}, single.method, single.reason)
    fits = {model: _fitted_model(model, t, r, l_p) for model in N_PARAMETERS}
    fits["trapezoid"] = _trapezoid(t, r, l_p)
    candidates = [name for name in N_PARAMETERS if not np.isnan(fits[name].aic)]  # -inf (RSS = 0) stays in
    if candidates:
        use_aicc = not any(np.isnan(fits[name].aicc) for name in candidates)
        criterion = "AICc" if use_aicc else "AIC"
        scores = {name: fits[name].aicc if use_aicc else fits[name].aic for name in candidates}
        selected = min(scores, key=scores.__getitem__)
        listing = ", ".join(f"{name} {score:.2f}" for name, score in sorted(scores.items(), key=lambda kv: kv[1]))
        reason = f"lowest {criterion} ({listing})"
        if not use_aicc:
            reason += f"; AIC because AICc is undefined for a candidate with n = {n}"
        excluded = [f"{name}: {fits[name].note}" for name in N_PARAMETERS if name not in candidates]
        if excluded:
            reason += "; excluded " + "; ".join(excluded)
    else:
        selected = "trapezoid"
        why = "; ".join(f"{name}: {fits[name].note}" for name in N_PARAMETERS)
        reason = f"no fitted model has a residual degree of freedom ({why}): trapezoid with physical-decay tail"
    return TimeActivityFit(t, r, fits, selected, reason)
