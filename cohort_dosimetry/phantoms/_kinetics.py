"""Compartment kinetics of Lu-177 DOTATATE: uptake, biological washout and physical decay.

Every kinetic compartment c follows the uptake-washout model

    A_c(t) = f_c * A_0 * (exp(-(k_w + lambda_p) t) - exp(-(k_u + lambda_p) t))          (Bq)

with ``A_0`` the administered activity, ``f_c`` the fraction of it the compartment takes up, ``k_u`` and ``k_w`` the
biological uptake and washout rate constants and ``lambda_p`` the Lu-177 physical decay constant. The effective
(observed) half-life of the washout phase is ``ln 2 / (k_w + lambda_p)``; the time integral from 0 to infinity is
``f_c * A_0 * (1/(k_w + lambda_p) - 1/(k_u + lambda_p))``.
"""

from __future__ import annotations

import numpy as np
import xarray as xr

#: Administered activity of one Lu-177 DOTATATE cycle, Bq (7.4 GBq, the NETTER-1 standard dose, Strosberg et al.,
#: N Engl J Med 376:125, 2017).
ADMINISTERED_ACTIVITY_BQ = 7.4e9


def lu177_half_life_h() -> float:
    """Physical half-life of Lu-177 in hours, read from the project's nuclide data (ICRP-107)."""
    from cohort_dosimetry.physics import nuclide

    return nuclide("Lu177").half_life_s / 3600.0


def effective_half_life_h(washout_half_life_h) -> np.ndarray:
    """Effective half-life (h) of a washout with the given biological half-life (h), physical decay included."""
    rate = np.log(2.0) / np.asarray(washout_half_life_h, dtype=np.float64) + np.log(2.0) / lu177_half_life_h()
    return np.log(2.0) / rate


def washout_half_life_for_effective_h(effective_h) -> np.ndarray:
    """Biological washout half-life (h) that gives the wanted effective half-life (h); needs effective < physical."""
    effective_h = np.asarray(effective_h, dtype=np.float64)
    physical_h = lu177_half_life_h()
    if np.any(effective_h >= physical_h):
        raise ValueError(f"an effective half-life must be shorter than the physical {physical_h:.1f} h")
    return np.log(2.0) / (np.log(2.0) / effective_h - np.log(2.0) / physical_h)


def compartment_activity_bq(anatomy: xr.Dataset, hours) -> xr.DataArray:
    """Activity of every kinetic compartment at the given times post injection.

    Parameters
    ----------
    anatomy : Dataset from :func:`make_anatomy` (variables ``fraction``, ``uptake_half_life_h``,
        ``washout_half_life_h`` along ``compartment``; attr ``administered_activity_bq``).
    hours : scalar or 1-D sequence, hours post injection.

    Returns
    -------
    DataArray (timepoint, compartment) float64, Bq; coordinate ``hours_post_injection`` (timepoint).
    """
    hours = np.atleast_1d(np.asarray(hours, dtype=np.float64))
    if hours.ndim != 1 or np.any(hours < 0) or not np.all(np.isfinite(hours)):
        raise ValueError(f"hours post injection must be finite and >= 0, got {hours}")
    decay = np.log(2.0) / lu177_half_life_h()
    k_up = np.log(2.0) / anatomy["uptake_half_life_h"].values
    k_wash = np.log(2.0) / anatomy["washout_half_life_h"].values
    t = hours[:, None]
    activity = (
        anatomy["fraction"].values
        * anatomy.attrs["administered_activity_bq"]
        * (np.exp(-(k_wash + decay) * t) - np.exp(-(k_up + decay) * t))
    )
    return xr.DataArray(
        activity,
        dims=("timepoint", "compartment"),
        coords={"compartment": anatomy["compartment"].values, "hours_post_injection": ("timepoint", hours)},
        attrs={"units": "Bq", "long_name": "activity per kinetic compartment"},
    )


def cumulated_activity_bq_s(anatomy: xr.Dataset) -> xr.DataArray:
    """Time-integrated activity (0 to infinity) of every compartment, Bq s: the analytic integral of the model."""
    decay = np.log(2.0) / lu177_half_life_h()
    k_up = np.log(2.0) / anatomy["uptake_half_life_h"].values
    k_wash = np.log(2.0) / anatomy["washout_half_life_h"].values
    integral_h = anatomy["fraction"].values * (1.0 / (k_wash + decay) - 1.0 / (k_up + decay))
    return xr.DataArray(
        integral_h * anatomy.attrs["administered_activity_bq"] * 3600.0,
        dims=("compartment",),
        coords={"compartment": anatomy["compartment"].values},
        attrs={"units": "Bq s"},
    )
