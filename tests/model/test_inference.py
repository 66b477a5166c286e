"""predict_dose_rate: shapes, normalisation, clamping and masking, refusals, and a slow per-pack reference."""

import json

import numpy as np
import pytest
import torch

from cohort_dosimetry.model import DblurDoseNet, load_model, make_packs, predict_dose_rate, save_model
from tests.conftest import requires_cuda
from tests.model.conftest import CARD_SPACING_MM, make_card


def _scan(rng, shape=(7, 16, 20)):
    spect = rng.gamma(2.0, 1.0e4, size=shape).astype(np.float32)  # Bq per voxel
    density = rng.uniform(0.9, 1.1, size=shape).astype(np.float32)
    dvk = (spect * 2.0e-11).astype(np.float32)  # Gy/s: any positive prior will do for the contract tests
    return spect, density, dvk


def _reference(card_path, spect, density, dvk):
    """Slow exact reference: one pack at a time through the network, the card's normalisation written out."""
    model, card = load_model(card_path)
    total = spect.sum(dtype=np.float64)
    spect_packs = make_packs(spect / total * card.spect_scale, 11)
    density_packs = make_packs(density, 11)
    out = np.zeros_like(spect)
    with torch.no_grad():
        for z in range(spect.shape[0]):
            pack = torch.from_numpy(np.stack([spect_packs[z], density_packs[z]])[None].astype(np.float32))
            prior = torch.from_numpy((dvk[z] / total * card.dose_rate_scale)[None, None].astype(np.float32))
            y = model(pack, prior)[0, 0].numpy() * total / card.dose_rate_scale
            out[z] = np.where(density[z] > 0.1, np.maximum(y, 0), 0)
    return out


def test_matches_slow_per_pack_reference(card_path, rng):
    spect, density, dvk = _scan(rng)
    density[:, :3] = 0.05  # air rows
    out = predict_dose_rate(spect, density, dvk, CARD_SPACING_MM, weights=card_path, device="cpu", batch_size=3)
    assert out.shape == spect.shape and out.dtype == np.float32
    ref = _reference(card_path, spect, density, dvk)
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-6 * ref.max())


def _constant_residual_card(tmp_path, residual):
    """A network whose U-Net output is the constant ``residual`` (normalised units): output = prior + residual."""
    net = DblurDoseNet()
    with torch.no_grad():
        net.unet.output.weight.zero_()
        net.unet.output.bias.fill_(residual)
    return save_model(net, make_card(), tmp_path / f"constant_{residual}.json")


def test_zero_residual_network_returns_the_dvk(tmp_path, rng):
    spect, density, dvk = _scan(rng)
    out = predict_dose_rate(spect, density, dvk, CARD_SPACING_MM, weights=_constant_residual_card(tmp_path, 0.0))
    np.testing.assert_allclose(out, dvk, rtol=1e-5)


def test_negative_output_is_clamped_at_zero(tmp_path, rng):
    spect, density, dvk = _scan(rng)
    card = make_card()
    residual = -0.5 * float(np.median(dvk) / spect.sum(dtype=np.float64) * card.dose_rate_scale)
    out = predict_dose_rate(spect, density, dvk, CARD_SPACING_MM, weights=_constant_residual_card(tmp_path, residual))
    expected = np.maximum(dvk + residual * spect.sum(dtype=np.float64) / card.dose_rate_scale, 0)
    assert (expected == 0).mean() > 0.1 and (expected > 0).mean() > 0.1  # both sides of the clamp are exercised
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-6 * dvk.max())


def test_zero_where_density_at_most_0_1(tmp_path, rng):
    spect, density, dvk = _scan(rng)
    density[:, :, :5] = 0.1  # the threshold itself is outside (rho <= 0.1)
    density[:, :, 5:8] = 0.02
    out = predict_dose_rate(spect, density, dvk, CARD_SPACING_MM, weights=_constant_residual_card(tmp_path, 0.0))
    assert not out[:, :, :8].any()
    np.testing.assert_allclose(out[:, :, 8:], dvk[:, :, 8:], rtol=1e-5)


def test_dose_rate_scales_with_activity(card_path, rng):
    spect, density, dvk = _scan(rng)
    once = predict_dose_rate(spect, density, dvk, CARD_SPACING_MM, weights=card_path, device="cpu")
    thrice = predict_dose_rate(3 * spect, density, 3 * dvk, CARD_SPACING_MM, weights=card_path, device="cpu")
    np.testing.assert_allclose(thrice, 3 * once, rtol=1e-4, atol=1e-6 * once.max())


def test_all_zero_activity_gives_all_zero_dose_rate(card_path):
    shape = (5, 16, 16)
    out = predict_dose_rate(np.zeros(shape), np.ones(shape), np.zeros(shape), CARD_SPACING_MM, weights=card_path)
    assert out.shape == shape and not out.any()


