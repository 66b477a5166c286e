"""Training and evaluation of the residual CNN on virtual patients: data (SPECT, DVK and Monte Carlo labels of
seeded synthetic patients), the fit, the shipped recipe, and evaluation against Monte Carlo truth.

This sits above :mod:`cohort_dosimetry.dose` and :mod:`cohort_dosimetry.stats`: it uses both, and neither uses it.
The network, its packs, weights and inference are :mod:`cohort_dosimetry.model`.
"""

from cohort_dosimetry.training._dataset import (
    HELD_OUT_SEEDS,
    REPORTED_CLASSES,
    DataSpec,
    PatientScan,
    make_patient_data,
    patient_dir,
    patient_scans,
)
from cohort_dosimetry.training._evaluation import evaluate, goal_checks, mean_bias, scan_errors, summarise
from cohort_dosimetry.training._fit import FitConfig, TrainingVolume, fit
from cohort_dosimetry.training._recipe import FINE_TUNING, FineTuning, train_model

__all__ = [
    "FINE_TUNING",
    "HELD_OUT_SEEDS",
    "REPORTED_CLASSES",
    "DataSpec",
    "FineTuning",
    "FitConfig",
    "PatientScan",
    "TrainingVolume",
    "evaluate",
    "fit",
    "goal_checks",
    "make_patient_data",
    "mean_bias",
    "patient_dir",
    "patient_scans",
    "scan_errors",
    "summarise",
    "train_model",
]
