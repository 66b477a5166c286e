"""The simulated Lu-177 SPECT acquisition shared by both SPECT models: camera, protocol and attenuation.

Camera: dual-head, medium-energy parallel-hole collimator, 20 % window on the 208.37 keV photopeak (Li et al.,
Med Phys 49:1216, 2022), 120 views (60 per head) over 360 degrees on a circular orbit, step-and-shoot, as in the
MRTDosimetry multi-centre Lu-177 protocol (Tran-Gia et al., EJNMMI Phys 8:55, 2021, Table 2). Only primary photons
are simulated: the reconstruction corresponds to an ideally scatter-corrected acquisition.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Lu-177 photopeak imaged, keV (ICRP-107; docs/physics.md).
PHOTOPEAK_KEV = 208.37

#: Planar sensitivity of one head for 208 keV primary photons, counts per second per MBq in air, medium-energy
#: collimator, 20 % window. Assumed: the order of the calibration factors reported for Lu-177 with medium-energy
#: collimators (about 5-10 cps/MBq per head, e.g. the MRTDosimetry multi-centre study, Tran-Gia et al. 2021);
#: together with the view time it sets the count level (about 20 M counts early, a few M at day 7).
SENSITIVITY_CPS_PER_MBQ = 9.0

#: Collimator from PyTomography's collimator table (the SIMIND database): Siemens Symbia medium-energy (``SY-ME``):
#: hole diameter 0.294 cm, septa 0.114 cm, hole length 4.064 cm. Intrinsic resolution 3.8 mm FWHM at 140 keV
#: (Symbia NaI(Tl) 3/8", manufacturer specification), scaled to 208 keV as E^-1/2 by PyTomography.
COLLIMATOR = "SY-ME"
INTRINSIC_FWHM_140KEV_CM = 0.38

#: Acquisition protocol: 120 views over 360 degrees, 30 s per view, radius of rotation 25 cm. With the sensitivity
#: above, compact virtual patients give about 16-23 M counts at 4 h and 2-4 M at 168 h (Li et al. 2022: 3-20 M).
N_VIEWS = 120
SECONDS_PER_VIEW = 30.0
ORBIT_RADIUS_CM = 25.0

#: SPECT reconstruction voxel, mm (Li et al. 2022: 128x128x81 at 4.8 mm).
SPECT_VOXEL_MM = 4.8

#: OSEM of the realistic model (Li et al. 2022: 4 subsets x 16 iterations).
OSEM_SUBSETS = 4
OSEM_ITERATIONS = 16


@dataclass(frozen=True)
class Acquisition:
    """One SPECT acquisition and reconstruction protocol; the defaults are the module constants (coarser voxels,
    fewer views and iterations only for quick tests)."""

    n_views: int = N_VIEWS
    seconds_per_view: float = SECONDS_PER_VIEW
    sensitivity_cps_per_mbq: float = SENSITIVITY_CPS_PER_MBQ
    orbit_radius_cm: float = ORBIT_RADIUS_CM
    osem_iterations: int = OSEM_ITERATIONS
    osem_subsets: int = OSEM_SUBSETS
    voxel_mm: float = SPECT_VOXEL_MM

    @property
    def counts_per_bq(self) -> float:
        """Counts per Bq of unattenuated activity over the whole acquisition, summed over views."""
        return self.sensitivity_cps_per_mbq * 1e-6 * self.seconds_per_view * self.n_views


def mu_208kev_per_cm(density_g_cm3: np.ndarray) -> np.ndarray:
    """Linear attenuation coefficient at 208.37 keV (1/cm) from mass density (g/cm3), float32, same shape.

    Water-equivalent: mu = rho * (mu/rho)_water(208.37 keV); (mu/rho)_water = 0.1351 cm2/g from xraydb (matches NIST
    XCOM, 0.1350 cm2/g; docs/physics.md). Bone differs from water by about 2 % at this energy.
    """
    import xraydb

    mass_attenuation = xraydb.material_mu("H2O", PHOTOPEAK_KEV * 1000.0, density=1.0)
    return (np.asarray(density_g_cm3, dtype=np.float32) * np.float32(mass_attenuation)).astype(np.float32)


def mean_transmission(mu_per_cm: np.ndarray, spacing_mm) -> np.ndarray:
    """Fraction of 208 keV photons from each voxel that leave the body, averaged over the four views along +-x, +-y.

    A cheap stand-in for the average over all camera angles, used by the fast model to set its count level.
    Input and output (z, y, x); spacing (z, y, x) mm.
    """
    dy, dx = spacing_mm[1] / 10.0, spacing_mm[2] / 10.0
    out = np.zeros(mu_per_cm.shape, dtype=np.float64)
    for axis, step in ((1, dy), (2, dx)):
        cumulative = np.cumsum(mu_per_cm, axis=axis, dtype=np.float64) * step
        through = np.take(cumulative, [-1], axis=axis)
        half = mu_per_cm * step / 2.0
        out += np.exp(-(cumulative - half)) + np.exp(-(through - cumulative + half))
    return (out / 4.0).astype(np.float32)
