"""The cohort report: one self-contained HTML file (figures embedded as base64 PNG, no script, no external resource).

Built from the statistics tables (run :func:`compute_cohort_tables` first) plus one more pass over the scans for
the CNN-vs-MC joint histogram and the DRVHs (one scan in memory at a time). Sections, in order: the synthetic-data
statement, the cohort summary (Table 1, the form of Li et al.'s patient table: per VOI class and method, mean dose-rate
and DR10-DR90 as mean (min-max) over scans and VOIs), agreement between methods, the joint histogram, absorbed doses
per therapy cycle with the time-integration model chosen per VOI and why, and what their uncertainty holds (and the
curves that could not be integrated, with the reason), absorbed doses summed over each patient's cycles,
time-activity curves (one figure per patient and cycle), DRVHs, methods and provenance.
"""

from __future__ import annotations

import base64
import html
import io
import json
import os
from collections.abc import Sequence
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

import numpy as np
import pandas as pd

from . import _metrics
from ._figures import (
    MGY_PER_H_PER_GY_PER_S,
    plot_dose_maps,
    plot_drvh,
    plot_dvh,
    plot_joint_histogram,
    plot_time_activity,
)
from ._metrics import DR_PERCENTS, VoiIndex, drvh
from ._tables import METHODS, NOT_INTEGRATED, scan_methods
from ._time_integration import fit_time_activity

REPORT_NAME = "cohort_report.html"

#: VOI classes in report order; the targets and organs at risk pooled in the joint histogram and shown as curves.
VOI_TYPE_ORDER = ("lesion", "kidney", "liver", "spleen", "vertebra", "lung", "body")
TARGET_VOI_TYPES = ("lesion", "kidney", "liver", "spleen")
JOINT_HISTOGRAM_BINS = 200
#: Dose-rate levels of the DRVH figures: 0, then geometric from 1e-4 to 1 times the scan's highest value (1 % steps,
#: so low-dose VOIs are resolved on their own scale too).
DRVH_LEVELS = 1024
#: Patients whose first cycle's absorbed-dose maps and DVHs the report shows.
MAX_DVH_FIGURES = 4

_STYLE = """
body { font-family: sans-serif; margin: 2em auto; max-width: 75em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.85em; }
th, td { border: 1px solid #bbb; padding: 0.2em 0.5em; text-align: right; }
th { background: #eee; }
td:first-child, th:first-child { text-align: left; }
.synthetic { background: #fff3cd; border: 2px solid #d39e00; padding: 0.8em; font-weight: bold; }
img { max-width: 100%; }
code { background: #f4f4f4; }
"""

_PACKAGES = (
    "numpy",
    "scipy",
    "pandas",
    "xarray",
    "zarr",
    "dask",
    "matplotlib",
    "torch",
    "pydicom",
    "SimpleITK",
    "pytomography",
    "icrp107-database",
    "prefect",
)

# The report's own prose: what a reader of the report needs to read its numbers. The exact definitions are in the
# docstrings of ``stats._metrics``, ``stats._time_integration`` and ``physics._dvk``, with their sources.
SELECTION_RULE = (
    "among the fitted models with at least one residual degree of freedom (mono-exponential from 3 time points, "
    "bi-exponential from 4), the lowest AICc wins, or the lowest AIC where AICc is undefined for one of them "
    "(4 time points); without such a model the trapezoid with a physical-decay tail is used. With a single time "
    "point: Hänscheid's formula for a scan at 72\u2013120 h after injection, else Madsen's formula with the VOI "
    "class's prior effective half-life for a scan inside that prior's window, else no absorbed dose (model none, "
    "with the reason). Each row of the absorbed-dose table names its model and the reason."
)

