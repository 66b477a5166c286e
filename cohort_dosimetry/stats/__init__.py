"""Cohort statistics: per-VOI dose-rate metrics, agreement between methods, time integration, tables and report.

Arrays are (z, y, x), dose-rates in Gy/s, spacing in mm, times in hours post injection, absorbed doses in Gy.
Exact definitions (DRx convention, NaN and empty-VOI policy, model selection) are in the docstrings of
``_metrics`` and ``_time_integration``. Everything here is numpy/scipy on the CPU, whatever device made the maps
(a scan's statistics take well under a second).
"""

from cohort_dosimetry.stats._figures import plot_drvh, plot_joint_histogram, plot_time_activity
from cohort_dosimetry.stats._metrics import (
    DR_PERCENTS,
    NonFiniteDoseRateWarning,
    VoiIndex,
    concordance,
    drvh,
    ensemble_noise,
    joint_histogram,
    lins_ccc,
    mean_error,
    nrmse,
    pearson_r2,
    voi_concordance,
    voi_metrics,
)
from cohort_dosimetry.stats._report import cohort_summary_table, write_report
from cohort_dosimetry.stats._tables import (
    METHODS,
    NOT_INTEGRATED,
    TABLE_UNITS,
    absorbed_dose,
    absorbed_dose_total,
    compute_cohort_tables,
    scan_tables,
    write_cohort_tables,
)
from cohort_dosimetry.stats._time_integration import (
    ModelFit,
    TimeActivityFit,
    fit_time_activity,
    hanscheid_absorbed_dose_gy,
)

__all__ = [
    "DR_PERCENTS",
    "METHODS",
    "ModelFit",
    "NOT_INTEGRATED",
    "NonFiniteDoseRateWarning",
    "TABLE_UNITS",
    "TimeActivityFit",
    "VoiIndex",
    "absorbed_dose",
    "absorbed_dose_total",
    "cohort_summary_table",
    "compute_cohort_tables",
    "concordance",
    "drvh",
    "ensemble_noise",
    "fit_time_activity",
    "hanscheid_absorbed_dose_gy",
    "joint_histogram",
    "lins_ccc",
    "mean_error",
    "nrmse",
    "pearson_r2",
    "plot_drvh",
    "plot_joint_histogram",
    "plot_time_activity",
    "scan_tables",
    "voi_concordance",
    "voi_metrics",
    "write_cohort_tables",
    "write_report",
]
