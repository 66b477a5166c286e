"""One interface to the two SPECT models of a virtual patient: ``fast`` (default) and ``pytomography``."""

from __future__ import annotations

from typing import Any

import numpy as np
import xarray as xr

from ._spect_acquisition import Acquisition, mean_transmission, mu_208kev_per_cm
from ._spect_fast import FastModelCalibration, reconstruct_fast
from ._spect_pytomography import reconstruct_pytomography

SPECT_MODELS = ("fast", "pytomography")


def natural_counts(
    activity_bq_ml: np.ndarray, density: np.ndarray, spacing_mm, acquisition: Acquisition = Acquisition()
) -> np.ndarray:
    """Expected total counts of each time point's scan: activity x attenuation x sensitivity x acquisition time.

    Attenuation is averaged over four orthogonal views (:func:`mean_transmission`), the fast model's stand-in for the
    full projection; the ``pytomography`` model computes its own count level from its projections.
    activity (timepoint, z, y, x) Bq/mL; returns (timepoint,) counts.
    """
    transmission = mean_transmission(mu_208kev_per_cm(density), spacing_mm)
    voxel_ml = float(np.prod(spacing_mm)) / 1000.0
    seen_bq = np.einsum("tzyx,zyx->t", np.asarray(activity_bq_ml, dtype=np.float64), transmission) * voxel_ml
    return seen_bq * acquisition.counts_per_bq


def simulate_spect(
    activity_true_bq_ml,
    anatomy: xr.Dataset,
    hours,
    model: str = "fast",
    counts=None,
    seed: int | None = None,
    realisations: int = 1,
    acquisition: Acquisition = Acquisition(),
    device=None,
) -> xr.DataArray:
    """Reconstructed SPECT (Bq/mL, on the CT grid) of a virtual patient's true activity at each time point.

    Parameters
    ----------
    activity_true_bq_ml : (timepoint, z, y, x) true activity concentration, Bq/mL (array or DataArray), on the grid
        of ``anatomy``.
    anatomy : Dataset with ``density`` (z, y, x) g/cm3 and attrs ``spacing_mm`` (z, y, x) and ``seed``
        (from :func:`make_anatomy`).
    hours : hours post injection of the time points (timepoint,).
    model : ``"fast"`` (calibrated resolution + correlated noise, seconds) or ``"pytomography"`` (projection with
        attenuation and collimator response, Poisson noise, OSEM; minutes per scan on a CPU).
    counts : None = the count level that follows from activity x sensitivity x acquisition time
        (:mod:`._spect_acquisition`), else total counts per time point (a number or a (timepoint,) sequence).
    seed : noise seed (default: the anatomy's seed); realisation r of time point t is seeded from (seed, r, t).
    realisations : noise realisations of every scan.
    acquisition : camera and protocol (views, view time, sensitivity, OSEM iterations/subsets); the
        ``pytomography`` model uses all of it, the ``fast`` model its count level.
    device : torch device; None = CUDA when available, else CPU.

    Returns
    -------
    DataArray (timepoint, z, y, x), or (realisation, timepoint, z, y, x) when ``realisations > 1``, float32 Bq/mL;
    coordinate ``hours_post_injection``; attrs ``units``, ``spect_model``, ``counts`` (expected total counts per
    time point), ``n_views``, ``seconds_per_view`` (s; only when ``counts`` is None, i.e. the protocol's time set the
    count level) and, for ``pytomography``, ``measured_counts`` (realisation, timepoint).
    """
    where = f"virtual patient seed {anatomy.attrs.get('seed')}"
    if model not in SPECT_MODELS:
        raise ValueError(f"{where}: unknown SPECT model {model!r}; use one of {SPECT_MODELS}")
    if realisations < 1:
        raise ValueError(f"{where}: realisations must be >= 1, got {realisations}")
    activity = np.asarray(activity_true_bq_ml, dtype=np.float32)
    hours = np.atleast_1d(np.asarray(hours, dtype=np.float64))
    density = anatomy["density"].values
    if activity.ndim != 4 or activity.shape[1:] != density.shape or activity.shape[0] != len(hours):
        raise ValueError(
            f"{where}: activity must be (timepoint, z, y, x) = ({len(hours)}, {density.shape}), got {activity.shape}"
        )
    if not np.all(np.isfinite(activity)) or activity.min() < 0:
        raise ValueError(f"{where}: true activity must be finite and >= 0")
    spacing = tuple(float(s) for s in anatomy.attrs["spacing_mm"])
    seed = int(anatomy.attrs["seed"]) if seed is None else int(seed)
    counts_from_protocol = counts is None
    if counts is not None:
        counts = np.broadcast_to(np.asarray(counts, dtype=np.float64), hours.shape).copy()
        if np.any(counts <= 0):
            raise ValueError(f"{where}: counts must be > 0, got {counts}")
    attrs: dict[str, Any] = {
        "units": "Bq/mL",
        "long_name": "reconstructed SPECT activity concentration",
        "spect_model": model,
    }
    if model == "fast":
        if counts is None:
            counts = natural_counts(activity, density, spacing, acquisition)
        values = reconstruct_fast(
            activity, density, spacing, counts, seed=seed, realisations=realisations, device=device
        )
        attrs["counts"] = [float(c) for c in counts]
        attrs["fast_model_calibration"] = FastModelCalibration.stored().__dict__
    else:
        values, expected, measured = reconstruct_pytomography(
            activity,
            density,
            spacing,
            counts=counts,
            seed=seed,
            realisations=realisations,
            acquisition=acquisition,
            device=device,
        )
        attrs["counts"] = [float(c) for c in expected]
        attrs["measured_counts"] = measured.tolist()
    attrs.update(
        n_views=acquisition.n_views, osem_iterations=acquisition.osem_iterations, osem_subsets=acquisition.osem_subsets
    )
    if counts_from_protocol:
        attrs["seconds_per_view"] = acquisition.seconds_per_view
    dims: tuple[str, ...] = ("realisation", "timepoint", "z", "y", "x")
    coords = {"hours_post_injection": ("timepoint", hours)}
    if realisations == 1:
        values, dims = values[0], dims[1:]
    return xr.DataArray(values, dims=dims, coords=coords, attrs=attrs)
