"""Score of the seventh pre-registered comparison (docs/cnn_weights_choice.md): candidate E vs the shipped A on
seeds 47-51.

Reads the per_voi.parquet tables kept next to this file (fast_<A|E>/ and pyt_<A|E>/<seed>/, written by run.sh).
Rule: E replaces A iff E meets strictly more of the 14 checks than A and S_E >= S_A - 0.02 (../comparison.py).
Run from the repository: .venv/bin/python <this file>.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from comparison import markdown_table, more_checks_same_means, score  # noqa: E402

if __name__ == "__main__":
    here = Path(__file__).parent
    score(here, incumbent="A", challenger="E", seeds=list(range(47, 52)), rule=more_checks_same_means)
    print()
    markdown_table(here, "AE", "seeds 47-51")
