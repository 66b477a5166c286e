"""Fixtures for the model tests: a seeded, untrained network written as weights + model card."""

import pytest
import torch

from cohort_dosimetry.model import DblurDoseNet, ModelCard, save_model

CARD_SPACING_MM = (3.0, 3.91, 3.91)


def make_card(**overrides) -> ModelCard:
    fields = dict(
        spacing_mm=CARD_SPACING_MM,
        spect_scale=2.0e3,
        dose_rate_scale=5.0e6,
        training_data={"description": "untrained test network"},
        training={"epochs": 0},
        validation_metrics={},
    )
    fields.update(overrides)
    return ModelCard(**fields)


@pytest.fixture
def card_path(tmp_path):
    """Model card (JSON) of a seeded, untrained DblurDoseNet in tmp_path."""
    torch.manual_seed(7)
    return save_model(DblurDoseNet(), make_card(), tmp_path / "net.json")


#: Tiny Monte Carlo statistics for the command tests, on purpose (truth about 50 % uncertain, no top-ups): they
#: check the wiring of the data options, not the physics.
TINY_MC_OPTIONS = (
    "--mc-decays-per-voxel 2 --mc-decays-per-activity-share 2e6 --mc-min-decays 20000 --mc-max-decays 400000 "
    "--mc-label-uncertainty-target 1.0"
).split()
