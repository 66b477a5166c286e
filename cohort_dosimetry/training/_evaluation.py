"""Evaluation on held-out virtual patients (synthetic: no patient data) against the truth, the MC dose-rate of the
TRUE activity: per VOI mean dose-rate error, NRMSE and DR10/30/70/90 errors of DVK, MC on the SPECT and CNN, and
ensemble noise over noise realisations (Li et al., Med Phys 49:1216, 2022; definitions in cohort_dosimetry.stats).
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import xarray as xr

from cohort_dosimetry.training._dataset import REPORTED_CLASSES, DataSpec, PatientScan, patient_dir

_DR = (10, 30, 70, 90)
#: Accuracy goals of the CNN on held-out patients: its mean dose-rate error at least 40 % below DVK's for
#: these VOI classes, and its NRMSE below DVK's in every reported class.
GOAL_MEAN_ERROR_REDUCTION = 0.40
GOAL_MEAN_ERROR_CLASSES = ("kidney", "lesion")
#: Lesion volume bands (mL) of :func:`mean_bias`: the smaller the lesion, the more SPECT's resolution loss
#: underestimates its mean dose-rate (docs/model.md, held-out accuracy).
LESION_VOLUME_BANDS_ML = (0.0, 5.0, 15.0, 50.0, np.inf)


def _scan_dataset(scan: PatientScan) -> xr.Dataset:
    meta = json.loads((scan.directory / "patient.json").read_text())
    voxel_ml = float(np.prod(meta["spacing_mm"])) / 1000.0
    return xr.Dataset(
        {
            "activity": (("z", "y", "x"), np.asarray(scan.load("spect")) / voxel_ml, {"units": "Bq/mL"}),
            "density": (("z", "y", "x"), np.asarray(scan.load("density")), {"units": "g/cm3"}),
        },
        attrs={
            "spacing_mm": meta["spacing_mm"],
            "patient": f"virtual-{meta['seed']}",
            "timepoint": f"tp{scan.timepoint + 1}",
        },
    )


def _reported_vois(scan: PatientScan) -> dict[int, str]:
    from cohort_dosimetry.vocabulary import voi_type

    return {k: v for k, v in scan.voi_names().items() if voi_type(v) in REPORTED_CLASSES}


def scan_errors(
    scan: PatientScan,
    card_path,
    methods=("dvk", "cnn"),
    device=None,
    mc_decays: int | None = None,
    seed: int = 0,
    maps_out: dict | None = None,
) -> list[dict]:
    """One row per (method, reported VOI) of one scan: truth and estimate means, mean_error, nrmse, dr<x>_error
    (relative errors as fractions). ``maps_out``, when given, receives the dose-rate maps by method."""
    from cohort_dosimetry.constants import MC_DECAYS
    from cohort_dosimetry.dose import dose_rates
    from cohort_dosimetry.stats import mean_error, nrmse, voi_metrics
    from cohort_dosimetry.vocabulary import voi_type

    maps = dose_rates(
        _scan_dataset(scan),
        methods=methods,
        device=device,
        weights=card_path,
        seed=seed,
        mc_decays=MC_DECAYS if mc_decays is None else mc_decays,
    )
    truth = np.asarray(scan.load("label"))
    labels = np.asarray(scan.load("labels"))
    all_names, names = scan.voi_names(), _reported_vois(scan)
    spacing = json.loads((scan.directory / "patient.json").read_text())["spacing_mm"]
    truth_stats = voi_metrics(truth, labels, all_names, spacing).set_index("voi")
    rows = []
    for method in methods:
        estimate = maps[f"dose_rate_{method}"].values
        if maps_out is not None:
            maps_out[method] = estimate
        est_stats = voi_metrics(estimate, labels, all_names, spacing, what=f"dose_rate_{method}").set_index("voi")
        for label, voi in names.items():
            mask = labels == label
            if not mask.any():
                continue
            row = {
                "patient": scan.directory.name,
                "timepoint": scan.timepoint,
                "realisation": scan.realisation,
                "method": method,
                "voi": voi,
                "voi_class": voi_type(voi),
                "volume_ml": float(truth_stats.loc[voi, "volume_ml"]),
                "mean_true": float(truth_stats.loc[voi, "mean"]),
                "mean_estimate": float(est_stats.loc[voi, "mean"]),
                "mean_error": mean_error(estimate, truth, mask),
                "nrmse": nrmse(estimate, truth, mask),
            }
            for x in _DR:
                t, e = truth_stats.loc[voi, f"dr{x}"], est_stats.loc[voi, f"dr{x}"]
                row[f"dr{x}_error"] = float(abs(e - t) / t) if t > 0 else np.nan
            rows.append(row)
    return rows


def evaluate(
    data_dir,
    seeds,
    spec: DataSpec,
    card_path,
    methods=("dvk", "mc", "cnn"),
    device=None,
    mc_decays: int | None = None,
    log=print,
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Tables of the prepared held-out patients ``seeds``: per-VOI error rows of every scan; ensemble noise (%) per
    (patient, time point, method, VOI) over the ``spec.realisations`` realisations
    (``cohort_dosimetry.stats.ensemble_noise``); and the summary per (method, VOI class): means of both over VOIs,
    scans and patients (see :func:`summarise`)."""
    from cohort_dosimetry.stats import ensemble_noise
    from cohort_dosimetry.vocabulary import voi_type

    rows, noise_rows = [], []
    for seed in seeds:
        for t in range(len(spec.hours)):
            scans = [PatientScan(patient_dir(data_dir, seed), t, r) for r in range(spec.realisations)]
            stacks: dict[str, list[np.ndarray]] = {m: [] for m in methods}
            for scan in scans:
                maps: dict[str, np.ndarray] = {}
                rows += scan_errors(
                    scan,
                    card_path,
                    methods,
                    device=device,
                    mc_decays=mc_decays,
                    seed=1000 * seed + 10 * t + scan.realisation,
                    maps_out=maps,
                )
                for m in methods:
                    stacks[m].append(maps[m])
            log(f"evaluated patient {seed} time point {t + 1}")
            if spec.realisations < 2:
                continue
            labels = np.asarray(scans[0].load("labels"))
            for m in methods:
                stack = np.stack(stacks[m])
                for label, voi in _reported_vois(scans[0]).items():
                    mask = labels == label
                    if mask.any():
                        noise_rows.append(
                            {
                                "patient": scans[0].directory.name,
                                "timepoint": t,
                                "method": m,
                                "voi": voi,
                                "voi_class": voi_type(voi),
                                "ensemble_noise_percent": ensemble_noise(stack, mask),
                            }
                        )
    per_voi = pd.DataFrame(rows)
    noise = pd.DataFrame(
        noise_rows, columns=["patient", "timepoint", "method", "voi", "voi_class", "ensemble_noise_percent"]
    )
    return per_voi, noise, summarise(per_voi, noise)


