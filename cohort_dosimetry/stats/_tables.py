"""The cohort's statistics tables: ``voi_stats``, ``concordance``, ``absorbed_dose`` and ``absorbed_dose_total``.

:func:`scan_tables` computes the per-scan rows from one scan Dataset (the flows call it once per scan);
:func:`compute_cohort_tables` loops over a cohort's scans one at a time, adds the time integration per therapy cycle
(:func:`absorbed_dose`: one time-activity curve per patient, cycle, VOI and method, since each scan's hours count
from its own cycle's injection) and the sum over each patient's cycles (:func:`absorbed_dose_total`), and writes the
tables through the store (units in each column's Arrow metadata). Dose-rates are in Gy/s throughout, absorbed doses
in Gy, times in hours post injection.
"""

from __future__ import annotations

import itertools
import warnings
from types import SimpleNamespace

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from ._cycle_tables import stored_cycle_tables, with_voi_level
from ._metrics import VoiIndex, voi_concordance, voi_metrics
from ._time_integration import fit_time_activity
from ._uncertainty import voi_activities_bq, voi_counts, voi_dose_uncertainty

#: Dose-rate methods in the order their maps are reported; ``dose_rate_{method}`` in a scan.
METHODS = ("dvk", "cnn", "mc")

#: Units of the columns this module adds beyond the store schema's (the schema gives the others).
TABLE_UNITS = {
    "voi_stats": {},
    "concordance": {"nrmse": "1", "mean_error": "1"},
    "absorbed_dose": {"aic": "1", "aicc": "1"},
    "absorbed_dose_total": {},
    "voxel_absorbed_dose": {},
    "dose_volume_histograms": {},
    "registrations": {},
}
#: The tables of the per-cycle absorbed-dose maps (:mod:`._cycle_tables`).
CYCLE_TABLES = ("voxel_absorbed_dose", "dose_volume_histograms", "registrations")
#: ``model`` of the one row of a curve that could not be integrated (its dose is NaN, its reason says why).
NOT_INTEGRATED = "none"


def _voi_type(name: str) -> str:
    from cohort_dosimetry.vocabulary import voi_type

    return voi_type(name)


def scan_methods(scan_ds) -> list[str]:
    """The dose-rate methods whose maps the scan holds, in :data:`METHODS` order."""
    return [method for method in METHODS if f"dose_rate_{method}" in scan_ds]


