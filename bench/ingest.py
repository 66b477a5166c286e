"""Benchmark of DICOM ingest: the 42-scan compact synthetic cohort (synthetic virtual patients, not patient data).

Generates the cohort once with the phantoms exporter (``cohort-dosimetry synth``: 12 patients, 42 SPECT/CT scans,
compact grid, fast SPECT model) into ``--data`` unless it is there already, then measures

- the floor: reading and hashing every file (what any re-run must at least do),
- the full ingest with 1 worker process (the baseline of the ratios),
- the full ingest with ``--workers`` processes into a fresh cohort,
- the re-run on unchanged files (must change nothing).

Goals: full ingest at most 300 s on 2 cores; re-run under 10 % of that (30 s).
Usage: ``python bench/ingest.py [--data DIR] [--workers 2]``
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import tempfile
from pathlib import Path

from _timing import timed

GOAL_INGEST_S = 300.0
GOAL_RERUN_S = 0.1 * GOAL_INGEST_S


def _hash_all(root: Path) -> int:
    n = 0
    for path in root.rglob("*"):
        if path.is_file():
            with open(path, "rb") as f:
                hashlib.file_digest(f, "sha256")
            n += 1
    return n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path(tempfile.gettempdir()) / "cohort-dosimetry-bench-synth")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    os.environ.setdefault("COHORT_DOSIMETRY_PSEUDONYM_KEY", "bench-ingest-pseudonym-key")

    from cohort_dosimetry.io import ingest
    from cohort_dosimetry.phantoms import export_cohort
    from cohort_dosimetry.store import open_cohort, validate_cohort

    if not (args.data / "dicom").is_dir():
        exported, t_synth = timed(
            lambda: export_cohort(
                args.data, n_patients=12, seed=0, grid="compact", spect="fast", progress=False, workers=args.workers
            )
        )
        print(f"generated {exported.n_scans} scans in {args.data} in {t_synth:.0f} s")
    work = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    try:
        n_files, t_hash = timed(lambda: _hash_all(args.data / "dicom"))
        report1, t_one = timed(lambda: ingest(args.data, work / "one", grid="ct", workers=1))
        report2, t_many = timed(lambda: ingest(args.data, work / "many", grid="ct", workers=args.workers))
        many = open_cohort(work / "many")
        before = {s: many.scan_attrs(*s)["written_utc"] for s in many.scans()}
        report3, t_rerun = timed(lambda: ingest(args.data, work / "many", grid="ct", workers=args.workers))
        after = {s: many.scan_attrs(*s)["written_utc"] for s in many.scans()}
        scans = lambda r: r[r["timepoint"] != ""].drop_duplicates(["patient", "timepoint"])  # noqa: E731
        n_scans = len(scans(report1))
        assert (scans(report1)["status"] == "written").all() and (scans(report2)["status"] == "written").all()
        assert (scans(report3)["status"] == "unchanged").all() and before == after, "the re-run changed the store"
        assert validate_cohort(work / "many") == []
        load = os.getloadavg()[0]
        print(
            f"\ningest of {n_scans} synthetic scans ({n_files} files) on {os.cpu_count()} cores "
            f"(1-min load average {load:.1f})"
        )
        print(f"{'step':<34}{'seconds':>9}{'ratio':>8}  goal")
        rows = [
            ("read + SHA-256 every file (floor)", t_hash, ""),
            ("full ingest, 1 worker (baseline)", t_one, f"<= {GOAL_INGEST_S:.0f} s"),
            (f"full ingest, {args.workers} workers", t_many, f"<= {GOAL_INGEST_S:.0f} s"),
            ("re-run, unchanged files", t_rerun, f"<= {GOAL_RERUN_S:.0f} s"),
        ]
        for name, seconds, goal in rows:
            print(f"{name:<34}{seconds:>9.1f}{seconds / t_one:>8.3f}  {goal}")
        print(f"per scan: {t_one / n_scans:.2f} s (1 worker), {t_many / n_scans:.2f} s ({args.workers} workers)")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
