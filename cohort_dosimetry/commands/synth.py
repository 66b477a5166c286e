"""Generate a cohort of synthetic virtual patients as SPECT/CT DICOM (CT, NM, RTSTRUCT, SEG) plus ground truth.

By default 12 patients with 3 or 4 scans each (42 scans, day 0 to 7 after a Lu-177 DOTATATE cycle), like the
cohort of Li et al. (Med Phys 49:1216, 2022). The patients are synthetic: names, IDs and birth dates are fake.
Layout: OUT_DIR/dicom/patient_NN/study_K/{CT,NM,RTSTRUCT,SEG}/ and OUT_DIR/ground_truth/<PatientID>.zarr.
With --motion the patients move between scans (rigid up to 15 mm / 5 degrees plus breathing-scale organ displacement
up to 8 mm): every study has its own CT and contours, and the ground truth keeps the true motion.
"""

from __future__ import annotations

import argparse
import sys
import time


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out_dir", metavar="OUT_DIR", help="folder to write the cohort to")
    parser.add_argument("--patients", type=int, default=12, help="number of virtual patients (default 12)")
    parser.add_argument("--seed", type=int, default=0, help="cohort seed (default 0)")
    parser.add_argument(
        "--grid",
        choices=("compact", "paper"),
        default="compact",
        help="CT grid: compact 128x128x130 at 3.91x3.91x3 mm (default), paper 512x512x130 at 0.98x0.98x3 mm",
    )
    parser.add_argument(
        "--spect",
        choices=("fast", "pytomography"),
        default="fast",
        help="SPECT model: fast (calibrated resolution and noise model, default) or pytomography "
        "(projection + OSEM, minutes per scan)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        help="processes generating patients side by side (default: one per CPU core)",
    )
    parser.add_argument(
        "--motion",
        action="store_true",
        help="move the patients between scans: rigid shift up to 15 mm and rotation up to 5 degrees plus "
        "breathing-scale organ displacement up to 8 mm, drawn from each patient's seed (the true motion is kept in "
        "the ground truth)",
    )


def run(args: argparse.Namespace) -> int:
    from cohort_dosimetry.phantoms import export_cohort

    if args.patients < 1:
        raise SystemExit(f"synth: --patients must be at least 1, got {args.patients}")
    start = time.perf_counter()
    try:
        cohort = export_cohort(
            args.out_dir,
            n_patients=args.patients,
            seed=args.seed,
            grid=args.grid,
            spect=args.spect,
            progress=True,
            workers=args.workers,
            motion=args.motion,
        )
    except FileExistsError as err:
        print(f"synth: {err}", file=sys.stderr)
        return 1
    elapsed = time.perf_counter() - start
    print(f"{'patient':>7}  {'PatientID':<10} {'scans':>5}  hours p.i.")
    for p in cohort.patients:
        hours = ", ".join(f"{s.hours_post_injection:g}" for s in p.scans)
        print(f"{p.patient_index:>7}  {p.patient_id:<10} {len(p.scans):>5}  {hours}")
    print(
        f"{cohort.n_scans} scans of {len(cohort.patients)} synthetic virtual patients in {cohort.out_dir} "
        f"({elapsed:.0f} s, {elapsed / cohort.n_scans:.1f} s per scan)"
    )
    if args.motion:
        print("the patients move between scans; the true motion is in the ground truth")
    return 0
