"""Scoring of the pre-registered comparisons of CNN weights (docs/cnn_weights_choice.md), shared by their folders.

A comparison folder holds the per_voi.parquet tables of `cohort-dosimetry evaluate` (its run.sh writes them):
fast_<C>/ (fast SPECT, every seed) and pyt_<C>/<seed>/ (PyTomography, two scans per seed) for each candidate C.
S of a candidate: the mean of its kidney and lesion mean-error reductions against DVK, over fast and PyTomography
scans (cohort_dosimetry.model.goal_checks). Rules: fifth and sixth comparisons, the challenger replaces the
incumbent iff S_challenger >= S_incumbent + 0.05 (the 14 checks are reported and decide nothing); seventh, iff it
meets strictly more of the 14 checks and S_challenger >= S_incumbent - 0.02; eighth (a confirmation of the
shipped weights on fresh patients), no rule; candidate F (seeds 62-66), iff it meets at least as many of the 14
checks and S_challenger >= S_incumbent - 0.02.
"""
from pathlib import Path

import pandas as pd

from cohort_dosimetry.model import goal_checks

MODELS = (("fast", "fast"), ("pytomography", "PyTomography"))


def pyt_seeds(folder: Path, candidates: str) -> list[str]:
    """Seeds whose PyTomography tables exist for every candidate."""
    return sorted(set.intersection(*({p.parent.name for p in folder.glob(f"pyt_{c}/*/per_voi.parquet")}
                                     for c in candidates)))


def per_voi(folder: Path, cand: str, model: str, seeds: list[str]) -> pd.DataFrame:
    if model == "fast":
        return pd.read_parquet(folder / f"fast_{cand}" / "per_voi.parquet")
    return pd.concat([pd.read_parquet(folder / f"pyt_{cand}" / s / "per_voi.parquet") for s in seeds])


def s_margin(incumbent: str, challenger: str, scores: dict, met: dict) -> bool:
    """Fifth and sixth comparisons: S_challenger >= S_incumbent + 0.05."""
    return scores[challenger] >= scores[incumbent] + 0.05


def more_checks_same_means(incumbent: str, challenger: str, scores: dict, met: dict) -> bool:
    """Seventh comparison: strictly more of the 14 checks met and S_challenger >= S_incumbent - 0.02."""
    return met[challenger] > met[incumbent] and scores[challenger] >= scores[incumbent] - 0.02


def as_many_checks_same_means(incumbent: str, challenger: str, scores: dict, met: dict) -> bool:
    """Candidate F (session 25): at least as many of the 14 checks met and S_challenger >= S_incumbent - 0.02; ties
    go to the challenger because it meets the issue's time budget, which the incumbent breaks."""
    return met[challenger] >= met[incumbent] and scores[challenger] >= scores[incumbent] - 0.02


def score(folder: Path, incumbent: str, challenger: str, seeds: list[int], rule=s_margin) -> None:
    """Print both candidates' checks and biases, their S, and the verdict of ``rule`` (None: no verdict)."""
    pyt = pyt_seeds(folder, incumbent + challenger)
    expected = [str(s) for s in seeds]
    print(f"PyTomography patients with both candidates: {pyt} (the rule needs all five: {seeds[0]}-{seeds[-1]})")
    scores, checks_met = {}, {}
    for cand in sorted(incumbent + challenger):
        reductions, met = [], 0
        for model, _ in MODELS:
            rows = per_voi(folder, cand, model, pyt)
            scans = rows.groupby(["patient", "timepoint", "realisation"]).ngroups
            bias = (rows.mean_estimate / rows.mean_true - 1).groupby([rows.method, rows.voi_class]).mean()
            checks = goal_checks(rows)
            print(f"\n{cand}, {model} SPECT, {scans} scans: {int(checks.met.sum())} of {len(checks)} checks met")
            print(checks.to_string(index=False, float_format="%.3f"))
            print("mean relative bias of the VOI means, CNN / DVK: " + ", ".join(
                f"{c} {bias.loc[('cnn', c)]:+.1%} / {bias.loc[('dvk', c)]:+.1%}" for c in ("kidney", "lesion")))
            reductions += checks[checks.check == "mean_error_reduction"]["reduction"].tolist()
            met += int(checks.met.sum())
        scores[cand], checks_met[cand] = sum(reductions) / len(reductions), met
        print(f"{cand}: {met} of 14 checks met, S = {scores[cand]:.4f}")
    if rule is None:
        verdict = "no rule attached"
    elif rule(incumbent, challenger, scores, checks_met):
        verdict = f"{challenger} replaces {incumbent}"
    else:
        verdict = f"{incumbent} stays"
    complete = "" if pyt == expected else " (INCOMPLETE: the rule does not apply yet)"
    print(f"\nS_{challenger} - S_{incumbent} = {scores[challenger] - scores[incumbent]:+.4f} -> {verdict}{complete}")


def markdown_table(folder: Path, candidates: str, title: str) -> None:
    """The markdown table of a comparison: one column per candidate and SPECT model, one row per check."""
    pyt = pyt_seeds(folder, candidates)
    columns = {}
    for model, label in MODELS:
        for cand in candidates:
            rows = per_voi(folder, cand, model, pyt)
            scans = rows.groupby(["patient", "timepoint", "realisation"]).ngroups
            columns[f"{cand}, {label} ({scans} scans)"] = goal_checks(rows)
    first = next(iter(columns.values()))
    print(f"PyTomography patients: {pyt}\n")
    print(f"| {title} | " + " | ".join(columns) + " |")
    print("|---" * (len(columns) + 1) + "|")
    for i, row in first.iterrows():
        if row.check == "mean_error_reduction":
            name = f"{row.voi_class} mean-error reduction"
            cells = [f"{c.reduction[i]:.0%}".replace("%", " %") + ("" if c.met[i] else " (fail)")
                     for c in columns.values()]
        else:
            name = f"NRMSE {row.voi_class} (CNN / DVK)"
            cells = [f"{c.cnn[i]:.3f} / {c.dvk[i]:.3f}" + ("" if c.met[i] else " (fail)") for c in columns.values()]
        print(f"| {name} | " + " | ".join(cells) + " |")
    print("| checks met | " + " | ".join(f"{int(c.met.sum())} of {len(c)}" for c in columns.values()) + " |")
