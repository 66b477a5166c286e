"""Evaluation wiring on a tiny prepared patient: errors against a truth built from the DVK itself."""

import json

import numpy as np
import pandas as pd
import pytest
import torch

from cohort_dosimetry.model import DblurDoseNet, save_model
from cohort_dosimetry.physics import dose_rate_dvk
from cohort_dosimetry.training._dataset import DataSpec
from cohort_dosimetry.training._evaluation import evaluate, goal_checks, mean_bias
from tests.model.conftest import CARD_SPACING_MM, make_card


def _prepare_patient(directory, rng, truth_factor, spec):
    shape = (6, 16, 16)
    directory.mkdir(parents=True)
    labels = np.ones(shape, np.int16)  # body
    labels[1:5, 3:8, 3:8] = 4  # liver
    labels[2:4, 10:13, 10:13] = 101  # lesion_1
    density = np.full(shape, 1.04, np.float32)
    np.save(directory / "density.npy", density)
    np.save(directory / "labels.npy", labels)
    for t in range(len(spec.hours)):
        for r in range(spec.realisations):
            spect = rng.gamma(4.0, 1e5, size=shape).astype(np.float32) * (1 + 4 * (labels > 1))
            dvk = dose_rate_dvk(spect, density, CARD_SPACING_MM, device="cpu")
            np.save(directory / f"spect_t{t}_r{r}.npy", spect)
            np.save(directory / f"dvk_t{t}_r{r}.npy", dvk)
        # truth: a multiple of the last realisation's DVK, so every method's error is known exactly
        np.save(directory / f"label_t{t}.npy", truth_factor * dvk)
    meta = {"seed": 0, "spacing_mm": list(CARD_SPACING_MM), "voi_names": {"1": "body", "4": "liver", "101": "lesion_1"}}
    (directory / "patient.json").write_text(json.dumps(meta))


def test_errors_against_a_known_truth(tmp_path, rng):
    net = DblurDoseNet()
    with torch.no_grad():  # zero residual: the CNN map is the DVK map
        net.unet.output.weight.zero_()
        net.unet.output.bias.zero_()
    card = save_model(net, make_card(), tmp_path / "zero.json")
    spec = DataSpec(hours=(24.0,), realisations=2)
    _prepare_patient(tmp_path / "data" / "patient_3", rng, truth_factor=2.0, spec=spec)
    per_voi, noise, summary = evaluate(
        tmp_path / "data", [3], spec, card, methods=("dvk", "cnn"), device="cpu", log=lambda s: None
    )
    assert set(per_voi["voi_class"]) == {"liver", "lesion"}  # body is not a reported class
    voxel_ml = np.prod(CARD_SPACING_MM) / 1000
    volumes = per_voi.groupby("voi")["volume_ml"].unique()
    assert volumes["liver"] == pytest.approx([4 * 5 * 5 * voxel_ml]) and volumes["lesion_1"] == pytest.approx(
        [18 * voxel_ml]
    )
    last = per_voi[per_voi["realisation"] == 1]
    # estimate = truth / 2 voxel by voxel: every relative error is exactly 0.5
    for column in ["mean_error", "nrmse", "dr10_error", "dr30_error", "dr70_error", "dr90_error"]:
        np.testing.assert_allclose(last[column], 0.5, rtol=1e-5)
    assert len(noise) == 4 and (noise["ensemble_noise_percent"] > 0).all()
    dvk_noise = noise[noise["method"] == "dvk"].set_index("voi")["ensemble_noise_percent"]
    cnn_noise = noise[noise["method"] == "cnn"].set_index("voi")["ensemble_noise_percent"]
    np.testing.assert_allclose(cnn_noise, dvk_noise, rtol=1e-4)
    assert set(summary.columns) >= {"method", "voi_class", "mean_error", "nrmse", "ensemble_noise_percent"}
    # a zero residual reproduces DVK up to float rounding: no reduction of either error
    checks = goal_checks(per_voi).set_index(["check", "voi_class"])
    assert list(checks.index) == [("mean_error_reduction", "lesion"), ("nrmse", "liver"), ("nrmse", "lesion")]
    np.testing.assert_allclose(checks["reduction"], 0.0, atol=1e-5)
    np.testing.assert_allclose(checks["cnn"], checks["dvk"], rtol=1e-5)
    assert not checks.loc[("mean_error_reduction", "lesion"), "met"]


def _rows(method, voi_class, mean_errors, nrmses):
    return [
        {"method": method, "voi_class": voi_class, "mean_error": e, "nrmse": n} for e, n in zip(mean_errors, nrmses)
    ]


