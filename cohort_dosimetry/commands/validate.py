"""Check a cohort directory against the store schema; print every problem, exit 1 if there is any.

Checks the Zarr store's root, every scan version (attrs, arrays: dims, dtype, units, chunks, shapes,
provenance, label table), staging leftovers of interrupted writers, and the Parquet tables' columns,
types and units. Reads metadata only, changes nothing.
"""

from __future__ import annotations

import argparse

from cohort_dosimetry.store import validate_cohort


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("cohort_dir", metavar="COHORT_DIR", help="the cohort directory (holds store.zarr/ and tables/)")


def run(args: argparse.Namespace) -> int:
    problems = validate_cohort(args.cohort_dir)
    for problem in problems:
        print(problem)
    if problems:
        print(f"{args.cohort_dir}: {len(problems)} problem(s)")
        return 1
    print(f"{args.cohort_dir}: valid (store schema version 1)")
    return 0
