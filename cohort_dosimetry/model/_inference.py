"""Whole-volume CNN dose-rate inference: batched 11-slice packs, one code path for CPU and CUDA."""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

from cohort_dosimetry.model._card import ModelCard, load_model
from cohort_dosimetry.model._network import for_inference
from cohort_dosimetry.physics import resolve_device

# Autocast dtype of CUDA inference. float16, not bfloat16: its 10-bit mantissa is 8 times finer, and on the shipped
# weights bfloat16 moved the CNN's mean dose-rate of a virtual patient's left lung by -1.2 % against float32 (H200,
# measured; -1.3 % in CPU emulation, vertebrae up to -0.5 %). float16 stayed within 0.01 % of float32 in every VOI
# of a 16-slice section where bfloat16 was 0.23 % off (CPU emulation). Its range suffices: activations of the shipped
# network peak at about 20 on virtual patients (seeds 47, 52, 57), float16's maximum is 65504; an overflow would
# still be caught (``_predict`` refuses a non-finite output).
AUTOCAST_DTYPE = torch.float16


def predict_dose_rate(
    spect,
    density,
    dvk,
    spacing_mm,
    weights: str | Path | None = None,
    device: str | torch.device | None = None,
    batch_size: int | None = None,
    resample: bool = False,
) -> np.ndarray:
    """CNN dose-rate map of one scan.

    Parameters
    ----------
    spect : (z, y, x) reconstructed activity, Bq per voxel, on the dose grid.
    density : (z, y, x) mass density, g/cm3, same grid.
    dvk : (z, y, x) DVK dose-rate of ``spect``, Gy/s (``cohort_dosimetry.physics.dose_rate_dvk``), the residual's prior.
    spacing_mm : (z, y, x) voxel spacing in mm; must match the model card's unless ``resample`` is True, in which case
        the inputs are resampled (linear) to the card's grid and the result back to this one.
    weights : path of a model card JSON; ``None`` = the shipped compact-grid model.
    device : "cpu", "cuda", a torch.device or None (CUDA when available). On CUDA the network runs under autocast
        in float16 (``AUTOCAST_DTYPE``); on the CPU in float32.
    batch_size : packs per forward pass; memory on the device is the three volumes, one batch of activations and
        the first convolution's shared slices (8 channels x ``batch_size + 6`` slices, ``_FirstConvolution``).
        None = 1 on the CPU (measured fastest there: the activations of one pack stay in cache, bench/cnn.py) and
        16 on CUDA.

    Returns
    -------
    (z, y, x) float32 dose-rate in Gy/s: network residual + DVK of the centre slice, scaled back by the card's
    normalisation, clamped at 0 and zero where density <= the card's threshold (0.1 g/cm3).
    """
    model, card = load_model(weights)
    spect, density, dvk = _checked_volumes(spect, density, dvk)
    spacing_mm = tuple(float(s) for s in spacing_mm)
    if len(spacing_mm) != 3 or min(spacing_mm) <= 0:
        raise ValueError(f"spacing_mm must be three positive (z, y, x) values in mm, got {spacing_mm}")
    if not card.on_grid(spacing_mm):
        source = weights if weights is not None else "the shipped model"
        if not resample:
            raise ValueError(
                f"volume spacing {spacing_mm} mm (z, y, x) does not match the grid {card.spacing_mm} mm of the model "
                f"card ({source}); resample the volume to that grid or pass resample=True"
            )
        return _predict_resampled(model, card, spect, density, dvk, spacing_mm, device, batch_size)
    return _predict(model, card, spect, density, dvk, device, batch_size)


def _checked_volumes(spect, density, dvk) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    arrays = {}
    for name, a in (("spect", spect), ("density", density), ("dvk", dvk)):
        a = np.asarray(a, dtype=np.float32)
        if a.ndim != 3:
            raise ValueError(f"{name} must be a (z, y, x) volume, got shape {a.shape}")
        if not np.isfinite(a).all():
            raise ValueError(f"{name} holds {int((~np.isfinite(a)).sum())} NaN or infinite voxels")
        arrays[name] = a
    shapes = {n: a.shape for n, a in arrays.items()}
    if len(set(shapes.values())) != 1:
        raise ValueError(f"spect, density and dvk must share one grid, got shapes {shapes}")
    if (arrays["spect"] < 0).any():
        raise ValueError(f"spect holds {int((arrays['spect'] < 0).sum())} negative voxels; activity cannot be negative")
    if min(arrays["spect"].shape[1:]) < 16:
        raise ValueError(f"in-plane size {arrays['spect'].shape[1:]} is below the network's minimum of 16 voxels")
    return arrays["spect"], arrays["density"], arrays["dvk"]


