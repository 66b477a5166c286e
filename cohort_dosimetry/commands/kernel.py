"""Make a soft-tissue dose voxel kernel (mGy/(MBq s), (z, y, x), source at the centre) and save it as .npy.

The kernel comes from the disk cache, the kernels shipped with the package, or a fresh Monte Carlo run of the
package's engine (a uniform source voxel in homogeneous soft tissue of 1.04 g/cm3 on a grid of the kernel's shape).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("nuclide", help='radionuclide, e.g. "Lu177"')
    parser.add_argument(
        "--spacing", type=float, nargs=3, required=True, metavar=("Z", "Y", "X"), help="voxel size in mm, (z, y, x)"
    )
    parser.add_argument(
        "--shape",
        type=int,
        nargs="+",
        required=True,
        metavar="N",
        help="odd kernel size in voxels: one value (cube) or three (z, y, x)",
    )
    parser.add_argument(
        "--kind",
        choices=("total", "beta", "photon"),
        default="total",
        help="beta = all electrons, photon = gammas and x-rays, total = their sum (default)",
    )
    parser.add_argument(
        "--decays", type=int, default=None, help="decays simulated per generated kernel kind (default: the library's)"
    )
    parser.add_argument("--device", default=None, help="torch device for the Monte Carlo (default: cuda if present)")
    parser.add_argument("-o", "--output", required=True, type=Path, help="output .npy file")


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from cohort_dosimetry.physics import voxel_kernel

    if len(args.shape) not in (1, 3):
        raise SystemExit(f"--shape takes one or three odd sizes, got {len(args.shape)}")
    shape = args.shape[0] if len(args.shape) == 1 else tuple(args.shape)
    t0 = time.perf_counter()
    kernel = voxel_kernel(
        args.nuclide, tuple(args.spacing), shape, kind=args.kind, n_decays=args.decays, device=args.device
    )
    args.output.parent.mkdir(parents=True, exist_ok=True)
    np.save(args.output, kernel)
    centre = tuple(s // 2 for s in kernel.shape)
    print(
        f"{args.nuclide} {args.kind} kernel {kernel.shape} at {tuple(args.spacing)} mm -> {args.output} "
        f"(centre {kernel[centre]:.4g} mGy/(MBq s), {time.perf_counter() - t0:.1f} s)"
    )
    return 0