def summarise(per_voi: pd.DataFrame, noise: pd.DataFrame) -> pd.DataFrame:
    """Per (method, VOI class): mean over VOIs and scans of the error columns and of the ensemble noise (%)."""
    error_columns = ["mean_error", "nrmse"] + [f"dr{x}_error" for x in _DR]
    summary = per_voi.groupby(["method", "voi_class"])[error_columns].mean()
    if len(noise):
        summary = summary.join(noise.groupby(["method", "voi_class"])["ensemble_noise_percent"].mean())
    return summary.reset_index()


def goal_checks(per_voi: pd.DataFrame, method: str = "cnn", reference: str = "dvk") -> pd.DataFrame:
    """The acceptance goals of ``method`` against ``reference`` on the rows of :func:`evaluate`, one row per check.

    Each class's error is the mean over its rows (VOIs x scans x patients) of ``mean_error`` or ``nrmse``, as in
    :func:`summarise`. Checks: for each of ``GOAL_MEAN_ERROR_CLASSES`` the reduction ``1 - E_method / E_reference``
    of the mean error, met when at least ``GOAL_MEAN_ERROR_REDUCTION``; for each class of ``REPORTED_CLASSES``
    present, the NRMSE, met when ``method``'s is below ``reference``'s. Columns: check, voi_class, method and
    reference (the two errors, fractions), reduction (fraction), met (bool).
    """
    means = per_voi.groupby(["method", "voi_class"])[["mean_error", "nrmse"]].mean()
    classes = [c for c in REPORTED_CLASSES if (method, c) in means.index and (reference, c) in means.index]
    checked = {
        ("mean_error_reduction", "mean_error"): [c for c in GOAL_MEAN_ERROR_CLASSES if c in classes],
        ("nrmse", "nrmse"): classes,
    }
    rows = []
    for (check, column), names in checked.items():
        for voi_class in names:
            e_method, e_reference = means.loc[(method, voi_class), column], means.loc[(reference, voi_class), column]
            reduction = 1.0 - e_method / e_reference
            met = reduction >= GOAL_MEAN_ERROR_REDUCTION if check == "mean_error_reduction" else e_method < e_reference
            rows.append(
                {
                    "check": check,
                    "voi_class": voi_class,
                    method: float(e_method),
                    reference: float(e_reference),
                    "reduction": float(reduction),
                    "met": bool(met),
                }
            )
    return pd.DataFrame(rows, columns=["check", "voi_class", method, reference, "reduction", "met"])


