"""DblurDoseNet against the published architecture (Li et al. 2022; docs/model.md), layer for layer."""

import pytest
import torch
from torch import nn

from cohort_dosimetry.model import PACK_DEPTH, DblurDoseNet


def _conv_params(c_in, c_out, kernel, bias):
    n = c_in * c_out
    for k in kernel:
        n *= k
    return n + (c_out if bias else 0)


def _published_parameter_count():
    """Parameters of the published layer list, counted from the paper's description (not from the module)."""
    n = _conv_params(2, 8, (7, 7, 5), False) + 2 * 8  # conv + BatchNorm (weight, bias)
    n += _conv_params(8, 16, (7, 7, 3), False) + 2 * 16
    n += _conv_params(16, 16, (7, 7, 3), True)
    widths = [16, 16, 32, 64, 128, 128]
    for c_in, c_out in zip(widths[:-1], widths[1:]):  # encoder: two conv3x3 + BN each
        n += _conv_params(c_in, c_out, (3, 3), False) + 2 * c_out
        n += _conv_params(c_out, c_out, (3, 3), False) + 2 * c_out
    for c_in, c_out in [(128 + 128, 64), (64 + 64, 32), (32 + 32, 16), (16 + 16, 16)]:  # decoder after concatenation
        n += _conv_params(c_in, c_in // 2, (3, 3), False) + 2 * (c_in // 2)
        n += _conv_params(c_in // 2, c_out, (3, 3), False) + 2 * c_out
    return n + _conv_params(16, 1, (1, 1), True)


def test_parameter_count_matches_the_published_model():
    count = sum(p.numel() for p in DblurDoseNet().parameters())
    assert count == _published_parameter_count()
    assert count == pytest.approx(1.14e6, rel=0.01)  # "about 1.14 M parameters" (Li et al. 2022)


def test_depth_feature_extractor_layers_in_torch_axis_order():
    layers = list(DblurDoseNet().depth_features)
    kinds = [type(m) for m in layers]
    assert kinds == [
        nn.Conv3d,
        nn.BatchNorm3d,
        nn.LeakyReLU,
        nn.MaxPool3d,
        nn.Conv3d,
        nn.BatchNorm3d,
        nn.LeakyReLU,
        nn.Conv3d,
    ]
    conv1, _, act, pool, conv2, _, _, conv3 = layers
    # paper (H, W, D) k(7,7,5) pad(3,3,1) -> torch (D, H, W)
    assert (conv1.in_channels, conv1.out_channels, conv1.kernel_size, conv1.padding) == (2, 8, (5, 7, 7), (1, 3, 3))
    assert conv1.bias is None and act.negative_slope == 0.1
    assert pool.kernel_size == (2, 1, 1) and pool.ceil_mode
    assert (conv2.in_channels, conv2.out_channels, conv2.kernel_size, conv2.padding) == (8, 16, (3, 7, 7), (0, 3, 3))
    assert conv2.bias is None
    assert (conv3.in_channels, conv3.out_channels, conv3.kernel_size, conv3.padding) == (16, 16, (3, 7, 7), (0, 3, 3))
    assert conv3.bias is not None


def test_inference_layout_changes_no_value_and_training_keeps_the_default_layout():
    """In eval mode the extractor runs its convolutions on channels-last input for speed; the result must be that of
    the layers applied one by one in torch's default layout. In training mode nothing may change at all."""
    torch.manual_seed(3)
    net = DblurDoseNet()
    pack = torch.rand(2, 2, PACK_DEPTH, 32, 48)
    prior = torch.rand(2, 1, 32, 48)

    def by_layers(x):
        for layer in net.depth_features:
            x = layer(x.contiguous())
        return net.unet(x.squeeze(2).contiguous()) + prior

    with torch.no_grad():
        net.train()
        assert torch.equal(net(pack, prior), by_layers(pack))
        net.eval()
        fast, slow = net(pack, prior), by_layers(pack)
    # float32 summation order differs between layouts; a layout mistake (channels mixed up) would differ by the
    # output's own size
    assert torch.allclose(fast, slow, rtol=0, atol=1e-6 * float(slow.abs().max()))


def test_depth_progression_11_9_5_3_1_keeps_the_plane():
    net = DblurDoseNet().eval()
    depths = []
    hooks = [
        m.register_forward_hook(lambda m, i, o: depths.append(tuple(o.shape[2:])))
        for m in net.depth_features
        if isinstance(m, (nn.Conv3d, nn.MaxPool3d))
    ]
    with torch.no_grad():
        net(torch.zeros(1, 2, PACK_DEPTH, 24, 40), torch.zeros(1, 1, 24, 40))
    for h in hooks:
        h.remove()
    assert depths == [(9, 24, 40), (5, 24, 40), (3, 24, 40), (1, 24, 40)]


def test_unet_widths_activations_and_output():
    unet = DblurDoseNet().unet
    enc = [[(c.in_channels, c.out_channels) for c in block if isinstance(c, nn.Conv2d)] for block in unet.encoder]
    assert enc == [
        [(16, 16), (16, 16)],
        [(16, 32), (32, 32)],
        [(32, 64), (64, 64)],
        [(64, 128), (128, 128)],
        [(128, 128), (128, 128)],
    ]
    dec = [[(c.in_channels, c.out_channels) for c in block if isinstance(c, nn.Conv2d)] for block in unet.decoder]
    assert dec == [[(256, 128), (128, 64)], [(128, 64), (64, 32)], [(64, 32), (32, 16)], [(32, 16), (16, 16)]]
    for block in unet.encoder:
        assert all(c.bias is None and c.kernel_size == (3, 3) for c in block if isinstance(c, nn.Conv2d))
        assert sum(isinstance(m, nn.LeakyReLU) and m.negative_slope == 0.1 for m in block) == 2
    for block in unet.decoder:
        assert sum(isinstance(m, nn.ReLU) for m in block) == 2
        assert sum(isinstance(m, nn.BatchNorm2d) for m in block) == 2
    assert (unet.output.in_channels, unet.output.out_channels, unet.output.kernel_size) == (16, 1, (1, 1))
    assert unet.output.bias is not None


def test_output_is_residual_plus_prior(rng):
    net = DblurDoseNet().eval()
    pack = torch.from_numpy(rng.random((3, 2, PACK_DEPTH, 32, 16), dtype="float32"))
    prior = torch.from_numpy(rng.random((3, 1, 32, 16), dtype="float32"))
    with torch.no_grad():
        residual = net.unet(net.depth_features(pack))
        out = net(pack, prior)
    assert out.shape == (3, 1, 32, 16)
    torch.testing.assert_close(out, residual + prior)


def test_wrong_pack_depth_is_refused():
    with pytest.raises(ValueError, match="pack must be"):
        DblurDoseNet()(torch.zeros(1, 2, 9, 16, 16), torch.zeros(1, 1, 16, 16))


def test_inference_copy_computes_the_same_function_and_leaves_the_model_alone():
    """for_inference folds each BatchNorm into its convolution and pools depth by slice pairs. With BatchNorm
    statistics and affine factors far from the identity (a fold that dropped the variance, the mean or the affine
    part, or a pool that paired the wrong slices, would be off by the output's own size), its output must equal the
    eval-mode network's to float32 rounding, and the original must keep its layers and stay bit for bit the same."""
    from cohort_dosimetry.model._network import _SlicePairMax, for_inference

    torch.manual_seed(5)
    net = DblurDoseNet()
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, (nn.BatchNorm2d, nn.BatchNorm3d)):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.3, 3.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.3, 0.3)
    net.eval()
    pack, prior = torch.rand(2, 2, PACK_DEPTH, 32, 48), torch.rand(2, 1, 32, 48)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    fast = for_inference(net)
    assert not any(isinstance(m, (nn.BatchNorm2d, nn.BatchNorm3d, nn.MaxPool3d)) for m in fast.modules())
    with torch.no_grad():
        ref, out = net(pack, prior), fast(pack, prior)
    assert torch.allclose(out, ref, rtol=0, atol=1e-5 * float(ref.abs().max()))
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in before.items())
    assert [type(m) for m in net.depth_features][1] is nn.BatchNorm3d and not fast.training

    pool = nn.MaxPool3d((2, 1, 1), ceil_mode=True)
    for depth in (9, 8, 1):
        x = torch.randn(2, 3, depth, 5, 4)
        assert torch.equal(_SlicePairMax()(x), pool(x))
        x_cl = x.contiguous(memory_format=torch.channels_last_3d)
        assert torch.equal(_SlicePairMax()(x_cl), pool(x))
