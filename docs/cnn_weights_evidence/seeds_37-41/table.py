"""The markdown table of the fifth comparison in docs/cnn_weights_choice.md, from the tables next to this file.

Run from the repository: .venv/bin/python <this file>.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from comparison import markdown_table  # noqa: E402

if __name__ == "__main__":
    markdown_table(Path(__file__).parent, "AB", "seeds 37-41")
