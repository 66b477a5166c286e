"""Rerun the physics and model validation at a stated size and write README.md, CSV tables and PNG figures.

Sections (cohort_dosimetry.validation): kernels against the published Lu-177 voxel S-values of Lanconelli et al.
2012 (all ICRP-107 electrons, and the beta spectrum alone to compare like with like); the homogeneous limit of the
Monte Carlo and the DVK; DVK against Monte Carlo on synthetic virtual patients; the CNN against the DVK on held-out
synthetic virtual patients; registration and voxel-level time integration on moving synthetic virtual patients. Size
quick takes about 15 minutes on 2 CPU cores, full (the documented evidence in docs/validation) about 55.
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from cohort_dosimetry.validation import SECTIONS

    parser.add_argument("--out", default="docs/validation", help="output folder (default: docs/validation)")
    parser.add_argument(
        "--size",
        choices=("quick", "full"),
        default="full",
        help="how much to compute: quick (about 15 min on 2 cores) or full (default, about 55 min)",
    )
    parser.add_argument(
        "--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS), help="sections to run (default: all)"
    )
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    parser.add_argument(
        "--work",
        default=None,
        help="folder for the virtual patients' data, kept for reuse (default: a temporary folder)",
    )


def run(args: argparse.Namespace) -> int:
    import time

    from cohort_dosimetry.validation import validate_science

    t0 = time.perf_counter()
    results = validate_science(
        args.out,
        size=args.size,
        sections=args.sections,
        device=args.device,
        work_dir=args.work,
        log=lambda s: print(s, flush=True),
    )
    for name, result in results.items():
        print(f"{name}: {', '.join(t.name + '.csv' for t in result.tables)} ({result.wall_s:.0f} s)")
    print(f"wrote {args.out}/README.md in {time.perf_counter() - t0:.0f} s")
    return 0