def _predict(model, card: ModelCard, spect, density, dvk, device, batch_size: int | None) -> np.ndarray:
    total_bq = float(spect.sum(dtype=np.float64))
    dose_rate = np.zeros(spect.shape, dtype=np.float32)
    if total_bq == 0.0:
        return dose_rate  # no activity, no dose
    device = resolve_device(device)
    if batch_size is None:
        batch_size = 16 if device.type == "cuda" else 1
    model = for_inference(model).to(device)  # BatchNorm folded into the convolutions: the same function, faster
    spect_n = torch.from_numpy(spect / total_bq * card.spect_scale).to(device)
    density_t = torch.from_numpy(density).to(device)
    prior_n = torch.from_numpy(dvk / total_bq * card.dose_rate_scale).to(device)
    to_gy_s = total_bq / card.dose_rate_scale
    n_slices = spect.shape[0]
    first_conv = _FirstConvolution(model.depth_features[0], (spect_n, density_t), card.pack_depth)
    with torch.inference_mode(), _mixed_precision(device):
        for start in range(0, n_slices, batch_size):
            centres = np.arange(start, min(start + batch_size, n_slices))
            features = model.depth_features.after_first_conv(first_conv(start, len(centres)))
            centre = torch.from_numpy(centres).to(device)
            out = model.residual(features, prior_n[centre].unsqueeze(1)).float().squeeze(1)
            out = out.clamp_min(0) * (density_t[centre] > card.density_threshold_g_cm3)
            dose_rate[start : start + len(centres)] = (out * to_gy_s).cpu().numpy()
    if not np.isfinite(dose_rate).all():  # the inputs were checked finite: the network overflowed
        raise FloatingPointError(
            f"the CNN's output is NaN or infinite in {int((~np.isfinite(dose_rate)).sum())} voxels on {device} "
            f"(autocast {AUTOCAST_DTYPE} on CUDA): inputs far outside the training range?"
        )
    return dose_rate


def _mixed_precision(device: torch.device):
    """The autocast context of inference: ``AUTOCAST_DTYPE`` on CUDA, none on the CPU, where float32 is faster."""
    if device.type != "cuda":
        return contextlib.nullcontext()
    return torch.autocast("cuda", dtype=AUTOCAST_DTYPE)


