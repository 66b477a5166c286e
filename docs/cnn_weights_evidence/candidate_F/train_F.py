"""Candidate F (session 25): E's recipe cut to fit the issue's "about 2 hours" from nothing on 2 CPU cores.

Stage 1: 30 epochs instead of 60 (otherwise the paper's recipe, as E's). Stage 2: the first 12 of E's 17
PyTomography fine-tuning scans (A's 8 and B's 4, the pool's order) and the validation scan, 10 epochs instead of 40
(E's stage-2 validation loss was within 3 % of its best after 10). Everything else is `cohort-dosimetry train`'s
defaults. The cuts were chosen by cost alone, from session 25's measured costs (data 47 min, stage-1 epochs 66 s,
PyTomography scans about 2.5 min), before any test patient of the comparison exists
(docs/cnn_weights_choice.md, "Candidate F (session 25)").

Usage: .venv/bin/python docs/cnn_weights_evidence/candidate_F/train_F.py OUT_DIR  (resumable: rerun it)
"""
import argparse
import dataclasses
import sys

from cohort_dosimetry.commands.train import add_arguments
from cohort_dosimetry.model._dataset import DataSpec
from cohort_dosimetry.model._pipeline import FINE_TUNING, train_model
from cohort_dosimetry.model._training import FitConfig

FINE_TUNING_F = dataclasses.replace(FINE_TUNING, train_scans=FINE_TUNING.train_scans[:12],
                                    config=dataclasses.replace(FINE_TUNING.config, epochs=10))

if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    split = parser.parse_args(["--out", sys.argv[1]])  # `cohort-dosimetry train`'s patient split, not a copy of it
    card = train_model(split.out, split.train_seeds, split.validation_seeds, split.test_seeds, DataSpec(),
                       FitConfig(epochs=30),
                       fine_tuning=FINE_TUNING_F, device="cpu",
                       note="candidate F (session 25): E's recipe cut to fit about 2 hours from nothing on 2 CPU "
                            "cores: 30 + 10 epochs, 12 PyTomography fine-tuning scans; "
                            "docs/cnn_weights_evidence/candidate_F/train_F.py",
                       log=lambda s: print(s, flush=True))
    print(f"model card: {card}")
