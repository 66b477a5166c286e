"""The shipped card's ``held_out_evaluation``: E on its four fresh sets pooled (seeds 47-66).

Descriptive, no rule attached, nothing chosen by it (session 22). For each SPECT model: the 14 goal statistics with
their 95 % bootstrap intervals over patients (``pooled.py``), and the bias of VOI mean dose-rates per VOI class and
per lesion volume band (``cohort_dosimetry.model.mean_bias``; lesion volumes from the seeded anatomy the evaluation
used, as ``../seeds_37-41/lesion_volume.py`` does). Prints the tables (kept as ``card.txt``) and, with ``--write``,
stores them in the shipped model card, whose weights they were measured with (the weights file is not touched).
Synthetic virtual patients only; truth: MC of the true activity.
Run from the repository: .venv/bin/python <this file> [--write].
"""
import json
import sys
from pathlib import Path

import pandas as pd

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "seeds_37-41"))
from lesion_volume import lesion_volumes  # noqa: E402
from pooled import SETS, bootstrap, load  # noqa: E402

from cohort_dosimetry.model import SHIPPED_CARD, mean_bias  # noqa: E402

SEEDS = [s for seeds in SETS for s in range(int(seeds.split("-")[0]), int(seeds.split("-")[1]) + 1)]


def evaluation() -> dict:
    volumes = lesion_volumes(SEEDS)[["patient", "voi", "volume_ml"]]
    models = {}
    for model, rows in load().items():
        # seeds 62-66's tables carry evaluate's own volume_ml (equal to the anatomy's to 1e-15, checked in session
        # 26); the older sets' do not, so every set takes the anatomy's
        lesions = rows[rows["voi_class"] == "lesion"].drop(columns="volume_ml", errors="ignore")
        lesions = lesions.merge(volumes, on=["patient", "voi"], validate="many_to_one")
        rows = pd.concat([rows[rows["voi_class"] != "lesion"], lesions])
        checks = bootstrap(rows)
        models[model] = {
            "patients": int(rows["patient"].nunique()),
            "scans": int(rows[["patient", "timepoint", "realisation"]].drop_duplicates().shape[0]),
            "goal_checks": [{"check": c.check, "voi_class": c.voi_class, "cnn": round(c.cnn, 6),
                             "dvk": round(c.dvk, 6), "statistic": round(c.statistic, 6),
                             "interval_95": [round(c.low, 6), round(c.high, 6)], "met": bool(c.met)}
                            for c in checks.itertuples()],
            **mean_bias(rows),
        }
    return {
        "description": "synthetic virtual patients simulated after these weights were fixed and never used in "
                       "training; seeds 47-51 and 62-66 also decided, by rules written before they existed, that these "
                       "weights replace the earlier ones and stay against a cheaper recipe "
                       "(docs/cnn_weights_choice.md, seventh comparison and candidate F), which may flatter them a "
                       "little; seeds 52-61 decided nothing; truth: MC dose-rate of the true activity; fast SPECT 4 "
                       "time points x 3 noise realisations, PyTomography 1-2 scans per patient",
        "seeds": SEEDS,
        "statistics": "goal_checks: mean-error reduction against DVK (goal >= 0.40) or NRMSE CNN - DVK (goal < 0), "
                      "95 % bootstrap interval over patients; voi_mean_bias: per VOI class [mean, sd] over VOIs of "
                      "each VOI's mean dose-rate bias (estimate / truth - 1, averaged over its scans); "
                      "lesion_mean_bias_by_volume_ml: mean over the band's lesions",
        "source": "docs/cnn_weights_evidence/pooled_47-66/card.py",
        "spect_models": models,
    }


def main(write: bool) -> None:
    result, tables = evaluation(), load()
    for model, m in result["spect_models"].items():
        print(f"## E on {model} SPECT, seeds 47-66 pooled: {m['patients']} patients, {m['scans']} scans\n")
        print(pd.DataFrame(m["goal_checks"]).to_string(index=False, float_format="%.3f"))
        print("\nbias of VOI mean dose-rates: mean [sd] over the VOIs of a class")
        print(pd.DataFrame([{"voi_class": c, "vois": v["vois"], "cnn": "{:+.3f} [{:.3f}]".format(*v["cnn"]),
                             "dvk": "{:+.3f} [{:.3f}]".format(*v["dvk"])}
                            for c, v in m["voi_mean_bias"].items()]).to_string(index=False))
        lesions = tables[model].query("voi_class == 'lesion'")
        bias = lesions["mean_estimate"] / lesions["mean_true"] - 1
        over = bias.groupby([lesions["method"], lesions["patient"], lesions["voi"]]).mean() > 0
        print("\nlesions whose mean dose-rate is overestimated (bias > 0, averaged over its scans): "
              + ", ".join(f"{method.upper()} {int(n)} of {len(g)}" for method, g in over.groupby(level=0)
                          for n in [g.sum()]))
        print("\nbias of lesion mean dose-rates per lesion volume band (mL)")
        print(pd.DataFrame(m["lesion_mean_bias_by_volume_ml"]).to_string(index=False, float_format="%+.3f"))
        print()
    if write:
        card = json.loads(SHIPPED_CARD.read_text())
        card["held_out_evaluation"] = result
        SHIPPED_CARD.write_text(json.dumps(card, indent=2) + "\n")
        print(f"written to {SHIPPED_CARD}")


if __name__ == "__main__":
    main("--write" in sys.argv[1:])
