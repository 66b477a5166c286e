"""Synthesise the 42-scan compact virtual cohort and run the whole cohort flow on it (the main job of `make demo`).

The patients are synthetic virtual patients (no patient data) that move between scans, as patients do: every scan
after the first finds the patient repositioned (rigid shift up to 15 mm, rotation up to 5 degrees) with liver, spleen
and kidneys displaced on the scale of breathing (up to 8 mm; ``cohort_dosimetry.phantoms.move_patient``); each study
has its own CT and contours, and the ground truth keeps the true motion. The SPECT is the calibrated `fast` model;
Monte Carlo runs on one scan per patient and therapy cycle only, the one nearest 96 h after injection, so that the
demo fits in about 20 minutes on 2 CPU cores: the MC absorbed doses are single-time-point estimates, given only where
the scan lies in a window where one holds (``cohort_dosimetry.stats``; the absorbed-dose table names the rule of each).
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

from cohort_dosimetry.constants import DEFAULT_DOSE_GRID, MC_DECAYS

_MOTION_MARK = "patients move between scans"  # in the export's .complete marker


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="demo-output", help="folder for the DICOM cohort and the store")
    parser.add_argument("--patients", type=int, default=12)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--mc-decays", type=int, default=MC_DECAYS, help=f"Monte Carlo decays per scan (default {MC_DECAYS})"
    )
    parser.add_argument("--address", default=None, help="Dask scheduler (default: embedded LocalCluster)")


def run(args: argparse.Namespace) -> int:
    from cohort_dosimetry.commands.run import print_summary
    from cohort_dosimetry.phantoms import Acquisition, export_cohort
    from flows import cohort_flow, exit_on_termination_signals, prefect_api

    out = Path(args.out).resolve()
    dicom_dir, cohort_dir = out / "dicom", out / "cohort"
    t0 = time.perf_counter()
    marker = dicom_dir / ".complete"
    if marker.exists() and _MOTION_MARK not in marker.read_text():
        # an export of patients that do not move, from an earlier version: its store would mix with the new scans
        print(f"{out} holds a synthetic cohort of patients that do not move between scans: delete {out} to regenerate")
        return 1
    if marker.exists():
        print(f"synthetic cohort already in {dicom_dir} (delete it to regenerate)")
    else:
        if dicom_dir.exists():  # an interrupted export of our own: start it again from nothing
            print(f"removing the incomplete synthetic export in {dicom_dir}")
            shutil.rmtree(dicom_dir)
        print(
            f"synthesising {args.patients} virtual patients (fast SPECT model, moving between scans) into {dicom_dir}"
        )
        export_cohort(
            dicom_dir,
            n_patients=args.patients,
            seed=args.seed,
            grid="compact",
            spect="fast",
            progress=True,
            motion=True,
        )
        marker.write_text(f"export finished, {_MOTION_MARK}\n")
    synth_s = time.perf_counter() - t0
    # SIGTERM/SIGHUP/Ctrl-C unwind the run: the embedded Dask cluster and the temporary Prefect server stop with it
    with exit_on_termination_signals(), prefect_api():
        summary = cohort_flow(
            str(dicom_dir),
            str(cohort_dir),
            methods=("dvk", "cnn", "mc"),
            address=args.address,
            grid=DEFAULT_DOSE_GRID,
            mc_scans="nearest-96h",
            mc_decays=args.mc_decays,
            seed=args.seed,
            # the virtual camera's sensitivity, so that the count-noise part of each absorbed dose's uncertainty is
            # given; no calibration uncertainty is claimed for a synthetic camera (the report says so)
            sensitivity_cps_per_mbq=Acquisition().sensitivity_cps_per_mbq,
        )
    summary["cohort_dir"] = str(cohort_dir)
    print_summary(summary)
    print(
        f"\ntime split (wall seconds): synth {synth_s:.0f}, "
        + ", ".join(f"{k} {v:.0f}" for k, v in summary["stage_wall_s"].items())
    )
    print(
        "task seconds summed over workers: "
        + ", ".join(f"{k} {v:.0f}" for k, v in sorted(summary["task_seconds"].items()))
    )
    return 1 if summary["n_failed"] else 0
