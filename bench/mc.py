"""Monte Carlo engine throughput: Lu-177 decays per second on a 130 x 128 x 128 (z, y, x) phantom at 3.0 x 3.9 x 3.9 mm.

The phantom is synthetic (no patient data): air outside a body ellipse, soft tissue 1.04 g/cm3, two lungs 0.3
g/cm3, a spine and a rib ring of bone 1.5 g/cm3; activity uniform in soft tissue with hot liver, kidneys and a lesion.
Electrons + photons unless a row says otherwise. Baseline: the same engine, electrons + photons, on ONE CPU thread,
measured in the same run; the ratio column is decays/s over that baseline. The goal is 2e5 decays/s on 2 CPU cores.
decays/cpu-s divides by the CPU time of this process instead of wall time: on a shared machine it tells what the
engine would do on an idle core.

    .venv/bin/python bench/mc.py [--decays N]
"""

from __future__ import annotations

import argparse
import os
import resource
import time

# GNU OpenMP (torch's CPU threads) spins while waiting by default; on a shared, oversubscribed machine the spinning
# thread steals the core the working one needs and 2 threads run 10x slower than 1. Passive waiting avoids that and
# costs little on an idle machine. It must be set before torch loads libgomp.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from cohort_dosimetry.physics import run_monte_carlo  # noqa: E402

GOAL_DECAYS_PER_S = 2e5
SHAPE = (130, 128, 128)
SPACING_MM = (3.0, 3.9, 3.9)


def bench_phantom() -> tuple[np.ndarray, np.ndarray]:
    """(activity Bq per voxel, density g/cm3), both (z, y, x): a synthetic torso."""
    z, y, x = np.meshgrid(*(np.arange(n, dtype=np.float32) for n in SHAPE), indexing="ij")
    ymm, xmm = (y - 64) * SPACING_MM[1], (x - 64) * SPACING_MM[2]
    zmm = z * SPACING_MM[0]
    body = (ymm / 120) ** 2 + (xmm / 180) ** 2 < 1
    density = np.where(body, 1.04, 0.0012).astype(np.float32)
    lungs = (zmm > 230) & ((((ymm + 10) / 70) ** 2 + ((np.abs(xmm) - 75) / 55) ** 2) < 1)
    density[lungs] = 0.3
    spine = ((ymm - 70) ** 2 + xmm**2) < 18**2
    ribs = body & (zmm > 230) & ((ymm / 110) ** 2 + (xmm / 170) ** 2 > 0.85)
    density[spine | ribs] = 1.5
    activity = np.where(body & ~lungs, 1.0e3, 0.0)
    activity[lungs] = 2.0e2
    liver = ((zmm - 200) / 80) ** 2 + ((ymm + 10) / 70) ** 2 + ((xmm + 70) / 80) ** 2 < 1
    kidneys = ((zmm - 140) / 50) ** 2 + ((ymm - 40) / 25) ** 2 + ((np.abs(xmm) - 60) / 25) ** 2 < 1
    lesion = ((zmm - 210) ** 2 + (ymm + 20) ** 2 + (xmm + 60) ** 2) < 15**2
    activity[liver] = 1.0e4
    activity[kidneys] = 2.0e4
    activity[lesion] = 1.0e5
    return activity, density


def measure(activity, density, n_decays, device, emissions=("electron", "photon")) -> tuple[float, float]:
    """(decays per wall-clock second, decays per CPU-second of this process)."""
    run_monte_carlo(activity, density, SPACING_MM, n_decays=20_000, device=device, emissions=emissions)  # warm-up
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start, cpu_start = time.perf_counter(), time.process_time()
    run_monte_carlo(activity, density, SPACING_MM, n_decays=n_decays, device=device, emissions=emissions, seed=1)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return n_decays / (time.perf_counter() - start), n_decays / (time.process_time() - cpu_start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--decays", type=int, default=2_000_000)
    args = parser.parse_args()
    activity, density = bench_phantom()
    load_before = os.getloadavg()[0]
    rows = []
    torch.set_num_threads(1)
    baseline = measure(activity, density, args.decays // 4, "cpu")
    rows.append(("cpu, 1 thread (baseline)", "electron+photon", args.decays // 4, baseline))
    rows.append(("cpu, 1 thread", "electron+photon", args.decays, measure(activity, density, args.decays, "cpu")))
    torch.set_num_threads(2)
    rows.append(("cpu, 2 threads", "electron+photon", args.decays, measure(activity, density, args.decays, "cpu")))
    rows.append(
        (
            "cpu, 2 threads",
            "electron",
            args.decays,
            measure(activity, density, args.decays, "cpu", emissions=("electron",)),
        )
    )
    rows.append(
        ("cpu, 2 threads", "photon", args.decays, measure(activity, density, args.decays, "cpu", emissions=("photon",)))
    )
    if torch.cuda.is_available():
        rows.append(("cuda", "electron+photon", 10 * args.decays, measure(activity, density, 10 * args.decays, "cuda")))
    load_after = os.getloadavg()[0]
    print(f"Monte Carlo throughput, Lu-177, synthetic phantom {SHAPE} (z, y, x) at {SPACING_MM} mm")
    print(
        f"{'device':26s} {'emissions':16s} {'decays':>9s} {'decays/s':>10s} {'x baseline':>10s} {'x goal':>7s}"
        f" {'decays/cpu-s':>13s}"
    )
    for device, em, n, (rate, per_cpu_s) in rows:
        print(
            f"{device:26s} {em:16s} {n:9d} {rate:10.3g} {rate / baseline[0]:10.2f} {rate / GOAL_DECAYS_PER_S:7.2f}"
            f" {per_cpu_s:13.3g}"
        )
    print(
        f"OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']}; load average (1 min) before {load_before:.2f}, "
        f"after {load_after:.2f} on {os.cpu_count()} cores; "
        f"peak resident memory {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB"
    )


if __name__ == "__main__":
    main()
