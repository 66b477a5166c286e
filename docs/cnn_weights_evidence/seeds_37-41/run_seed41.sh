#!/bin/bash
# Session 11 (2026-12-02), the last patient of the fifth comparison, seed 41, PyTomography at 24 and 96 h, as
# pre-registered: session 10's fast data was wiped with its machine, so the MC truth of seed 41 is simulated again with
# the default DataSpec (all four time points), which reproduces session 10's exactly (seeded; the mean_true and DVK
# columns of seed 41 in fast_A/per_voi.parquet come out bit for bit), and shared through --mc-from.
# seed41_own_truth/: a first run, made before this one with `evaluate --hours 24 96` and no --mc-from. compartment_mc
# sizes each compartment's decays by its largest activity share over the run's time points, so three lesion
# compartments got 11-17 % fewer decays: another MC realisation of the same truth (VOI means within 0.42 %). Not used
# by score.py; it gives the same verdict (S_A - S_B = +0.2193).
# Cards: R/A = `git show 8d4bbbe:cohort_dosimetry/model/weights/dblurdosenet_compact.{json,safetensors}`, R/B = the
# same files at c78a787.
set -euo pipefail
R=/work/runs/s11
CD=/work/main/.venv/bin/cohort-dosimetry
date -u +"%FT%TZ start"
# the MC truth of seed 41 with the default time points (fast SPECT, one realisation: only its data folder is used)
[ -f $R/truth41/per_voi.parquet ] || $CD evaluate --out $R/truth41 --seeds 41 --realisations 1 --methods dvk
date -u +"%FT%TZ truth done"
for c in A B; do
  mkdir -p $R/shared_$c/41
  [ "$c" = A ] || [ -d $R/shared_B/41/data ] || cp -al $R/shared_A/41/data $R/shared_B/41/data
  [ -f $R/shared_$c/41/per_voi.parquet ] || $CD evaluate --out $R/shared_$c/41 --seeds 41 --spect pytomography \
      --hours 24 96 --realisations 1 --mc-from $R/truth41/data --weights $R/$c/dblurdosenet_compact.json --methods dvk cnn
  date -u +"%FT%TZ $c done"
done
