"""The cohort's statistics tables: ``voi_stats``, ``concordance`` and ``absorbed_dose``.

:func:`scan_tables` computes the per-scan rows from one scan Dataset (the flows call it once per scan);
:func:`compute_cohort_tables` loops over a cohort's scans one at a time, adds the per-patient time integration
(:func:`absorbed_dose`) and writes the three tables through the store (units in each column's Arrow metadata).
Dose-rates are in Gy/s throughout, absorbed doses in Gy, times in hours post injection.
"""
from __future__ import annotations

import itertools
import warnings

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from ._metrics import VoiIndex, voi_concordance, voi_metrics
from ._time_integration import fit_time_activity

#: Dose-rate methods in the order their maps are reported; ``dose_rate_{method}`` in a scan.
METHODS = ("dvk", "cnn", "mc")

#: Units of the columns this module adds beyond the store schema's (the schema gives the others).
TABLE_UNITS = {
    "voi_stats": {},
    "concordance": {"nrmse": "1", "mean_error": "1"},
    "absorbed_dose": {"aic": "1", "aicc": "1"},
}


def _voi_type(name: str) -> str:
    from cohort_dosimetry.phantoms import voi_type

    return voi_type(name)


def scan_methods(scan_ds) -> list[str]:
    """The dose-rate methods whose maps the scan holds, in :data:`METHODS` order."""
    return [method for method in METHODS if f"dose_rate_{method}" in scan_ds]


def scan_tables(scan_ds, patient: str, timepoint: str) -> dict[str, pd.DataFrame]:
    """``voi_stats`` and ``concordance`` rows of one scan (a Dataset as ``Cohort.scan`` returns it).

    Needs ``labels`` (z, y, x) with ``attrs["names"]``, at least one ``dose_rate_{dvk,cnn,mc}`` (z, y, x) in Gy/s and
    attrs ``spacing_mm`` (z, y, x) and ``hours_post_injection``. Loads the labels and each map once (one scan in
    memory). ``concordance`` has one row per VOI and pair of methods (``method_b`` the reference: the later one in
    dvk, cnn, mc). Errors name the scan.
    """
    where = f"scan {patient}/{timepoint}"
    methods = scan_methods(scan_ds)
    if not methods:
        raise ValueError(f"{where}: no dose-rate map (expected one of {[f'dose_rate_{m}' for m in METHODS]})")
    for key in ("spacing_mm", "hours_post_injection"):
        if key not in scan_ds.attrs:
            raise ValueError(f"{where}: attribute {key!r} is missing")
    if "labels" not in scan_ds or "names" not in scan_ds["labels"].attrs:
        raise ValueError(f"{where}: no label map with a VOI name table (labels.attrs['names'])")
    try:
        index = VoiIndex(scan_ds["labels"], scan_ds["labels"].attrs["names"])
        voi_types = [_voi_type(name) for name in index.names]
    except ValueError as err:
        raise ValueError(f"{where}: {err}") from None
    maps = {}
    for method in methods:
        variable = scan_ds[f"dose_rate_{method}"]
        units = variable.attrs.get("units", "Gy/s")
        if units != "Gy/s":
            raise ValueError(f"{where}: dose_rate_{method} is in {units!r}, expected 'Gy/s'")
        maps[method] = np.asarray(variable.data)
    stats = []
    for method, dose_rate in maps.items():
        table = voi_metrics(dose_rate, None, {}, scan_ds.attrs["spacing_mm"], index=index,
                            what=f"{where} dose_rate_{method}")
        table.insert(0, "method", method)
        table.insert(0, "voi_type", voi_types)
        stats.append(table)
    voi_stats = pd.concat(stats, ignore_index=True)
    voi_stats.insert(0, "hours_post_injection", float(scan_ds.attrs["hours_post_injection"]))
    voi_stats.insert(0, "timepoint", timepoint)
    voi_stats.insert(0, "patient", patient)
    voi_stats = voi_stats[["patient", "timepoint", "hours_post_injection", "voi", "voi_type", "method", "volume_ml",
                           "mean", "median", "max", "dr10", "dr30", "dr70", "dr90"]].assign(units="Gy/s")
    pairs = []
    for method_a, method_b in itertools.combinations(methods, 2):
        table = voi_concordance(maps[method_a], maps[method_b], None, {}, index=index,
                                what=f"{where} dose_rate_{method_a} vs dose_rate_{method_b}")
        table.insert(1, "method_b", method_b)
        table.insert(1, "method_a", method_a)
        pairs.append(table)
    columns = ["patient", "timepoint", "voi", "method_a", "method_b", "n_voxels", "pearson_r2", "ccc", "slope",
               "intercept", "nrmse", "mean_error"]
    concordance = (pd.concat(pairs, ignore_index=True).assign(patient=patient, timepoint=timepoint)[columns]
                   if pairs else pd.DataFrame(columns=columns))
    return {"voi_stats": voi_stats, "concordance": concordance}