class _FirstConvolution:
    """The network's first convolution for runs of consecutive packs of one volume, computing once what
    neighbouring packs share.

    Pack ``z`` holds slices ``z .. z + depth - 1`` of the volume replicate-padded by ``depth // 2`` slices at each
    end (as ``cohort_dosimetry.model.pack_indices`` builds packs). The convolution has depth kernel 5 and zero depth
    padding 1, so of its ``depth - 2`` outputs the inner ones see pack slices only: output ``d`` is ``V[z + d - 1]``,
    with ``V[j]`` the unpadded convolution of padded slices ``j .. j + 4``, the same in every pack that holds it. The
    two end outputs see the zero pad and are the pack's own: taps 1..4 on its first 4 slices, taps 0..3 on its last
    4. ``V`` is kept for the slices the current packs need, so packs taken in order compute one new ``V`` slice each
    plus their two end outputs: about 2.6 output slices of work per pack instead of 9, the same values to float
    rounding (another summation order). Each output slice is one 2D convolution whose input channels are the
    (channel, depth) pairs of its slices, the fastest form on the CPU (bench/cnn.py).
    """

    def __init__(self, conv: torch.nn.Conv3d, planes, pack_depth: int) -> None:
        if conv.kernel_size[0] != 5 or conv.padding[0] != 1 or pack_depth < 6:
            raise ValueError(f"first convolution {conv} or pack depth {pack_depth} is not the published design")
        self.weight, self.bias, self.pack_depth = conv.weight, conv.bias, pack_depth
        self.padding = conv.padding[1:]
        self.planes = tuple(planes)  # the (z, y, x) input channels: normalised SPECT, density
        n, half = self.planes[0].shape[0], pack_depth // 2
        self.padded = torch.from_numpy(np.clip(np.arange(n + 2 * half) - half, 0, n - 1)).to(self.planes[0].device)
        self.shared: dict[int, torch.Tensor] = {}  # V[j] (8, y, x)

    def _slices(self, starts: torch.Tensor, taps: range) -> torch.Tensor:
        """(len(starts), 8, y, x): the kernel's depth ``taps`` on padded slices ``start .. start + len(taps) - 1``."""
        index = self.padded[starts[:, None] + torch.arange(len(taps), device=starts.device)]  # (B, taps)
        x = torch.stack([plane[index] for plane in self.planes], dim=1)  # (B, 2, taps, y, x)
        x = x.reshape(x.shape[0], -1, *x.shape[-2:]).contiguous(memory_format=torch.channels_last)
        w = self.weight[:, :, taps.start : taps.stop].reshape(self.weight.shape[0], -1, *self.weight.shape[-2:])
        return torch.nn.functional.conv2d(x, w, self.bias, padding=self.padding)

    def __call__(self, first: int, count: int) -> torch.Tensor:
        """(count, 8, depth - 2, y, x), channels-last: the first convolution of packs ``first .. first + count - 1``
        (packs are best taken in increasing order: V slices before ``first`` are dropped)."""
        inner = self.pack_depth - 4  # inner outputs per pack: V[z .. z + inner - 1]
        device = self.padded.device
        for j in [j for j in self.shared if j < first]:
            del self.shared[j]
        missing = [j for j in range(first, first + count - 1 + inner) if j not in self.shared]
        if missing:
            for j, v in zip(missing, self._slices(torch.tensor(missing, device=device), range(0, 5))):
                self.shared[j] = v
        starts = torch.arange(first, first + count, device=device)
        head = self._slices(starts, range(1, 5))
        out = torch.empty(
            (count, head.shape[1], inner + 2, *head.shape[-2:]),
            dtype=head.dtype,
            device=device,
            memory_format=torch.channels_last_3d,
        )
        out[:, :, 0] = head
        out[:, :, -1] = self._slices(starts + self.pack_depth - 4, range(0, 4))
        for b in range(count):
            for k in range(inner):
                out[b, :, 1 + k] = self.shared[first + b + k]
        return out


def _predict_resampled(model, card, spect, density, dvk, spacing_mm, device, batch_size) -> np.ndarray:
    voxel_ml = float(np.prod(spacing_mm)) / 1000.0
    card_voxel_ml = float(np.prod(card.spacing_mm)) / 1000.0
    shape_in = spect.shape
    shape_card = tuple(max(1, int(round(n * s / c))) for n, s, c in zip(shape_in, spacing_mm, card.spacing_mm))
    # activity is resampled as a concentration (Bq/mL) and turned back into Bq per voxel of the card's grid
    spect_card = _resample(spect / voxel_ml, spacing_mm, shape_card, card.spacing_mm) * card_voxel_ml
    density_card = _resample(density, spacing_mm, shape_card, card.spacing_mm)
    dvk_card = _resample(dvk, spacing_mm, shape_card, card.spacing_mm)
    dose_card = _predict(model, card, np.maximum(spect_card, 0), density_card, dvk_card, device, batch_size)
    dose = _resample(dose_card, card.spacing_mm, shape_in, spacing_mm)
    return np.where(density > card.density_threshold_g_cm3, np.maximum(dose, 0), 0).astype(np.float32)


def _resample(volume, spacing_mm, shape_out, spacing_out_mm) -> np.ndarray:
    """Linear resampling of a (z, y, x) volume between two grids sharing their outer corner (voxel edges aligned)."""
    image = sitk.GetImageFromArray(np.asarray(volume, dtype=np.float32))
    image.SetSpacing(tuple(float(s) for s in spacing_mm[::-1]))
    image.SetOrigin((0.0, 0.0, 0.0))
    origin_out = tuple((so - si) / 2.0 for so, si in zip(spacing_out_mm[::-1], spacing_mm[::-1]))
    resampled = sitk.Resample(
        image,
        [int(n) for n in shape_out[::-1]],
        sitk.Transform(),
        sitk.sitkLinear,
        origin_out,
        tuple(float(s) for s in spacing_out_mm[::-1]),
        image.GetDirection(),
        0.0,
        sitk.sitkFloat32,
        True,  # nearest-neighbour extrapolation for the half voxel at the border
    )
    return sitk.GetArrayFromImage(resampled)
