"""Tables of the per-cycle absorbed-dose maps: ``voxel_absorbed_dose``, ``dose_volume_histograms`` and
``registrations``.

One therapy cycle's results (``Cohort.cycle``: ``absorbed_dose_<method>`` (z, y, x) Gy on the grid of the cycle's
reference scan, ``integration_rule_<method>``, the registrations in the attrs) and the reference scan's contours give,
per VOI and method, the statistics of the map (mean, D2, D50, D98 in Gy; :func:`dose_statistics`), the share of the
VOI's voxels whose tail was fitted, and the cumulative DVH at :data:`DVH_LEVELS` levels. :func:`with_voi_level` puts
the VOI-level result of the same curve (``absorbed_dose`` table, selected model) beside each row.

Without motion the two agree within bounds that follow from the rules (``_voxel_dose`` module docstring: exactly for
the physical tail; otherwise bounded by the fitted-tail voxels' share and by the difference between the selected
model and the trapezoid). With motion they differ further by what registration and resampling do to each time
point's map; the VOI-level result uses each scan's own contours and needs no registration.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ._metrics import VoiIndex
from ._voxel_dose import RULE_CODES, dose_statistics, dose_volume_histogram, integrate_curve

#: Dose levels per cumulative DVH: 0 to the VOI's highest dose, evenly spaced.
DVH_LEVELS = 101


def _voi_type(name: str) -> str:
    from cohort_dosimetry.vocabulary import voi_type

    return voi_type(name)


def cycle_tables(cycle_ds, labels) -> dict[str, pd.DataFrame]:
    """``voxel_absorbed_dose`` (without the VOI-level columns), ``dose_volume_histograms`` and ``registrations`` rows
    of one cycle.

    ``cycle_ds``: a Dataset as ``Cohort.cycle`` returns it (attrs ``patient``, ``cycle``, ``reference_timepoint``,
    ``spacing_mm``, ``registration``); ``labels``: the reference scan's ``labels`` DataArray (z, y, x) with attrs
    ``names`` (and ``vois``). Loads one map at a time.
    """
    attrs = cycle_ds.attrs
    key = {"patient": str(attrs["patient"]), "cycle": int(attrs["cycle"])}
    index = VoiIndex.from_labels(labels)
    methods = [str(name)[len("absorbed_dose_") :] for name in cycle_ds.data_vars if str(name).startswith("absorbed_")]
    stats, dvhs = [], []
    for method in methods:
        dose = np.asarray(cycle_ds[f"absorbed_dose_{method}"].values)
        rule = np.asarray(cycle_ds[f"integration_rule_{method}"].values)
        table = dose_statistics(dose, index=index, spacing_mm=attrs["spacing_mm"], what=f"{key} {method} dose map")
        fitted = index.sums(index.values(rule == RULE_CODES["fitted_tail"], "rule map").astype(np.float64))
        with np.errstate(invalid="ignore", divide="ignore"):
            table["fitted_tail_fraction"] = fitted / index.n_voxels
        table = table.rename(columns={"mean": "mean_gy", "d2": "d2_gy", "d50": "d50_gy", "d98": "d98_gy"})
        table.insert(0, "method", method)
        stats.append(table)
        finite = dose[np.isfinite(dose) & (np.asarray(labels.values) > 0)]
        top = float(finite.max()) if finite.size else 1.0
        histogram = dose_volume_histogram(dose, index=index, dose_levels_gy=np.linspace(0.0, top, DVH_LEVELS))
        frame = histogram.to_dataframe(name="volume_fraction").reset_index()
        frame.insert(0, "method", method)
        dvhs.append(frame[["method", "voi", "dose_gy", "volume_fraction"]])
    voxel = pd.concat(stats, ignore_index=True) if stats else pd.DataFrame()
    if len(voxel):
        voxel = voxel.assign(**key, reference_timepoint=str(attrs["reference_timepoint"]))
        voxel["voi_type"] = voxel["voi"].map(_voi_type)
    dvh = pd.concat(dvhs, ignore_index=True).assign(**key) if dvhs else pd.DataFrame()
    registrations = [  # the per-VOI Dice and the settings stay in the store's attrs
        {
            **key,
            "timepoint": timepoint,
            "reference_timepoint": str(attrs["reference_timepoint"]),
            **{k: v for k, v in quality.items() if k not in ("dice", "settings")},
        }
        for timepoint, quality in attrs.get("registration", {}).items()
    ]
    return {"voxel_absorbed_dose": voxel, "dose_volume_histograms": dvh, "registrations": pd.DataFrame(registrations)}


def stored_cycle_tables(cohort, patient: str, cycle: int) -> dict[str, pd.DataFrame]:
    """:func:`cycle_tables` of one per-cycle result of a ``cohort_dosimetry.store.Cohort``, with the contours of
    the scan version its maps were computed on."""
    cycle_ds = cohort.cycle(patient, cycle)
    reference = str(cycle_ds.attrs["reference_timepoint"])
    version = cycle_ds.attrs["scan_versions"][reference]
    return cycle_tables(cycle_ds, cohort.scan(patient, reference, version=version)["labels"])


def with_voi_level(voxel: pd.DataFrame, absorbed: pd.DataFrame, voi_stats: pd.DataFrame) -> pd.DataFrame:
    """``voxel`` rows (of :func:`cycle_tables`) with the VOI-level results of the same patient, cycle, VOI and method
    beside them: the ``absorbed_dose`` table's selected dose and model (``voi_level_gy``, ``voi_level_model``,
    ``difference_percent`` = 100 (map mean - VOI level) / VOI level), and the voxel rule applied to the VOI's mean
    dose-rate curve of ``voi_stats`` (each scan's own contours; ``voi_same_rule_gy``,
    ``same_rule_difference_percent``). The second isolates what registration and resampling do: the two differ only
    through them and through the spread of the voxels' tails (``_voxel_dose`` module docstring), while the selected
    model can differ from the voxel rule by itself (a mono-exponential fitted to all scans against a tail fitted to
    the last ones, most with three scans or fewer).
    """
    selected = absorbed[absorbed["selected"]][["patient", "cycle", "voi", "method", "absorbed_dose_gy", "model"]]
    selected = selected.rename(columns={"absorbed_dose_gy": "voi_level_gy", "model": "voi_level_model"})
    out = voxel.merge(selected, on=["patient", "cycle", "voi", "method"], how="left")
    out["voi_level_model"] = out["voi_level_model"].fillna("")
    if "nuclide" not in voi_stats:  # as absorbed_dose reads a table without it
        voi_stats = voi_stats.assign(nuclide="Lu177")
    same_rule = {}
    for key, curve in voi_stats.groupby(["patient", "cycle", "voi", "method"]):
        curve = curve[np.isfinite(curve["mean"])]
        hours = curve["hours_post_injection"].to_numpy()
        if len(curve) >= 2 and len(set(hours)) == len(hours) and curve["nuclide"].nunique() == 1:
            same_rule[key] = integrate_curve(hours, curve["mean"].to_numpy(), str(curve["nuclide"].iloc[0]))[0]
    keys = zip(out["patient"], out["cycle"], out["voi"], out["method"])
    out["voi_same_rule_gy"] = [same_rule.get(k, np.nan) for k in keys]
    with np.errstate(invalid="ignore", divide="ignore"):
        out["difference_percent"] = 100.0 * (out["mean_gy"] - out["voi_level_gy"]) / out["voi_level_gy"]
        out["same_rule_difference_percent"] = (
            100.0 * (out["mean_gy"] - out["voi_same_rule_gy"]) / out["voi_same_rule_gy"]
        )
    return out
