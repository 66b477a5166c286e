"""Single-time-point absorbed dose, only inside the windows where the published methods hold.

A VOI's mean dose-rate ``r(t)`` (Gy/s) at one scan ``t`` hours after injection; absorbed dose in Gy (hours -> seconds
x 3600). Both methods assume a mono-exponential washout after the scan; they differ in what they assume about its
effective half-life ``T``.

``hanscheid``  Hänscheid et al., "Dose mapping after endoradiotherapy with 177Lu-DOTATATE/DOTATOC by a single
               measurement after 4 days", J Nucl Med 59:75-81 (2018): ``D = r(t) 2 t / ln 2``. It is the exact
               integral of a mono-exponential with ``T = t``; for another ``T`` the ratio estimate/exact is
               ``2 x exp(-x) / ln 2`` with ``x = t ln 2 / T``: 1 at ``T = t``, at most 1.062 (at ``T = t ln 2``),
               within 10 % for ``0.41 t < T < 1.31 t`` (:func:`hanscheid_accuracy_band_h` solves it). No prior is
               needed. Window used: 72-120 h (3-5 days), the "about 4 days" the method is published for
               (docs/physics.md); outside it the estimate is refused.
``madsen``     Madsen et al., "Technical Note: Single time point dose estimate for exponential clearance",
               Med Phys 45:2318-2324 (2018): ``D = r(t) exp(l t) / l`` with ``l = ln 2 / T_prior``, a prior effective
               half-life of the VOI's class. For a true ``T`` the ratio estimate/exact is
               ``(T_prior / T) exp(ln 2 t (1/T_prior - 1/T))``; its derivative in ``T`` vanishes at ``T = T_prior``
               when ``t = T_prior / ln 2`` (1.44 T_prior), the least sensitive scan time. Window used (derived here
               from that ratio, the same 10 % criterion as above; not a number quoted from the paper): the scan times
               at which the estimate stays within 10 % for every ``T`` in the class's published range
               (:func:`madsen_window_h`, :data:`PRIORS`).

Priors for Lu-177 DOTATATE (:data:`PRIORS`; the same literature the package's virtual patients draw their kinetics
from, :mod:`cohort_dosimetry.phantoms`): kidney ``T`` about 50 h, range 34-77 h (Sandström et al., J Nucl Med 54:33,
2013); liver and spleen 2-3.5 d, 48-84 h, prior its middle, 66 h (Garske-Román et al., Eur J Nucl Med Mol Imaging
45:970, 2018); tumours (VOI class ``lesion``) 2.5-4.6 d, 60-110 h, prior its middle, 85 h (Ilan et al., J Nucl Med
56:177, 2015; Garske-Román 2018). Other classes (body, lung, vertebra, other) have no prior: Hänscheid only.

:func:`single_timepoint_dose` returns ``(dose_gy, method, reason)``: Hänscheid when the scan is in its window (it needs
no assumption about the VOI), else Madsen when the VOI's class has a prior and the scan is in that prior's window,
else NaN with the reason naming every window that was missed.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from scipy.optimize import brentq

SECONDS_PER_HOUR = 3600.0
LN2 = float(np.log(2.0))

#: Scan times (h post injection) at which Hänscheid's formula is used: about 4 days, 3 to 5 days.
HANSCHEID_WINDOW_H = (72.0, 120.0)
#: The accuracy both windows are defined by: the estimate within 10 % of the exact mono-exponential integral.
ACCURACY = 0.10


@dataclass(frozen=True)
class HalfLifePrior:
    """A prior effective half-life (h) of a VOI class, the published range it stands for (h), and its source."""

    effective_half_life_h: float
    range_h: tuple[float, float]
    source: str

    def __post_init__(self) -> None:
        low, high = self.range_h
        if not 0 < low <= self.effective_half_life_h <= high:
            raise ValueError(
                f"a prior needs 0 < low <= prior <= high, got {self.effective_half_life_h} in {self.range_h}"
            )


_GARSKE_ROMAN = "Garske-Román et al., Eur J Nucl Med Mol Imaging 45:970 (2018): organ effective half-lives 2-3.5 d"
#: Prior effective half-lives of Lu-177 DOTATATE per VOI class (module docstring for the choice of each).
PRIORS: dict[str, HalfLifePrior] = {
    "kidney": HalfLifePrior(50.0, (34.0, 77.0), "Sandström et al., J Nucl Med 54:33 (2013): about 50 h, 34-77 h"),
    "liver": HalfLifePrior(66.0, (48.0, 84.0), _GARSKE_ROMAN),
    "spleen": HalfLifePrior(66.0, (48.0, 84.0), _GARSKE_ROMAN),
    "lesion": HalfLifePrior(
        85.0,
        (60.0, 110.0),
        "Ilan et al., J Nucl Med 56:177 (2015) and Garske-Román 2018: tumour effective half-lives 2.5-4.6 d",
    ),
}


class SingleTimePointDose(NamedTuple):
    """``(dose_gy, method, reason)``; ``dose_gy`` NaN and ``method`` ``"none"`` outside every window."""

    dose_gy: float
    method: str
    reason: str


def hanscheid_dose_gy(hours: float, dose_rate_gy_s: float) -> float:
    """Hänscheid 2018: ``r(t) 2 t / ln 2`` in Gy (``hours`` post injection, ``dose_rate_gy_s`` then)."""
    return float(dose_rate_gy_s * 2.0 * hours / LN2 * SECONDS_PER_HOUR)


def madsen_dose_gy(hours: float, dose_rate_gy_s: float, effective_half_life_h: float) -> float:
    """Madsen 2018: ``r(t) exp(l t) / l`` in Gy with ``l = ln 2 / effective_half_life_h`` (1/h)."""
    rate = LN2 / effective_half_life_h
    return float(dose_rate_gy_s * np.exp(rate * hours) / rate * SECONDS_PER_HOUR)


def hanscheid_ratio(hours, effective_half_life_h):
    """Estimate / exact integral of Hänscheid's formula for a mono-exponential of the given effective half-life."""
    x = np.asarray(hours, dtype=np.float64) * LN2 / np.asarray(effective_half_life_h, dtype=np.float64)
    return 2.0 * x * np.exp(-x) / LN2