def scan_tables(scan_ds, patient: str, timepoint: str) -> dict[str, pd.DataFrame]:
    """``voi_stats`` and ``concordance`` rows of one scan (a Dataset as ``Cohort.scan`` returns it).

    Needs ``labels`` (z, y, x) with ``attrs["names"]`` (and ``attrs["vois"]`` where VOIs overlap: each VOI's rows are
    over its own voxels), at least one ``dose_rate_{dvk,cnn,mc}`` (z, y, x) in Gy/s and attrs ``spacing_mm``
    (z, y, x), ``hours_post_injection``, ``cycle`` and ``nuclide`` (``voi_stats`` repeats the last three on each
    row). Loads the labels and each map once (one scan in memory). ``voi_stats`` also gives each VOI's activity in
    the scan, ``activity_bq`` (Bq, from the ``activity`` map (z, y, x) Bq/mL; NaN without one), and the scan's
    ``acquisition_duration_s`` (s, scan attr; NaN where the NM header gave none): what the count noise of
    :func:`absorbed_dose` needs. ``concordance`` has one row per VOI and pair of methods (``method_b`` the
    reference: the later one in dvk, cnn, mc). Errors name the scan.
    """
    where = f"scan {patient}/{timepoint}"
    methods = scan_methods(scan_ds)
    if not methods:
        raise ValueError(f"{where}: no dose-rate map (expected one of {[f'dose_rate_{m}' for m in METHODS]})")
    for key in ("spacing_mm", "hours_post_injection", "cycle", "nuclide"):
        if key not in scan_ds.attrs:
            raise ValueError(f"{where}: attribute {key!r} is missing")
    if "labels" not in scan_ds or "names" not in scan_ds["labels"].attrs:
        raise ValueError(f"{where}: no label map with a VOI name table (labels.attrs['names'])")
    try:
        index = VoiIndex.from_labels(scan_ds["labels"])  # VOIs may overlap: each over its own voxels
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
        table = voi_metrics(
            dose_rate, None, {}, scan_ds.attrs["spacing_mm"], index=index, what=f"{where} dose_rate_{method}"
        )
        table.insert(0, "method", method)
        table.insert(0, "voi_type", voi_types)
        stats.append(table)
    voi_stats = pd.concat(stats, ignore_index=True)
    # the VOI's activity, one pass over the activity map (as cheap as one dose-rate map's mean); same for every method
    activity = (
        voi_activities_bq(np.asarray(scan_ds["activity"].data), index, scan_ds.attrs["spacing_mm"])
        if "activity" in scan_ds
        else np.full(len(index.names), np.nan)
    )
    voi_stats["activity_bq"] = voi_stats["voi"].map(dict(zip(index.names, activity))).astype(np.float64)
    duration = scan_ds.attrs.get("acquisition_duration_s")
    voi_stats["acquisition_duration_s"] = float(duration) if duration is not None else np.nan
    voi_stats.insert(0, "nuclide", str(scan_ds.attrs["nuclide"]))
    voi_stats.insert(0, "hours_post_injection", float(scan_ds.attrs["hours_post_injection"]))
    voi_stats.insert(0, "cycle", int(scan_ds.attrs["cycle"]))
    voi_stats.insert(0, "timepoint", timepoint)
    voi_stats.insert(0, "patient", patient)
    voi_stats = voi_stats[
        [
            "patient",
            "timepoint",
            "cycle",
            "hours_post_injection",
            "nuclide",
            "voi",
            "voi_type",
            "method",
            "volume_ml",
            "mean",
            "median",
            "max",
            "dr10",
            "dr30",
            "dr70",
            "dr90",
            "activity_bq",
            "acquisition_duration_s",
        ]
    ].assign(units="Gy/s")
    pairs = []
    for method_a, method_b in itertools.combinations(methods, 2):
        table = voi_concordance(
            maps[method_a],
            maps[method_b],
            None,
            {},
            index=index,
            what=f"{where} dose_rate_{method_a} vs dose_rate_{method_b}",
        )
        table.insert(1, "method_b", method_b)
        table.insert(1, "method_a", method_a)
        pairs.append(table)
    columns = [
        "patient",
        "timepoint",
        "voi",
        "method_a",
        "method_b",
        "n_voxels",
        "pearson_r2",
        "ccc",
        "slope",
        "intercept",
        "nrmse",
        "mean_error",
    ]
    concordance = (
        pd.concat(pairs, ignore_index=True).assign(patient=patient, timepoint=timepoint)[columns]
        if pairs
        else pd.DataFrame(columns=columns)
    )
    return {"voi_stats": voi_stats, "concordance": concordance}