METHODS_TEXT = (
    """
<h3>Metrics</h3>
<ul>
<li>Mean dose-rate: over every voxel of the VOI (where VOIs overlap, a voxel counts in each of them).</li>
<li>DRx: the lowest dose-rate among the hottest x % of the VOI's voxels (DR10 high, DR90 low); always a value some
voxel has, no interpolation.</li>
<li>NRMSE of an estimate against a reference over a VOI's voxels: root mean squared difference divided by the root
mean square of the reference. Mean dose-rate error: |mean<sub>A</sub> &minus; mean<sub>B</sub>| / mean<sub>B</sub>.
</li>
<li>Agreement: Pearson R<sup>2</sup> and Lin's concordance correlation coefficient (Lin, Biometrics 45:255, 1989)
over the VOI's voxels.</li>
<li>A VOI with any NaN or infinite dose-rate gets NaN statistics and a warning naming it; nothing is dropped. A
named VOI without voxels gets a row with volume 0 and NaN statistics.</li>
</ul>
<h3>Absorbed dose</h3>
<p>Per patient, therapy cycle, VOI and method, the VOI's mean dose-rate at each time point (hours from the cycle's
injection) is integrated from injection to infinity with one of: a mono-exponential, a bi-exponential with uptake
(both with washout no slower than Lu-177's physical decay, ICRP-107), a trapezoid from zero at injection with a
physical-decay tail after the last point. With one time point a single-time-point formula is used only inside the
window where it holds to within 10 %: Hänscheid's (J Nucl Med 59:75, 2018: D = r(t) 2t / ln 2, exact when the
effective half-life equals t, published for a measurement after about 4 days) for a scan at 72&ndash;120 h; else
Madsen's (Med Phys 45:2318, 2018: D = r(t) e<sup>&lambda;t</sup> / &lambda;, &lambda; = ln 2 / T<sub>prior</sub>)
with a prior effective half-life of Lu-177 DOTATATE for the VOI's class: kidney 50 h (range 34&ndash;77 h; Sandström
et al., J Nucl Med 54:33, 2013; window 67&ndash;75 h), liver and spleen 66 h (48&ndash;84 h; Garske-Román et al.,
Eur J Nucl Med Mol Imaging 45:970, 2018; window 60&ndash;108 h), lesions 85 h (60&ndash;110 h; Ilan et al., J Nucl
Med 56:177, 2015; window 82&ndash;134 h); each window is the scan times at which the estimate stays within 10 % for
every half-life of the range. Outside every window (or for a VOI class without a prior) there is no absorbed dose,
and its reason names the windows. Fits minimise relative residuals. Model choice:
"""
    + SELECTION_RULE
    + """ Uncertainties (1 sigma) come from the fit's parameter covariance; the trapezoid and
the single-time-point formulas have none (their error is that of their assumptions).</p>
<h3>DVK dose-rates in bone</h3>
<p>The dose voxel kernel method scales soft-tissue kernels by 1.04/&rho;. That holds for the betas, absorbed where
they are released, not for photons, which bone absorbs 1.5&ndash;5 times more per gram than soft tissue at Lu-177's
scattered photons and Hf K x-rays, and the kernels' soft tissue does not hold lung's longer electron paths. For the
same activity on virtual patients, DVK's VOI means are within about 2 % of the Monte Carlo's in liver, kidneys,
spleen and lesions, but far below it in the lumbar vertebrae and far above it in the lungs (docs/validation,
section 3).</p>
"""
)


#: The columns of the report's table of chosen time-integration models.
VOXEL_DOSE_TEXT = (
    "Each scan of a cycle is registered onto the cycle's first scan (CT to CT: rigid, then diffeomorphic demons), "
    "its dose-rate maps are warped onto that scan's grid, and every voxel's curve is integrated: trapezoid from "
    "injection through the scans, then a tail fitted to the last points where they decrease faster than physical "
    "decay, else the physical half-life. The VOIs are the first scan's contours. Each method's map statistics "
    "(mean, D2 = dose to the hottest 2 %, D98) are set beside two VOI-level results of the same curve, which need "
    "no registration (each scan's own contours): the selected model of the table above, which can differ from the "
    "voxel rule by itself (a mono-exponential fitted to all scans against a tail fitted to the last ones, most with "
    "three scans or fewer), and the voxel rule applied to the VOI mean curve, which differs from the map only "
    "through registration, resampling and the spread of the voxels' tails. Methods without a map at every scan of "
    "the cycle (e.g. Monte Carlo on one scan) have no map."
)
_CHOSEN_COLUMNS = (
    "patient cycle voi method model absorbed_dose_gy uncertainty_gy uncertainty_fit_gy uncertainty_counts_gy "
    "uncertainty_calibration_gy n_timepoints reason uncertainty_note"
).split()
#: Columns of the chosen-model details in Gy, rounded to 3 decimals there.
_GY_COLUMNS = ("absorbed_dose_gy", "uncertainty_gy", "uncertainty_fit_gy", "uncertainty_counts_gy")


