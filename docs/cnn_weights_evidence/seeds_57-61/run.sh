#!/bin/bash
# Session 20: the full evaluation of deliverable 5 for the shipped weights (E) on fresh seeds 57-61: DVK, MC run on
# each SPECT scan (10 million decays, dose_rates' default) and the CNN against the MC of the true activity; fast SPECT
# 4 time points x 3 Poisson realisations (ensemble noise); PyTomography one scan per patient at 4, 24, 96, 168, 24 h
# (MC of the truth reused from the fast run). A confirmation: no choice of weights or recipe depends on it.
# Resumable: rerun after an interruption.
set -euo pipefail
R=$1
REPO=$(cd "$(dirname "$0")/../../.." && pwd)
CD=$REPO/.venv/bin/cohort-dosimetry
SEEDS="57 58 59 60 61"
HOURS=(4 24 96 168 24)
date -u +"%FT%TZ start"
[ -f "$R/fast/per_voi.parquet" ] || $CD evaluate --out "$R/fast" --seeds $SEEDS --methods dvk mc cnn
date -u +"%FT%TZ fast done"
i=0
for s in $SEEDS; do
  h=${HOURS[$i]}; i=$((i + 1))
  [ -f "$R/pyt/$s/per_voi.parquet" ] || $CD evaluate --out "$R/pyt/$s" --seeds "$s" --spect pytomography \
      --hours $h --realisations 1 --mc-from "$R/fast/data" --methods dvk mc cnn
  date -u +"%FT%TZ pyt $s done"
done
date -u +"%FT%TZ all done"
