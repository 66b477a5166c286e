"""Training: the body-weighted loss, one Adam step, and checkpoint resume reproducing an uninterrupted run."""
import numpy as np
import torch

from cohort_dosimetry.model import DblurDoseNet
from cohort_dosimetry.model._training import FitConfig, TrainingVolume, _batch, fit, training_step, weighted_mse


def _volumes(rng, n=2, shape=(4, 16, 16)):
    volumes = []
    for _ in range(n):
        spect = rng.random(shape, dtype="float32")
        density = rng.uniform(0.0, 1.2, shape).astype(np.float32)
        prior = spect * 0.5
        label = spect * 0.6 + 0.1 * density  # a learnable residual over the prior
        volumes.append(TrainingVolume(spect, density, prior, label, density > 0.3))
    return volumes


def test_weighted_mse_by_hand(rng):
    pred, label = rng.random((2, 2, 1, 3, 3), dtype="float32")
    body = rng.random((2, 1, 3, 3)) > 0.5
    expected = np.mean(np.where(body, 0.7, 0.3) * (pred - label) ** 2)
    got = weighted_mse(torch.from_numpy(pred), torch.from_numpy(label), torch.from_numpy(body))
    assert float(got) == np.float32(expected).item() or abs(float(got) - expected) < 1e-7


def test_one_training_step_reduces_the_loss(rng):
    torch.manual_seed(0)
    volumes = _volumes(rng)
    batch = _batch(volumes, np.array([(0, 0), (0, 3), (1, 1), (1, 2)]), None, None)
    model = DblurDoseNet()
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)
    before = training_step(model, optimiser, *batch)
    with torch.no_grad():
        after = float(weighted_mse(model(*batch[:2]), batch[2], batch[3]))  # train mode, same batch statistics
    assert after < before


def test_resume_gives_the_parameters_of_an_uninterrupted_run(rng, tmp_path):
    train, validation = _volumes(rng), _volumes(rng, n=1)
    config = FitConfig(epochs=2, batch_size=4, crop=16, seed=3)
    _, history = fit(train, validation, config, tmp_path / "straight", log=lambda s: None)
    fit(train, validation, FitConfig(epochs=1, batch_size=4, crop=16, seed=3), tmp_path / "resumed", log=lambda s: None)
    _, history_resumed = fit(train, validation, config, tmp_path / "resumed", log=lambda s: None)
    assert len(history) == len(history_resumed) == 2
    assert [h["train_loss"] for h in history] == [h["train_loss"] for h in history_resumed]
    # the final (epoch 2) parameters and buffers, not the best-validation model fit() returns
    straight = torch.load(tmp_path / "straight" / "last.pt", weights_only=False)["model"]
    resumed = torch.load(tmp_path / "resumed" / "last.pt", weights_only=False)["model"]
    assert straight.keys() == resumed.keys()
    for name in straight:
        torch.testing.assert_close(straight[name], resumed[name], rtol=0, atol=0, msg=name)