def write_report(cohort, notes: Sequence[str] = (), model_card: dict | None = None) -> Path:
    """Write ``reports/cohort_report.html`` for a :class:`cohort_dosimetry.store.Cohort` and return its path.

    Needs the ``voi_stats`` table (``cohort-dosimetry stats COHORT_DIR``); ``concordance`` and ``absorbed_dose``
    sections are included when their tables have rows. ``notes``: sentences about the run (e.g. which scans had
    Monte Carlo), listed under the summary. ``model_card``: the data of the CNN weights' model card (its
    ``weights_sha256`` and ``held_out_evaluation``), whose held-out accuracy the report states for the CNN maps made
    with those weights; None: the report says no evaluation of the weights is known to it.
    """
    voi_stats = cohort.voi_stats()
    if voi_stats.empty:
        raise ValueError(
            f"cohort {cohort.path}: the voi_stats table is empty; run `cohort-dosimetry stats {cohort.path}` first"
        )
    concordance = cohort.concordance()
    absorbed = cohort.absorbed_dose()
    totals = cohort.absorbed_dose_total()
    scans = sorted(set(zip(voi_stats["patient"], voi_stats["timepoint"])))
    n_cycles = len(set(zip(voi_stats["patient"], voi_stats["cycle"])))
    scan_attrs = {scan: cohort.scan_attrs(*scan) for scan in scans}
    voi_type_of = dict(zip(voi_stats["voi"], voi_stats["voi_type"]))
    methods = [m for m in METHODS if m in set(voi_stats["method"])]

    joint, drvh_figures = _scan_pass(cohort, scans, voi_stats)
    parts = [
        f"<h1>Cohort dosimetry report: {html.escape(cohort.path.name)}</h1>",
        _synthetic_statement(scan_attrs),
        f"<p>{len(set(p for p, _ in scans))} patients, {n_cycles} therapy cycles, {len(scans)} scans, "
        "dose-rate methods: "
        f"{', '.join(m.upper() for m in methods)}. Generated {datetime.now(UTC):%Y-%m-%d %H:%M} UTC.</p>",
        "".join(f"<p>Note: {html.escape(note)}</p>" for note in notes),
        "<h2>Table 1. Cohort summary: dose-rate per VOI class and method</h2>",
        "<p>Mean (min&ndash;max) over all scans and VOIs of the class, in mGy/h (1 Gy/s = 3.6&times;10<sup>6</sup> "
        "mGy/h). DRx = minimum dose-rate received by x % of the VOI's volume.</p>",
        _table_html(cohort_summary_table(voi_stats)),
    ]
    if not concordance.empty:
        parts += [
            "<h2>Agreement between methods</h2>",
            "<p>Per pair of methods (B the reference) and VOI class: voxel-wise Pearson R<sup>2</sup> and "
            "Lin's CCC within each VOI, and the VOI mean dose-rate error |mean<sub>A</sub> &minus; "
            "mean<sub>B</sub>| / mean<sub>B</sub> and NRMSE, as median or mean (min&ndash;max) over scans and "
            "VOIs.</p>",
            _table_html(concordance_summary(concordance, voi_type_of)),
        ]
    if joint is not None:
        parts += [
            f"<h2>CNN vs MC joint histogram</h2><p>All voxels of the VOI classes "
            f"{', '.join(TARGET_VOI_TYPES)} over all scans ({joint['n']:,} voxels).</p>",
            _figure_html(
                plot_joint_histogram(
                    joint["counts"], joint["edges_a"], joint["edges_b"], "CNN", "MC", joint["pearson_r2"], joint["ccc"]
                ),
                "CNN vs MC joint histogram",
            ),
        ]
    if not absorbed.empty:
        chosen = absorbed[absorbed["selected"]]
        failed = chosen[chosen["model"] == NOT_INTEGRATED]
        parts += [
            "<h2>Absorbed dose per therapy cycle</h2>",
            "<p>One time-activity curve per patient, therapy cycle, VOI and method (hours count from the "
            "cycle's own injection). Mean (min&ndash;max) over patients, cycles and VOIs of the class, in Gy, "
            "with the time-integration model chosen (counts). The rule: " + SELECTION_RULE + "</p>",
            _table_html(absorbed_summary(chosen, voi_type_of)),
            _uncertainty_html(chosen),
        ]
        if not failed.empty:
            parts += [
                f"<p>{len(failed)} curve(s) have no absorbed dose (a single scan outside every single-time-point "
                "window, or a curve that could not be integrated), each with the reason:</p>",
                _table_html(failed[["patient", "cycle", "voi", "method", "n_timepoints", "reason"]]),
            ]
        parts += [
            "<details><summary>Chosen model per patient, cycle, VOI and method, and why</summary>",
            _table_html(
                chosen[[c for c in _CHOSEN_COLUMNS if c in chosen]].round(
                    dict.fromkeys((*_GY_COLUMNS, "uncertainty_calibration_gy"), 3)
                )
            ),
            "</details>",
        ]
    if not totals.empty:
        parts += [
            "<h2>Absorbed dose over all therapy cycles</h2>",
            "<p>Per patient, VOI and method, the chosen absorbed dose of each of the patient's cycles, summed "
            "(uncertainties in quadrature). Mean (min&ndash;max) over patients and VOIs of the class, in Gy. "
            "A total is n/a when a cycle of the patient has no dose for the VOI and method.</p>",
            _table_html(total_summary(totals, voi_type_of)),
            "<details><summary>Total per patient, VOI and method</summary>",
            _table_html(
                totals[
                    ["patient", "voi", "method", "cycles", "absorbed_dose_gy", "uncertainty_gy", "models", "reason"]
                ].round({"absorbed_dose_gy": 3, "uncertainty_gy": 3})
            ),
            "</details>",
        ]
    parts += _voxel_dose_html(cohort, voi_type_of)
    parts += ["<h2>Time-activity curves</h2>", *_time_activity_figures(voi_stats, methods)]
    parts += ["<h2>Dose-rate volume histograms</h2><p>First scan of each patient.</p>", *drvh_figures]
    cnn_weights = set()
    if "cnn" in methods:
        for scan in scans:
            ds = cohort.scan(*scan)
            if "dose_rate_cnn" in ds:
                cnn_weights.add(ds["dose_rate_cnn"].attrs.get("weights_sha256", ""))
    parts += [_methods_html(), *_cnn_evaluation_html(cnn_weights, model_card), _provenance_html(cohort, scan_attrs)]
    document = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<link rel="icon" href="data:,">'
        f"<title>Cohort dosimetry report: {html.escape(cohort.path.name)}</title><style>{_STYLE}</style>"
        "</head><body>\n" + "\n".join(parts) + "\n</body></html>\n"
    )
    cohort.reports_dir.mkdir(parents=True, exist_ok=True)
    path = cohort.reports_dir / REPORT_NAME
    tmp = path.with_suffix(".html.tmp")
    tmp.write_text(document, encoding="utf-8")
    os.replace(tmp, path)
    return path


