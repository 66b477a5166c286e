"""A complete virtual patient: anatomy, true activity and reconstructed SPECT at every time point (synthetic)."""

from __future__ import annotations

import numpy as np
import xarray as xr

from cohort_dosimetry.grid import Grid

from ._anatomy import activity_true, make_anatomy
from ._spect import simulate_spect
from ._spect_acquisition import Acquisition

#: Scan times of the published cohort (Li et al. 2022: up to 4 scans, day 0 to 7), hours post injection.
DEFAULT_HOURS = (4.0, 24.0, 96.0, 168.0)


def make_virtual_patient(
    seed: int,
    grid: str | Grid = "compact",
    hours=DEFAULT_HOURS,
    spect: str = "fast",
    realisations: int = 1,
    counts=None,
    acquisition: Acquisition = Acquisition(),
    device=None,
) -> xr.Dataset:
    """A seeded virtual patient shaped like a store scan series (synthetic: stands in for patient data).

    Parameters
    ----------
    seed : patient seed (anatomy, kinetics and SPECT noise).
    grid : ``"compact"`` (128x128x130 at 3.91x3.91x3 mm), ``"paper"`` (512x512x130 at 0.98x0.98x3 mm) or a Grid.
    hours : scan times, hours post injection, increasing.
    spect, realisations, counts, acquisition, device : see :func:`simulate_spect`.

    Returns
    -------
    xr.Dataset with ``ct_hu`` (z, y, x) HU int16, ``density`` (z, y, x) g/cm3, ``labels`` (z, y, x) int16 (attrs
    ``names``), ``activity`` (timepoint, z, y, x) Bq/mL reconstructed SPECT ((realisation, timepoint, z, y, x) when
    ``realisations > 1``), ``activity_true`` (timepoint, z, y, x) Bq/mL; coordinates ``timepoint`` ("tp1", ...),
    ``hours_post_injection`` (timepoint) h and ``z``, ``y``, ``x`` (LPS mm); attrs ``spacing_mm``, ``origin_mm``
    (z, y, x), ``seed``, ``sex``, ``administered_activity_bq``, ``nuclide``, ``synthetic``, ``spect_model``,
    ``counts`` (expected total counts per time point), ``n_views`` and ``seconds_per_view`` (s; only when ``counts``
    is None) of the simulated acquisition, ``lesion_sites``.
    """
    hours = np.atleast_1d(np.asarray(hours, dtype=np.float64))
    if hours.ndim != 1 or len(hours) == 0 or np.any(np.diff(hours) <= 0) or hours[0] <= 0:
        raise ValueError(f"virtual patient seed {seed}: hours post injection must be > 0 and increasing, got {hours}")
    anatomy = make_anatomy(seed, grid)
    truth = activity_true(anatomy, hours)
    simulated = simulate_spect(
        truth.values,
        anatomy,
        hours,
        model=spect,
        counts=counts,
        seed=seed,
        realisations=realisations,
        acquisition=acquisition,
        device=device,
    )
    timepoints = [f"tp{k + 1}" for k in range(len(hours))]
    attrs = dict(anatomy.attrs)
    attrs.update(
        spect_model=simulated.attrs["spect_model"],
        counts=simulated.attrs["counts"],
        n_views=simulated.attrs["n_views"],
        osem_iterations=simulated.attrs["osem_iterations"],
        osem_subsets=simulated.attrs["osem_subsets"],
    )
    if "measured_counts" in simulated.attrs:
        attrs["measured_counts"] = simulated.attrs["measured_counts"]
    if "seconds_per_view" in simulated.attrs:  # the protocol's view time set the count level
        attrs["seconds_per_view"] = simulated.attrs["seconds_per_view"]
    spect_attrs = {k: v for k, v in simulated.attrs.items() if k in ("units", "long_name", "spect_model")}
    return xr.Dataset(
        {
            "ct_hu": anatomy["ct_hu"],
            "density": anatomy["density"],
            "labels": anatomy["labels"],
            "activity": (simulated.dims, simulated.values, spect_attrs),
            "activity_true": (truth.dims, truth.values, truth.attrs),
        },
        coords={
            "timepoint": ("timepoint", timepoints),
            "hours_post_injection": ("timepoint", hours, {"units": "h"}),
            "z": anatomy["z"],
            "y": anatomy["y"],
            "x": anatomy["x"],
        },
        attrs=attrs,
    )