def absorbed_dose(voi_stats: pd.DataFrame, nuclide: str = "Lu177") -> pd.DataFrame:
    """Time integration of every (patient, VOI, method) mean dose-rate curve of a ``voi_stats`` table.

    One row per model applied (``mono_exp``, ``bi_exp``, ``trapezoid``, or ``hanscheid`` for one time point):
    ``patient, voi, method, model, absorbed_dose_gy, uncertainty_gy, n_timepoints, selected, aic, aicc, reason``.
    Exactly one row per curve has ``selected`` True; its ``reason`` says why (criterion values or the rule that
    applied), the others' ``reason`` says why they were not chosen. Scans where the VOI's mean is NaN (empty VOI,
    non-finite voxels) are left out of the curve; a curve with no finite point gets no row.
    """
    rows = []
    for (patient, voi, method), curve in voi_stats.groupby(["patient", "voi", "method"], sort=True):
        curve = curve[np.isfinite(curve["mean"])]
        if curve.empty:
            continue
        try:
            fit = fit_time_activity(curve["hours_post_injection"].to_numpy(), curve["mean"].to_numpy(), nuclide)
        except ValueError as err:
            raise ValueError(f"patient {patient}, VOI {voi}, method {method}: {err}") from None
        for model, model_fit in fit.fits.items():
            chosen = model == fit.selected
            rows.append({
                "patient": patient, "voi": voi, "method": method, "model": model,
                "absorbed_dose_gy": model_fit.absorbed_dose_gy, "uncertainty_gy": model_fit.uncertainty_gy,
                "n_timepoints": len(fit.hours), "selected": chosen, "aic": model_fit.aic, "aicc": model_fit.aicc,
                "reason": fit.reason if chosen else (model_fit.note or f"not selected ({fit.selected} was)"),
            })
    columns = ["patient", "voi", "method", "model", "absorbed_dose_gy", "uncertainty_gy", "n_timepoints",
               "selected", "aic", "aicc", "reason"]
    return pd.DataFrame(rows, columns=columns)


def compute_cohort_tables(cohort, progress: bool = True) -> dict[str, pd.DataFrame]:
    """Compute and write ``voi_stats``, ``concordance`` and ``absorbed_dose`` for every scan of a cohort.

    ``cohort``: a :class:`cohort_dosimetry.store.Cohort`. Scans are read one at a time; scans without any dose-rate
    map yet are skipped with a warning naming them. Returns the three tables as written.
    """
    scans = cohort.scans()
    if not scans:
        raise ValueError(f"cohort {cohort.path} has no complete scan")
    stats, pairs, skipped = [], [], []
    for patient, timepoint in tqdm(scans, desc="scan statistics", unit="scan", disable=not progress):
        scan_ds = cohort.scan(patient, timepoint)
        if not scan_methods(scan_ds):
            skipped.append(f"{patient}/{timepoint}")
            continue
        tables = scan_tables(scan_ds, patient, timepoint)
        stats.append(tables["voi_stats"])
        pairs.append(tables["concordance"])
    if skipped:
        warnings.warn(f"cohort {cohort.path}: scans without any dose-rate map skipped: {', '.join(skipped)}",
                      RuntimeWarning, stacklevel=2)
    if not stats:
        raise ValueError(f"cohort {cohort.path}: no scan has a dose-rate map yet; compute dose-rates first")
    return write_cohort_tables(cohort, pd.concat(stats, ignore_index=True), pd.concat(pairs, ignore_index=True))


def write_cohort_tables(cohort, voi_stats: pd.DataFrame, concordance: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Add the time integration to per-scan rows (``scan_tables`` of every scan, concatenated) and write the tables.

    For flows that compute :func:`scan_tables` per scan in parallel; :func:`compute_cohort_tables` ends here too.
    Returns ``{"voi_stats", "concordance", "absorbed_dose"}`` as written.
    """
    scans = sorted(set(zip(voi_stats["patient"], voi_stats["timepoint"])))
    tables = {"voi_stats": voi_stats.reset_index(drop=True), "concordance": concordance.reset_index(drop=True),
              "absorbed_dose": absorbed_dose(voi_stats, nuclide=_cohort_nuclide(cohort, scans))}
    for name, table in tables.items():
        cohort.write_table(name, table, units=TABLE_UNITS[name])
    return tables


def _cohort_nuclide(cohort, scans) -> str:
    nuclides = {cohort.scan_attrs(patient, timepoint).get("nuclide", "Lu177") for patient, timepoint in scans}
    if len(nuclides) != 1:
        raise ValueError(f"cohort {cohort.path} mixes nuclides {sorted(nuclides)}; time integration needs one")
    return nuclides.pop()