def _mean_min_max(values: pd.Series, scale: float = 1.0, digits: int = 3) -> str:
    values = values.dropna() * scale
    if values.empty:
        return "n/a"
    return f"{values.mean():.{digits}g} ({values.min():.{digits}g}\u2013{values.max():.{digits}g})"


def _type_order(voi_type: str) -> int:
    return VOI_TYPE_ORDER.index(voi_type) if voi_type in VOI_TYPE_ORDER else len(VOI_TYPE_ORDER)


def _method_order(method: str) -> int:
    return METHODS.index(method) if method in METHODS else len(METHODS)


def cohort_summary_table(voi_stats: pd.DataFrame) -> pd.DataFrame:
    """Table 1: per VOI class and method, n (scan-VOIs) and mean, DR10..DR90 as 'mean (min-max)' in mGy/h."""
    rows = []
    for (voi_type, method), group in voi_stats.groupby(["voi_type", "method"]):
        row = {"VOI class": voi_type, "method": method.upper(), "n": int(group["mean"].notna().sum())}
        for column, label in [("mean", "mean"), *((f"dr{x}", f"DR{x}") for x in DR_PERCENTS)]:
            row[label] = _mean_min_max(group[column], MGY_PER_H_PER_GY_PER_S)
        rows.append((_type_order(voi_type), _method_order(method), row))
    return pd.DataFrame([row for *_, row in sorted(rows, key=lambda r: r[:2])])


def concordance_summary(concordance: pd.DataFrame, voi_type_of: dict) -> pd.DataFrame:
    """Per method pair and VOI class: median R^2 and CCC, mean error and NRMSE in % as mean (min-max)."""
    table = concordance.assign(voi_type=concordance["voi"].map(voi_type_of))
    rows = []
    for (voi_type, a, b), group in table.groupby(["voi_type", "method_a", "method_b"]):
        rows.append(
            (
                _type_order(voi_type),
                _method_order(a),
                _method_order(b),
                {
                    "VOI class": voi_type,
                    "A vs B": f"{a.upper()} vs {b.upper()}",
                    "n": len(group),
                    "median R\u00b2": f"{group['pearson_r2'].median():.3f}",
                    "median CCC": f"{group['ccc'].median():.3f}",
                    "mean error (%)": _mean_min_max(group["mean_error"], 100.0),
                    "NRMSE (%)": _mean_min_max(group["nrmse"], 100.0),
                },
            )
        )
    return pd.DataFrame([row for *_, row in sorted(rows, key=lambda r: r[:3])])


def _uncertainty_html(chosen: pd.DataFrame) -> str:
    """What the uncertainty of the absorbed doses holds: each component, whether it was estimated and why not."""
    doses = chosen[np.isfinite(chosen["absorbed_dose_gy"].astype(float))]
    n = len(doses)

    def finite(column: str) -> int:
        return int(np.isfinite(doses[column].astype(float)).sum()) if column in doses else 0

    def notes_like(prefix: str) -> str:
        found: set[str] = set()
        for note in doses.get("uncertainty_note", pd.Series(dtype=str)).dropna():
            found.update(part for part in str(note).split("; ") if part.startswith(prefix))
        listing = sorted(found)
        shown = "; ".join(listing[:5]) + (f"; and {len(listing) - 5} more" if len(listing) > 5 else "")
        return f" ({html.escape(shown)})" if shown else ""

    counts_sentence = (
        f"estimated for {finite('uncertainty_counts_gy')} of {n} chosen doses"
        + (notes_like("count noise not estimated") if finite("uncertainty_counts_gy") < n else "")
        if finite("uncertainty_counts_gy")
        else "not estimated" + (notes_like("count noise not estimated") or " (a table written before it existed)")
    )
    relative = (
        (doses["uncertainty_calibration_gy"] / doses["absorbed_dose_gy"]).dropna()
        if "uncertainty_calibration_gy" in doses
        else pd.Series(dtype=float)
    )
    calibration_sentence = (
        f"the relative calibration uncertainty given to the run, {100 * relative.median():.3g} %, times the dose; "
        "common to every scan and cycle"
        if len(relative)
        else "not given to the run (<code>--calibration-uncertainty</code>): there is no default value, since 0 would "
        "claim a perfect calibration, so the totals below leave the calibration out and understate the uncertainty "
        "by it (quantitative SPECT is typically uncertain by a few per cent)"
    )
    return (
        "<p>Uncertainty (1 sd, Gy; columns of the chosen-model details below), structured after the EANM guidance "
        "(Gear et al., Eur J Nucl Med Mol Imaging 45:2456, 2018). <b>Fit</b> (<code>uncertainty_fit_gy</code>): from "
        "the fit's parameter covariance, for the mono- and bi-exponential; none for the trapezoid and the "
        f"single-time-point rules (estimated for {finite('uncertainty_fit_gy')} of {n} chosen doses). "
        "<b>Count noise</b> (<code>uncertainty_counts_gy</code>): Poisson, 1/&radic;N at each scan, propagated "
        "through the chosen model, with N = VOI activity &times; the camera sensitivity given to the run "
        "(<code>--sensitivity-cps-per-mbq</code>) &times; the scan's acquisition duration from its NM header; a "
        "lower bound, as attenuation lowers the detected counts and scatter and reconstruction add noise: "
        f"{counts_sentence}. <b>Calibration</b> (<code>uncertainty_calibration_gy</code>): {calibration_sentence}. "
        "<b>Total</b> (<code>uncertainty_gy</code>): &radic;(max(fit, count noise)<sup>2</sup> + "
        "calibration<sup>2</sup>): the fit's scatter already contains the count noise, so the larger of the two is "
        "taken, not their sum; n/a without a fit or count-noise component. Not included: the choice of model, the "
        "systematic error of the trapezoid and single-time-point rules, registration and partial-volume effects. "
        "Over cycles the random parts add in quadrature and the calibration parts linearly.</p>"
    )