def _card_with_batchnorm_statistics(tmp_path):
    """A seeded network whose BatchNorm layers are far from the identity (so folding them matters)."""
    torch.manual_seed(11)
    net = DblurDoseNet()
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, (torch.nn.BatchNorm2d, torch.nn.BatchNorm3d)):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.3, 3.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.3, 0.3)
    return save_model(net, make_card(), tmp_path / "bn.json")


def test_shared_first_convolution_equals_each_packs_own(tmp_path, rng):
    """The first convolution computed once per volume slice and shared between packs (_FirstConvolution) against
    the convolution of each replicate-padded pack on its own, for batches of 1, 4 and all packs, uneven batches,
    and a restart from the first slice; then whole-volume predictions against the slow per-pack reference on a volume
    with interior packs (the 7-slice volumes above have none) and non-trivial BatchNorm statistics."""
    from cohort_dosimetry.model._inference import _FirstConvolution

    spect, density, dvk = _scan(rng, shape=(23, 16, 24))
    model, _ = load_model(_card_with_batchnorm_statistics(tmp_path))
    conv = model.depth_features[0]
    planes = torch.from_numpy(np.stack([spect / spect.max(), density]))
    packs = torch.from_numpy(np.stack([make_packs(planes[0].numpy(), 11), make_packs(planes[1].numpy(), 11)], 1))
    with torch.no_grad():
        own = conv(packs)  # (23, 8, 9, 16, 24)
        for batches in ([1] * 23, [4] * 5 + [3], [23], [2, 5, 1, 9, 6]):
            shared = _FirstConvolution(conv, planes, 11)
            for _restart in (False, True):
                start = 0
                for count in batches:
                    out = shared(start, count)
                    assert out.shape == (count, 8, 9, 16, 24)
                    torch.testing.assert_close(out, own[start : start + count], rtol=0, atol=1e-5 * own.abs().max())
                    start += count
    reference = _reference(_card_with_batchnorm_statistics(tmp_path), spect, density, dvk)
    for batch_size in (1, 5):
        out = predict_dose_rate(
            spect, density, dvk, CARD_SPACING_MM, weights=tmp_path / "bn.json", device="cpu", batch_size=batch_size
        )
        np.testing.assert_allclose(out, reference, rtol=1e-4, atol=1e-5 * reference.max())


def test_batch_size_does_not_change_the_result(card_path, rng):
    spect, density, dvk = _scan(rng)
    a = predict_dose_rate(spect, density, dvk, CARD_SPACING_MM, weights=card_path, device="cpu", batch_size=1)
    b = predict_dose_rate(spect, density, dvk, CARD_SPACING_MM, weights=card_path, device="cpu", batch_size=7)
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7 * a.max())


def test_spacing_mismatch_is_refused_unless_resampling(tmp_path, rng):
    spect, density, dvk = _scan(rng, shape=(6, 24, 24))
    weights = _constant_residual_card(tmp_path, 0.0)
    with pytest.raises(ValueError, match=r"spacing \(3.0, 3.0, 3.0\) mm .* does not match .*resample=True"):
        predict_dose_rate(spect, density, dvk, (3.0, 3.0, 3.0), weights=weights)
    # with no residual the result is the DVK taken to the card's grid and back: exact for a map linear in x
    dvk = np.broadcast_to(np.linspace(1e-6, 2e-6, 24, dtype=np.float32), spect.shape).copy()
    out = predict_dose_rate(spect, density, dvk, (3.0, 3.0, 3.0), weights=weights, device="cpu", resample=True)
    assert out.shape == spect.shape
    np.testing.assert_allclose(out[:, 3:-3, 3:-3], dvk[:, 3:-3, 3:-3], rtol=1e-4)


def test_resampling_to_the_same_grid_changes_nothing(card_path, rng):
    # a spacing within the card's tolerance takes the direct path; resampling between equal grids must agree with it
    from cohort_dosimetry.model._inference import _resample

    spect, _, _ = _scan(rng)
    np.testing.assert_allclose(_resample(spect, CARD_SPACING_MM, spect.shape, CARD_SPACING_MM), spect, rtol=1e-6)


def test_corrupted_weights_are_refused(card_path):
    weights = card_path.with_suffix(".safetensors")
    data = bytearray(weights.read_bytes())
    data[-5] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="sha256 .* does not match"):
        load_model(card_path)


def test_card_round_trip_and_missing_fields(card_path, tmp_path):
    _, card = load_model(card_path)
    assert card.spacing_mm == CARD_SPACING_MM and card.parameter_count == 1143233
    data = json.loads(card_path.read_text())
    del data["spect_scale"]
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=r"broken.json: missing fields \['spect_scale'\]"):
        load_model(broken)


