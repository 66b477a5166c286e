"""Cohort statistics: per-VOI dose-rate metrics, agreement between methods, time integration, tables and report.

Arrays are (z, y, x), dose-rates in Gy/s, spacing in mm, times in hours post injection, absorbed doses in Gy.
Exact definitions (DRx convention, NaN and empty-VOI policy, model selection) are in the docstrings of
``_metrics`` and ``_time_integration``. Everything here is numpy/scipy on the CPU, whatever device made the maps
(a scan's statistics take well under a second). Public names are resolved lazily so that importing the metrics does not pay
for matplotlib.
"""
from __future__ import annotations

from cohort_dosimetry._lazy import lazy_exports

_PUBLIC = {
    "DR_PERCENTS": "_metrics",
    "NonFiniteDoseRateWarning": "_metrics",
    "VoiIndex": "_metrics",
    "voi_metrics": "_metrics",
    "drvh": "_metrics",
    "voi_concordance": "_metrics",
    "nrmse": "_metrics",
    "mean_error": "_metrics",
    "pearson_r2": "_metrics",
    "lins_ccc": "_metrics",
    "concordance": "_metrics",
    "ensemble_noise": "_metrics",
    "joint_histogram": "_metrics",
    "ModelFit": "_time_integration",
    "TimeActivityFit": "_time_integration",
    "fit_time_activity": "_time_integration",
    "hanscheid_absorbed_dose_gy": "_time_integration",
    "absorbed_dose": "_tables",
    "absorbed_dose_total": "_tables",
    "NOT_INTEGRATED": "_tables",
    "scan_tables": "_tables",
    "compute_cohort_tables": "_tables",
    "write_cohort_tables": "_tables",
    "METHODS": "_tables",
    "TABLE_UNITS": "_tables",
    "plot_drvh": "_figures",
    "plot_joint_histogram": "_figures",
    "plot_time_activity": "_figures",
    "write_report": "_report",
    "cohort_summary_table": "_report",
}

__getattr__, __all__ = lazy_exports(__name__, _PUBLIC)
