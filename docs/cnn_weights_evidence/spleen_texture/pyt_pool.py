"""A pool of one-realisation PyTomography scans of TRAINING patients, beyond A's 9 fine-tuning scans: candidate E's
extra fine-tuning scans (seventh comparison, docs/cnn_weights_choice.md). MC maps reused from the stage-1 data of
`cohort-dosimetry train` (<out>/data). One folder per scan, POOL/h<hours>/patient_<seed>, the layout of
data_fine_tuning/. Resumable: a finished scan is reused. About 5-10 min per scan on 2 CPU cores.

Usage, from the repository: .venv/bin/python docs/cnn_weights_evidence/spleen_texture/pyt_pool.py DATA POOL
(session 15 ran it as DATA=/work/runs/s12/data POOL=/work/runs/pyt_pool, with the code of the commit before the
per-scan folder layout, calling _single_scans(POOL / f"h{hours:g}", ...) scan by scan: the same folders.)
"""
import sys
import time
from pathlib import Path

from cohort_dosimetry.model._dataset import DataSpec
from cohort_dosimetry.model._pipeline import _single_scans

ORDER = [(11, 4.0), (12, 24.0), (13, 96.0), (14, 168.0), (1, 96.0), (2, 168.0), (3, 4.0), (4, 24.0), (5, 168.0),
         (6, 4.0), (7, 96.0), (10, 24.0), (11, 96.0), (12, 168.0), (13, 4.0), (14, 24.0)]


def log(message: str) -> None:
    print(time.strftime("%H:%M:%S"), message, flush=True)


def main(data: str, pool: str) -> None:
    for seed, hours in ORDER:
        tic = time.time()
        _single_scans(Path(pool), Path(data), [(seed, hours)], "pytomography", DataSpec(), "cpu", log)
        log(f"seed {seed} @ {hours:g} h done in {time.time() - tic:.0f} s")


if __name__ == "__main__":
    main(*sys.argv[1:])