def absorbed_dose(
    voi_stats: pd.DataFrame,
    nuclide: str = "Lu177",
    *,
    sensitivity_cps_per_mbq: float | None = None,
    calibration_uncertainty: float | None = None,
) -> pd.DataFrame:
    """Time integration of every (patient, cycle, VOI, method) mean dose-rate curve of a ``voi_stats`` table.

    ``voi_stats`` needs ``patient, voi, method, hours_post_injection, mean``; ``cycle`` (default 1), ``nuclide``
    (default the ``nuclide`` argument; decay data from ICRP-107) and ``timepoint`` (names the scans in reasons) are
    used where present. Hours count from each cycle's own injection, so each cycle is a curve of its own.

    One row per model applied (``mono_exp``, ``bi_exp``, ``trapezoid``; for one time point the single-time-point
    rule's ``hanscheid`` or ``madsen``, the VOI's class choosing the prior, or :data:`NOT_INTEGRATED` outside every
    window):
    ``patient, cycle, voi, method, model, absorbed_dose_gy, uncertainty_gy, uncertainty_fit_gy,
    uncertainty_counts_gy, uncertainty_calibration_gy, uncertainty_note, n_timepoints, selected, aic, aicc,
    reason``. Exactly one row per curve has ``selected`` True; its ``reason`` says why (criterion values or the rule
    that applied), the others' ``reason`` says why they were not chosen. Scans where the VOI's mean is NaN (empty
    VOI, non-finite voxels) are left out of the curve; a curve with no finite point gets no row. A curve that cannot
    be integrated (two scans at the same hour, e.g. two reconstructions of one acquisition; scans of different
    nuclides; a nuclide without decay data) gets one row, model :data:`NOT_INTEGRATED`, NaN dose, ``selected``
    True, and a reason naming its scans; the other curves go on.

    Uncertainty, 1 sd in Gy, of each row's model (:func:`voi_dose_uncertainty`, EANM 2018 structure): ``_fit_gy``
    from the fit's covariance (NaN for the trapezoid and single-time-point rules); ``_counts_gy`` the Poisson count
    noise, ``N_i = activity_bq_i x 1e-6 x sensitivity_cps_per_mbq x acquisition_duration_s_i`` counts at scan ``i``
    (``voi_stats`` columns of :func:`scan_tables`; NaN without a sensitivity, or where a scan has no acquisition
    duration or the VOI no positive activity, ``uncertainty_note`` saying which); ``_calibration_gy`` =
    ``calibration_uncertainty x D`` (relative, common to every scan; NaN when not given: then it is not part of the
    total). ``uncertainty_gy`` is the total: ``sqrt(max(fit, counts)^2 + calibration^2)`` over the finite ones, NaN
    without a finite fit or count component (the fit's scatter holds the count noise, so the two are not added).
    """
    if sensitivity_cps_per_mbq is not None and not (
        np.isfinite(sensitivity_cps_per_mbq) and sensitivity_cps_per_mbq > 0
    ):
        raise ValueError(f"camera sensitivity must be positive cps/MBq, got {sensitivity_cps_per_mbq!r}")
    if calibration_uncertainty is not None and not (
        np.isfinite(calibration_uncertainty) and calibration_uncertainty >= 0
    ):
        raise ValueError(f"calibration uncertainty must be a relative value >= 0, got {calibration_uncertainty!r}")
    table = voi_stats
    if "cycle" not in table:
        table = table.assign(cycle=1)
    if "nuclide" not in table:
        table = table.assign(nuclide=nuclide)
    rows = []
    for (patient, cycle, voi, method), curve in table.groupby(["patient", "cycle", "voi", "method"], sort=True):
        curve = curve[np.isfinite(curve["mean"])]
        if curve.empty:
            continue
        key = {"patient": patient, "cycle": int(cycle), "voi": voi, "method": method}
        hours = curve["hours_post_injection"].to_numpy()
        nuclides = sorted(set(curve["nuclide"]))
        try:
            if len(nuclides) > 1:
                raise ValueError(f"its scans are of different nuclides {nuclides}")
            fit = fit_time_activity(hours, curve["mean"].to_numpy(), nuclides[0], voi_class=str(voi))
        except ValueError as err:
            names = curve["timepoint"] if "timepoint" in curve else [f"scan {k + 1}" for k in range(len(curve))]
            scans = ", ".join(f"{patient}/{name} ({hour:g} h)" for name, hour in zip(names, hours))
            rows.append(
                {
                    **key,
                    "model": NOT_INTEGRATED,
                    "absorbed_dose_gy": np.nan,
                    "uncertainty_gy": np.nan,
                    **dict.fromkeys(_COMPONENTS, np.nan),
                    "uncertainty_note": "",
                    "n_timepoints": len(curve),
                    "selected": True,
                    "aic": np.nan,
                    "aicc": np.nan,
                    "reason": f"not integrated: {err}; scans of cycle {int(cycle)}: {scans}",
                }
            )
            continue
        counts, counts_note = _curve_counts(curve, sensitivity_cps_per_mbq, patient)
        for model, model_fit in fit.fits.items():
            chosen = model == fit.selected
            uncertainty = _uncertainty_of(fit, model, curve, counts, counts_note, calibration_uncertainty, nuclides[0])
            rows.append(
                {
                    **key,
                    "model": model,
                    "absorbed_dose_gy": model_fit.absorbed_dose_gy,
                    **uncertainty,
                    "n_timepoints": len(fit.hours),
                    "selected": chosen,
                    "aic": model_fit.aic,
                    "aicc": model_fit.aicc,
                    "reason": fit.reason if chosen else (model_fit.note or f"not selected ({fit.selected} was)"),
                }
            )
    columns = [
        "patient",
        "cycle",
        "voi",
        "method",
        "model",
        "absorbed_dose_gy",
        "uncertainty_gy",
        *_COMPONENTS,
        "uncertainty_note",
        "n_timepoints",
        "selected",
        "aic",
        "aicc",
        "reason",
    ]
    return pd.DataFrame(rows, columns=columns)


