"""Training throughput: seconds per epoch of ``fit`` with the shipped recipe's batch (16 slices, 64 x 64 crops), per
device, against the CPU with 2 threads measured in the same run.

Each row runs ``cohort_dosimetry.training._fit.fit`` for one epoch of ``--slices`` training slices (its batching,
Adam steps, validation loss over every 8th slice of one volume and checkpoint writes included), after a warm-up
epoch in another folder. Volumes: ``--volumes`` seeded random compact-grid scans, 130 x 128 x 128 (z, y, x); run
time does not depend on the values (no patient data, no virtual patients: those take an hour of MC to make). The
last columns scale the row to the shipped recipe (``docs/model.md``): stage 1, 60 epochs of 2048
slices; stage 2, 40 epochs of 2048 slices (whose validation set is larger; not modelled here).

    .venv/bin/python bench/train.py [--slices 256] [--volumes 4] [--threads 1 2]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see bench/mc.py

import numpy as np  # noqa: E402
import torch  # noqa: E402

from cohort_dosimetry.training._fit import FitConfig, TrainingVolume, fit  # noqa: E402

SHAPE = (130, 128, 128)
RECIPE_SLICES = {"stage 1": 60 * 2048, "stage 2": 40 * 2048}


def _volumes(n: int) -> list[TrainingVolume]:
    rng = np.random.default_rng(0)
    out = []
    for _ in range(n):
        spect = rng.gamma(2.0, 1.0, SHAPE).astype(np.float32)
        density = rng.uniform(0.0, 1.5, SHAPE).astype(np.float32)
        weight = np.where(density > 0.1, 0.7, 0.3).astype(np.float32)
        out.append(TrainingVolume(spect, density, 0.5 * spect, 0.6 * spect, weight))
    return out


def seconds_per_epoch(train, validation, slices: int, device: str, tmp: Path) -> float:
    config = FitConfig(epochs=1, slices_per_epoch=slices, seed=0)
    quiet = lambda s: None  # noqa: E731
    fit(
        train,
        validation,
        FitConfig(epochs=1, slices_per_epoch=32, seed=0),
        tmp / f"warm_{device}",
        log=quiet,
        device=device,
    )
    start = time.perf_counter()
    fit(train, validation, config, tmp / f"run_{device}_{torch.get_num_threads()}", log=quiet, device=device)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, default=256, help="training slices in the timed epoch")
    parser.add_argument("--volumes", type=int, default=4)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="CPU rows")
    args = parser.parse_args()
    volumes = _volumes(args.volumes + 1)
    train, validation = volumes[:-1], volumes[-1:]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for threads in sorted(set(args.threads) | {2}):
            torch.set_num_threads(threads)
            rows.append(
                (f"cpu, {threads} threads", seconds_per_epoch(train, validation, args.slices, "cpu", Path(tmp)))
            )
        if torch.cuda.is_available():
            rows.append(
                (
                    f"cuda ({torch.cuda.get_device_name()})",
                    seconds_per_epoch(train, validation, args.slices, "cuda", Path(tmp)),
                )
            )
    baseline = dict(rows)["cpu, 2 threads"]
    print(
        f"torch {torch.__version__}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; "
        f"one epoch of {args.slices} slices, batch 16, 64 x 64 crops, {args.volumes} training volumes {SHAPE}"
    )
    print(
        f"{'device':34s} {'s/epoch':>8s} {'ms/slice':>9s} {'x cpu 2 thr':>11s} "
        + " ".join(f"{k + ' min':>12s}" for k in RECIPE_SLICES)
    )
    for name, seconds in rows:
        per_slice = seconds / args.slices
        print(
            f"{name:34s} {seconds:8.1f} {1e3 * per_slice:9.1f} {baseline / seconds:11.2f} "
            + " ".join(f"{per_slice * n / 60:12.0f}" for n in RECIPE_SLICES.values())
        )


if __name__ == "__main__":
    main()
