"""Training: the loss weights and weighted loss, one Adam step, checkpoint resume reproducing an uninterrupted run,
fine-tuning from given parameters, CUDA training against the CPU."""

import numpy as np
import pytest
import torch

from cohort_dosimetry.model import DblurDoseNet
from cohort_dosimetry.training._fit import (
    FitConfig,
    TrainingVolume,
    _batch,
    evaluate_loss,
    fit,
    loss_weights,
    training_step,
    weighted_mse,
)
from tests.conftest import requires_cuda


def _volumes(rng, n=2, shape=(4, 16, 16)):
    volumes = []
    for _ in range(n):
        spect = rng.random(shape, dtype="float32")
        density = rng.uniform(0.0, 1.2, shape).astype(np.float32)
        prior = spect * 0.5
        label = spect * 0.6 + 0.1 * density  # a learnable residual over the prior
        volumes.append(TrainingVolume(spect, density, prior, label, np.where(density > 0.3, 0.7, 0.3).astype("f4")))
    return volumes


def test_weighted_mse_by_hand(rng):
    pred, label = rng.random((2, 2, 1, 3, 3), dtype="float32")
    weight = np.where(rng.random((2, 1, 3, 3)) > 0.5, 0.7, 0.3).astype(np.float32)
    expected = np.mean(weight.astype(np.float64) * (pred - label) ** 2)
    got = weighted_mse(torch.from_numpy(pred), torch.from_numpy(label), torch.from_numpy(weight))
    assert float(got) == pytest.approx(expected, rel=1e-6)


def test_loss_weights_by_hand():
    # 1 x 2 x 4 volume: outside | body | cold vertebra (2 voxels) | hot kidney
    labels = np.array([[[0, 1, 3, 3], [0, 1, 3, 2]]], np.int16)
    label = np.array([[[0.0, 1.0, 0.5, 0.5], [0.0, 3.0, 0.5, 6.0]]], np.float32)
    names = {1: "body", 2: "kidney_left", 3: "vertebra_L2"}
    plain = loss_weights(label, labels, names, voi_balance=False)
    np.testing.assert_array_equal(plain, np.where(labels > 0, 0.7, 0.3).astype(np.float32))
    balanced = loss_weights(label, labels, names, voi_balance=True)
    body_mean_square = (1 + 9 + 3 * 0.25 + 36) / 6  # every voxel with a label > 0
    expected = plain.copy()
    expected[labels == 3] = 0.7 * body_mean_square / 0.25  # cold: raised to weigh like an average body voxel
    np.testing.assert_allclose(balanced, expected, rtol=1e-6)  # the hot kidney and the body keep 0.7


def test_lesion_balance_by_hand():
    # 1 x 2 x 4 volume: body | lesion_1 (1 voxel, cold) | lesion_2 (3 voxels, hot) | outside
    labels = np.array([[[1, 101, 102, 102], [1, 102, 0, 0]]], np.int16)
    label = np.array([[[1.0, 0.5, 4.0, 4.0], [1.0, 4.0, 0.0, 0.0]]], np.float32)
    names = {1: "body", 101: "lesion_1", 102: "lesion_2", 103: "lesion_3"}  # lesion_3 has no voxel here
    plain = loss_weights(label, labels, names, voi_balance=False)
    lesions = loss_weights(label, labels, names, voi_balance=False, lesion_balance=True)
    expected = plain.copy()
    expected[labels == 101] = 0.7 * 2.0  # mean lesion volume (1 + 3) / 2 voxels over its 1 voxel
    np.testing.assert_allclose(lesions, expected, rtol=1e-6)  # the larger lesion keeps 0.7
    both = loss_weights(label, labels, names, voi_balance=True, lesion_balance=True)
    body_mean_square = (1 + 0.25 + 3 * 16 + 1) / 6
    expected[labels == 101] = 0.7 * body_mean_square / 0.25 * 2.0  # VOI balancing first, then the lesion factor
    np.testing.assert_allclose(both, expected, rtol=1e-6)
    no_lesions = labels.copy()
    no_lesions[no_lesions > 100] = 1
    np.testing.assert_array_equal(loss_weights(label, no_lesions, names, False, True), plain)


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
    assert all(h["seconds"] > 0 for h in history + history_resumed)  # each epoch's cost, kept across the resume
    # the final (epoch 2) parameters and buffers, not the best-validation model fit() returns
    straight = torch.load(tmp_path / "straight" / "last.pt", weights_only=False)["model"]
    resumed = torch.load(tmp_path / "resumed" / "last.pt", weights_only=False)["model"]
    assert straight.keys() == resumed.keys()
    for name in straight:
        torch.testing.assert_close(straight[name], resumed[name], rtol=0, atol=0, msg=name)