def absorbed_summary(chosen: pd.DataFrame, voi_type_of: dict) -> pd.DataFrame:
    """Per VOI class and method: absorbed dose (Gy) as mean (min-max) and how often each model was chosen."""

    def describe(group: pd.DataFrame) -> dict:
        counts = group["model"].value_counts()
        return {
            "absorbed dose (Gy)": _mean_min_max(group["absorbed_dose_gy"]),
            "models chosen": ", ".join(f"{model} {count}" for model, count in counts.items()),
        }

    return _per_class_and_method(chosen, voi_type_of, describe)


def total_summary(totals: pd.DataFrame, voi_type_of: dict) -> pd.DataFrame:
    """Per VOI class and method: absorbed dose over all cycles (Gy) as mean (min-max), patients with more than one
    cycle, and totals that are n/a (a cycle without dose)."""

    def describe(group: pd.DataFrame) -> dict:
        return {
            "total absorbed dose (Gy)": _mean_min_max(group["absorbed_dose_gy"]),
            "over 2+ cycles": int((group["n_cycles"] > 1).sum()),
            "n/a": int(group["absorbed_dose_gy"].isna().sum()),
        }

    return _per_class_and_method(totals, voi_type_of, describe)


def _per_class_and_method(table: pd.DataFrame, voi_type_of: dict, describe) -> pd.DataFrame:
    """One row per VOI class and method (in report order): class, method, n and ``describe(group)``'s columns."""
    table = table.assign(voi_type=table["voi"].map(voi_type_of))
    rows = []
    for (voi_type, method), group in table.groupby(["voi_type", "method"]):
        row = {"VOI class": voi_type, "method": method.upper(), "n": len(group), **describe(group)}
        rows.append((_type_order(voi_type), _method_order(method), row))
    return pd.DataFrame([row for *_, row in sorted(rows, key=lambda r: r[:2])])


def _table_html(table: pd.DataFrame) -> str:
    return table.to_html(index=False, escape=True, na_rep="n/a", border=0)


def _figure_html(figure, alt: str) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=80)
    encoded = base64.b64encode(buffer.getvalue()).decode("ascii")
    return f'<p><img alt="{html.escape(alt)}" src="data:image/png;base64,{encoded}"></p>'


def _synthetic_statement(scan_attrs: dict) -> str:
    flags = [bool(attrs.get("synthetic", False)) for attrs in scan_attrs.values()]
    if all(flags):
        return (
            f'<p class="synthetic">All {len(flags)} scans of this cohort are synthetic virtual patients '
            "(computer-generated anatomy, kinetics and SPECT): no patient data. The numbers characterise the "
            "software and its methods, not a clinical population.</p>"
        )
    if any(flags):
        return (
            f'<p class="synthetic">{sum(flags)} of {len(flags)} scans are synthetic virtual patients '
            "(no patient data); the summary pools them with the others.</p>"
        )
    return "<p>The store does not mark any scan as synthetic.</p>"