def mean_bias(per_voi: pd.DataFrame, methods=("cnn", "dvk")) -> dict:
    """How far each method's VOI mean dose-rates lie from the truth's, on the rows of :func:`evaluate`.

    A VOI's bias is ``mean_estimate / mean_true - 1`` averaged over its scans (time points, realisations), so a VOI
    counts once however often it was imaged. Returns ``{"voi_mean_bias": {class: {"vois": n, method: [mean, sd]}},
    "lesion_mean_bias_by_volume_ml": [{"volume_ml": [low, high], "lesions": n, method: mean}]}``: per VOI class of
    ``REPORTED_CLASSES`` the mean and sample standard deviation of the VOI biases (None for a single VOI), and per
    lesion volume band of :data:`LESION_VOLUME_BANDS_ML` (``high`` None for the open band; empty bands left out)
    their mean. Fractions; the lesion bands need a ``volume_ml`` column and are an empty list without one.
    """
    rows = per_voi[per_voi["method"].isin(methods)]
    rows = rows.assign(bias=rows["mean_estimate"] / rows["mean_true"] - 1.0)
    keys = ["voi_class", "patient", "voi"]
    vois = rows.pivot_table(index=keys, columns="method", values="bias")
    if "volume_ml" in rows:
        vois = vois.join(rows.groupby(keys)["volume_ml"].first())
    vois = vois.reset_index()
    by_class = {}
    for voi_class in REPORTED_CLASSES:
        group = vois[vois["voi_class"] == voi_class]
        if len(group):
            by_class[voi_class] = {
                "vois": len(group),
                **{m: [float(group[m].mean()), float(group[m].std()) if len(group) > 1 else None] for m in methods},
            }
    bands = []
    if "volume_ml" in vois:
        lesions = vois[vois["voi_class"] == "lesion"]
        edges = LESION_VOLUME_BANDS_ML
        for low, high in zip(edges[:-1], edges[1:]):
            band = lesions[(lesions["volume_ml"] >= low) & (lesions["volume_ml"] < high)]
            if len(band):
                bands.append(
                    {
                        "volume_ml": [low, None if np.isinf(high) else high],
                        "lesions": len(band),
                        **{m: float(band[m].mean()) for m in methods},
                    }
                )
    return {"voi_mean_bias": by_class, "lesion_mean_bias_by_volume_ml": bands}
