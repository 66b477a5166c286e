"""Candidate F (session 25): E's recipe cut to fit the issue's "about 2 hours" from nothing on 2 CPU cores.

Stage 1: 30 epochs instead of 60 (otherwise the paper's recipe, as E's). Stage 2: the first 12 of E's 17
PyTomography fine-tuning scans (A's 8 and B's 4, the pool's order) and the validation scan, 10 epochs instead of 40
(E's stage-2 validation loss was within 3 % of its best after 10). Everything else is `cohort-dosimetry train`'s
defaults. The cuts were chosen by cost alone, from session 25's measured costs (data 47 min, stage-1 epochs 66 s,
PyTomography scans about 2.5 min), before any test patient of the comparison exists (docs/cnn_weights_choice.md,
last section).

Usage: .venv/bin/python docs/cnn_weights_evidence/candidate_F/train_F.py OUT_DIR  (resumable: rerun it)
"""
import dataclasses
import sys

from cohort_dosimetry.model._dataset import HELD_OUT_SEEDS, DataSpec
from cohort_dosimetry.model._pipeline import FINE_TUNING, train_model
from cohort_dosimetry.model._training import FitConfig

TRAIN_SEEDS = [*range(1, 8), *range(10, 15)]
VALIDATION_SEEDS = [18]
FINE_TUNING_F = dataclasses.replace(FINE_TUNING, train_scans=FINE_TUNING.train_scans[:12],
                                    config=dataclasses.replace(FINE_TUNING.config, epochs=10))

if __name__ == "__main__":
    card = train_model(sys.argv[1], TRAIN_SEEDS, VALIDATION_SEEDS, HELD_OUT_SEEDS, DataSpec(), FitConfig(epochs=30),
                       fine_tuning=FINE_TUNING_F, device="cpu",
                       note="candidate F (session 25): E's recipe cut to fit about 2 hours from nothing on 2 CPU "
                            "cores: 30 + 10 epochs, 12 PyTomography fine-tuning scans; "
                            "docs/cnn_weights_evidence/candidate_F/train_F.py",
                       log=lambda s: print(s, flush=True))
    print(f"model card: {card}")