def madsen_ratio(hours, effective_half_life_h, prior_half_life_h):
    """Estimate / exact integral of Madsen's formula with the prior, for a mono-exponential of the true half-life."""
    t = np.asarray(hours, dtype=np.float64)
    true = np.asarray(effective_half_life_h, dtype=np.float64)
    return prior_half_life_h / true * np.exp(LN2 * t * (1.0 / prior_half_life_h - 1.0 / true))


def hanscheid_accuracy_band_h(hours: float, accuracy: float = ACCURACY) -> tuple[float, float]:
    """Effective half-lives (h) for which Hänscheid's estimate at ``hours`` is within ``accuracy`` of the exact
    integral: ``(0.41 t, 1.31 t)`` for 10 %. Solves ``2 x exp(-x) / ln 2 = 1 - accuracy`` on both sides of x = 1."""
    f = lambda x: 2.0 * x * np.exp(-x) / LN2 - (1.0 - accuracy)  # noqa: E731
    x_low, x_high = brentq(f, 1e-9, 1.0), brentq(f, 1.0, 50.0)
    return hours * LN2 / x_high, hours * LN2 / x_low


@functools.lru_cache(maxsize=64)
def madsen_window_h(prior: HalfLifePrior, accuracy: float = ACCURACY) -> tuple[float, float] | None:
    """Scan times (h) at which Madsen's estimate with ``prior`` is within ``accuracy`` for every effective half-life
    in the prior's range; None if there is none (a range too wide for the accuracy).

    The ratio in ``u = 1/T`` is log-concave, so over the range its minimum is at an end and its maximum at an end or
    at ``u = 1 / (t ln 2)``: evaluated in closed form on a 0.01 h grid of scan times; the window is the contiguous
    run around the least sensitive time ``T_prior / ln 2``.
    """
    t = np.arange(1, 100_001) * 0.01  # 0.01 h to 1000 h
    t0 = prior.effective_half_life_h
    u_low, u_high = 1.0 / prior.range_h[1], 1.0 / prior.range_h[0]

    def log_ratio(u):
        return np.log(t0 * u) + LN2 * t * (1.0 / t0 - u)

    at_ends = np.stack([log_ratio(u_low), log_ratio(u_high)])
    u_peak = np.clip(1.0 / (LN2 * t), u_low, u_high)
    highest = np.maximum(at_ends.max(axis=0), log_ratio(u_peak))
    ok = (at_ends.min(axis=0) >= np.log(1.0 - accuracy)) & (highest <= np.log(1.0 + accuracy))
    best = int(np.argmin(np.abs(t - t0 / LN2)))
    if not ok[best]:
        return None
    low, high = best, best
    while low > 0 and ok[low - 1]:
        low -= 1
    while high < t.size - 1 and ok[high + 1]:
        high += 1
    return float(t[low]), float(t[high])


