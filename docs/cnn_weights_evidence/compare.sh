#!/bin/bash
# The test of a pre-registered comparison (docs/cnn_weights_choice.md, sixth to eighth sections): an incumbent
# (default A, whose weights are kept in candidate_A/weights/) against a challenger on five fresh seeds
# FIRST..FIRST+4. MC of the true activity, one run per patient, made by the incumbent's fast evaluation and shared by
# both candidates; fast SPECT 4 time points x 3 realisations; PyTomography one
# realisation at 4, 96 h / 24, 168 h / 4, 96 h / 24, 168 h / 24, 96 h for the five patients in order, MC maps shared
# through --mc-from. Methods DVK and CNN. Writes per_voi.parquet tables under SCRATCH (fast_<X>/, pyt_<X>/<seed>/);
# copy them next to the comparison's score.py. Resumable: complete patient folders are reused and finished
# evaluations skipped, so rerun the same command after an interruption.
# Usage: compare.sh SCRATCH CHALLENGER_LETTER CHALLENGER_CARD FIRST_SEED [INCUMBENT_LETTER INCUMBENT_CARD]
set -euo pipefail
R=$1
X=$2
W=$(realpath "$3")
FIRST=$4
REPO=$(cd "$(dirname "$0")/../.." && pwd)
CD=$REPO/.venv/bin/cohort-dosimetry
I=${5:-A}
INC=$(realpath "${6:-$REPO/docs/cnn_weights_evidence/candidate_A/weights/dblurdosenet_compact.json}")
SEEDS=$(seq "$FIRST" $((FIRST + 4)))
HOURS=("4 96" "24 168" "4 96" "24 168" "24 96")
mkdir -p "$R"
date -u +"%FT%TZ start"
# The incumbent's whole set (fast, then PyTomography patient by patient) before the challenger's, so that a run cut
# short by a session's end leaves one candidate complete; the order changes no number (each evaluation is seeded and
# the challenger reads the incumbent's SPECT and MC through hard links).
[ -f "$R/fast_$I/per_voi.parquet" ] || $CD evaluate --out "$R/fast_$I" --seeds $SEEDS --weights "$INC" --methods dvk cnn
date -u +"%FT%TZ fast_$I done"
i=0
for s in $SEEDS; do
  h=${HOURS[$i]}; i=$((i + 1))
  [ -f "$R/pyt_$I/$s/per_voi.parquet" ] || $CD evaluate --out "$R/pyt_$I/$s" --seeds "$s" --spect pytomography \
      --hours $h --realisations 1 --mc-from "$R/fast_$I/data" --weights "$INC" --methods dvk cnn
  date -u +"%FT%TZ pyt_$I $s done"
done
mkdir -p "$R/fast_$X"; [ -d "$R/fast_$X/data" ] || cp -al "$R/fast_$I/data" "$R/fast_$X/data"
[ -f "$R/fast_$X/per_voi.parquet" ] || $CD evaluate --out "$R/fast_$X" --seeds $SEEDS --weights "$W" --methods dvk cnn
date -u +"%FT%TZ fast_$X done"
i=0
for s in $SEEDS; do
  h=${HOURS[$i]}; i=$((i + 1))
  if [ ! -f "$R/pyt_$X/$s/per_voi.parquet" ]; then
    mkdir -p "$R/pyt_$X/$s"; [ -d "$R/pyt_$X/$s/data" ] || cp -al "$R/pyt_$I/$s/data" "$R/pyt_$X/$s/data"
    $CD evaluate --out "$R/pyt_$X/$s" --seeds "$s" --spect pytomography --hours $h --realisations 1 \
        --mc-from "$R/fast_$I/data" --weights "$W" --methods dvk cnn
  fi
  date -u +"%FT%TZ pyt_$X $s done"
done
date -u +"%FT%TZ all done"
