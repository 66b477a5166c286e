"""Score of the fifth pre-registered comparison (docs/cnn_weights_choice.md): weights A vs B on seeds 37-41.

Reads the per_voi.parquet tables kept next to this file (fast_<A|B>/ and pyt_<A|B>/<seed>/, written by run.sh and
run_seed41.sh). Rule: A replaces B iff S_A >= S_B + 0.05 (../comparison.py). Run from the repository:
.venv/bin/python <this file>.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from comparison import score  # noqa: E402

if __name__ == "__main__":
    score(Path(__file__).parent, incumbent="B", challenger="A", seeds=list(range(37, 42)))
