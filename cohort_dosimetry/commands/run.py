"""Run the whole cohort flow (ingest, dose-rate maps, statistics, report) on a DICOM folder.

Tasks run on the embedded default (a Dask LocalCluster sized to this machine and Prefect's local mode) unless
--address names an existing Dask scheduler. A rerun computes only what the store does not hold yet.
"""
from __future__ import annotations

import argparse
import sys

from cohort_dosimetry.pipeline import METHODS


def add_flow_arguments(parser: argparse.ArgumentParser) -> None:
    """Options shared by `run`, `serve` and `demo`."""
    parser.add_argument("--methods", default="dvk,cnn,mc",
                        help=f"comma-separated dose methods among {','.join(METHODS)} (default: all)")
    parser.add_argument("--address", default=None, help="Dask scheduler, e.g. tcp://host:8786 (default: embedded)")
    parser.add_argument("--grid", default="compact", help="dose grid: compact, ct, or Z,Y,X spacing in mm")
    parser.add_argument("--mc-scans", choices=("all", "first"), default="all",
                        help="run Monte Carlo on all scans or on the earliest scan of each patient's therapy cycle")
    parser.add_argument("--mc-decays", type=int, default=5_000_000, help="Monte Carlo decays per scan")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--roi-names", type=roi_names_file, default=None, metavar="FILE.toml",
                        help="ROI-name mapping file extending the built-in clinical synonyms (see README)")


def roi_names_file(path: str) -> dict[str, str]:
    """``--roi-names``: the mapping read from the file; a bad file is a usage error naming the file and the entry."""
    from cohort_dosimetry.vocabulary import read_roi_names

    try:
        return read_roi_names(path)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def flow_parameters(args: argparse.Namespace) -> dict:
    return dict(
        dicom_dir=str(args.dicom_dir), cohort_dir=str(args.cohort_dir),
        methods=tuple(m.strip() for m in args.methods.split(",") if m.strip()),
        address=args.address, grid=args.grid, mc_scans=args.mc_scans, mc_decays=args.mc_decays, seed=args.seed,
        roi_names=args.roi_names,
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dicom_dir")
    parser.add_argument("cohort_dir")
    add_flow_arguments(parser)


def print_summary(summary: dict) -> None:
    from cohort_dosimetry.store import open_cohort
    from cohort_dosimetry.stats import cohort_summary_table

    cohort = open_cohort(summary["cohort_dir"])
    table = cohort_summary_table(cohort.voi_stats())
    synthetic = [bool(cohort.scan_attrs(p, t).get("synthetic")) for p, t in cohort.scans()]
    origin = ("synthetic virtual patients, not patient data" if synthetic and all(synthetic)
              else f"{sum(synthetic)} of {len(synthetic)} scans are synthetic virtual patients")
    print(f"\nCohort summary: dose-rate in mGy/h, mean (min-max) over scans and VOIs of each class ({origin}):")
    print(table.to_string())
    for note in summary.get("notes", []):
        print(f"note: {note}")
    print(f"\nscans: {summary['n_done']} computed, {summary['n_skipped']} already complete, {summary['n_failed']} failed"
          f" in {summary['wall_time_s']:.0f} s (run {summary['run_id']})")
    print(f"report: {summary['report']}")


def run(args: argparse.Namespace) -> int:
    from cohort_dosimetry.store import PseudonymKeyMismatch, open_cohort

    try:  # a cohort written with another pseudonym key is refused before the flow starts
        open_cohort(args.cohort_dir).bind_pseudonym_key()
    except FileNotFoundError:
        pass  # a new cohort: its first ingest records the key's fingerprint
    except PseudonymKeyMismatch as exc:
        print(f"cohort-dosimetry run: nothing done: {exc}", file=sys.stderr)
        return 2
    from flows import cohort_flow

    params = flow_parameters(args)
    summary = cohort_flow(**params)
    summary["cohort_dir"] = params["cohort_dir"]
    print_summary(summary)
    return 1 if summary["n_failed"] else 0
