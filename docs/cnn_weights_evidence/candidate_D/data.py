"""The stage-1 data of the shipped recipe (default DataSpec; MC truth and fast scans of the training and validation
patients 1-7, 10-14, 18), candidate-independent, resumable (complete patient folders are reused); about 5 min per
patient on 2 CPU cores. Usage: .venv/bin/python docs/cnn_weights_evidence/candidate_D/data.py DATA"""
import sys
import time

from cohort_dosimetry.model._dataset import DataSpec, make_patient_data

for seed in [*range(1, 8), *range(10, 15), 18]:
    tic = time.time()
    make_patient_data(sys.argv[1], seed, DataSpec(), log=lambda m: print(m, flush=True))
    print(f"seed {seed} done in {time.time() - tic:.0f} s", time.strftime("%H:%M:%S"), flush=True)
