"""E (the shipped weights) on all four fresh sets it was tested on, pooled: seeds 47-51, 52-56, 57-61, 62-66.

Descriptive, no rule attached, nothing chosen by it (session 21; seeds 62-66 added in session 26). Reads the per-VOI
tables kept in the four set folders (E's rows only) and prints, per SPECT model and VOI class, the 14 goal statistics
of `goal_checks` on the pooled rows, with 95 % intervals from a bootstrap over patients (the 20 patients resampled
with replacement, 4000 times, seeded; each patient brings all its scans and VOIs, since scans of one patient are not
independent).
Synthetic virtual patients only. Run from the repository: .venv/bin/python <this file>.
"""
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from cohort_dosimetry.model import goal_checks

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "seeds_57-61"))
from score import markdown  # noqa: E402  (the ninth set's table printer: no tabulate in the environment)

HERE = Path(__file__).resolve().parent.parent
SETS = {"47-51": ("fast_E", "pyt_E"), "52-56": ("fast_E", "pyt_E"), "57-61": ("fast", "pyt"),
        "62-66": ("fast_E", "pyt_E")}


def load() -> dict[str, pd.DataFrame]:
    fast, pyt = [], []
    for seeds, (f, p) in SETS.items():
        fast.append(pd.read_parquet(HERE / f"seeds_{seeds}" / f / "per_voi.parquet"))
        pyt += [pd.read_parquet(x) for x in sorted((HERE / f"seeds_{seeds}" / p).glob("*/per_voi.parquet"))]
    keep = lambda d: d[d["method"].isin(["dvk", "cnn"])]  # noqa: E731
    return {"fast": keep(pd.concat(fast)), "PyTomography": keep(pd.concat(pyt))}


def bootstrap(rows: pd.DataFrame, n: int = 4000, seed: int = 0) -> pd.DataFrame:
    """goal_checks on the pooled rows, with 2.5 / 97.5 percentiles of its statistic over patient resamples:
    the mean-error reduction, or for NRMSE the CNN - DVK difference."""
    checks = goal_checks(rows)
    checks["statistic"] = np.where(checks["check"] == "nrmse", checks["cnn"] - checks["dvk"], checks["reduction"])
    by_patient = {p: d for p, d in rows.groupby("patient")}
    patients = np.array(sorted(by_patient))
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(n):
        sample = pd.concat([by_patient[p] for p in rng.choice(patients, len(patients))])
        c = goal_checks(sample)
        draws.append(np.where(c["check"] == "nrmse", c["cnn"] - c["dvk"], c["reduction"]))
    draws = np.asarray(draws)
    checks["low"], checks["high"] = np.percentile(draws, 2.5, axis=0), np.percentile(draws, 97.5, axis=0)
    checks["patients"], checks["scans"] = len(patients), rows[["patient", "timepoint", "realisation"]].drop_duplicates().shape[0]
    return checks


if __name__ == "__main__":
    pd.set_option("display.width", 160)
    for model, rows in load().items():
        out = bootstrap(rows)
        print(f"## E on {model} SPECT, seeds 47-66 pooled: {out['patients'].iloc[0]} patients, {out['scans'].iloc[0]} scans")
        print("statistic: mean-error reduction against DVK (goal >= 0.40), or NRMSE CNN - DVK (goal < 0); "
              "95 % interval from a bootstrap over patients\n")
        print(markdown(out[["check", "voi_class", "cnn", "dvk", "statistic", "low", "high", "met"]]))
        print()
