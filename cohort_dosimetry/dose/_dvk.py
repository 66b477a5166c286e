"""DVK: the dose voxel kernel method (FFT convolution of the activity with a voxel kernel, scaled by 1.04/rho)."""

from __future__ import annotations

import functools
import hashlib

import numpy as np

from cohort_dosimetry import physics
from cohort_dosimetry.constants import DOSE_NUCLIDE

from ._registry import DoseInputs, DoseMethod, Maps, register


def dvk_map(inputs: DoseInputs) -> np.ndarray:
    """The DVK map (z, y, x) float32 Gy/s of ``inputs``, computed once and kept on them."""
    if inputs.dvk is None:
        inputs.dvk = physics.dose_rate_dvk(
            inputs.activity_bq, inputs.density, inputs.spacing_mm, nuclide=DOSE_NUCLIDE, device=inputs.device
        )
    return inputs.dvk


def _compute(inputs: DoseInputs) -> Maps:
    return {"dose_rate_dvk": (dvk_map(inputs), {"long_name": "dose-rate, dose voxel kernel convolution"})}


@functools.lru_cache(maxsize=16)
def kernel_sha256(spacing_mm: tuple[float, ...], nuclide: str = DOSE_NUCLIDE) -> str:
    """sha256 of the float32 bytes of the kernel ``physics.dose_rate_dvk`` convolves a grid of ``spacing_mm`` with."""
    kernel = physics.voxel_kernel(nuclide, spacing_mm, physics.default_kernel_shape(spacing_mm), kind="total")
    return hashlib.sha256(kernel.astype("float32", copy=False).tobytes()).hexdigest()


def _settings(spacing_mm, **_) -> dict:
    return {"nuclide": DOSE_NUCLIDE, "kernel_sha256": kernel_sha256(tuple(float(s) for s in spacing_mm))}


DVK = register(DoseMethod("dvk", ("dose_rate_dvk",), _compute, _settings))
