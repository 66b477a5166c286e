"""A's 9 PyTomography fine-tuning scans (FINE_TUNING of cohort_dosimetry/model/_pipeline.py), candidate-independent,
MC maps reused from the stage-1 data (data.py). Usage: .venv/bin/python .../scans.py DATA FINE_TUNING_DATA"""
import sys
import time
from pathlib import Path

from cohort_dosimetry.model._dataset import DataSpec
from cohort_dosimetry.model._pipeline import FINE_TUNING, _single_scans

tic = time.time()
for scans in (FINE_TUNING.train_scans, FINE_TUNING.validation_scans):
    _single_scans(Path(sys.argv[2]), Path(sys.argv[1]), scans, FINE_TUNING.spect, DataSpec(), None,
                  lambda m: print(time.strftime("%H:%M:%S"), m, flush=True))
print(f"all done in {time.time() - tic:.0f} s", flush=True)
