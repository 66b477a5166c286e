"""Cohort statistics: per-VOI dose-rate metrics, agreement between methods, time integration, tables and report.

Arrays are (z, y, x), dose-rates in Gy/s, spacing in mm, times in hours post injection, absorbed doses in Gy.
Exact definitions (DRx convention, NaN and empty-VOI policy, model selection, the single-time-point rule, the
uncertainty components, voxel-level integration) are in the docstrings of ``_metrics``, ``_time_integration``,
``_single_timepoint``, ``_uncertainty`` and ``_voxel_dose``. Everything here is numpy/scipy on the CPU, whatever
device made the maps (a scan's statistics take well under a second).
"""

from cohort_dosimetry.stats._cycle_tables import DVH_LEVELS, cycle_tables, stored_cycle_tables, with_voi_level
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
from cohort_dosimetry.stats._single_timepoint import HalfLifePrior, SingleTimePointDose, single_timepoint_dose
from cohort_dosimetry.stats._tables import (
    CYCLE_TABLES,
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
from cohort_dosimetry.stats._uncertainty import DoseUncertainty, voi_activities_bq, voi_counts, voi_dose_uncertainty
from cohort_dosimetry.stats._voxel_dose import (
    RULES,
    VoxelDose,
    compare_with_voi_integration,
    dose_statistics,
    dose_volume_histogram,
    integrate_curve,
    integrate_voxels,
)

__all__ = [
    "CYCLE_TABLES",
    "DVH_LEVELS",
    "RULES",
    "cycle_tables",
    "stored_cycle_tables",
    "with_voi_level",
    "DR_PERCENTS",
    "DoseUncertainty",
    "HalfLifePrior",
    "METHODS",
    "ModelFit",
    "NOT_INTEGRATED",
    "NonFiniteDoseRateWarning",
    "SingleTimePointDose",
    "TABLE_UNITS",
    "TimeActivityFit",
    "VoiIndex",
    "VoxelDose",
    "absorbed_dose",
    "absorbed_dose_total",
    "cohort_summary_table",
    "compare_with_voi_integration",
    "compute_cohort_tables",
    "concordance",
    "dose_statistics",
    "dose_volume_histogram",
    "drvh",
    "ensemble_noise",
    "fit_time_activity",
    "hanscheid_absorbed_dose_gy",
    "integrate_curve",
    "integrate_voxels",
    "joint_histogram",
    "lins_ccc",
    "mean_error",
    "nrmse",
    "pearson_r2",
    "plot_drvh",
    "plot_joint_histogram",
    "plot_time_activity",
    "scan_tables",
    "single_timepoint_dose",
    "voi_activities_bq",
    "voi_concordance",
    "voi_counts",
    "voi_dose_uncertainty",
    "voi_metrics",
    "write_cohort_tables",
    "write_report",
]
