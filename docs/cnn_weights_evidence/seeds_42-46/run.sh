#!/bin/bash
# Sixth pre-registered comparison (docs/cnn_weights_choice.md, sixth section): candidate D vs the shipped A on fresh
# seeds 42-46, the fifth comparison's design (seeds_37-41/run.sh), in session 14 with scratch folder /work/runs/s14
# outside the repository; only the per_voi.parquet tables are kept here, next to score.py. A = the shipped weights
# (sha256 aa7e81fe...), D = candidate_D/weights/ (trained by candidate_D/train_D.py). Session 14 ran the same steps
# written out in this file (commit 7015a01); they now live in ../compare.sh, shared with the seventh comparison.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
exec "$HERE/../compare.sh" /work/runs/s14 D "$HERE/../candidate_D/weights/dblurdosenet_compact.json" 42