#: The uncertainty components of an ``absorbed_dose`` row, Gy (1 sd); ``uncertainty_gy`` is their total.
_COMPONENTS = ("uncertainty_fit_gy", "uncertainty_counts_gy", "uncertainty_calibration_gy")


def _curve_counts(curve: pd.DataFrame, sensitivity_cps_per_mbq: float | None, patient) -> tuple[np.ndarray | None, str]:
    """Counts attributed to the VOI at each scan of ``curve`` (its ``voi_stats`` rows), or None and why not."""
    if sensitivity_cps_per_mbq is None:
        return None, "count noise not estimated: no camera sensitivity given (--sensitivity-cps-per-mbq)"
    if "activity_bq" not in curve or "acquisition_duration_s" not in curve:
        return None, "count noise not estimated: voi_stats has no VOI activity or acquisition duration"
    activity = curve["activity_bq"].to_numpy(dtype=np.float64)
    duration = curve["acquisition_duration_s"].to_numpy(dtype=np.float64)
    names = curve["timepoint"] if "timepoint" in curve else [f"scan {k + 1}" for k in range(len(curve))]
    no_duration = [f"{patient}/{name}" for name, value in zip(names, duration) if not (value > 0)]
    if no_duration:
        return None, f"count noise not estimated: no acquisition duration in the NM header of {', '.join(no_duration)}"
    no_activity = [f"{patient}/{name}" for name, value in zip(names, activity) if not (value > 0)]
    if no_activity:
        return None, f"count noise not estimated: the VOI holds no positive activity in {', '.join(no_activity)}"
    calibrations = [
        SimpleNamespace(sensitivity_cps_per_mbq=sensitivity_cps_per_mbq, acquisition_duration_s=t) for t in duration
    ]
    return voi_counts(activity, calibration=calibrations), ""


def _uncertainty_of(
    fit, model: str, curve: pd.DataFrame, counts, counts_note: str, calibration: float | None, nuclide: str
) -> dict:
    """``uncertainty_gy``, the components and ``uncertainty_note`` of one model of a fitted curve."""
    if not np.isfinite(fit.fits[model].absorbed_dose_gy):
        return {"uncertainty_gy": np.nan, **dict.fromkeys(_COMPONENTS, np.nan), "uncertainty_note": ""}
    u = voi_dose_uncertainty(
        curve["hours_post_injection"].to_numpy(),
        curve["mean"].to_numpy(),
        counts,
        calibration or 0.0,
        nuclide=nuclide,
        fit=fit,
        model=model,
    )
    notes = [] if np.isfinite(u.fit_gy) else [f"no fit uncertainty ({model})"]
    notes += [counts_note] if counts is None else []
    if calibration is None:
        notes.append("calibration uncertainty not given (--calibration-uncertainty): not in uncertainty_gy")
    if np.isfinite(u.random_gy):
        notes.append("random part from " + ("the fit" if u.random_gy == u.fit_gy else "count noise"))
    else:
        notes.append("no fit or count-noise component: uncertainty_gy not estimable")
    return {
        "uncertainty_gy": u.total_gy,
        "uncertainty_fit_gy": u.fit_gy,
        "uncertainty_counts_gy": u.counts_gy,
        "uncertainty_calibration_gy": u.calibration_gy if calibration is not None else np.nan,
        "uncertainty_note": "; ".join(notes),
    }


