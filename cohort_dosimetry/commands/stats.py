"""Compute a cohort's statistics tables (voi_stats, concordance, absorbed_dose, absorbed_dose_total) from its
dose-rate maps.

Reads every scan of COHORT_DIR that has at least one dose-rate map (one scan in memory at a time), writes
COHORT_DIR/tables/{voi_stats,concordance,absorbed_dose,absorbed_dose_total}.parquet (absorbed dose per therapy cycle
and summed over each patient's cycles) and prints the cohort summary (dose-rates in mGy/h).
"""

from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from cohort_dosimetry.commands.run import add_uncertainty_arguments

    parser.add_argument("cohort_dir", help="cohort directory (holds store.zarr)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    add_uncertainty_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from cohort_dosimetry.stats import cohort_summary_table, compute_cohort_tables
    from cohort_dosimetry.store import open_cohort

    try:
        cohort = open_cohort(args.cohort_dir)
        tables = compute_cohort_tables(
            cohort,
            progress=not args.quiet,
            sensitivity_cps_per_mbq=args.sensitivity_cps_per_mbq,
            calibration_uncertainty=args.calibration_uncertainty,
        )
    except (ValueError, FileNotFoundError, KeyError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for name, table in tables.items():
        print(f"{cohort.tables_dir / name}.parquet: {len(table)} rows")
    print("\nCohort summary, dose-rate in mGy/h, mean (min-max) over scans and VOIs:")
    print(cohort_summary_table(tables["voi_stats"]).to_string(index=False))
    return 0
