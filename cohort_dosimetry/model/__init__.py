"""The residual CNN (DblurDoseNet, Li et al. 2022): network, slice packs, inference, weights + model card,
training on virtual patients and evaluation.

Public names are resolved lazily from the private modules that define them.
"""
from __future__ import annotations

from cohort_dosimetry._lazy import lazy_exports

_PUBLIC = {
    "PACK_DEPTH": "_network",
    "DblurDoseNet": "_network",
    "make_packs": "_packs",
    "pack_indices": "_packs",
    "ModelCard": "_card",
    "SHIPPED_CARD": "_card",
    "load_model": "_card",
    "save_model": "_card",
    "predict_dose_rate": "_inference",
    "DataSpec": "_dataset",
    "make_patient_data": "_dataset",
    "FitConfig": "_training",
    "fit": "_training",
    "train_model": "_pipeline",
    "evaluate": "_evaluation",
    "goal_checks": "_evaluation",
    "mean_bias": "_evaluation",
}

__getattr__, __all__ = lazy_exports(__name__, _PUBLIC)