class _PairedMoments:
    """Running count, means, variances and covariance of paired samples (Chan et al. pairwise combination)."""

    def __init__(self):
        self.n, self.mean_a, self.mean_b, self.m2_a, self.m2_b, self.c_ab = 0, 0.0, 0.0, 0.0, 0.0, 0.0

    def add(self, a: np.ndarray, b: np.ndarray) -> None:
        n = a.size
        if n == 0:
            return
        mean_a, mean_b = a.mean(), b.mean()
        m2_a, m2_b = np.sum((a - mean_a) ** 2), np.sum((b - mean_b) ** 2)
        c_ab = np.sum((a - mean_a) * (b - mean_b))
        total = self.n + n
        delta_a, delta_b = mean_a - self.mean_a, mean_b - self.mean_b
        weight = self.n * n / total
        self.m2_a += m2_a + delta_a**2 * weight
        self.m2_b += m2_b + delta_b**2 * weight
        self.c_ab += c_ab + delta_a * delta_b * weight
        self.mean_a += delta_a * n / total
        self.mean_b += delta_b * n / total
        self.n = total

    def pearson_r2(self) -> float:
        return float(self.c_ab**2 / (self.m2_a * self.m2_b))

    def ccc(self) -> float:
        n = self.n
        return float(2 * self.c_ab / n / (self.m2_a / n + self.m2_b / n + (self.mean_a - self.mean_b) ** 2))


def _scan_pass(cohort, scans, voi_stats: pd.DataFrame):
    """One pass over the scans: the CNN-vs-MC joint histogram (all scans) and DRVH figures (first scan per patient)."""
    pooled = voi_stats[voi_stats["voi_type"].isin(TARGET_VOI_TYPES)]
    has_pair = {"cnn", "mc"} <= set(pooled["method"])
    if has_pair:
        top = float(pooled.loc[pooled["method"].isin(["cnn", "mc"]), "max"].max())
        edges = np.linspace(0.0, top * (1 + 1e-6), JOINT_HISTOGRAM_BINS + 1)
        counts = np.zeros((JOINT_HISTOGRAM_BINS, JOINT_HISTOGRAM_BINS), np.int64)
        moments = _PairedMoments()
    first_scans: dict[str, str] = {}
    for patient, timepoint in scans:
        first_scans.setdefault(patient, timepoint)
    figures = []
    for patient, timepoint in scans:
        is_first = first_scans[patient] == timepoint
        if not (has_pair or is_first):
            continue
        scan_ds = cohort.scan(patient, timepoint)
        methods = scan_methods(scan_ds)
        index = VoiIndex.from_labels(scan_ds["labels"])
        if has_pair and {"cnn", "mc"} <= set(methods):
            chosen = [name for name in index.names if _voi_type_of(name) in TARGET_VOI_TYPES]
            mask = index.mask(chosen)  # overlapping VOIs (liver and its lesions) pool each voxel once
            cnn = np.asarray(scan_ds["dose_rate_cnn"].data)[mask].astype(np.float64)
            mc = np.asarray(scan_ds["dose_rate_mc"].data)[mask].astype(np.float64)
            finite = np.isfinite(cnn) & np.isfinite(mc)
            if finite.any():
                counts += _metrics.joint_histogram(cnn[finite], mc[finite], bins=[edges, edges])[0]
                moments.add(cnn[finite], mc[finite])
        if is_first:
            shown = [name for name in index.names if _voi_type_of(name) != "body"]
            maps = {method: np.asarray(scan_ds[f"dose_rate_{method}"].data) for method in methods}
            top = max(float(np.nanmax(dose_rate)) for dose_rate in maps.values())
            levels = np.concatenate([[0.0], np.geomspace(1e-4, 1.0, DRVH_LEVELS - 1) * (top if top > 0 else 1.0)])
            curves = {
                method: drvh(dose_rate, None, {}, levels, index=index).sel(voi=shown)
                for method, dose_rate in maps.items()
            }
            figures.append(
                _figure_html(
                    plot_drvh(curves, f"patient {patient}, {timepoint}"), f"DRVH patient {patient} {timepoint}"
                )
            )
    joint = None
    if has_pair and moments.n >= 2:
        joint = {
            "counts": counts,
            "edges_a": edges,
            "edges_b": edges,
            "n": moments.n,
            "pearson_r2": moments.pearson_r2(),
            "ccc": moments.ccc(),
        }
    return joint, figures


