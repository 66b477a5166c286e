"""Benchmark: dose_rate_dvk against scipy.signal.fftconvolve on the paper's CT grid.

Volume 512 x 512 x 130 (z = 130) at (3, 0.98, 0.98) mm, a 99^3 photon kernel plus a 9^3 beta kernel (summed into
one 99^3 kernel, as dose_rate_dvk uses it). The kernels are ANALYTIC stand-ins of the right shape and magnitude
(generating a real 99^3 kernel at 0.98 mm by Monte Carlo takes far longer than the benchmark): a primary-photon point
kernel mu_en/rho E exp(-mu r) / (4 pi r^2) for the two Lu-177 gammas and a Gaussian beta kernel. The activity is a
seeded synthetic phantom (no patient data). Speed does not depend on the values.

Each method runs in its own process, on inputs loaded from .npy files, so that its peak resident memory (ru_maxrss,
"peak RSS") is its own; "added" is that peak minus the RSS once the inputs are loaded. Threads: 2
(torch.set_num_threads(2); scipy.fft default 1 worker, and a second baseline row with 2 workers).

    .venv/bin/python bench/dvk.py
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SHAPE = (130, 512, 512)
SPACING_MM = (3.0, 0.98, 0.98)
PHOTON_SIZE, BETA_SIZE = 99, 9
THREADS = 2


def make_inputs() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Seeded synthetic activity (Bq/voxel), density (g/cm3) and kernel (mGy/(MBq s)), all float32 (z, y, x)."""
    rng = np.random.default_rng(0)
    z, y, x = np.indices(SHAPE, dtype=np.float32)
    body = ((y - 256) / 200) ** 2 + ((x - 256) / 240) ** 2 <= 1
    lung = body & ((((y - 230) / 70) ** 2 + ((np.abs(x - 256) - 110) / 60) ** 2) <= 1) & (z > 70)
    density = np.where(body, 1.04, 0.0012).astype(np.float32)
    density[lung] = 0.3
    activity = np.where(body, 1e3, 0.0).astype(np.float32)
    for _ in range(12):  # hot organs / lesions
        c = rng.uniform([10, 120, 120], [120, 390, 390])
        r = rng.uniform([4, 10, 10], [15, 50, 50])
        activity[(((z - c[0]) / r[0]) ** 2 + ((y - c[1]) / r[1]) ** 2 + ((x - c[2]) / r[2]) ** 2) <= 1] *= 50
    activity *= rng.uniform(0.8, 1.2, SHAPE).astype(np.float32)
    return activity, density, analytic_kernel()


