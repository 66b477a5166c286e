"""CT number (HU) to mass density (g/cm3).

Default curve: Li et al., DblurDoseNet, Med Phys 49:1216 (2022), fitted to a 16-rod calibration phantom:

    rho = 0.00108 * HU + 1.02351   for HU <= 0
    rho = 0.00069 * HU + 1.03107   for HU >  0          (g/cm3)

The published lower line reaches zero at about -948 HU and goes negative below it, which would give a negative
density (and a division by zero or a sign flip in the DVK's 1.04/rho scaling) for air. We clamp the result at the
density of dry air at 20 C, 0.0012 g/cm3 (NIST), because that is what the scanner is actually imaging there.
The DVK zeroes its output wherever rho < 0.1 g/cm3, so the clamp only changes which small positive number air gets;
the Monte Carlo engine treats anything below 0.1 g/cm3 as air.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Density of dry air at 20 C and 101.325 kPa, g/cm3 (NIST). Lower bound of every curve.
AIR_DENSITY_G_CM3 = 0.0012


@dataclass(frozen=True)
class DensityCurve:
    """A piecewise-linear HU -> g/cm3 calibration: ``rho = slope[i] * HU + intercept[i]`` on segment i.

    ``breaks_hu`` are the upper HU bounds of every segment but the last (a segment includes its upper bound).
    Sites calibrate their own scanner: build one of these from their phantom fit.
    """

    breaks_hu: tuple[float, ...]
    slopes: tuple[float, ...]
    intercepts: tuple[float, ...]
    source: str = ""

    def __post_init__(self) -> None:
        if not (len(self.slopes) == len(self.intercepts) == len(self.breaks_hu) + 1):
            raise ValueError("a DensityCurve needs one more slope/intercept than break points")
        if list(self.breaks_hu) != sorted(self.breaks_hu):
            raise ValueError(f"break points must be increasing, got {self.breaks_hu}")


#: Li et al. (2022) bilinear fit, the default.
LI_2022 = DensityCurve(
    breaks_hu=(0.0,),
    slopes=(0.00108, 0.00069),
    intercepts=(1.02351, 1.03107),
    source="Li et al., Med Phys 49:1216 (2022), 16-rod CT calibration phantom",
)


def hu_to_density(hu, curve: DensityCurve = LI_2022) -> np.ndarray:
    """Mass density in g/cm3 from CT numbers.

    Parameters
    ----------
    hu : array_like, any shape (volumes are (z, y, x)), Hounsfield units.
    curve : the calibration; default :data:`LI_2022`.

    Returns
    -------
    float32 array of the same shape, g/cm3, never below :data:`AIR_DENSITY_G_CM3` (see module docstring).
    NaN in gives NaN out: callers validate their inputs, this function does not invent tissue.
    """
    hu = np.asarray(hu, dtype=np.float32)
    segment = np.searchsorted(np.asarray(curve.breaks_hu, dtype=np.float32), hu, side="left")
    slope = np.asarray(curve.slopes, dtype=np.float32)[segment]
    intercept = np.asarray(curve.intercepts, dtype=np.float32)[segment]
    rho = slope * hu + intercept
    return np.where(np.isnan(rho), rho, np.maximum(rho, np.float32(AIR_DENSITY_G_CM3))).astype(np.float32)
