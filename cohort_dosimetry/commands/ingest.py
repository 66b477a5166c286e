"""Ingest a folder of DICOM SPECT/CT studies (any layout) into a cohort store.

Every reconstructed SPECT becomes one scan (patient pseudonym, tp1..tpN) with ct_hu, density, activity (Bq/mL) and
labels on the dose grid. Bad files or series are reported (tables/ingest_report.parquet) and never stop the cohort;
re-running on unchanged files changes nothing. The pseudonym key comes from COHORT_DOSIMETRY_PSEUDONYM_KEY,
COHORT_DOSIMETRY_PSEUDONYM_KEY_FILE or COHORT_DIR/.secrets/pseudonym.key, and must stay the key the cohort was first
written with. Exit status 1 when anything was rejected (the rest is ingested all the same), 2 when the pseudonym key is
not the cohort's (nothing is ingested).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time

from cohort_dosimetry.constants import DEFAULT_DOSE_GRID
from cohort_dosimetry.grid import parse_dose_grid


def _grid(text: str):
    try:
        return parse_dose_grid(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"--grid: {error}") from None


def _counts_calibration(text: str):
    from cohort_dosimetry.io import CountsCalibration

    try:
        sensitivity, duration = (float(v) for v in text.split(","))
        return CountsCalibration(sensitivity, duration)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--counts-calibration must be CPS_PER_MBQ,DURATION_S (two positive numbers), got {text!r}"
        ) from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dicom_dir", metavar="DICOM_DIR", help="folder tree of DICOM files (any layout)")
    parser.add_argument("cohort_dir", metavar="COHORT_DIR", help="cohort directory (created if missing)")
    parser.add_argument(
        "--grid",
        type=_grid,
        default=DEFAULT_DOSE_GRID,
        help=f"dose grid: compact (3.0 x 3.91 x 3.91 mm, the CNN's grid; default {DEFAULT_DOSE_GRID}), "
        "ct (the CT grid) "
        "or Z,Y,X in mm; `run` computes on the grid the scans were ingested on",
    )
    parser.add_argument("--workers", type=int, default=1, help="processes reading scans in parallel (default 1)")
    parser.add_argument(
        "--counts-calibration",
        type=_counts_calibration,
        default=None,
        metavar="CPS_PER_MBQ,DURATION_S",
        help="SPECT sensitivity and acquisition duration, needed only for SPECT stored in counts",
    )
    parser.add_argument(
        "--nuclide",
        default=None,
        metavar="NAME",
        help="nuclide of SPECT whose header names none (only Lu177 is dosed); without it such SPECT "
        "are ingested as Lu177 with a warning",
    )
    parser.add_argument(
        "--roi-names",
        default=None,
        metavar="FILE.toml",
        help="ROI-name mapping file extending the built-in clinical synonyms (see README)",
    )


def run(args: argparse.Namespace) -> int:
    from cohort_dosimetry.io import ingest
    from cohort_dosimetry.store import PseudonymKeyMismatch
    from cohort_dosimetry.vocabulary import read_roi_names

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    started = time.perf_counter()
    try:
        roi_names = read_roi_names(args.roi_names) if args.roi_names else None
        report = ingest(
            args.dicom_dir,
            args.cohort_dir,
            grid=args.grid,
            workers=args.workers,
            counts_calibration=args.counts_calibration,
            progress=True,
            nuclide=args.nuclide,
            roi_names=roi_names,
        )
    except (PseudonymKeyMismatch, ValueError) as exc:  # a refused key or a bad --roi-names file: nothing written
        print(f"cohort-dosimetry ingest: nothing ingested: {exc}", file=sys.stderr)
        return 2
    seconds = time.perf_counter() - started
    stored = report[report["status"].isin(["written", "new_version", "unchanged"]) & (report["timepoint"] != "")]
    counts = stored.drop_duplicates(["patient", "timepoint"])["status"].value_counts()
    print(f"ingest of {args.dicom_dir} into {args.cohort_dir} took {seconds:.1f} s")
    for status in ("written", "new_version", "unchanged"):
        print(f"  {status:<12}{int(counts.get(status, 0)):>5} scans")
    # a rejected scan of a new series has no label yet: count rows (scans, series or files), not labels
    print(f"  {'rejected':<12}{int((report['status'] == 'rejected').sum()):>5} scans, series or files")
    problems = report[report["severity"].isin(["error", "warning"])]
    if len(problems):
        print(f"  {len(problems)} problems (errors and warnings) in {args.cohort_dir}/tables/ingest_report.parquet:")
        for row in problems.itertuples():
            print(f"    {row.severity:<8}{row.patient or '-':<14}{row.timepoint or '-':<5}{row.source}: {row.message}")
    return 1 if (report["severity"] == "error").any() else 0
