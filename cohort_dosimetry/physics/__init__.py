"""Physics: nuclide data, CT density calibration, the Monte Carlo engine, dose voxel kernels and the DVK method."""

from cohort_dosimetry.physics._density import AIR_DENSITY_G_CM3, LI_2022, DensityCurve, hu_to_density
from cohort_dosimetry.physics._device import resolve_device
from cohort_dosimetry.physics._dvk import dose_rate_dvk
from cohort_dosimetry.physics._kernels import (
    default_kernel_shape,
    generate_kernel,
    load_kernel_npy_pair,
    load_kernel_octant_text,
    shipped_kernels,
    voxel_kernel,
)
from cohort_dosimetry.physics._montecarlo import ENGINE_VERSION, MCResult, dose_rate_mc, run_monte_carlo
from cohort_dosimetry.physics._nuclide import Nuclide, available_nuclides, nuclide

__all__ = [
    "generate_kernel",
    "shipped_kernels",
    "available_nuclides",
    "AIR_DENSITY_G_CM3",
    "DensityCurve",
    "ENGINE_VERSION",
    "LI_2022",
    "MCResult",
    "Nuclide",
    "default_kernel_shape",
    "dose_rate_dvk",
    "dose_rate_mc",
    "hu_to_density",
    "load_kernel_npy_pair",
    "load_kernel_octant_text",
    "nuclide",
    "resolve_device",
    "run_monte_carlo",
    "voxel_kernel",
]
