"""Dose-rate by dose voxel kernel (DVK) convolution with density scaling.

The method of Li et al., Med Phys 49:1216 (2022): convolve the activity map (Bq per voxel) with a soft-tissue voxel
S-value kernel, then scale by ``1.04 / rho`` (the kernel's medium is soft tissue of 1.04 g/cm3; in a homogeneous
medium of another density the energy absorbed per voxel is about the same, the voxel mass is not) and set the
dose-rate to zero where ``rho < 0.1 g/cm3`` (air: no tissue to dose).

Known limit, bone: the 1.04/rho scaling holds for energy absorbed where it is released (the betas), not for photons,
whose energy absorbed per gram of cortical bone is 1.5-5 times soft tissue's at Lu-177's scattered photons and Hf K
x-rays (55-113 keV; mu_en/rho of the transport materials). For the same activity the Monte Carlo engine gives 15-30 %
more dose-rate than this method in the lumbar vertebrae of virtual patients, where photons carry 20-36 % of it, and
agrees within 1.5 % in liver, kidneys, spleen and lesions (docs/physics.md, "DVK against Monte Carlo in bone").

The convolution is linear (zero padding: activity outside the volume is zero, nothing wraps around) and done with
real FFTs in torch on the CPU or on CUDA. For a "same"-size linear convolution with a kernel of half-width ``c`` it is
enough to pad each axis to ``n + c`` (not ``n + 2c``): circular aliasing then only reaches outputs outside the
volume. The kernel's spectrum (already multiplied by 1.04 g/cm3 and the mGy/(MBq s) -> Gy/(Bq s) factor, so that
the dose-rate is the convolution divided by rho) is cached per (FFT shape, kernel, device), and so is one workspace
(the padded real volume and its half-spectrum), reused by every call of that FFT shape under a lock: a fresh 240 MB
buffer costs its page faults on every call, about a quarter of the run time on the CPU. Memory for a 512x512x130
volume with a 99^3 kernel: the workspace and each cached spectrum are float32-sized buffers of 180x576x576 (about
240 MB each), the output and the density 136 MB each, so no chunking is needed.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict

import numpy as np
import scipy.fft
import torch

from cohort_dosimetry.constants import KERNEL_TISSUE_DENSITY_G_CM3

from ._device import resolve_device

#: Below this density a voxel is air and gets zero dose-rate (Li et al. 2022).
AIR_CUT_DENSITY_G_CM3 = 0.1
#: mGy/(MBq s) -> Gy/(Bq s): 1e-3 Gy / 1e6 Bq.
_GY_PER_BQ_S_PER_MGY_PER_MBQ_S = 1e-9

# Kernel spectra are large (one complex half-spectrum of the padded volume): keep only the most recent few.
_SPECTRUM_CACHE_SIZE = 2
_spectrum_cache: OrderedDict[tuple, torch.Tensor] = OrderedDict()
_spectrum_lock = threading.Lock()
# One FFT workspace (padded real volume, half-spectrum) for the most recent (FFT shape, device); the lock is held
# for the whole convolution, so concurrent calls take turns (each would use every core anyway).
_workspace: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}
_workspace_lock = threading.Lock()
#: Factor that turns the convolution with a kernel in mGy/(MBq s) into a dose-rate in Gy/s once divided by rho.
_SPECTRUM_SCALE = KERNEL_TISSUE_DENSITY_G_CM3 * _GY_PER_BQ_S_PER_MGY_PER_MBQ_S


def dose_rate_dvk(activity_bq, density, spacing_mm, nuclide: str = "Lu177", device=None, kernel=None) -> np.ndarray:
    """Dose-rate map by kernel convolution and density scaling.

    Parameters
    ----------
    activity_bq : array_like (z, y, x), Bq per voxel, finite and >= 0.
    density : array_like (z, y, x), mass density in g/cm3, finite and >= 0.
    spacing_mm : (z, y, x) voxel size in mm.
    nuclide : nuclide name, used to build the default kernel.
    device : torch device for the FFTs (None: CUDA if available, else CPU).
    kernel : array_like (kz, ky, kx) in mGy/(MBq s) on the grid ``spacing_mm``, odd shape, source voxel at the
        centre, or None for ``voxel_kernel(nuclide, spacing_mm, default_kernel_shape(spacing_mm), "total")``.
        A kernel larger than ``2 n - 1`` along an axis is cropped to that (the rest cannot reach the volume).

    Returns
    -------
    float32 numpy array (z, y, x), Gy/s.
    """
    activity = _as_volume(activity_bq, "activity_bq")
    rho = _as_volume(density, "density")
    if activity.shape != rho.shape:
        raise ValueError(
            f"activity_bq has shape {activity.shape} but density has shape {rho.shape}; "
            "both must be on the same (z, y, x) grid"
        )
    spacing = _check_spacing(spacing_mm)
    _check_finite_nonnegative(activity, "activity_bq", "Bq per voxel")
    _check_finite_nonnegative(rho, "density", "g/cm3")
    if kernel is None:
        from ._kernels import default_kernel_shape, voxel_kernel

        kernel = voxel_kernel(nuclide, spacing, default_kernel_shape(spacing), kind="total")
    kernel = _check_kernel(kernel)

    dev = resolve_device(device)
    with torch.no_grad():
        rho_t = torch.from_numpy(rho).to(dev)
        # dose = conv / rho in tissue; air (rho < 0.1 g/cm3) divides by inf and gets 0
        rho_eff = torch.where(rho_t >= AIR_CUT_DENSITY_G_CM3, rho_t, torch.inf)
        del rho_t
        dose = torch.empty(activity.shape, dtype=torch.float32, device=dev)
        with _workspace_lock:
            real, spectrum_buffer, fft_shape, kernel = _workspace_for(activity.shape, kernel, dev)
            nz, ny, nx = activity.shape
            # zero the padding (the previous call left its result there), then copy the volume in
            real[nz:].zero_()
            real[:nz, ny:].zero_()
            real[:nz, :ny, nx:].zero_()
            real[:nz, :ny, :nx].copy_(torch.from_numpy(activity))
            torch.fft.rfftn(real, out=spectrum_buffer)
            spectrum_buffer.mul_(_kernel_spectrum(kernel, fft_shape, dev))
            torch.fft.irfftn(spectrum_buffer, s=fft_shape, out=real)
            torch.div(real[:nz, :ny, :nx], rho_eff, out=dose)  # crop and scale in one pass
        # FFT round-off leaves values of order 1e-7 x max (positive or negative) where the exact result is 0.
        dose.clamp_(min=0.0)
        return dose.cpu().numpy()


def _workspace_for(shape: tuple[int, int, int], kernel: np.ndarray, device: torch.device):
    """(padded real buffer, half-spectrum buffer, FFT shape, cropped kernel) for a "same"-size linear convolution of
    a ``shape`` volume with ``kernel``; call with ``_workspace_lock`` held.

    The kernel is cropped to at most 2n - 1 per axis (larger offsets never connect two voxels of the volume), and
    each axis is padded to a fast FFT length of at least n + c for a kernel half-width c.
    """
    crop = tuple(
        slice(max(0, (k - (2 * n - 1)) // 2), k - max(0, (k - (2 * n - 1)) // 2)) for k, n in zip(kernel.shape, shape)
    )
    kernel = kernel[crop]
    half = tuple(k // 2 for k in kernel.shape)
    fft_shape = tuple(scipy.fft.next_fast_len(n + c, real=True) for n, c in zip(shape, half))
    key = (fft_shape, str(device))
    if key not in _workspace:
        _workspace.clear()  # keep only the latest shape's buffers
        real = torch.empty(fft_shape, dtype=torch.float32, device=device)
        spectrum = torch.empty((*fft_shape[:-1], fft_shape[-1] // 2 + 1), dtype=torch.complex64, device=device)
        _workspace[key] = (real, spectrum)
    return (*_workspace[key], fft_shape, kernel)


def _kernel_spectrum(kernel: np.ndarray, fft_shape: tuple[int, int, int], device: torch.device) -> torch.Tensor:
    """rfftn of the kernel placed with its centre voxel at index (0, 0, 0) (negative offsets wrap to the end),
    times ``_SPECTRUM_SCALE``."""
    key = (hashlib.sha1(kernel.tobytes()).hexdigest(), kernel.shape, fft_shape, str(device))
    with _spectrum_lock:
        if key in _spectrum_cache:
            _spectrum_cache.move_to_end(key)
            return _spectrum_cache[key]
    wrapped = torch.zeros(fft_shape, dtype=torch.float32, device=device)
    # Kernel voxel i along an axis is the offset d = i - c; it goes to index d mod N. N >= n + c > 2c, so no
    # two offsets collide.
    idx = [((torch.arange(k) - k // 2) % n).to(device) for k, n in zip(kernel.shape, fft_shape)]
    wrapped[idx[0][:, None, None], idx[1][None, :, None], idx[2][None, None, :]] = torch.from_numpy(kernel).to(device)
    spectrum = torch.fft.rfftn(wrapped, s=fft_shape).mul_(_SPECTRUM_SCALE)
    del wrapped
    with _spectrum_lock:
        _spectrum_cache[key] = spectrum
        while len(_spectrum_cache) > _SPECTRUM_CACHE_SIZE:
            _spectrum_cache.popitem(last=False)
    return spectrum


def _as_volume(array, name: str) -> np.ndarray:
    volume = np.asarray(array)
    if volume.ndim != 3:
        raise ValueError(f"{name} must be a 3-D (z, y, x) array, got shape {volume.shape}")
    if not (np.issubdtype(volume.dtype, np.floating) or np.issubdtype(volume.dtype, np.integer)):
        raise TypeError(f"{name} must be numeric, got dtype {volume.dtype}")
    return np.ascontiguousarray(volume, dtype=np.float32)


def _check_spacing(spacing_mm) -> tuple[float, float, float]:
    spacing = tuple(float(s) for s in np.asarray(spacing_mm, dtype=float).ravel())
    if len(spacing) != 3 or not all(np.isfinite(s) and s > 0 for s in spacing):
        raise ValueError(f"spacing_mm must be three positive finite (z, y, x) sizes in mm, got {spacing_mm!r}")
    return spacing


def _check_finite_nonnegative(volume: np.ndarray, name: str, unit: str) -> None:
    if volume.size:
        low, high = torch.aminmax(torch.from_numpy(volume))  # one threaded pass; NaN propagates and fails both tests
        if bool(low >= 0) and bool(high < torch.inf):
            return
    bad = ~np.isfinite(volume)
    if bad.any():
        where = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ValueError(
            f"{name} has {int(bad.sum())} non-finite (NaN or inf) voxels, the first at (z, y, x) = {where}"
        )
    negative = volume < 0
    if negative.any():
        where = tuple(int(i) for i in np.argwhere(negative)[0])
        raise ValueError(
            f"{name} has {int(negative.sum())} negative voxels, the first at (z, y, x) = {where} "
            f"with {float(volume[where]):.6g} {unit}; it must be >= 0"
        )


def _check_kernel(kernel) -> np.ndarray:
    k = _as_volume(kernel, "kernel")
    if any(s % 2 == 0 for s in k.shape):
        raise ValueError(f"kernel must have an odd size along every axis (source voxel at the centre), got {k.shape}")
    _check_finite_nonnegative(k, "kernel", "mGy/(MBq s)")
    return k
