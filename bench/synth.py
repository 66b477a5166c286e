"""Benchmark of virtual-patient generation: the fast SPECT model vs the PyTomography model (synthetic patients).

Times one compact-grid patient with 4 time points (4, 24, 96, 168 h) with the ``fast`` model (goal: at most 60 s on
2 cores), and the ``pytomography`` model's per-scan cost on the same patient: by default one forward projection
(120 views), the OSEM normalisation (back projection of ones per subset) and one OSEM iteration (4 subsets) are
measured and a 16-iteration scan is extrapolated from them; ``--full`` runs one complete scan instead.
Prints a table with every time and its ratio to the measured PyTomography per-scan time (the baseline), and the
forward projection once more with PyTomography's own grouped-conv1d PSF blur, the baseline of ``BandedConv1d``.

Usage: ``python bench/synth.py [--seed 1] [--full]``
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from _timing import timed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--full", action="store_true", help="run one full 16-iteration PyTomography scan")
    args = parser.parse_args()

    from cohort_dosimetry.phantoms import Acquisition, activity_true, make_anatomy, make_virtual_patient
    from cohort_dosimetry.phantoms import _spect_pytomography as realistic
    from cohort_dosimetry.phantoms._spect_acquisition import mu_208kev_per_cm

    hours = (4.0, 24.0, 96.0, 168.0)
    make_anatomy(args.seed, "compact")  # warm-up: imports, torch start-up
    anatomy, t_anatomy = timed(lambda: make_anatomy(args.seed, "compact"))
    patient, t_fast = timed(lambda: make_virtual_patient(args.seed, "compact", hours=hours, spect="fast"))

    acquisition = Acquisition()
    spacing = tuple(anatomy.attrs["spacing_mm"])
    truth = activity_true(anatomy, [4.0]).values[0]
    device = torch.device("cpu")
    shape, spect_spacing = realistic.spect_grid(truth.shape, spacing, acquisition.voxel_mm)
    mu = mu_208kev_per_cm(realistic.resample(anatomy["density"].values, spacing, shape, spect_spacing))
    activity = realistic.resample(truth, spacing, shape, spect_spacing) * float(np.prod(spect_spacing)) / 1000.0
    rows = []
    with realistic._pytomography_on(device) as pytomography, torch.no_grad():
        from pytomography.algorithms import OSEM
        from pytomography.likelihoods import PoissonLogLikelihood

        system, t_build = timed(
            lambda: realistic._system_matrix(pytomography, realistic._to_xyz(mu, device), acquisition)
        )
        obj = realistic._to_xyz(activity, device)
        projection, t_forward = timed(lambda: system.forward(obj))
        stock = realistic._system_matrix(pytomography, realistic._to_xyz(mu, device), acquisition)
        for blur in stock.obj2obj_transforms[1].layers.values():  # PyTomography's own grouped conv1d blur
            blur.layer_r, blur.layer_z = blur.layer_r.as_conv1d(), blur.layer_z.as_conv1d()
        _, t_forward_stock = timed(lambda: stock.forward(obj))
        counts = projection * acquisition.sensitivity_cps_per_mbq * 1e-6 * acquisition.seconds_per_view
        measured = torch.poisson(counts, generator=torch.Generator().manual_seed(0))
        if args.full:
            _, t_osem = timed(
                lambda: OSEM(PoissonLogLikelihood(system, measured))(
                    n_iters=acquisition.osem_iterations, n_subsets=acquisition.osem_subsets
                )
            )
            t_scan = t_build + t_forward + t_osem
            rows += [
                (
                    f"pytomography: OSEM {acquisition.osem_iterations} x {acquisition.osem_subsets} "
                    "(with normalisation)",
                    t_osem,
                )
            ]
            label = "measured: build + FP + OSEM"
        else:
            likelihood = PoissonLogLikelihood(system, measured)
            _, t_norm = timed(lambda: likelihood._set_n_subsets(acquisition.osem_subsets))
            # the iteration re-uses the normalisation computed above (same number of subsets)
            _, t_iter = timed(lambda: OSEM(likelihood)(n_iters=1, n_subsets=acquisition.osem_subsets))
            t_scan = t_build + t_forward + t_norm + acquisition.osem_iterations * t_iter
            rows += [
                ("pytomography: OSEM normalisation (1 back projection)", t_norm),
                ("pytomography: one OSEM iteration (4 subsets)", t_iter),
            ]
            label = f"extrapolated: build + FP + norm + {acquisition.osem_iterations} x iteration"
    rows = (
        [
            ("anatomy (compact grid)", t_anatomy),
            ("fast: patient with 4 scans (anatomy + truth + SPECT)", t_fast),
            ("fast: per scan", t_fast / len(hours)),
            ("pytomography: system matrix set-up", t_build),
            (
                f"pytomography: forward projection ({acquisition.n_views} views, {shape[2]}x{shape[1]}x{shape[0]})",
                t_forward,
            ),
            ("pytomography: forward projection, PyTomography's conv1d PSF blur (baseline)", t_forward_stock),
        ]
        + rows
        + [(f"pytomography: per scan ({label})", t_scan)]
    )
    print(
        f"virtual patient seed {args.seed} (synthetic), compact grid {anatomy['ct_hu'].shape}, "
        f"{torch.get_num_threads()} torch threads, counts {[f'{c / 1e6:.1f} M' for c in patient.attrs['counts']]}"
    )
    print(f"{'step':<80}{'seconds':>10}{'ratio to pyt scan':>20}")
    for name, seconds in rows:
        print(f"{name:<80}{seconds:>10.2f}{seconds / t_scan:>20.4f}")
    print(f"fast patient goal <= 60 s: {'met' if t_fast <= 60 else 'NOT met'} ({t_fast:.1f} s)")
    print(
        f"banded PSF blur (BandedConv1d): forward projection {t_forward_stock / t_forward:.2f}x faster than with "
        "PyTomography's conv1d"
    )


if __name__ == "__main__":
    main()
