"""The eighth set of fresh patients (docs/cnn_weights_choice.md): the shipped E, with A alongside, on seeds 52-56.

A confirmation, no rule attached: E ships by the seventh comparison; this reports whether its 14 checks hold on
patients never used before. Reads the per_voi.parquet tables kept next to this file (fast_<E|A>/ and
pyt_<E|A>/<seed>/, written by run.sh). Run from the repository: .venv/bin/python <this file>.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from comparison import markdown_table, score  # noqa: E402

if __name__ == "__main__":
    here = Path(__file__).parent
    score(here, incumbent="E", challenger="A", seeds=list(range(52, 57)), rule=None)
    print()
    markdown_table(here, "EA", "seeds 52-56")
