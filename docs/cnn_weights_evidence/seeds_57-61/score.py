"""The ninth set of fresh patients (docs/cnn_weights_choice.md): the shipped E with every method of the evaluation.

A confirmation, no rule attached. Reads the tables kept next to this file (fast/ and pyt/<seed>/, written by
run.sh) and prints, per SPECT model: E's goal checks, and per method (DVK, MC on the SPECT, CNN) and VOI class the
mean over VOIs and scans of the mean dose-rate error, NRMSE and DR10/30/70/90 errors (fractions, against the MC of
the true activity), the mean relative bias of the VOI means and, on fast SPECT (3 realisations), the ensemble noise
(%). Markdown tables for the notes. Run from the repository: .venv/bin/python <this file>.
"""
from pathlib import Path

import pandas as pd

from cohort_dosimetry.model import goal_checks
from cohort_dosimetry.model._evaluation import summarise

METHODS = ["dvk", "mc", "cnn"]
CLASSES = ["liver", "lesion", "kidney", "spleen", "vertebra"]
COLUMNS = {"mean_error": "mean error", "nrmse": "NRMSE", "dr10_error": "DR10", "dr30_error": "DR30",
           "dr70_error": "DR70", "dr90_error": "DR90", "bias": "bias of means",
           "ensemble_noise_percent": "ensemble noise %"}


def tables(here: Path) -> dict[str, tuple[pd.DataFrame, pd.DataFrame]]:
    """(per_voi, ensemble noise) per SPECT model."""
    empty = pd.DataFrame(columns=["method", "voi_class", "ensemble_noise_percent"])
    pyt = sorted(here.glob("pyt/*/per_voi.parquet"))
    out = {"fast": (pd.read_parquet(here / "fast" / "per_voi.parquet"),
                    pd.read_parquet(here / "fast" / "ensemble_noise.parquet"))}
    if pyt:
        out[f"PyTomography ({len(pyt)} patients)"] = (pd.concat(pd.read_parquet(p) for p in pyt), empty)
    return out


def markdown(frame: pd.DataFrame) -> str:
    """A markdown table, floats to 3 decimals (no tabulate in the environment)."""
    cell = lambda v: f"{v:.3f}" if isinstance(v, float) else str(v)  # noqa: E731
    lines = ["| " + " | ".join(map(str, frame.columns)) + " |", "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines)


def full_table(per_voi: pd.DataFrame, noise: pd.DataFrame) -> pd.DataFrame:
    summary = summarise(per_voi, noise).set_index(["method", "voi_class"])
    bias = (per_voi.mean_estimate / per_voi.mean_true - 1).groupby([per_voi.method, per_voi.voi_class]).mean()
    summary["bias"] = bias
    index = [(m, c) for c in CLASSES for m in METHODS if (m, c) in summary.index]
    return summary.loc[index, [c for c in COLUMNS if c in summary.columns]]


if __name__ == "__main__":
    here = Path(__file__).parent
    for model, (per_voi, noise) in tables(here).items():
        scans = per_voi.groupby(["patient", "timepoint", "realisation"]).ngroups
        checks = goal_checks(per_voi)
        print(f"\n## {model} SPECT, {scans} scans: E meets {int(checks.met.sum())} of {len(checks)} checks\n")
        print(markdown(checks))
        table = full_table(per_voi, noise)
        print(f"\nPer VOI class (rows: class, method; errors against the MC of the true activity, fractions):\n")
        print(markdown(table.rename(columns=COLUMNS).reset_index()))
