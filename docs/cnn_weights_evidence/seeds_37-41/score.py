"""Score of the fifth pre-registered comparison (docs/cnn_weights_choice.md): weights A vs B on seeds 37-41.

Reads the per_voi.parquet tables of `cohort-dosimetry evaluate` kept next to this file (fast_<A|B>/ and
pyt_<A|B>/<seed>/, written by run.sh) and applies cohort_dosimetry.model.goal_checks. S of a candidate: the mean of
its kidney and lesion mean-error reductions against DVK, fast and PyTomography. Rule: A replaces B iff
S_A >= S_B + 0.05; the 14 checks decide nothing. Run from the repository: .venv/bin/python <this file>.
"""
from pathlib import Path

import pandas as pd

from cohort_dosimetry.model import goal_checks

HERE = Path(__file__).parent
# PyTomography patients evaluated with both candidates (all five once the run is complete)
PYT = sorted({p.parent.name for p in HERE.glob("pyt_A/*/per_voi.parquet")}
             & {p.parent.name for p in HERE.glob("pyt_B/*/per_voi.parquet")})


def per_voi(cand: str, model: str) -> pd.DataFrame:
    if model == "fast":
        return pd.read_parquet(HERE / f"fast_{cand}" / "per_voi.parquet")
    return pd.concat([pd.read_parquet(HERE / f"pyt_{cand}" / s / "per_voi.parquet") for s in PYT])


def main() -> None:
    print(f"PyTomography patients with both candidates: {PYT} (the rule needs all five: 37-41)")
    scores = {}
    for cand in "AB":
        reductions, met = [], 0
        for model in ("fast", "pytomography"):
            rows = per_voi(cand, model)
            scans = rows.groupby(["patient", "timepoint", "realisation"]).ngroups
            bias = (rows.mean_estimate / rows.mean_true - 1).groupby([rows.method, rows.voi_class]).mean()
            checks = goal_checks(rows)
            print(f"\n{cand}, {model} SPECT, {scans} scans: {int(checks.met.sum())} of {len(checks)} checks met")
            print(checks.to_string(index=False, float_format="%.3f"))
            print("mean relative bias of the VOI means, CNN / DVK: " + ", ".join(
                f"{c} {bias.loc[('cnn', c)]:+.1%} / {bias.loc[('dvk', c)]:+.1%}" for c in ("kidney", "lesion")))
            reductions += checks[checks.check == "mean_error_reduction"]["reduction"].tolist()
            met += int(checks.met.sum())
        scores[cand] = sum(reductions) / len(reductions)
        print(f"{cand}: {met} of 14 checks met, S = {scores[cand]:.4f}")
    verdict = "A replaces B" if scores["A"] >= scores["B"] + 0.05 else "B stays"
    complete = "" if PYT == ["37", "38", "39", "40", "41"] else " (INCOMPLETE: the rule does not apply yet)"
    print(f"\nS_A - S_B = {scores['A'] - scores['B']:+.4f} -> {verdict}{complete}")


if __name__ == "__main__":
    main()
