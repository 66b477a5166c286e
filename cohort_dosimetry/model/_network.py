"""DblurDoseNet: a depth feature extractor over an 11-slice pack followed by a 2D U-Net
(Li et al., Med Phys 49:1216, 2022).

Layer for layer as described in docs/model.md. The paper (and docs/model.md) give 3D kernel sizes in (H, W, D)
order; torch's ``Conv3d`` works on (N, C, D, H, W), so every (H, W, D) tuple below is written in torch order (D, H, W):
k(7,7,5) pad(3,3,1) becomes kernel (5,7,7) padding (1,3,3), MaxPool (1,1,2) becomes (2,1,1).
Depth through the extractor: 11 -> 9 (conv k_D=5, pad 1) -> 5 (max-pool 2, ceil) -> 3 (k_D=3) -> 1 (k_D=3).
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils.fusion import fuse_conv_bn_eval

PACK_DEPTH = 11  # the slice and 5 neighbours on each side (Li et al. 2022)
_LEAKY_SLOPE = 0.1  # LeakyReLU(0.1) of the published model (Li et al. 2022)


def _hwd_to_dhw(t: tuple[int, int, int]) -> tuple[int, int, int]:
    """(H, W, D) as the paper writes a 3D size -> (D, H, W) as torch's Conv3d reads it."""
    h, w, d = t
    return (d, h, w)


class DepthFeatureExtractor(nn.Sequential):
    """(N, 2, 11, H, W) SPECT + density pack -> (N, 16, H, W) features of the centre slice."""

    def __init__(self, in_channels: int = 2, out_channels: int = 16) -> None:
        super().__init__(
            nn.Conv3d(in_channels, 8, _hwd_to_dhw((7, 7, 5)), padding=_hwd_to_dhw((3, 3, 1)), bias=False),
            nn.BatchNorm3d(8),
            nn.LeakyReLU(_LEAKY_SLOPE),
            nn.MaxPool3d(_hwd_to_dhw((1, 1, 2)), ceil_mode=True),
            nn.Conv3d(8, 16, _hwd_to_dhw((7, 7, 3)), padding=_hwd_to_dhw((3, 3, 0)), bias=False),
            nn.BatchNorm3d(16),
            nn.LeakyReLU(_LEAKY_SLOPE),
            nn.Conv3d(16, out_channels, _hwd_to_dhw((7, 7, 3)), padding=_hwd_to_dhw((3, 3, 0)), bias=True),
        )

    def forward(self, pack: torch.Tensor) -> torch.Tensor:
        if not self.training:
            # Inference only, layout only: oneDNN's 3D convolutions run about 1.3x faster on channels-last input on
            # the CPU (bench/cnn.py), values equal to 1e-7. Training keeps torch's default layout: there BatchNorm
            # reduces batch statistics, which channels-last does less accurately on the CPU (about 1e-5 against
            # 1e-7), and the shipped weights' recipe stays bit for bit as it ran.
            pack = pack.contiguous(memory_format=torch.channels_last_3d)
        return self.after_first_conv(self[0](pack))

    def after_first_conv(self, h: torch.Tensor) -> torch.Tensor:
        """The layers after the first convolution: its (N, 8, 9, H, W) output -> (N, 16, H, W) features.

        Whole-volume inference computes the first convolution itself, sharing it between neighbouring packs
        (``cohort_dosimetry.model._inference``), and continues here."""
        depth = h.shape[2]
        for layer in list(self)[1:]:
            h = layer(h)
        if h.shape[2] != 1:
            raise ValueError(
                f"a first-convolution output of depth {depth} left depth {h.shape[2]}; "
                f"packs must be {PACK_DEPTH} slices"
            )
        return h.squeeze(2)


