#!/bin/bash
# Eighth set of fresh patients (docs/cnn_weights_choice.md, eighth section): a confirmation of the shipped E, with A
# alongside, on seeds 52-56; the design of the seventh comparison (../compare.sh) with E as the incumbent, so E's fast
# evaluation makes the MC truth. Scratch folder /work/runs/s18, outside the repository; copy the per_voi.parquet
# tables (fast_<E|A>/, pyt_<E|A>/<seed>/) next to score.py. Resumable: rerun after an interruption.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
exec "$HERE/../compare.sh" /work/runs/s18 A "$HERE/../candidate_A/weights/dblurdosenet_compact.json" 52 \
    E "$HERE/../../../cohort_dosimetry/model/weights/dblurdosenet_compact.json"
