"""Candidate F against the shipped E on fresh seeds 62-66 (docs/cnn_weights_choice.md, "Candidate F").

Written in session 25, before any of these patients was simulated. Reads the per_voi.parquet tables copied next to
this file from compare.sh's scratch folder (fast_<E|F>/ and pyt_<E|F>/<seed>/):
    docs/cnn_weights_evidence/compare.sh SCRATCH F \
        docs/cnn_weights_evidence/candidate_F/weights/dblurdosenet_compact.json \
        62 E cohort_dosimetry/model/weights/dblurdosenet_compact.json
Run from the repository: .venv/bin/python <this file>.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from comparison import as_many_checks_same_means, markdown_table, score  # noqa: E402

if __name__ == "__main__":
    here = Path(__file__).parent
    score(here, incumbent="E", challenger="F", seeds=list(range(62, 67)), rule=as_many_checks_same_means)
    print()
    markdown_table(here, "EF", "seeds 62-66")
