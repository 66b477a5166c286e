"""`train_model` from nothing to a loadable card on two tiny virtual patients (synthetic), with a fine-tuning stage
on scans of another time point: what the card records, MC maps reused, a re-run that resumes instead of redoing."""

import dataclasses
import json
import shutil

import numpy as np
import pytest
import torch

from cohort_dosimetry.model._card import load_model
from cohort_dosimetry.training._dataset import DataSpec
from cohort_dosimetry.training._fit import FitConfig
from cohort_dosimetry.training._recipe import FineTuning, _balanced_mix, _single_scans, train_model

# tiny MC statistics on purpose (labels about 50 % uncertain): no label top-ups
SPEC = DataSpec(
    hours=(4.0, 96.0),
    realisations=1,
    mc_decays_per_voxel=2.0,
    mc_decays_per_activity_share=2e6,
    mc_min_decays=20_000,
    mc_max_decays=400_000,
    mc_label_uncertainty_target=1.0,
)
CONFIG = FitConfig(epochs=1, batch_size=4, crop=32, slices_per_epoch=8, validation_stride=16)
TUNING = FineTuning(
    train_scans=((3, 24.0), (3, 96.0)),
    validation_scans=((5, 24.0),),
    config=dataclasses.replace(CONFIG, epochs=1, learning_rate=2.5e-4, voi_balance=True),
    spect="fast",
)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("train")
    card = train_model(out, [3], [5], [8], SPEC, CONFIG, fine_tuning=TUNING, device="cpu", log=lambda s: None)
    return out, card


def test_card_records_both_stages_and_loads(trained):
    out, card_path = trained
    model, card = load_model(card_path)  # sha256 checked
    assert card.training["epochs_run"] == 1 and card.training["voi_balance"] is False
    tuning = card.training["fine_tuning"]
    assert tuning["epochs_run"] == 1 and tuning["voi_balance"] is True and "VOI-balanced" in tuning["loss"]
    assert card.training_data["fine_tuning_scans"]["train"] == [[3, 24.0], [3, 96.0]]
    labels = card.training_data["label_median_relative_uncertainty_in_organ_voxels"]
    assert labels["target"] == 1.0 and labels["time_points_above_target"] == 0 and labels["max"] <= 1.0
    assert len(card.validation_metrics["fine_tuning"]["history"]) == 1
    for key in ("per_voi_class", "per_voi_class_fast"):
        assert {"cnn/kidney", "dvk/kidney"} <= set(card.validation_metrics[key])
    report = json.loads((out / "training_report.json").read_text())
    assert {"data", "fit", "data_fine_tuning", "fine_tuning", "validation_metrics"} <= set(report["seconds"])
    # the card's cost, from the records of each step: patients' data, epochs; in one run it is the report's
    cost = card.training["compute_seconds"]
    metas = [json.loads(m.read_text()) for m in sorted((out / "data").glob("patient_*/patient.json"))]
    assert cost["data"] == pytest.approx(sum(sum(m["seconds"].values()) for m in metas), abs=0.1)
    assert cost["fit"] == pytest.approx(sum(h["seconds"] for h in card.validation_metrics["history"]), abs=0.1)
    # within this one run's stage timers (which also count loading the volumes and writing checkpoints)
    for part in ("data", "fit", "data_fine_tuning", "fine_tuning"):
        assert 0 < cost[part] <= report["seconds"][part] + 0.1, part
    parts = ("data", "fit", "data_fine_tuning", "fine_tuning", "validation_metrics")
    assert cost["total"] == pytest.approx(sum(cost[k] for k in parts), abs=0.1) and cost["fit"] > 0
    assert "untimed_epochs" not in cost


def test_epochs_from_an_untimed_checkpoint_are_named_not_guessed(trained, tmp_path):
    """A run resumed from checkpoints written before epochs were timed: the card's cost leaves those epochs out and
    lists them."""
    out, _ = trained
    copy = tmp_path / "run"
    shutil.copytree(out, copy)
    for stage in ("checkpoints", "checkpoints_fine_tuning"):
        state = torch.load(copy / stage / "last.pt", weights_only=False)
        state["history"] = [{k: v for k, v in h.items() if k != "seconds"} for h in state["history"]]
        torch.save(state, copy / stage / "last.pt")
    card_path = train_model(copy, [3], [5], [8], SPEC, CONFIG, fine_tuning=TUNING, device="cpu", log=lambda s: None)
    cost = load_model(card_path)[1].training["compute_seconds"]
    assert cost["untimed_epochs"] == {"fit": [1], "fine_tuning": [1]}
    assert cost["fit"] == cost["fine_tuning"] == 0.0 and cost["data"] > 0