def test_fine_tuning_starts_from_the_given_parameters(rng, tmp_path):
    train, validation = _volumes(rng), _volumes(rng, n=1)
    start, _ = fit(
        train, validation, FitConfig(epochs=1, batch_size=4, crop=16, seed=3), tmp_path / "a", log=lambda s: None
    )
    state = {k: v.clone() for k, v in start.state_dict().items()}
    # zero epochs: fit only loads; the loss is the start model's, not a fresh network's
    tuned, history = fit(
        train,
        validation,
        FitConfig(epochs=0, batch_size=4, crop=16),
        tmp_path / "b",
        log=lambda s: None,
        initial_state=state,
    )
    assert history == []
    fresh = DblurDoseNet().eval()
    assert evaluate_loss(tuned, validation, 4) == pytest.approx(evaluate_loss(start, validation, 4), rel=1e-6)
    assert evaluate_loss(tuned, validation, 4) != pytest.approx(evaluate_loss(fresh, validation, 4), rel=1e-3)


def test_validation_loss_counts_a_repeated_volume_as_often_as_it_is_listed(rng):
    """The reference recomputes every listed copy slice by slice with weighted_mse; evaluate_loss evaluates each
    distinct volume once. They must agree, and differ from the loss over the distinct volumes alone."""
    a, b = _volumes(rng, n=2)
    model = DblurDoseNet().eval()
    listed = [a, b, b, b]

    def by_hand(volumes, stride):
        losses = []
        with torch.inference_mode():
            for vol in volumes:
                for z in range(0, vol.spect.shape[0], stride):
                    pack, prior, label, weight = _batch([vol], np.array([[0, z]]), None, None)
                    losses.append(float(weighted_mse(model(pack, prior), label, weight)))
        return np.mean(losses)

    for stride in (1, 3):
        assert evaluate_loss(model, listed, 5, stride) == pytest.approx(by_hand(listed, stride), rel=1e-5)
    assert evaluate_loss(model, listed, 5) != pytest.approx(evaluate_loss(model, [a, b], 5), rel=1e-3)


@requires_cuda
def test_cuda_training_matches_the_cpu_and_resumes_on_it(rng, tmp_path, monkeypatch):
    """Two epochs on CUDA give the CPU's losses; a run checkpointed on CUDA resumes on the CPU with the same losses
    as if it had stayed there. TF32 is off so that the devices differ only by float32 summation order (Adam's first
    steps, about lr * sign(gradient), amplify no more than that)."""
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    train, validation = _volumes(rng), _volumes(rng, n=1)
    config = FitConfig(epochs=2, batch_size=4, crop=16, seed=3)
    quiet = lambda s: None  # noqa: E731
    cpu_model, cpu = fit(train, validation, config, tmp_path / "cpu", log=quiet, device="cpu")
    cuda_model, cuda = fit(train, validation, config, tmp_path / "cuda", log=quiet, device="cuda")
    fit(
        train,
        validation,
        FitConfig(epochs=1, batch_size=4, crop=16, seed=3),
        tmp_path / "moved",
        log=quiet,
        device="cuda",
    )
    _, moved = fit(train, validation, config, tmp_path / "moved", log=quiet, device="cpu")
    assert next(cuda_model.parameters()).device.type == "cpu"
    for history in (cuda, moved):
        for key in ("train_loss", "validation_loss"):
            assert [h[key] for h in history] == pytest.approx([h[key] for h in cpu], rel=1e-2), key
    assert evaluate_loss(cuda_model, validation, 4) == pytest.approx(evaluate_loss(cpu_model, validation, 4), rel=1e-2)