class _EncoderBlock(nn.Sequential):
    """Two [Conv3x3 no bias, BatchNorm, LeakyReLU(0.1)]."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__(
            nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
            nn.BatchNorm2d(c_out),
            nn.LeakyReLU(_LEAKY_SLOPE),
            nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
            nn.BatchNorm2d(c_out),
            nn.LeakyReLU(_LEAKY_SLOPE),
        )


class _DecoderBlock(nn.Sequential):
    """[Conv3x3 no bias c_in -> c_in/2, BatchNorm, ReLU], [Conv3x3 no bias c_in/2 -> c_out, BatchNorm, ReLU]."""

    def __init__(self, c_in: int, c_out: int) -> None:
        mid = c_in // 2
        super().__init__(
            nn.Conv2d(c_in, mid, 3, padding=1, bias=False),
            nn.BatchNorm2d(mid),
            nn.ReLU(),
            nn.Conv2d(mid, c_out, 3, padding=1, bias=False),
            nn.BatchNorm2d(c_out),
            nn.ReLU(),
        )


class UNet2d(nn.Module):
    """2D U-Net, 4 down/up levels: encoder widths 16, 32, 64, 128, 128; decoder outputs 64, 32, 16, 16; 1x1 output conv.

    (N, c_in, H, W) -> (N, 1, H, W). Nearest-neighbour upsampling to the skip's size (x2 when H, W are multiples of 16).
    """

    ENCODER_WIDTHS = (16, 32, 64, 128, 128)
    DECODER_WIDTHS = (64, 32, 16, 16)

    def __init__(self, in_channels: int = 16) -> None:
        super().__init__()
        widths = (in_channels,) + self.ENCODER_WIDTHS
        self.encoder = nn.ModuleList(_EncoderBlock(a, b) for a, b in zip(widths[:-1], widths[1:]))
        skips = self.ENCODER_WIDTHS[-2::-1]  # 128, 64, 32, 16
        below = (self.ENCODER_WIDTHS[-1],) + self.DECODER_WIDTHS[:-1]  # 128, 64, 32, 16
        self.decoder = nn.ModuleList(_DecoderBlock(b + s, out) for b, s, out in zip(below, skips, self.DECODER_WIDTHS))
        self.output = nn.Conv2d(self.DECODER_WIDTHS[-1], 1, 1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for i, block in enumerate(self.encoder):
            if i:
                x = F.max_pool2d(x, 2)
            x = block(x)
            skips.append(x)
        x = skips.pop()
        for block in self.decoder:
            skip = skips.pop()
            x = F.interpolate(x, size=skip.shape[-2:], mode="nearest")
            x = block(torch.cat([x, skip], dim=1))
        return self.output(x)


class DblurDoseNet(nn.Module):
    """The residual dose-rate network.

    ``forward(pack, prior)``: ``pack`` (N, 2, 11, H, W) normalised SPECT (channel 0) and density (channel 1) of 11
    consecutive slices (z order); ``prior`` (N, 1, H, W) normalised DVK dose-rate of the centre slice.
    Returns (N, 1, H, W) normalised dose-rate = U-Net residual + prior (no clamp: inference clamps and masks).
    H and W must be at least 16 (four 2x poolings).
    """

    def __init__(self) -> None:
        super().__init__()
        self.depth_features = DepthFeatureExtractor(in_channels=2, out_channels=16)
        self.unet = UNet2d(in_channels=16)

    def forward(self, pack: torch.Tensor, prior: torch.Tensor) -> torch.Tensor:
        if pack.ndim != 5 or pack.shape[1] != 2 or pack.shape[2] != PACK_DEPTH:
            raise ValueError(f"pack must be (N, 2, {PACK_DEPTH}, H, W), got {tuple(pack.shape)}")
        if min(pack.shape[-2:]) < 16:
            raise ValueError(f"in-plane size {tuple(pack.shape[-2:])} is below 16 voxels, too small for 4 poolings")
        return self.residual(self.depth_features(pack), prior)

    def residual(self, features: torch.Tensor, prior: torch.Tensor) -> torch.Tensor:
        """U-Net of the (N, 16, H, W) depth features plus the (N, 1, H, W) prior."""
        return self.unet(features) + prior


class _SlicePairMax(nn.Module):
    """``nn.MaxPool3d((2, 1, 1), ceil_mode=True)`` over (N, C, D, H, W) as the elementwise maximum of slice pairs,
    an odd last slice passed on alone: the same values, without the pool's index bookkeeping (about twice as fast on
    the CPU for this window)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        depth = x.shape[2]
        out = torch.empty_like(x[:, :, : (depth + 1) // 2])
        torch.maximum(x[:, :, 0 : depth - 1 : 2], x[:, :, 1:depth:2], out=out[:, :, : depth // 2])
        if depth % 2:
            out[:, :, -1] = x[:, :, -1]
        return out


def for_inference(model: DblurDoseNet) -> DblurDoseNet:
    """An eval-mode copy of ``model`` that computes the same function with less work, for inference only.

    Every BatchNorm is folded into the convolution before it (``torch.nn.utils.fusion.fuse_conv_bn_eval``: the
    running statistics and affine factors become the convolution's weights and bias; equal to float32 rounding) and
    the depth max-pool runs as :class:`_SlicePairMax` (the same values). Together about 9 % faster per pack on 2 CPU
    cores (bench/cnn.py). ``model`` itself is not touched, and training never uses the copy: it has no BatchNorm.
    """
    fused = copy.deepcopy(model).eval()
    for block in fused.modules():
        if not isinstance(block, nn.Sequential):
            continue
        for i in range(len(block)):
            layer, nxt = block[i], block[i + 1] if i + 1 < len(block) else None
            if isinstance(layer, nn.MaxPool3d) and layer.kernel_size == (2, 1, 1) and layer.ceil_mode:
                block[i] = _SlicePairMax()
            elif isinstance(layer, (nn.Conv2d, nn.Conv3d)) and isinstance(nxt, (nn.BatchNorm2d, nn.BatchNorm3d)):
                block[i], block[i + 1] = fuse_conv_bn_eval(layer, nxt), nn.Identity()
    return fused
