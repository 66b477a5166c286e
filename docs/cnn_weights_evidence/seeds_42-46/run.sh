#!/bin/bash
# Sixth pre-registered comparison (docs/cnn_weights_choice.md, sixth section): candidate D vs the shipped A on fresh
# seeds 42-46, the fifth comparison's design (seeds_37-41/run.sh). Scratch folder /work/runs/s14, outside the
# repository; only the per_voi.parquet tables are kept here, next to score.py. Resumable: make_patient_data reuses
# complete patient folders, finished evaluations are skipped, so rerun the same command after an interruption.
# A = the shipped weights (sha256 aa7e81fe...), D = candidate_D/weights/ (trained by candidate_D/train_D.py).
set -euo pipefail
R=/work/runs/s14
REPO=$(cd "$(dirname "$0")/../../.." && pwd)
CD=$REPO/.venv/bin/cohort-dosimetry
A=$REPO/cohort_dosimetry/model/weights/dblurdosenet_compact.json
D=$REPO/docs/cnn_weights_evidence/candidate_D/weights/dblurdosenet_compact.json
mkdir -p $R
date -u +"%FT%TZ start"
# fast SPECT, 4 time points x 3 realisations; fast_A makes the data (MC truth of each patient, shared by both)
[ -f $R/fast_A/per_voi.parquet ] || $CD evaluate --out $R/fast_A --seeds 42 43 44 45 46 --weights $A --methods dvk cnn
date -u +"%FT%TZ fast_A done"
mkdir -p $R/fast_D; [ -d $R/fast_D/data ] || cp -al $R/fast_A/data $R/fast_D/data
[ -f $R/fast_D/per_voi.parquet ] || $CD evaluate --out $R/fast_D --seeds 42 43 44 45 46 --weights $D --methods dvk cnn
date -u +"%FT%TZ fast_D done"
# PyTomography, two scans each, one realisation; MC maps reused from the fast data
declare -A H=([42]="4 96" [43]="24 168" [44]="4 96" [45]="24 168" [46]="24 96")
for s in 42 43 44 45 46; do
  [ -f $R/pyt_A/$s/per_voi.parquet ] || $CD evaluate --out $R/pyt_A/$s --seeds $s --spect pytomography --hours ${H[$s]} \
      --realisations 1 --mc-from $R/fast_A/data --weights $A --methods dvk cnn
  if [ ! -f $R/pyt_D/$s/per_voi.parquet ]; then
    mkdir -p $R/pyt_D/$s; [ -d $R/pyt_D/$s/data ] || cp -al $R/pyt_A/$s/data $R/pyt_D/$s/data
    $CD evaluate --out $R/pyt_D/$s --seeds $s --spect pytomography --hours ${H[$s]} \
      --realisations 1 --mc-from $R/fast_A/data --weights $D --methods dvk cnn
  fi
  date -u +"%FT%TZ pyt $s done"
done
date -u +"%FT%TZ all done"
