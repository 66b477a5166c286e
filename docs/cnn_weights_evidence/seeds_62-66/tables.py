"""Per-VOI-class tables of E and F on seeds 62-66, for the notes (session 26; descriptive, written after score.py
had decided, and deciding nothing).

Per candidate, SPECT model (fast: 60 scans; PyTomography: 10 scans) and method (DVK, CNN): the mean over VOIs and
scans of the mean dose-rate error, NRMSE and DR10/30/70/90 errors (fractions, against the MC of the true activity),
the mean relative bias of the VOI means and, on fast SPECT (3 realisations), the ensemble noise (%). Reads the tables
next to this file; the table maker is the ninth set's (``../seeds_57-61/score.py``).
Run from the repository: .venv/bin/python <this file>.
"""
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "seeds_57-61"))
from score import COLUMNS, full_table, markdown  # noqa: E402

NO_NOISE = pd.DataFrame(columns=["method", "voi_class", "ensemble_noise_percent"])

if __name__ == "__main__":
    here = Path(__file__).parent
    for cand in "EF":
        models = {"fast": (pd.read_parquet(here / f"fast_{cand}" / "per_voi.parquet"),
                           pd.read_parquet(here / f"fast_{cand}" / "ensemble_noise.parquet")),
                  "PyTomography": (pd.concat(pd.read_parquet(p)
                                             for p in sorted(here.glob(f"pyt_{cand}/*/per_voi.parquet"))), NO_NOISE)}
        for model, (per_voi, noise) in models.items():
            scans = per_voi.groupby(["patient", "timepoint", "realisation"]).ngroups
            print(f"\n### {cand}, {model} SPECT, {scans} scans, per VOI class (fractions against the MC of the true "
                  "activity)\n")
            print(markdown(full_table(per_voi, noise).rename(columns=COLUMNS).reset_index()))
