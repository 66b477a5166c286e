#!/bin/bash
# Seventh pre-registered comparison (docs/cnn_weights_choice.md, seventh section): candidate E vs the shipped A on
# fresh seeds 47-51, the sixth comparison's design (../compare.sh). Scratch folder /work/runs/s16, outside the
# repository; copy the per_voi.parquet tables (fast_<A|E>/, pyt_<A|E>/<seed>/) next to score.py. E's card: the
# weights trained by ../spleen_texture/train_E.py, kept in ../spleen_texture/weights/.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
exec "$HERE/../compare.sh" /work/runs/s16 E "$HERE/../spleen_texture/weights/dblurdosenet_compact.json" 47
