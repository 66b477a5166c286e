"""The one entry point for a scan's dose-rate maps: DVK, CNN (DVK + learned residual) and Monte Carlo.

Flows, the CLI and notebooks all call :func:`dose_rates`; each method is one module of this package, registered in
:mod:`._registry`.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import cast

import numpy as np
import xarray as xr

from cohort_dosimetry.constants import MC_DECAYS, METHODS, ML_PER_MM3

from ._registry import DoseInputs, Maps, dose_method


def dose_rates(
    scan: xr.Dataset,
    methods=("dvk", "cnn"),
    device=None,
    mc_decays: int = MC_DECAYS,
    seed: int = 0,
    weights: str | Path | None = None,
) -> xr.Dataset:
    """Dose-rate maps of one time point of one scan.

    Parameters
    ----------
    scan : Dataset of one time point, as ``Cohort.scan(patient, timepoint)`` or
        ``make_virtual_patient(...).isel(timepoint=i)`` gives it: ``activity`` (z, y, x) in Bq/mL, ``density``
        (z, y, x) in g/cm3, attrs ``spacing_mm`` (z, y, x) in mm. Lazy (dask) arrays are loaded here.
    methods : any of "dvk", "cnn", "mc". "cnn" uses the DVK map as its prior: the scan's ``dose_rate_dvk`` when it
        has one and "dvk" is not asked, else computed here once for both.
    device : "cpu", "cuda", a torch.device or None (CUDA when available) for the DVK FFTs, the CNN and the MC.
    mc_decays : number of decays the MC simulates; ``seed`` seeds it.
    weights : model card JSON for "cnn"; None = the shipped compact-grid model.

    Returns
    -------
    Dataset with ``dose_rate_<method>`` (z, y, x) float32 in Gy/s for every asked method, plus
    ``dose_rate_mc_uncertainty`` (relative, 1 sigma) with "mc"; coordinates of ``scan``'s z, y, x if it has them;
    attrs ``spacing_mm``.
    """
    name = _scan_name(scan)
    methods = tuple(methods)
    unknown = sorted(set(methods) - set(METHODS))
    if not methods or unknown:
        raise ValueError(f"{name}: dose-rate methods must be a non-empty selection of {METHODS}, got {methods}")
    activity_bq_ml, density, spacing_mm = _checked_inputs(scan, name)
    activity_bq = (activity_bq_ml * (float(np.prod(spacing_mm)) * ML_PER_MM3)).astype(np.float32)  # Bq per voxel
    inputs = DoseInputs(
        name,
        scan,
        activity_bq,
        density,
        spacing_mm,
        device=device,
        mc_decays=int(mc_decays),
        seed=int(seed),
        weights=weights,
    )
    ordered = [dose_method(m) for m in METHODS if m in methods]  # DVK before the CNN that takes it as its prior
    for method in ordered:
        method.check(inputs)
    maps: Maps = {}
    for method in ordered:
        maps.update(method.compute(inputs))
    coords = {d: scan.coords[d] for d in ("z", "y", "x") if d in scan.coords}
    return xr.Dataset(
        {
            key: xr.DataArray(
                np.asarray(v, dtype=np.float32), dims=("z", "y", "x"), coords=coords, attrs={"units": "Gy/s", **attrs}
            )
            for key, (v, attrs) in maps.items()
        },
        attrs={"spacing_mm": list(spacing_mm)},
    )


def _scan_name(scan) -> str:
    parts = [str(scan.attrs[k]) for k in ("patient", "timepoint") if k in getattr(scan, "attrs", {})]
    return "scan " + "/".join(parts) if parts else "scan"


def _checked_inputs(scan, name: str) -> tuple[np.ndarray, np.ndarray, tuple[float, ...]]:
    if not isinstance(scan, xr.Dataset):
        raise TypeError(f"{name}: dose_rates takes an xarray Dataset of one time point, got {type(scan).__name__}")
    arrays = {}
    for var, unit in (("activity", "Bq/mL"), ("density", "g/cm3")):
        if var not in scan:
            present = sorted(cast("Iterable[str]", scan.data_vars))  # xarray types names as Hashable; a scan's are str
            raise ValueError(f"{name}: no '{var}' variable ({unit}); the scan has {present}")
        da = scan[var]
        if da.ndim != 3:
            raise ValueError(
                f"{name}: '{var}' must be one (z, y, x) volume of one time point, got dims {da.dims}; "
                "select a time point first, e.g. .isel(timepoint=i)"
            )
        values = np.array(da.values, dtype=np.float32)  # a writable copy: lazy or memory-mapped input is loaded here
        bad = int(np.count_nonzero(~np.isfinite(values)))
        if bad:
            raise ValueError(f"{name}: '{var}' holds {bad} NaN or infinite voxels")
        negative = int(np.count_nonzero(values < 0))
        if negative:
            raise ValueError(f"{name}: '{var}' holds {negative} negative voxels (min {values.min():.4g} {unit})")
        arrays[var] = values
    if arrays["activity"].shape != arrays["density"].shape:
        raise ValueError(
            f"{name}: activity {arrays['activity'].shape} and density {arrays['density'].shape} "
            "are not on the same grid"
        )
    spacing = scan.attrs.get("spacing_mm")
    if spacing is None or len(spacing) != 3 or not all(np.isfinite(s) and s > 0 for s in map(float, spacing)):
        raise ValueError(f"{name}: attrs['spacing_mm'] must be three positive (z, y, x) values in mm, got {spacing}")
    return arrays["activity"], arrays["density"], tuple(float(s) for s in spacing)