def absorbed_dose_total(absorbed: pd.DataFrame) -> pd.DataFrame:
    """Per patient, VOI and method: the selected absorbed dose of each of the patient's cycles, summed.

    ``absorbed``: an :func:`absorbed_dose` table. The patient's cycles are those of any of its rows. Returns
    ``patient, voi, method, absorbed_dose_gy, uncertainty_gy, n_cycles, cycles, models, reason``: ``uncertainty_gy``
    combines the cycles' total uncertainties: their random parts (fit or count noise) in quadrature, the cycles
    being separate acquisitions and fits, and their calibration components (``uncertainty_calibration_gy`` where
    given) linearly, one camera calibration being common to every cycle; NaN if one cycle's is NaN (not
    estimable). ``cycles`` lists them ("1,2"), ``models`` the model chosen per cycle. The sum is NaN, with the
    reason, when a cycle of the patient has no dose for the VOI and method (no curve, or one that could not be
    integrated): a total over fewer cycles than the patient had would read as the patient's total.
    """
    columns = [
        "patient",
        "voi",
        "method",
        "absorbed_dose_gy",
        "uncertainty_gy",
        "n_cycles",
        "cycles",
        "models",
        "reason",
    ]
    if absorbed.empty:
        return pd.DataFrame(columns=columns)
    cycles_of = absorbed.groupby("patient")["cycle"].agg(lambda c: sorted(set(int(v) for v in c)))
    chosen = absorbed[absorbed["selected"].astype(bool)]
    rows = []
    for (patient, voi, method), group in chosen.groupby(["patient", "voi", "method"], sort=True):
        by_cycle = group.set_index(group["cycle"].astype(int))
        cycles = cycles_of[patient]
        missing = [c for c in cycles if c not in by_cycle.index]
        failed = [c for c in cycles if c in by_cycle.index and not np.isfinite(by_cycle.loc[c, "absorbed_dose_gy"])]
        reasons = [f"cycle {c}: no {method} curve of {voi}" for c in missing]
        reasons += [f"cycle {c}: {by_cycle.loc[c, 'reason']}" for c in failed]
        doses = by_cycle["absorbed_dose_gy"].reindex(cycles).to_numpy(dtype=float)
        sigmas = by_cycle["uncertainty_gy"].reindex(cycles).to_numpy(dtype=float)
        calibration = np.zeros(len(cycles))  # not given: not part of the per-cycle totals either
        if "uncertainty_calibration_gy" in by_cycle:
            calibration = np.nan_to_num(by_cycle["uncertainty_calibration_gy"].reindex(cycles).to_numpy(dtype=float))
        random = np.sqrt(np.maximum(sigmas**2 - calibration**2, 0.0))
        rows.append(
            {
                "patient": patient,
                "voi": voi,
                "method": method,
                "absorbed_dose_gy": float(np.sum(doses)),
                "uncertainty_gy": float(np.sqrt(np.sum(random**2) + np.sum(calibration) ** 2)),
                "n_cycles": len(cycles),
                "cycles": ",".join(str(c) for c in cycles),
                "models": ", ".join(f"{c}: {by_cycle.loc[c, 'model']}" for c in cycles if c in by_cycle.index),
                "reason": "; ".join(reasons),
            }
        )
    return pd.DataFrame(rows, columns=columns)


