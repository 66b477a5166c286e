"""Physics: nuclide data, CT density calibration, the Monte Carlo engine, dose voxel kernels and the DVK method."""
from cohort_dosimetry.physics._density import AIR_DENSITY_G_CM3, LI_2022, DensityCurve, hu_to_density

__all__ = ["AIR_DENSITY_G_CM3", "LI_2022", "DensityCurve", "hu_to_density"]
