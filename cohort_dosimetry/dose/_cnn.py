"""CNN: the DVK map plus the DblurDoseNet residual predicted from SPECT and density (Li et al. 2022)."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from cohort_dosimetry.model import SHIPPED_CARD, ModelCard, predict_dose_rate

from ._dvk import dvk_map
from ._registry import DoseInputs, DoseMethod, Maps, register


@functools.lru_cache(maxsize=8)
def model_card(weights: str | None) -> ModelCard:
    """The model card of ``weights`` (a card JSON path; None: the shipped compact-grid model)."""
    return ModelCard.from_json(Path(weights) if weights is not None else SHIPPED_CARD)


def _card(weights: str | Path | None) -> ModelCard:
    return model_card(str(weights) if weights is not None else None)


def _check(inputs: DoseInputs) -> None:
    card = _card(inputs.weights)
    if not card.on_grid(inputs.spacing_mm):
        # one grid for every map of a scan: the CNN map is not resampled behind the caller's back
        raise ValueError(
            f"{inputs.name}: grid spacing {tuple(inputs.spacing_mm)} mm (z, y, x) differs from the "
            f"{tuple(card.spacing_mm)} mm the CNN weights were trained on; ingest the scan on that "
            "grid (`--grid compact`) or call model.predict_dose_rate(..., resample=True)"
        )


def _prior(inputs: DoseInputs):
    """The CNN's DVK prior: the DVK map computed for this call, else the scan's stored one, else computed here."""
    if inputs.dvk is None and "dose_rate_dvk" in inputs.scan:
        return np.asarray(inputs.scan["dose_rate_dvk"].values, dtype=np.float32)
    return dvk_map(inputs)


def _compute(inputs: DoseInputs) -> Maps:
    card = _card(inputs.weights)
    cnn = predict_dose_rate(
        inputs.activity_bq,
        inputs.density,
        _prior(inputs),
        inputs.spacing_mm,
        weights=inputs.weights,
        device=inputs.device,
    )
    return {
        "dose_rate_cnn": (
            cnn,
            {"long_name": "dose-rate, DVK + DblurDoseNet residual", "weights_sha256": card.weights_sha256},
        )
    }


def _settings(spacing_mm, weights=None, **_) -> dict:
    """The part of the model card that decides the CNN's output: weights sha256 and normalisation."""
    card = _card(weights)
    return {
        "weights_sha256": card.weights_sha256,
        "normalisation": {
            "spect_scale": float(card.spect_scale),
            "dose_rate_scale": float(card.dose_rate_scale),
            "density_threshold_g_cm3": float(card.density_threshold_g_cm3),
            "pack_depth": int(card.pack_depth),
        },
    }


CNN = register(DoseMethod("cnn", ("dose_rate_cnn",), _compute, _settings, _check))