def _empty(name: str) -> pd.DataFrame:
    """A table of the store schema with its columns and no rows."""
    from cohort_dosimetry.store import store_schema

    return pd.DataFrame({column: [] for column in store_schema()["tables"][name]["columns"]})


def compute_cohort_tables(
    cohort,
    progress: bool = True,
    *,
    sensitivity_cps_per_mbq: float | None = None,
    calibration_uncertainty: float | None = None,
) -> dict[str, pd.DataFrame]:
    """Compute and write ``voi_stats``, ``concordance``, ``absorbed_dose`` and ``absorbed_dose_total`` for every scan
    of a cohort, and the tables of its per-cycle absorbed-dose maps.

    ``cohort``: a :class:`cohort_dosimetry.store.Cohort`. Scans are read one at a time; scans without any dose-rate
    map yet are skipped with a warning naming them. ``sensitivity_cps_per_mbq`` (the site's camera sensitivity) and
    ``calibration_uncertainty`` (relative): the count-noise and calibration components of the absorbed dose's
    uncertainty (:func:`absorbed_dose`; None: not estimated). Returns the four tables as written.
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
        warnings.warn(
            f"cohort {cohort.path}: scans without any dose-rate map skipped: {', '.join(skipped)}",
            RuntimeWarning,
            stacklevel=2,
        )
    if not stats:
        raise ValueError(f"cohort {cohort.path}: no scan has a dose-rate map yet; compute dose-rates first")
    cycles = [stored_cycle_tables(cohort, patient, cycle) for patient, cycle in cohort.cycle_results()]
    return write_cohort_tables(
        cohort,
        pd.concat(stats, ignore_index=True),
        pd.concat(pairs, ignore_index=True),
        cycles,
        sensitivity_cps_per_mbq=sensitivity_cps_per_mbq,
        calibration_uncertainty=calibration_uncertainty,
    )


def write_cohort_tables(
    cohort,
    voi_stats: pd.DataFrame,
    concordance: pd.DataFrame,
    cycles: list[dict[str, pd.DataFrame]] | None = None,
    *,
    sensitivity_cps_per_mbq: float | None = None,
    calibration_uncertainty: float | None = None,
) -> dict[str, pd.DataFrame]:
    """Add the time integration to per-scan rows (``scan_tables`` of every scan, concatenated) and write the tables.

    For flows that compute :func:`scan_tables` per scan in parallel; :func:`compute_cohort_tables` ends here too.
    Each curve is integrated with its own scans' nuclide (``voi_stats.nuclide``), so one foreign or mixed curve
    does not stop the others. ``cycles``: the :func:`cycle_tables` of every per-cycle result of the store (absorbed-
    dose maps); their tables are written too (empty when there are none), the VOI-level result beside each map's
    statistics. ``sensitivity_cps_per_mbq``, ``calibration_uncertainty``: as :func:`absorbed_dose` takes them.
    Returns ``{"voi_stats", "concordance", "absorbed_dose", "absorbed_dose_total"}`` and the three per-cycle tables
    as written.
    """
    absorbed = absorbed_dose(
        voi_stats, sensitivity_cps_per_mbq=sensitivity_cps_per_mbq, calibration_uncertainty=calibration_uncertainty
    )
    tables = {
        "voi_stats": voi_stats.reset_index(drop=True),
        "concordance": concordance.reset_index(drop=True),
        "absorbed_dose": absorbed,
        "absorbed_dose_total": absorbed_dose_total(absorbed),
    }
    for name in CYCLE_TABLES:
        parts = [c[name] for c in cycles or () if len(c[name])]
        table = pd.concat(parts, ignore_index=True) if parts else _empty(name)
        tables[name] = with_voi_level(table, absorbed, voi_stats) if name == "voxel_absorbed_dose" and parts else table
    for name, table in tables.items():
        cohort.write_table(name, table, units=TABLE_UNITS[name])
    return tables