def _voxel_dose_html(cohort, voi_type_of: dict) -> list[str]:
    """The section on the absorbed-dose maps: registration quality, map statistics against the VOI-level result,
    one map slice and the cumulative DVHs of the first cycle of each patient."""
    voxel = cohort.read_table("voxel_absorbed_dose")
    if voxel.empty:
        return []
    registrations = cohort.read_table("registrations")
    dvh = cohort.read_table("dose_volume_histograms")
    parts = ["<h2>Absorbed-dose maps per therapy cycle</h2>", "<p>" + VOXEL_DOSE_TEXT + "</p>"]
    if not registrations.empty:
        parts += [
            _registration_sentence(registrations),
            "<details><summary>Registration per time point</summary>",
            _table_html(registrations.round(3)),
            "</details>",
        ]

    def describe(group: pd.DataFrame) -> dict:
        return {
            "map mean (Gy)": _mean_min_max(group["mean_gy"]),
            "D2 (Gy)": _mean_min_max(group["d2_gy"]),
            "D98 (Gy)": _mean_min_max(group["d98_gy"]),
            "map vs VOI level, median (min to max) %": _median_range(group["difference_percent"]),
            "map vs same rule on the VOI curve, median (min to max) %": _median_range(
                group["same_rule_difference_percent"]
            ),
        }

    parts += [
        _table_html(_per_class_and_method(voxel, voi_type_of, describe)),
        "<details><summary>Map statistics per patient, cycle, VOI and method</summary>",
        _table_html(
            voxel[
                [
                    "patient",
                    "cycle",
                    "voi",
                    "method",
                    "volume_ml",
                    "mean_gy",
                    "d2_gy",
                    "d50_gy",
                    "d98_gy",
                    "fitted_tail_fraction",
                    "voi_level_gy",
                    "voi_level_model",
                    "difference_percent",
                    "voi_same_rule_gy",
                    "same_rule_difference_percent",
                ]
            ].round(3)
        ),
        "</details>",
    ]
    first_cycles = dvh.groupby("patient")["cycle"].min()
    for patient, cycle in list(first_cycles.items())[:MAX_DVH_FIGURES]:
        rows = dvh[(dvh["patient"] == patient) & (dvh["cycle"] == cycle)]
        cycle_ds = cohort.cycle(str(patient), int(cycle))
        reference = cycle_ds.attrs["reference_timepoint"]
        labels = cohort.scan(str(patient), reference, version=cycle_ds.attrs["scan_versions"][reference])["labels"]
        kidneys = [value for value, name in labels.attrs["names"].items() if _voi_type_of(name) == "kidney"]
        kidney = np.isin(labels.values, kidneys)
        y = int(np.argwhere(kidney)[:, 1].mean()) if kidney.any() else labels.shape[1] // 2
        maps = {
            str(name)[len("absorbed_dose_") :]: np.asarray(cycle_ds[name][:, y, :].values)
            for name in cycle_ds.data_vars
            if str(name).startswith("absorbed_dose_")
        }
        title = f"patient {patient}, cycle {cycle}"
        parts += [
            _figure_html(
                plot_dose_maps(maps, cycle_ds.attrs["spacing_mm"], f"{title}, coronal slice through the kidneys"),
                f"absorbed-dose maps {title}",
            ),
            _figure_html(plot_dvh(rows[rows["voi"].map(voi_type_of) != "body"], title), f"DVH {title}"),
        ]
    return parts


def _median_range(values: pd.Series) -> str:
    values = values.dropna()
    return f"{values.median():+.1f} ({values.min():+.1f} to {values.max():+.1f})" if len(values) else "n/a"


def _registration_sentence(registrations: pd.DataFrame) -> str:
    worst = registrations.loc[registrations["dice_min"].idxmin()] if registrations["dice_min"].notna().any() else None
    dice = f"{worst['dice_min']:.3f} ({html.escape(str(worst['dice_min_voi']))})" if worst is not None else "n/a"
    return (
        f"<p>Registrations: {len(registrations)} time points onto their cycle's first scan. Rigid rotation up to "
        f"{registrations['rotation_deg'].max():.1f}&deg;, translation up to {registrations['translation_mm'].max():.1f}"
        f" mm; Jacobian determinant {registrations['jacobian_min'].min():.2f}&ndash;"
        f"{registrations['jacobian_max'].max():.2f} (&gt; 0: no folding); smallest Dice of the warped contours "
        f"{dice}; share of reference voxels beyond a scan's field of view up to "
        f"{100 * registrations['outside_fov_fraction'].max():.1f} %.</p>"
    )


def _voi_type_of(name: str) -> str:
    from cohort_dosimetry.vocabulary import voi_type

    return voi_type(name)


def _time_activity_figures(voi_stats: pd.DataFrame, methods: list[str]) -> list[str]:
    method = "mc" if "mc" in methods else methods[-1]
    shown = voi_stats[(voi_stats["method"] == method) & voi_stats["voi_type"].isin(TARGET_VOI_TYPES)]
    parts = [
        f"<p>Mean dose-rate of the {method.upper()} maps (points) and every model applied (lines; the chosen "
        "one solid, with its absorbed dose in the legend), per patient and therapy cycle. Curves that could not "
        "be integrated are left out (see the absorbed dose section).</p>"
    ]
    for (patient, cycle), group in shown.groupby(["patient", "cycle"]):
        fits = {}
        for voi, curve in group.groupby("voi", sort=False):
            curve = curve[np.isfinite(curve["mean"])]
            if curve.empty or curve["nuclide"].nunique() != 1:
                continue
            try:
                fits[voi] = fit_time_activity(
                    curve["hours_post_injection"].to_numpy(),
                    curve["mean"].to_numpy(),
                    curve["nuclide"].iloc[0],
                    voi_class=str(voi),
                )
            except ValueError:
                continue
        if fits:
            parts.append(
                _figure_html(
                    plot_time_activity(fits, f"patient {patient}, cycle {cycle} ({method.upper()})"),
                    f"time-activity curves patient {patient} cycle {cycle}",
                )
            )
    return parts


def _methods_html() -> str:
    return "<h2>Methods</h2>" + METHODS_TEXT


