"""The markdown table of the fifth comparison in docs/cnn_weights_choice.md, from the tables next to this file.

One column per candidate and SPECT model (the per_voi.parquet tables that score.py reads), one row per check of
cohort_dosimetry.model.goal_checks. Run from the repository: .venv/bin/python <this file>.
"""
from score import PYT, per_voi

from cohort_dosimetry.model import goal_checks


def main() -> None:
    columns = {}
    for model, label in (("fast", "fast"), ("pytomography", "PyTomography")):
        for cand in "AB":
            rows = per_voi(cand, model)
            scans = rows.groupby(["patient", "timepoint", "realisation"]).ngroups
            columns[f"{cand}, {label} ({scans} scans)"] = goal_checks(rows)
    first = next(iter(columns.values()))
    print(f"PyTomography patients: {PYT}\n")
    print("| seeds 37-41 | " + " | ".join(columns) + " |")
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


if __name__ == "__main__":
    main()
