"""Write a cohort's maps as DICOM on the original CT: dose rates and VOIs per scan, absorbed dose per therapy cycle.

Dose rates as Parametric Maps (Gy/s), VOIs as SEG, absorbed doses as RT Dose (Gy).

Needs the DICOM folder the cohort was ingested from: the store holds pseudonyms only, so patient and study identity
and the reference CT are read there again. Each scan's CT is found as ingest paired it and must be the CT ingested
(its Frame of Reference and file hashes, as the store recorded them); a scan whose CT changed is reported, not
exported. Files go to OUT_DIR/PATIENT/TIMEPOINT/ (SEG.dcm, PM_<method>.dcm) and, for each therapy cycle with stored
absorbed-dose maps (voxel-level: registered onto the cycle's reference scan and integrated), OUT_DIR/PATIENT/cycle_C/
(RTDOSE_<method>.dcm, Dose Summation Type CYCLE) on the reference scan's CT; in the CT's frame of reference and
study, for 3D Slicer, MIM or any DICOM viewer. A cycle is refused when its reference scan's CT is, or when its maps
predate a scan re-ingested or added since (recompute with `run`). The pseudonym key is the cohort's (as for ingest).
Exit status 1 when a scan or cycle was refused, 2 when the pseudonym key is not the cohort's or a folder is missing.
"""

from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("cohort_dir", metavar="COHORT_DIR", help="cohort directory")
    parser.add_argument("out_dir", metavar="OUT_DIR", help="folder for the DICOM files (created if missing)")
    parser.add_argument(
        "--dicom",
        required=True,
        metavar="DICOM_DIR",
        help="the DICOM folder the cohort was ingested from (identity and reference CT)",
    )
    parser.add_argument(
        "--patient",
        action="append",
        default=None,
        metavar="P",
        help="export this patient (pseudonym) only; repeat for several",
    )


def run(args: argparse.Namespace) -> int:
    from cohort_dosimetry.io import export_scans
    from cohort_dosimetry.store import PseudonymKeyMismatch

    try:
        rows = export_scans(args.cohort_dir, args.dicom, args.out_dir, patients=args.patient)
    except PseudonymKeyMismatch as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except FileNotFoundError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for row in rows.itertuples():
        where = f"{row.patient}/{row.timepoint}" if row.timepoint else row.patient
        print(f"{row.status:8s} {where:24s} {row.file or '-'}: {row.message}")
    written = rows[rows["status"] == "written"]
    per_cycle = written["object"].str.startswith("RTDOSE ")
    scans = written.loc[~per_cycle, ["patient", "timepoint"]].drop_duplicates().shape[0]
    cycles = written.loc[per_cycle, "file"].map(lambda f: f.rsplit("/", 1)[0]).nunique()  # PATIENT/cycle_C
    print(f"{len(written)} DICOM objects of {scans} scans and {cycles} cycles written to {args.out_dir}")
    return 1 if (rows["status"] == "refused").any() else 0
