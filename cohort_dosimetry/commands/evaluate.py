"""Evaluate DVK, MC on the SPECT and the CNN on held-out virtual patients against the MC of the true activity.

Synthetic virtual patients (cohort_dosimetry.phantoms) stand in for patient data. Simulates (or reuses, under
--out/data) the held-out patients with --realisations noise realisations, computes every method's dose-rate map with
cohort_dosimetry.dose.dose_rates, and reports per VOI class (healthy liver, lesion, kidney, spleen, lumbar vertebra)
the mean dose-rate error, NRMSE and DR10/30/70/90 errors against the truth (fractions), and the ensemble noise (%)
over realisations. Prints the summary, the bias of every method's VOI mean dose-rates per VOI class and lesion volume
band (cohort_dosimetry.training.mean_bias) and, when DVK and CNN are both evaluated, the CNN's acceptance goals
(cohort_dosimetry.training.goal_checks); writes per_voi.parquet, ensemble_noise.parquet, summary.parquet,
mean_bias.json (the form of a model card's held-out evaluation) and goal_checks.parquet to --out.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from cohort_dosimetry.commands._data_options import add_data_arguments, data_spec
from cohort_dosimetry.training import HELD_OUT_SEEDS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="output folder (data/ and the Parquet tables)")
    parser.add_argument("--seeds", type=int, nargs="+", default=HELD_OUT_SEEDS, help="held-out patient seeds")
    parser.add_argument("--weights", default=None, help="model card JSON (default: the shipped model)")
    parser.add_argument("--methods", nargs="+", default=["dvk", "mc", "cnn"], choices=["dvk", "mc", "cnn"])
    parser.add_argument("--mc-decays", type=int, default=None, help="decays of the MC run on each SPECT scan")
    add_data_arguments(parser, realisations=3)
    parser.add_argument(
        "--mc-from",
        default=None,
        help="data folder of an earlier run with these patients and MC settings: reuse its MC maps",
    )
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")


def run(args: argparse.Namespace) -> int:
    import json

    import pandas as pd

    from cohort_dosimetry.training import evaluate, goal_checks, make_patient_data, mean_bias

    spec = data_spec(args)
    out = Path(args.out)
    log = lambda s: print(s, flush=True)  # noqa: E731
    for seed in args.seeds:
        make_patient_data(out / "data", seed, spec, device=args.device, log=log, mc_from=args.mc_from)
    per_voi, noise, summary = evaluate(
        out / "data",
        args.seeds,
        spec,
        args.weights,
        methods=tuple(args.methods),
        device=args.device,
        mc_decays=args.mc_decays,
        log=log,
    )
    per_voi.to_parquet(out / "per_voi.parquet")
    noise.to_parquet(out / "ensemble_noise.parquet")
    summary.to_parquet(out / "summary.parquet")
    with pd.option_context("display.width", 200, "display.max_columns", 20, "display.precision", 3):
        print(
            f"held-out synthetic virtual patients {args.seeds}, SPECT model '{args.spect}', "
            f"{args.realisations} noise realisations; errors as fractions, ensemble noise in %"
        )
        print(summary.to_string(index=False))
        bias = mean_bias(per_voi, methods=tuple(args.methods))
        (out / "mean_bias.json").write_text(json.dumps(bias, indent=2) + "\n")
        print(
            "bias of VOI mean dose-rates (estimate / truth - 1, each VOI averaged over its scans), mean and sd over "
            "the VOIs of a class:"
        )
        print(
            pd.DataFrame(
                [
                    {
                        "voi_class": c,
                        "vois": v["vois"],
                        **{m: f"{v[m][0]:+.3f} sd {_or_na(v[m][1])}" for m in args.methods},
                    }
                    for c, v in bias["voi_mean_bias"].items()
                ]
            ).to_string(index=False)
        )
        print("bias of lesion mean dose-rates per lesion volume band (mL):")
        print(pd.DataFrame(bias["lesion_mean_bias_by_volume_ml"]).to_string(index=False))
        tables = ["per_voi.parquet", "ensemble_noise.parquet", "summary.parquet", "mean_bias.json"]
        if {"dvk", "cnn"} <= set(args.methods):
            checks = goal_checks(per_voi)
            checks.to_parquet(out / "goal_checks.parquet")
            tables.append("goal_checks.parquet")
            print(f"CNN goals against DVK: {int(checks['met'].sum())} of {len(checks)} met")
            print(checks.to_string(index=False))
    print("tables: " + ", ".join(str(out / t) for t in tables))
    return 0


def _or_na(sd: float | None) -> str:
    return "n/a" if sd is None else f"{sd:.3f}"
