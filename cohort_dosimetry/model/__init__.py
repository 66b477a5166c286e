"""The residual CNN (DblurDoseNet, Li et al. 2022): network, slice packs, inference, weights + model card.

Training and evaluation on virtual patients are :mod:`cohort_dosimetry.training`.
"""

from cohort_dosimetry.model._card import SHIPPED_CARD, ModelCard, load_model, save_model
from cohort_dosimetry.model._inference import predict_dose_rate
from cohort_dosimetry.model._network import PACK_DEPTH, DblurDoseNet
from cohort_dosimetry.model._packs import make_packs, pack_indices

__all__ = [
    "DblurDoseNet",
    "ModelCard",
    "PACK_DEPTH",
    "SHIPPED_CARD",
    "load_model",
    "make_packs",
    "pack_indices",
    "predict_dose_rate",
    "save_model",
]