def test_goal_checks_by_hand():
    """Class errors are means over rows, and the reduction is taken of those means (not a mean of ratios)."""
    per_voi = pd.DataFrame(
        _rows("cnn", "kidney", [0.1, 0.3], [0.2, 0.2])
        + _rows("dvk", "kidney", [0.4, 0.2], [0.3, 0.1])
        + _rows("cnn", "lesion", [0.1], [0.5])
        + _rows("dvk", "lesion", [0.2], [0.4])
        + _rows("cnn", "spleen", [0.3], [0.1])
        + _rows("dvk", "spleen", [0.1], [0.2])
        + _rows("dvk", "liver", [0.1], [0.1])
    )  # no CNN row: liver is not checked
    checks = goal_checks(per_voi).set_index(["check", "voi_class"])
    assert list(checks.index) == [
        ("mean_error_reduction", "kidney"),
        ("mean_error_reduction", "lesion"),
        ("nrmse", "lesion"),
        ("nrmse", "kidney"),
        ("nrmse", "spleen"),
    ]
    # kidney: 1 - 0.2 / 0.3 (the mean of the row ratios would give 1 - (0.25 + 1.5) / 2 = 0.125)
    assert checks.loc[("mean_error_reduction", "kidney"), "reduction"] == pytest.approx(1 / 3)
    assert not checks.loc[("mean_error_reduction", "kidney"), "met"]
    assert checks.loc[("mean_error_reduction", "lesion"), "reduction"] == pytest.approx(0.5)
    assert checks.loc[("mean_error_reduction", "lesion"), "met"]
    assert checks.loc[("nrmse", "kidney"), ["cnn", "dvk"]].tolist() == pytest.approx([0.2, 0.2])
    assert not checks.loc[("nrmse", "kidney"), "met"]  # equal is not below
    assert not checks.loc[("nrmse", "lesion"), "met"]
    assert checks.loc[("nrmse", "spleen"), "met"]


def test_mean_bias_by_hand():
    """A VOI's bias is averaged over its scans first, so a VOI imaged more often does not weigh more; lesions are
    banded by volume (lower edge included)."""

    def row(patient, voi, voi_class, method, t, estimate, volume=np.nan):
        return {
            "patient": patient,
            "voi": voi,
            "voi_class": voi_class,
            "method": method,
            "timepoint": t,
            "mean_true": 2.0,
            "mean_estimate": estimate,
            "volume_ml": volume,
        }

    rows = [row("p1", "kidney_left", "kidney", "cnn", t, e) for t, e in enumerate([1.8, 2.2, 2.0, 1.6])]  # -0.05
    rows += [row("p2", "kidney_left", "kidney", "cnn", 0, 1.0)]  # -0.5
    rows += [row(p, "kidney_left", "kidney", "dvk", 0, 1.5) for p in ("p1", "p2")]  # -0.25 twice
    rows += [row("p1", "lesion_1", "lesion", m, 0, e, 4.0) for m, e in (("cnn", 1.0), ("dvk", 0.5))]
    rows += [row("p2", "lesion_1", "lesion", m, 0, e, 5.0) for m, e in (("cnn", 3.0), ("dvk", 2.0))]
    rows += [row("p2", "lesion_2", "lesion", m, 0, e, 60.0) for m, e in (("cnn", 2.0), ("dvk", 1.0))]
    rows += [row("p1", "kidney_left", "kidney", "mc", 0, 9.0)]  # another method: ignored
    out = mean_bias(pd.DataFrame(rows))
    assert list(out["voi_mean_bias"]) == ["lesion", "kidney"]
    kidney = out["voi_mean_bias"]["kidney"]
    assert kidney["vois"] == 2
    assert kidney["cnn"] == pytest.approx([-0.275, np.std([-0.05, -0.5], ddof=1)])  # not the mean of 5 rows, -0.14
    assert kidney["dvk"] == pytest.approx([-0.25, 0.0])
    assert out["voi_mean_bias"]["lesion"]["cnn"][0] == pytest.approx((-0.5 + 0.5 + 0.0) / 3)
    assert out["lesion_mean_bias_by_volume_ml"] == [
        {"volume_ml": [0.0, 5.0], "lesions": 1, "cnn": pytest.approx(-0.5), "dvk": pytest.approx(-0.75)},
        {"volume_ml": [5.0, 15.0], "lesions": 1, "cnn": pytest.approx(0.5), "dvk": pytest.approx(0.0)},
        {"volume_ml": [50.0, None], "lesions": 1, "cnn": pytest.approx(0.0), "dvk": pytest.approx(-0.5)},
    ]
    assert mean_bias(pd.DataFrame(rows).drop(columns="volume_ml"))["lesion_mean_bias_by_volume_ml"] == []
