"""`cohort-dosimetry train` end to end on two tiny virtual patients (synthetic, tiny MC statistics): the options
reach the card, and the same command with more epochs resumes the run instead of redoing it."""

import json

import pytest

from cohort_dosimetry.cli import main
from cohort_dosimetry.model import load_model
from tests.model.conftest import TINY_MC_OPTIONS

# tiny MC statistics on purpose (labels about 50 % uncertain, no top-ups): this checks the wiring, not the physics
ARGS = [
    "--train-seeds",
    "3",
    "--validation-seeds",
    "5",
    "--test-seeds",
    "8",
    "--hours",
    "4",
    "96",
    "--realisations",
    "1",
    *TINY_MC_OPTIONS,
    "--batch-size",
    "4",
    "--crop",
    "32",
    "--slices-per-epoch",
    "8",
    "--validation-stride",
    "16",
    "--learning-rate",
    "5e-4",
    "--seed",
    "2",
    "--fine-tuning-epochs",
    "0",
    "--device",
    "cpu",
    "--note",
    "wiring test",
]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("train_command")
    assert main(["train", "--out", str(out), "--epochs", "1", *ARGS]) == 0
    return out


def test_options_reach_the_card(trained):
    _, card = load_model(trained / "dblurdosenet_compact.json")  # sha256 checked
    assert card.training_data["train_seeds"] == [3] and card.training_data["validation_seeds"] == [5]
    assert card.training_data["held_out_test_seeds"] == [8] and card.training_data["hours_post_injection"] == [4, 96]
    assert card.training_data["noise_realisations"] == 1
    assert {
        k: card.training[k]
        for k in ("epochs", "batch_size", "learning_rate", "crop", "slices_per_epoch", "validation_stride", "seed")
    } == {
        "epochs": 1,
        "batch_size": 4,
        "learning_rate": 5e-4,
        "crop": 32,
        "slices_per_epoch": 8,
        "validation_stride": 16,
        "seed": 2,
    }
    assert card.training["device"] == "cpu"  # the device the run used, resolved (not "auto")
    assert "fine_tuning" not in card.training and "wiring test" in json.dumps(card.training)
    labels = card.training_data["label_median_relative_uncertainty_in_organ_voxels"]
    assert labels["target"] == 1.0


def test_more_epochs_resume_the_run(trained, capsys):
    first = load_model(trained / "dblurdosenet_compact.json")[1].validation_metrics["history"]
    capsys.readouterr()
    assert main(["train", "--out", str(trained), "--epochs", "2", *ARGS]) == 0
    printed = capsys.readouterr().out
    assert "resuming from" in printed and "after epoch 1" in printed
    history = load_model(trained / "dblurdosenet_compact.json")[1].validation_metrics["history"]
    assert len(history) == 2 and history[0] == first[0]  # epoch 1 kept, not refitted
