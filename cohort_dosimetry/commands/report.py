"""Write a cohort's self-contained HTML report (run `cohort-dosimetry stats COHORT_DIR` first).

The report goes to COHORT_DIR/reports/cohort_report.html: cohort summary table, agreement between methods, CNN-vs-MC
joint histogram, absorbed doses with the chosen time-integration model, figures, methods and provenance.
"""

from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("cohort_dir", help="cohort directory (holds store.zarr and tables/)")


def run(args: argparse.Namespace) -> int:
    from cohort_dosimetry.pipeline import write_cohort_report

    try:
        path = write_cohort_report(args.cohort_dir)
    except (ValueError, FileNotFoundError, KeyError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(path)
    return 0