def test_fine_tuning_scans_reuse_the_stage1_mc_maps(trained):
    out, _ = trained
    for seed, hours in ((3, 24.0), (3, 96.0), (5, 24.0)):
        tuned, stage1 = out / "data_fine_tuning" / f"h{hours:g}" / f"patient_{seed}", out / "data" / f"patient_{seed}"
        np.testing.assert_array_equal(np.load(tuned / "mc_per_bq.npy"), np.load(stage1 / "mc_per_bq.npy"))
        meta = json.loads((tuned / "patient.json").read_text())
        assert meta["spec"]["hours"] == [hours] and meta["mc_from"] == str(stage1)
        assert meta["seconds"]["mc_compartments"] == 0.0


def test_a_fine_tuning_scan_depends_on_its_seed_and_time_alone(trained, tmp_path):
    """Two scans of one patient get a folder each; a recipe asking for one of them alone makes the same scan, so
    recipes can share prepared scans."""
    out, _ = trained
    [alone], [meta] = _single_scans(tmp_path, out / "data", [(3, 96.0)], "fast", SPEC, "cpu", lambda s: None)
    assert meta["seed"] == 3 and meta["spec"]["hours"] == [96.0]
    np.testing.assert_array_equal(
        np.asarray(alone.load("spect")), np.load(out / "data_fine_tuning" / "h96" / "patient_3" / "spect_t0_r0.npy")
    )
    assert not np.array_equal(
        np.asarray(alone.load("spect")), np.load(out / "data_fine_tuning" / "h24" / "patient_3" / "spect_t0_r0.npy")
    )


def test_retrain_reuses_the_mc_maps_of_an_earlier_run(trained, tmp_path):
    """``mc_from``: labels identical to the earlier run's, no MC simulated; the source and SPECT constants on the
    card."""
    out, _ = trained
    card_path = train_model(
        tmp_path, [3], [5], [8], SPEC, CONFIG, device="cpu", log=lambda s: None, mc_from=out / "data"
    )
    for seed in (3, 5):
        np.testing.assert_array_equal(
            np.load(tmp_path / "data" / f"patient_{seed}" / "label_t0.npy"),
            np.load(out / "data" / f"patient_{seed}" / "label_t0.npy"),
        )
        meta = json.loads((tmp_path / "data" / f"patient_{seed}" / "patient.json").read_text())
        assert meta["seconds"]["mc_compartments"] == 0.0
    _, card = load_model(card_path)
    assert card.training_data["mc_maps_reused_from"] == str(out / "data")
    assert card.training_data["spect_model_constants"]["resolution_fwhm_mm"] > 0


def test_rerun_resumes_without_refitting(trained):
    out, card_path = trained
    weights = (out / "dblurdosenet_compact.safetensors").read_bytes()
    train_model(out, [3], [5], [8], SPEC, CONFIG, fine_tuning=TUNING, device="cpu", log=lambda s: None)
    assert (out / "dblurdosenet_compact.safetensors").read_bytes() == weights


def test_fine_tuning_patients_must_belong_to_their_split(tmp_path):
    stray = dataclasses.replace(TUNING, train_scans=((8, 24.0),))
    with pytest.raises(ValueError, match=r"patients \[8\]"):
        train_model(tmp_path, [3], [5], [8], SPEC, CONFIG, fine_tuning=stray, device="cpu")
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize(
    ("share", "n_stage1", "n_extra", "copies"),
    [(0.5, 144, 9, 16), (0.75, 144, 12, 36), (0.5, 12, 1, 12), (0.1, 4, 8, 1)],
)
def test_mix_gives_the_fine_tuning_scans_their_share(share, n_stage1, n_extra, copies):
    stage1, extra = [object() for _ in range(n_stage1)], [object() for _ in range(n_extra)]
    mixed = _balanced_mix(stage1, extra, share)
    assert mixed[:n_stage1] == stage1 and mixed[n_stage1:] == extra * copies  # the same objects, not copies
    if copies > 1:  # the share is met to within one copy of the extra scans
        assert abs(n_extra * copies / len(mixed) - share) < n_extra / len(mixed)


@pytest.mark.parametrize("share", [0.0, 1.0, -0.5])
def test_share_outside_the_open_unit_interval_is_refused(share):
    with pytest.raises(ValueError, match="share must lie strictly between 0 and 1"):
        dataclasses.replace(TUNING, share=share)
