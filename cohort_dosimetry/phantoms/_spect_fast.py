"""The fast SPECT model: Gaussian resolution loss plus spatially correlated, activity-dependent noise, calibrated
against the realistic PyTomography model (see :mod:`._calibration` and ``fast_spect_calibration.json``).

    reconstructed = B(a) + sigma * n,      sigma(v) = kappa * B(a)(v) * (m / B(a)(v))^p / sqrt(N / V)

``B`` is a normalised 3-D Gaussian blur of FWHM ``resolution_fwhm_mm`` (collimator-detector response, OSEM
convergence and the 4.8 mm SPECT voxel together); ``n`` is white Gaussian noise smoothed by a Gaussian of FWHM
``noise_fwhm_mm`` and rescaled to unit variance; ``N`` the total counts of the scan, ``V`` the volume (mL) of the body
(density > 0.1 g/cm3), ``m`` the mean of ``B(a)`` over the body. ``kappa`` and ``p`` come from the calibration.
Values are clamped at 0 like OSEM's. Everything runs in torch on the chosen device.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources

import numpy as np
import torch

from cohort_dosimetry.physics import resolve_device

_CALIBRATION_FILE = "fast_spect_calibration.json"

#: Voxels below this density are outside the body (the DVK's threshold, Li et al. 2022).
BODY_DENSITY_G_CM3 = 0.1

_FWHM_PER_SIGMA = 2.0 * np.sqrt(2.0 * np.log(2.0))


@dataclass(frozen=True)
class FastModelCalibration:
    """Constants of the fast model (all measured against PyTomography by :func:`calibrate_fast_model`)."""

    resolution_fwhm_mm: float
    noise_fwhm_mm: float
    noise_kappa: float
    noise_power: float

    @classmethod
    def stored(cls) -> FastModelCalibration:
        """The calibration shipped with the package (``fast_spect_calibration.json``)."""
        text = resources.files("cohort_dosimetry.phantoms").joinpath(_CALIBRATION_FILE).read_text()
        constants = json.loads(text)["constants"]
        return cls(**{name: float(constants[name]) for name in cls.__dataclass_fields__})


def gaussian_blur(volume: torch.Tensor, fwhm_mm: float, spacing_mm) -> torch.Tensor:
    """Separable 3-D Gaussian blur of a (z, y, x) tensor; kernel normalised to sum 1 (conserves the total inside).

    Zero padding: activity blurred across the volume border leaves it (the body lies well inside the CT field).
    """
    out = volume[None, None]
    for axis, step in enumerate(spacing_mm):
        sigma = fwhm_mm / _FWHM_PER_SIGMA / step
        half = max(1, int(np.ceil(3.5 * sigma)))
        offsets = torch.arange(-half, half + 1, device=volume.device, dtype=volume.dtype)
        kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
        kernel = kernel / kernel.sum()
        shape = [1, 1, 1, 1, 1]
        shape[2 + axis] = kernel.numel()
        padding = [0, 0, 0]
        padding[axis] = half
        out = torch.nn.functional.conv3d(out, kernel.reshape(shape), padding=tuple(padding))
    return out[0, 0]


def correlated_noise(shape, fwhm_mm: float, spacing_mm, generator: torch.Generator, device) -> torch.Tensor:
    """Zero-mean, unit-variance Gaussian noise (z, y, x) with Gaussian spatial correlation (smoothing FWHM in mm)."""
    white = torch.randn(tuple(shape), generator=generator, device=device, dtype=torch.float32)
    smooth = gaussian_blur(white, fwhm_mm, spacing_mm)
    # variance of white noise after a normalised kernel: product over axes of sum(kernel^2)
    norm = 1.0
    for step in spacing_mm:
        sigma = fwhm_mm / _FWHM_PER_SIGMA / step
        half = max(1, int(np.ceil(3.5 * sigma)))
        k = np.exp(-0.5 * (np.arange(-half, half + 1) / sigma) ** 2)
        k /= k.sum()
        norm *= float((k**2).sum())
    return smooth / np.sqrt(norm)


def reconstruct_fast(
    activity_bq_ml: np.ndarray,
    density: np.ndarray,
    spacing_mm,
    counts,
    seed: int = 0,
    realisations: int = 1,
    calibration: FastModelCalibration | None = None,
    device=None,
) -> np.ndarray:
    """The fast model's reconstructed SPECT of each time point.

    Parameters
    ----------
    activity_bq_ml : (timepoint, z, y, x) true activity concentration, Bq/mL.
    density : (z, y, x) g/cm3 (defines the body volume of the noise level).
    spacing_mm : (z, y, x) mm.
    counts : (timepoint,) total counts of each scan.
    seed, realisations : noise realisation r of time point t uses ``scan_seed(seed, r, t)``.
    calibration : None = the stored calibration.
    device : torch device (None: CUDA when available).

    Returns
    -------
    (realisation, timepoint, z, y, x) float32, Bq/mL.
    """
    from ._spect_pytomography import scan_seed

    device = resolve_device(device)
    calibration = calibration or FastModelCalibration.stored()
    activity = np.asarray(activity_bq_ml, dtype=np.float32)
    counts = np.asarray(counts, dtype=np.float64)
    body = torch.from_numpy(np.asarray(density) > BODY_DENSITY_G_CM3).to(device)
    body_ml = float(body.sum()) * float(np.prod(spacing_mm)) / 1000.0
    out = np.zeros((realisations,) + activity.shape, dtype=np.float32)
    for t in range(activity.shape[0]):
        blurred = gaussian_blur(torch.from_numpy(activity[t]).to(device), calibration.resolution_fwhm_mm, spacing_mm)
        body_mean = blurred[body].mean().clamp_min(1e-30)
        local = blurred.clamp_min(1e-6 * float(body_mean))
        sigma = (
            calibration.noise_kappa
            * local
            * (body_mean / local) ** calibration.noise_power
            / np.sqrt(counts[t] / body_ml)
        )
        for r in range(realisations):
            generator = torch.Generator(device=device).manual_seed(scan_seed(seed, r, t))
            noise = correlated_noise(blurred.shape, calibration.noise_fwhm_mm, spacing_mm, generator, device)
            out[r, t] = (blurred + sigma * noise).clamp_min(0.0).cpu().numpy()
    return out
