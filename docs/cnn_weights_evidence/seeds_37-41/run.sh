#!/bin/bash
# Fifth pre-registered comparison (docs/cnn_weights_choice.md, fifth section): A vs B on fresh seeds 37-41.
# Seeds 37-40 ran in session 10 (seed 41: run_seed41.sh, session 11) under /work/runs/s9 (a scratch folder outside
# the repository, lost when the machine is recycled); only the per_voi.parquet tables are kept here, copied next to score.py. fast_B was started by hand with
# the same command while the PyTomography scans ran. Resumable: make_patient_data reuses complete patient folders; finished evaluations are skipped.
set -euo pipefail
R=/work/runs/s9/fresh
CD=/work/main/.venv/bin/cohort-dosimetry
A=/work/runs/s9/A/dblurdosenet_compact.json
B=/work/runs/s9/B/dblurdosenet_compact.json
mkdir -p $R
date -u +"%FT%TZ start"
# fast SPECT, 4 time points x 3 realisations; fast_A makes the data (MC truth of each patient, shared)
[ -f $R/fast_A/per_voi.parquet ] || $CD evaluate --out $R/fast_A --seeds 37 38 39 40 41 --weights $A --methods dvk cnn
date -u +"%FT%TZ fast_A done"
# PyTomography, two scans each, one realisation; MC maps reused from the fast data
declare -A H=([37]="4 96" [38]="24 168" [39]="4 96" [40]="24 168" [41]="24 96")
for s in 37 38 39 40 41; do
  [ -f $R/pyt_A/$s/per_voi.parquet ] || $CD evaluate --out $R/pyt_A/$s --seeds $s --spect pytomography --hours ${H[$s]} \
      --realisations 1 --mc-from $R/fast_A/data --weights $A --methods dvk cnn
  if [ ! -f $R/pyt_B/$s/per_voi.parquet ]; then
    mkdir -p $R/pyt_B/$s; [ -d $R/pyt_B/$s/data ] || cp -al $R/pyt_A/$s/data $R/pyt_B/$s/data
    $CD evaluate --out $R/pyt_B/$s --seeds $s --spect pytomography --hours ${H[$s]} \
      --realisations 1 --mc-from $R/fast_A/data --weights $B --methods dvk cnn
  fi
  date -u +"%FT%TZ pyt $s done"
done
mkdir -p $R/fast_B; [ -d $R/fast_B/data ] || cp -al $R/fast_A/data $R/fast_B/data
[ -f $R/fast_B/per_voi.parquet ] || $CD evaluate --out $R/fast_B --seeds 37 38 39 40 41 --weights $B --methods dvk cnn
date -u +"%FT%TZ all done"