def _cnn_evaluation_html(weights_sha256: set[str], model_card: dict | None) -> list[str]:
    """What is known of the accuracy of the CNN weights behind this cohort's CNN maps: the held-out evaluation in
    ``model_card`` (the card's data: ``weights_sha256`` and ``held_out_evaluation``) when the maps'
    ``weights_sha256`` is the card's, else a statement that none is known. Empty when the cohort has no CNN map."""
    if not weights_sha256:
        return []
    card_sha = (model_card or {}).get("weights_sha256", "")
    evaluation = (model_card or {}).get("held_out_evaluation")
    parts = ["<h3>CNN dose-rates: accuracy of the weights on held-out virtual patients</h3>"]
    unknown = sorted(sha or "not recorded" for sha in weights_sha256 if sha != card_sha or not evaluation)
    if unknown:
        parts.append(
            f"<p>CNN maps made with weights {html.escape(', '.join(unknown))}: no held-out evaluation of "
            "these weights is known to this report.</p>"
        )
    if card_sha not in weights_sha256 or not evaluation:
        return parts
    models = evaluation["spect_models"]
    parts.append(
        f"<p>Weights sha256 {card_sha[:12]}&hellip; (the model card given to the report), measured on "
        f"{html.escape(evaluation['description'])}; seeds {evaluation['seeds'][0]}-{evaluation['seeds'][-1]} "
        f"({html.escape(evaluation['source'])}). Bias of a VOI's mean dose-rate = estimate / truth &minus; 1, "
        "averaged over the VOI's scans; mean &plusmn; standard deviation over the VOIs of a class. A negative "
        "bias is an underestimate.</p>"
    )
    bias = pd.DataFrame({"VOI class": list(next(iter(models.values()))["voi_mean_bias"])})
    for model, m in models.items():
        for method in ("cnn", "dvk"):
            bias[f"{model}: {method.upper()} (%)"] = [
                _percent_mean_sd(*m["voi_mean_bias"][c][method]) for c in bias["VOI class"]
            ]
    parts.append(_table_html(bias))
    lesions: dict[str, dict[str, object]] = {}
    for model, m in models.items():
        for band in m["lesion_mean_bias_by_volume_ml"]:
            low, high = band["volume_ml"]
            row = lesions.setdefault(
                f"{low:g}-{high:g}" if high is not None else f"over {low:g}", {"lesions": band["lesions"]}
            )
            row.update({f"{model}: {method.upper()} (%)": f"{100 * band[method]:+.0f}" for method in ("cnn", "dvk")})
    if lesions:
        parts += [
            "<p>Bias of lesion mean dose-rates by lesion volume (mL):</p>",
            _table_html(pd.DataFrame([{"volume (mL)": k, **v} for k, v in lesions.items()])),
        ]
    checks = pd.DataFrame(
        [
            {
                "SPECT": model,
                "check": c["check"],
                "VOI class": c["voi_class"],
                "statistic [95 % interval]": "{:.3f} [{:.3f}, {:.3f}]".format(c["statistic"], *c["interval_95"]),
                "goal met": "yes" if c["met"] else "no",
            }
            for model, m in models.items()
            for c in m["goal_checks"]
        ]
    )
    parts += [
        "<p>Goal checks (the accuracy goal of the weights: mean-error reduction against DVK at least 0.40 for "
        "kidneys and lesions; NRMSE CNN &minus; DVK below 0 in every class):</p>",
        _table_html(checks),
    ]
    return parts


def _percent_mean_sd(mean: float, sd: float | None) -> str:
    """A bias and its spread over VOIs (fractions) as "+x \u00b1 y" percent; the spread of a single VOI is n/a."""
    return f"{100 * mean:+.0f} \u00b1 " + ("n/a" if sd is None else f"{100 * sd:.0f}")


def _provenance_html(cohort, scan_attrs: dict) -> str:
    versions = {"cohort_dosimetry": _version("cohort-dosimetry")}
    versions.update({package: _version(package) for package in _PACKAGES})
    software = pd.DataFrame({"package": list(versions), "version (this report)": list(versions.values())})
    store_versions = cohort.attrs.get("software_versions", {})
    records: dict[tuple[str, str], int] = {}
    for attrs in scan_attrs.values():
        for array, entry in (attrs.get("provenance") or {}).items():
            if not array.startswith("dose_rate"):
                continue
            described = {k: v for k, v in sorted(entry.items()) if k not in ("written_utc",)}
            key = (array, json.dumps(described, sort_keys=True, default=str))
            records[key] = records.get(key, 0) + 1
    provenance = pd.DataFrame(
        [{"array": array, "provenance": text, "scans": n} for (array, text), n in sorted(records.items())]
    )
    parts = ["<h2>Provenance</h2>", "<h3>Software used for this report</h3>", _table_html(software)]
    if store_versions:
        parts += [
            "<h3>Software that created the store</h3>",
            _table_html(
                pd.DataFrame({"package": list(store_versions), "version": [str(v) for v in store_versions.values()]})
            ),
        ]
    if not provenance.empty:
        parts += ["<h3>Dose-rate maps (from each scan's provenance)</h3>", _table_html(provenance)]
    return "\n".join(parts)


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"
