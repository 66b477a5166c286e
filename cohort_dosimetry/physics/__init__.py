"""Physics: nuclide data, CT density calibration, the Monte Carlo engine, dose voxel kernels and the DVK method.

Public names are resolved lazily from the private modules that define them, so importing one part (say
``hu_to_density``) does not pay for torch start-up of another.
"""
from __future__ import annotations

from cohort_dosimetry._lazy import lazy_exports

_PUBLIC = {
    "AIR_DENSITY_G_CM3": "_density",
    "LI_2022": "_density",
    "DensityCurve": "_density",
    "hu_to_density": "_density",
    "resolve_device": "_device",
    "Nuclide": "_nuclide",
    "nuclide": "_nuclide",
    "MCResult": "_montecarlo",
    "ENGINE_VERSION": "_montecarlo",
    "run_monte_carlo": "_montecarlo",
    "dose_rate_mc": "_montecarlo",
    "voxel_kernel": "_kernels",
    "default_kernel_shape": "_kernels",
    "load_kernel_npy_pair": "_kernels",
    "load_kernel_octant_text": "_kernels",
    "dose_rate_dvk": "_dvk",
}

__getattr__, __all__ = lazy_exports(__name__, _PUBLIC)
