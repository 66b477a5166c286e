"""The virtual-patient data options that `train` and `evaluate` share: one ``DataSpec`` from the command line."""

from __future__ import annotations

import argparse

from cohort_dosimetry.training import DataSpec


def add_data_arguments(parser: argparse.ArgumentParser, realisations: int) -> None:
    """Grid, time points, SPECT model and noise realisations of the virtual patients, and the Monte Carlo settings of
    their per-compartment truth (defaults: :class:`DataSpec`'s; ``realisations`` the command's own default)."""
    data = DataSpec()
    parser.add_argument("--grid", default=data.grid, choices=["compact", "paper"])
    parser.add_argument("--hours", type=float, nargs="+", default=list(data.hours), help="hours post injection")
    parser.add_argument("--realisations", type=int, default=realisations, help="SPECT noise realisations")
    parser.add_argument("--spect", default=data.spect, choices=["fast", "pytomography"])
    parser.add_argument(
        "--mc-decays-per-voxel",
        type=float,
        default=data.mc_decays_per_voxel,
        help="truth: MC electron decays per voxel of each compartment",
    )
    parser.add_argument(
        "--mc-decays-per-activity-share",
        type=float,
        default=data.mc_decays_per_activity_share,
        help="truth: MC electron decays per unit of a compartment's largest activity share",
    )
    parser.add_argument("--mc-min-decays", type=int, default=data.mc_min_decays)
    parser.add_argument("--mc-max-decays", type=int, default=data.mc_max_decays)
    parser.add_argument("--mc-photon-fraction", type=float, default=data.mc_photon_fraction)
    parser.add_argument(
        "--mc-label-uncertainty-target",
        type=float,
        default=data.mc_label_uncertainty_target,
        help="truth: median relative uncertainty of a time point's labels in organ voxels above which "
        "the compartment that dominates it is topped up",
    )


def data_spec(args: argparse.Namespace) -> DataSpec:
    """The :class:`DataSpec` of parsed :func:`add_data_arguments` options."""
    return DataSpec(
        grid=args.grid,
        hours=tuple(args.hours),
        realisations=args.realisations,
        spect=args.spect,
        mc_decays_per_voxel=args.mc_decays_per_voxel,
        mc_decays_per_activity_share=args.mc_decays_per_activity_share,
        mc_min_decays=args.mc_min_decays,
        mc_max_decays=args.mc_max_decays,
        mc_photon_fraction=args.mc_photon_fraction,
        mc_label_uncertainty_target=args.mc_label_uncertainty_target,
    )
