"""Re-measure the fast SPECT model's constants against PyTomography and write them into the package.

Synthetic sphere phantom (no patient data). Full protocol: 120 views, OSEM 4 subsets x 16 iterations; on 2 CPU cores
this takes tens of minutes. Usage: ``python bench/calibrate_fast_spect.py [--views N] [--iterations N] [--out PATH]``.
Prints the recovery of the 4/16/65 mL spheres for both models and their ratio, the noise and its correlation.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from cohort_dosimetry.phantoms._calibration import calibrate_fast_model
from cohort_dosimetry.phantoms._spect_acquisition import Acquisition

PACKAGE_FILE = Path(__file__).resolve().parents[1] / "cohort_dosimetry" / "phantoms" / "fast_spect_calibration.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--views", type=int, default=Acquisition().n_views)
    parser.add_argument("--iterations", type=int, default=Acquisition().osem_iterations)
    parser.add_argument("--out", type=Path, default=PACKAGE_FILE)
    args = parser.parse_args()
    record = calibrate_fast_model(Acquisition(n_views=args.views, osem_iterations=args.iterations), write_to=args.out)
    realistic, fast = record["pytomography"], record["fast"]
    print(f"{'quantity':<34}{'pytomography':>14}{'fast':>10}{'fast/pyt':>10}")
    rows = [(f"recovery {v} mL", realistic["recovery"][v], fast["recovery"][v]) for v in realistic["recovery"]]
    rows += [
        ("background recovery", realistic["background_recovery"], fast["background_recovery"]),
        ("relative noise, background", realistic["relative_noise_background"], fast["relative_noise_background"]),
        ("relative noise, 65 mL sphere", realistic["relative_noise_sphere_65ml"], fast["relative_noise_sphere_65ml"]),
    ]
    rows += [
        (
            f"neighbour correlation {axis}",
            realistic["neighbour_correlation_zyx"][i],
            fast["neighbour_correlation_zyx"][i],
        )
        for i, axis in enumerate("zyx")
    ]
    for name, a, b in rows:
        print(f"{name:<34}{a:>14.3f}{b:>10.3f}{b / a:>10.3f}")
    print(json.dumps(record["constants"], indent=2))
    print(f"pytomography time: {record['settings']['pytomography_seconds']:.0f} s for 2 scans; written to {args.out}")


if __name__ == "__main__":
    main()