def analytic_kernel() -> np.ndarray:
    """Stand-in 99^3 photon + 9^3 beta kernel, mGy/(MBq s), (z, y, x) at SPACING_MM."""
    voxel_mass_kg = np.prod(SPACING_MM) * 1e-3 * 1.04e-3
    mev_to_j = 1.602176634e-13
    off = [np.arange(PHOTON_SIZE) - PHOTON_SIZE // 2] * 3
    dz, dy, dx = np.meshgrid(*off, indexing="ij")
    r_cm = np.sqrt((dz * SPACING_MM[0]) ** 2 + (dy * SPACING_MM[1]) ** 2 + (dx * SPACING_MM[2]) ** 2) / 10
    r_cm = np.maximum(r_cm, 0.5 * min(SPACING_MM) / 10)
    # (energy MeV, yield, mu cm2/g, mu_en cm2/g): ICRP-107 yields, NIST water coefficients (docs/physics.md).
    photon = sum(
        e * y * mu_en * 1.04 * np.exp(-mu * 1.04 * r_cm) / (4 * np.pi * r_cm**2)  # MeV/cm3 per decay
        for e, y, mu, mu_en in ((0.20837, 0.110, 0.1350, 0.02989), (0.11295, 0.064, 0.1644, 0.02609))
    )
    photon_gy = photon * mev_to_j / 1.04e-3  # MeV/cm3 -> J/kg per decay
    off9 = [np.arange(BETA_SIZE) - BETA_SIZE // 2] * 3
    bz, by, bx = np.meshgrid(*off9, indexing="ij")
    rb_mm2 = (bz * SPACING_MM[0]) ** 2 + (by * SPACING_MM[1]) ** 2 + (bx * SPACING_MM[2]) ** 2
    beta = np.exp(-rb_mm2 / (2 * 0.5**2))
    beta *= 0.1479 * mev_to_j / voxel_mass_kg / beta.sum()  # all 147.9 keV of electron energy absorbed
    kernel = photon_gy
    c, h = PHOTON_SIZE // 2, BETA_SIZE // 2
    kernel[c - h : c + h + 1, c - h : c + h + 1, c - h : c + h + 1] += beta
    return (kernel * 1e9).astype(np.float32)  # Gy per decay -> mGy/(MBq s)


def run_one(method: str, folder: Path) -> dict:
    import torch

    torch.set_num_threads(THREADS)
    activity, density, kernel = (np.load(folder / f"{name}.npy") for name in ("activity", "density", "kernel"))
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    times = []
    if method == "torch":
        from cohort_dosimetry.physics import dose_rate_dvk

        for _ in range(3):  # the first call computes and caches the kernel spectrum, the others reuse it
            t0 = time.perf_counter()
            dose = dose_rate_dvk(activity, density, SPACING_MM, kernel=kernel, device="cpu")
            times.append(time.perf_counter() - t0)
    else:
        import scipy.fft
        import scipy.signal

        workers = 1 if method == "scipy" else THREADS
        with scipy.fft.set_workers(workers):
            for _ in range(2):
                t0 = time.perf_counter()
                conv = scipy.signal.fftconvolve(activity, kernel, mode="same")
                dose = np.where(density >= 0.1, conv * 1e-9 * 1.04 / np.maximum(density, 0.1), 0).astype(np.float32)
                times.append(time.perf_counter() - t0)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    np.save(folder / f"dose_{method}.npy", dose[::8, ::8, ::8])
    return {"times": times, "peak_gib": peak / 2**20, "extra_gib": (peak - base_rss) / 2**20}


def main() -> None:
    if len(sys.argv) == 3:
        print(json.dumps(run_one(sys.argv[1], Path(sys.argv[2]))))
        return
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for name, array in zip(("activity", "density", "kernel"), make_inputs()):
            np.save(folder / f"{name}.npy", array)
        for method in ("torch", "scipy", "scipy2"):
            out = subprocess.run([sys.executable, __file__, method, tmp], capture_output=True, text=True, check=True)
            results[method] = json.loads(out.stdout.strip().splitlines()[-1])
        a, b = np.load(folder / "dose_torch.npy"), np.load(folder / "dose_scipy.npy")
    max_rel = float(np.abs(a - b).max() / np.abs(b).max())
    base = min(results["scipy"]["times"])
    print(
        f"DVK benchmark: {SHAPE[2]}x{SHAPE[1]}x{SHAPE[0]} (x, y, z) at {SPACING_MM} mm (z, y, x), "
        f"{PHOTON_SIZE}^3 photon + {BETA_SIZE}^3 beta analytic kernel, synthetic phantom, {THREADS} threads"
    )
    print(f"{'method':<44} {'time s':>8} {'vs scipy':>9} {'peak RSS GiB':>13} {'added GiB':>10}")
    rows = [
        ("scipy.signal.fftconvolve (1 worker, baseline)", results["scipy"], min(results["scipy"]["times"])),
        ("scipy.signal.fftconvolve (2 workers)", results["scipy2"], min(results["scipy2"]["times"])),
        ("dose_rate_dvk torch cpu, first call", results["torch"], results["torch"]["times"][0]),
        ("dose_rate_dvk torch cpu, cached spectrum", results["torch"], min(results["torch"]["times"][1:])),
    ]
    print("(best of 2 runs for scipy, of 2 cached calls for dose_rate_dvk)")
    for name, r, t in rows:
        print(f"{name:<44} {t:8.2f} {base / t:8.2f}x {r['peak_gib']:13.2f} {r['extra_gib']:10.2f}")
    print(
        f"max |dvk - scipy| / max(scipy) on a 1/8 subsample: {max_rel:.2e}; "
        f"load average during the run: {os.getloadavg()[0]:.1f} (shared machine: times are noisy)"
    )


if __name__ == "__main__":
    main()
