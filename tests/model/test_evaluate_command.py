"""`cohort-dosimetry evaluate` end to end on one tiny held-out virtual patient (synthetic, tiny MC statistics): its
tables against VOI means taken directly from the prepared scans' stored maps."""

import json

import numpy as np
import pandas as pd
import pytest

from cohort_dosimetry.cli import main
from tests.model.conftest import TINY_MC_OPTIONS

TINY_MC = [*TINY_MC_OPTIONS, "--mc-decays", "20000"]


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    out = tmp_path_factory.mktemp("evaluate")
    code = main(
        [
            "evaluate",
            "--out",
            str(out),
            "--seeds",
            "8",
            "--hours",
            "24",
            "--realisations",
            "2",
            "--device",
            "cpu",
            *TINY_MC,
        ]
    )
    assert code == 0
    return out


def test_tables_are_written_and_every_method_and_class_is_there(evaluated, capsys):
    per_voi = pd.read_parquet(evaluated / "per_voi.parquet")
    assert set(per_voi["method"]) == {"dvk", "mc", "cnn"}
    assert set(per_voi["voi_class"]) == {"liver", "lesion", "kidney", "spleen", "vertebra"}
    assert len(pd.read_parquet(evaluated / "goal_checks.parquet")) == 7
    noise = pd.read_parquet(evaluated / "ensemble_noise.parquet")
    assert set(noise["method"]) == {"dvk", "mc", "cnn"} and (noise["ensemble_noise_percent"] > 0).all()
    summary = pd.read_parquet(evaluated / "summary.parquet")
    assert len(summary) == 3 * 5


def test_means_and_biases_match_the_stored_scans(evaluated):
    """DVK and truth VOI means equal those of the maps make_patient_data stored; the kidney bias of mean_bias.json
    is the mean over kidneys of each kidney's bias averaged over the two realisations."""
    data = evaluated / "data" / "patient_8"
    labels = np.load(data / "labels.npy")
    meta = json.loads((data / "patient.json").read_text())
    names = {int(k): v for k, v in meta["voi_names"].items()}
    truth = np.load(data / "label_t0.npy")
    per_voi = pd.read_parquet(evaluated / "per_voi.parquet").query("method == 'dvk'")
    kidney_biases = []
    for voi in ("kidney_left", "kidney_right"):
        mask = labels == next(k for k, v in names.items() if v == voi)
        rows = per_voi[per_voi["voi"] == voi].sort_values("realisation")
        dvk_means = [np.load(data / f"dvk_t0_r{r}.npy")[mask].mean(dtype=np.float64) for r in (0, 1)]
        np.testing.assert_allclose(rows["mean_estimate"], dvk_means, rtol=1e-4)
        np.testing.assert_allclose(rows["mean_true"], truth[mask].mean(dtype=np.float64), rtol=1e-5)
        np.testing.assert_allclose(rows["volume_ml"], mask.sum() * np.prod(meta["spacing_mm"]) / 1000, rtol=1e-3)
        kidney_biases.append(np.mean(np.asarray(dvk_means) / truth[mask].mean(dtype=np.float64) - 1))
    bias = json.loads((evaluated / "mean_bias.json").read_text())
    assert bias["voi_mean_bias"]["kidney"]["vois"] == 2
    assert bias["voi_mean_bias"]["liver"]["vois"] == 1 and bias["voi_mean_bias"]["liver"]["dvk"][1] is None
    assert bias["voi_mean_bias"]["kidney"]["dvk"][0] == pytest.approx(np.mean(kidney_biases), rel=1e-4)
    assert (
        sum(b["lesions"] for b in bias["lesion_mean_bias_by_volume_ml"])
        == per_voi.query("voi_class == 'lesion'")["voi"].nunique()
    )
