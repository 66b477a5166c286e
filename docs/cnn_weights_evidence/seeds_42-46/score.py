"""Score of the sixth pre-registered comparison (docs/cnn_weights_choice.md): candidate D vs the shipped A on
seeds 42-46.

Reads the per_voi.parquet tables kept next to this file (fast_<A|D>/ and pyt_<A|D>/<seed>/, written by run.sh).
Rule: D replaces A iff S_D >= S_A + 0.05 (../comparison.py). Run from the repository: .venv/bin/python <this file>.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from comparison import markdown_table, score  # noqa: E402

if __name__ == "__main__":
    here = Path(__file__).parent
    score(here, incumbent="A", challenger="D", seeds=list(range(42, 47)))
    print()
    markdown_table(here, "AD", "seeds 42-46")