def _prior_of(voi_class: str | None) -> tuple[str | None, HalfLifePrior | None]:
    if voi_class is None:
        return None, None
    if voi_class in PRIORS:
        return voi_class, PRIORS[voi_class]
    from cohort_dosimetry.vocabulary import voi_type

    name = voi_type(voi_class)  # a VOI name: its class
    return name, PRIORS.get(name)


def prior_for(voi_class: str | None) -> HalfLifePrior | None:
    """The :data:`PRIORS` entry of a VOI class or VOI name (``"kidney"``, ``"kidney_left"``); None without one."""
    return _prior_of(voi_class)[1]


def single_timepoint_dose(
    hours: float,
    dose_rate_gy_s: float,
    voi_class: str | None = None,
    *,
    method: str = "auto",
    prior: HalfLifePrior | None = None,
    nuclide: str = "Lu177",
) -> SingleTimePointDose:
    """Absorbed dose (Gy) from one scan, by the published method whose window holds the scan (module docstring).

    ``hours``: the scan's time post injection (h); ``dose_rate_gy_s``: the VOI's mean dose-rate then (Gy/s);
    ``voi_class``: a VOI class or VOI name (``"kidney"``, ``"kidney_left"``, ``"lesion_3"``; selects the Madsen
    prior); ``method``: ``"auto"`` (Hänscheid, else Madsen), ``"hanscheid"`` or ``"madsen"`` (only that one);
    ``prior``: a :class:`HalfLifePrior` replacing the class's (it must be shorter than the physical half-life of
    ``nuclide``, ICRP-107). Returns ``(dose_gy, method, reason)``; NaN, ``"none"`` and the reason outside every window.
    """
    if method not in ("auto", "hanscheid", "madsen"):
        raise ValueError(f"method must be 'auto', 'hanscheid' or 'madsen', got {method!r}")
    t, r = float(hours), float(dose_rate_gy_s)
    if not (np.isfinite(t) and t > 0 and np.isfinite(r)):
        raise ValueError(f"need a finite time > 0 and a finite dose-rate, got {hours} h and {dose_rate_gy_s} Gy/s")
    class_name, class_prior = _prior_of(voi_class)
    prior = prior or class_prior
    if prior is not None:
        from ._time_integration import physical_decay_per_h

        physical_h = LN2 / physical_decay_per_h(nuclide)
        if prior.effective_half_life_h >= physical_h:
            raise ValueError(
                f"a prior effective half-life must be shorter than the physical {physical_h:.1f} h, "
                f"got {prior.effective_half_life_h} h"
            )
    missed = []
    low, high = HANSCHEID_WINDOW_H
    if method in ("auto", "hanscheid"):
        band = hanscheid_accuracy_band_h(t)
        if low <= t <= high:
            return SingleTimePointDose(
                hanscheid_dose_gy(t, r),
                "hanscheid",
                f"one scan at {t:g} h, in Hanscheid's window {low:g}-{high:g} h: D = r(t) 2t/ln2 (Hanscheid et al., "
                f"J Nucl Med 59:75, 2018); within {ACCURACY:.0%} for effective half-lives "
                f"{band[0]:.0f}-{band[1]:.0f} h",
            )
        missed.append(f"outside Hanscheid's window {low:g}-{high:g} h")
    if method in ("auto", "madsen"):
        if prior is None:
            missed.append(f"no prior effective half-life for VOI class {class_name!r} (Madsen: {sorted(PRIORS)})")
        else:
            window = madsen_window_h(prior)
            if window is not None and window[0] <= t <= window[1]:
                return SingleTimePointDose(
                    madsen_dose_gy(t, r, prior.effective_half_life_h),
                    "madsen",
                    f"one scan at {t:g} h, in the Madsen window {window[0]:.0f}-{window[1]:.0f} h of a prior effective "
                    f"half-life {prior.effective_half_life_h:g} h ({prior.source}): D = r(t) exp(l t)/l (Madsen et "
                    f"al., Med Phys 45:2318, 2018); within {ACCURACY:.0%} for effective half-lives "
                    f"{prior.range_h[0]:g}-{prior.range_h[1]:g} h",
                )
            where = (
                f"no scan time keeps it within {ACCURACY:.0%}"
                if window is None
                else f"window {window[0]:.0f}-{window[1]:.0f} h"
            )
            missed.append(f"outside Madsen's window for a prior of {prior.effective_half_life_h:g} h ({where})")
    return SingleTimePointDose(
        float("nan"), "none", f"one scan at {t:g} h: no single-time-point method applies: " + "; ".join(missed)
    )