@pytest.mark.parametrize(
    "change, message",
    [("nan", "spect holds 1 NaN"), ("negative", "spect holds 1 negative"), ("shape", "share one grid")],
)
def test_bad_input_is_refused(card_path, rng, change, message):
    spect, density, dvk = _scan(rng)
    if change == "nan":
        spect[1, 2, 3] = np.nan
    elif change == "negative":
        spect[1, 2, 3] = -1.0
    else:
        dvk = dvk[:-1]
    with pytest.raises(ValueError, match=message):
        predict_dose_rate(spect, density, dvk, CARD_SPACING_MM, weights=card_path)


def test_mixed_precision_path_runs_on_the_cpu_and_matches_float32(monkeypatch):
    """The CUDA path's autocast, run on the CPU in its dtype (float16) with the shipped weights: the shared first
    convolution, the folded network and the output scaling must work in reduced precision (dtype mixing is what a
    GPU would catch first) and agree with float32 to 0.1 % of the map's maximum (float16 rounds to 0.05 % per
    operation; bfloat16 was 0.36 % off here)."""
    from cohort_dosimetry.model import _inference
    from cohort_dosimetry.physics import dose_rate_dvk

    rng = np.random.default_rng(11)
    shape = (13, 32, 32)
    spect = rng.gamma(2.0, 1.0e4, size=shape).astype(np.float32)
    density = rng.uniform(0.9, 1.1, size=shape).astype(np.float32)
    density[:, :, :4] = 0.05  # air: zero however it was computed
    dvk = dose_rate_dvk(spect, density, CARD_SPACING_MM, device="cpu")
    full = predict_dose_rate(spect, density, dvk, CARD_SPACING_MM, device="cpu", batch_size=4)
    monkeypatch.setattr(
        _inference, "_mixed_precision", lambda device: torch.autocast("cpu", dtype=_inference.AUTOCAST_DTYPE)
    )
    mixed = predict_dose_rate(spect, density, dvk, CARD_SPACING_MM, device="cpu", batch_size=4)
    assert mixed.dtype == np.float32 and (mixed >= 0).all() and (mixed[:, :, :4] == 0).all()
    difference = np.abs(mixed - full).max()
    assert 0 < difference <= 1e-3 * full.max()  # reduced precision was really used, and it is close


def test_a_non_finite_network_output_is_refused(tmp_path, rng):
    """Finite inputs, a network that overflows (its output bias is infinite): an error, not a map holding inf."""
    net = DblurDoseNet()
    with torch.no_grad():
        net.unet.output.bias.fill_(float("inf"))
    card_path = save_model(net, make_card(), tmp_path / "overflow.json")
    spect, density, dvk = _scan(rng)
    with pytest.raises(FloatingPointError, match="NaN or infinite"):
        predict_dose_rate(spect, density, dvk, CARD_SPACING_MM, weights=card_path, device="cpu")


@requires_cuda
def test_cuda_path_matches_cpu(card_path, rng):
    spect, density, dvk = _scan(rng, shape=(9, 32, 32))
    cpu = predict_dose_rate(spect, density, dvk, CARD_SPACING_MM, weights=card_path, device="cpu")
    cuda = predict_dose_rate(spect, density, dvk, CARD_SPACING_MM, weights=card_path, device="cuda")
    # float16 autocast on CUDA, an untrained network (no calibrated activations): a few percent of the map's range
    np.testing.assert_allclose(cuda, cpu, atol=0.03 * cpu.max())


def test_shipped_weights_match_their_card_and_stay_small():
    from cohort_dosimetry.model import SHIPPED_CARD

    model, card = load_model()  # checks the sha256 recorded on the card
    assert card.spacing_mm == CARD_SPACING_MM and card.nuclide == "Lu177"
    assert card.parameter_count == sum(p.numel() for p in model.parameters())
    assert (SHIPPED_CARD.parent / card.weights_file).stat().st_size < 10 * 2**20
    assert "synthetic virtual patients" in card.training_data["description"]
    # the held-out evaluation (shown in reports) was measured on patients the weights never saw, on both SPECT models
    held_out = card.held_out_evaluation
    used = set(card.training_data["train_seeds"]) | set(card.training_data["validation_seeds"])
    assert held_out["seeds"] and not used & set(held_out["seeds"])
    assert set(held_out["spect_models"]) == {"fast", "PyTomography"}
    for m in held_out["spect_models"].values():
        assert m["patients"] == len(held_out["seeds"]) and len(m["goal_checks"]) == 7
        assert set(m["voi_mean_bias"]) == {"liver", "lesion", "kidney", "spleen", "vertebra"}


def test_card_without_a_held_out_evaluation_loads(card_path):
    data = json.loads(card_path.read_text())
    assert "held_out_evaluation" in data  # save_model writes the field, empty until measured
    del data["held_out_evaluation"]
    card_path.write_text(json.dumps(data))
    assert load_model(card_path)[1].held_out_evaluation == {}
