"""Calibration of the fast SPECT model against the realistic PyTomography model on a sphere phantom.

Phantom: an elliptic water cylinder (semi-axes 140 x 100 mm, longer than the 84 mm axial field) with warm background
and three hot spheres of 4, 16 and 65 mL at 8:1 sphere-to-background concentration (the ratio of the NEMA/IEC-style
recovery
measurements, e.g. Tran-Gia et al. 2021), on a compact-spacing CT grid. Both models see the same count level,
:data:`REFERENCE_COUNTS_PER_ML` counts per mL of body (about what a compact-grid virtual patient gives 4 h post
injection: 20 M counts over 16 L).

Measured with two noise realisations of PyTomography (OSEM 4 subsets x 16 iterations, attenuation, collimator
response): recovery (mean in the sphere / truth) of each sphere from the mean image; the noise image (difference of
the realisations / sqrt 2) gives the relative noise in the background and inside the 65 mL sphere and the neighbour
correlation of the noise along z, y and x. The fast model's constants are then fitted: resolution FWHM (least
maximum recovery difference), noise power p and kappa (relative noise in background and sphere), noise FWHM
(neighbour correlation along x). The stored calibration was measured with 60 views instead of the protocol's 120 to fit
the CPU budget here (about half an hour on 2 shared cores); ``bench/calibrate_fast_spect.py`` re-measures it with any
number of views, and the JSON records the settings used.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from pathlib import Path

import numpy as np
import torch

from cohort_dosimetry.constants import COMPACT_SPACING_MM
from cohort_dosimetry.grid import Grid

from ._spect_acquisition import Acquisition
from ._spect_fast import BODY_DENSITY_G_CM3, FastModelCalibration, correlated_noise, gaussian_blur, reconstruct_fast

SPHERE_VOLUMES_ML = (4.0, 16.0, 65.0)
SPHERE_TO_BACKGROUND = 8.0
BACKGROUND_BQ_ML = 1.0e5
REFERENCE_COUNTS_PER_ML = 1250.0
CALIBRATION_GRID = Grid((28, 80, 80), COMPACT_SPACING_MM)

# sphere centres (z, y, x) mm: in the central plane, 55 mm or more apart edge to edge
_SPHERE_CENTRES = {4.0: (0.0, 45.0, 25.0), 16.0: (0.0, -35.0, 55.0), 65.0: (0.0, 0.0, -65.0)}


def sphere_phantom(grid: Grid = CALIBRATION_GRID) -> dict:
    """The calibration phantom on ``grid`` (synthetic).

    Returns a dict: ``activity_bq_ml`` (z, y, x) float32 Bq/mL, ``density`` (z, y, x) g/cm3, ``spheres``
    {volume mL: bool mask}, ``sphere_cores`` {volume: mask of the sphere eroded by 8 mm}, ``background`` (bool mask of
    uniform background at least 30 mm from every sphere and 25 mm inside the surface), ``body_ml``.
    """
    z, y, x = (a.astype(np.float32) for a in grid.axes_mm())
    zz, yy, xx = np.meshgrid(z, y, x, indexing="ij")
    body = ((yy / 100.0) ** 2 + (xx / 140.0) ** 2 <= 1.0) & (np.abs(zz) <= 60.0)
    inner = ((yy / 75.0) ** 2 + (xx / 115.0) ** 2 <= 1.0) & (np.abs(zz) <= 35.0)
    activity = np.where(body, BACKGROUND_BQ_ML, 0.0).astype(np.float32)
    spheres, cores = {}, {}
    far = np.ones(grid.shape, bool)
    for volume, centre in _SPHERE_CENTRES.items():
        radius = (3.0 * volume * 1000.0 / (4.0 * np.pi)) ** (1.0 / 3.0)
        distance = np.sqrt((zz - centre[0]) ** 2 + (yy - centre[1]) ** 2 + (xx - centre[2]) ** 2)
        spheres[volume] = distance <= radius
        cores[volume] = distance <= max(radius - 8.0, 0.0)
        far &= distance > radius + 30.0
        activity[spheres[volume]] = SPHERE_TO_BACKGROUND * BACKGROUND_BQ_ML
    density = np.where(body, 1.0, 0.0012).astype(np.float32)
    return {
        "activity_bq_ml": activity,
        "density": density,
        "spheres": spheres,
        "sphere_cores": cores,
        "background": far & inner,
        "body_ml": float(body.sum()) * grid.voxel_volume_ml,
    }


def _neighbour_correlation(noise: np.ndarray, mask: np.ndarray) -> list[float]:
    """Correlation coefficient of noise values one voxel apart along z, y and x, both voxels inside ``mask``."""
    out = []
    for axis in range(3):
        a = np.moveaxis(noise, axis, 0)
        m = np.moveaxis(mask, axis, 0)
        both = m[1:] & m[:-1]
        first, second = a[1:][both], a[:-1][both]
        out.append(float(np.corrcoef(first, second)[0, 1]))
    return out


def measure_recovery_and_noise(realisations: np.ndarray, phantom: dict) -> dict:
    """Recovery of each sphere and noise properties from two or more reconstructions (realisation, z, y, x), Bq/mL."""
    mean = realisations.mean(axis=0)
    noise = (realisations[0] - realisations[1]) / np.sqrt(2.0)
    background = phantom["background"]
    core = phantom["sphere_cores"][max(SPHERE_VOLUMES_ML)]
    return {
        "recovery": {
            str(v): float(mean[m].mean() / (SPHERE_TO_BACKGROUND * BACKGROUND_BQ_ML))
            for v, m in phantom["spheres"].items()
        },
        "background_recovery": float(mean[background].mean() / BACKGROUND_BQ_ML),
        "relative_noise_background": float(noise[background].std() / mean[background].mean()),
        "relative_noise_sphere_65ml": float(noise[core].std() / mean[core].mean()),
        "neighbour_correlation_zyx": _neighbour_correlation(noise, background),
    }


def fast_recovery(phantom: dict, resolution_fwhm_mm: float, spacing_mm) -> dict:
    """Noise-free recovery of each sphere under the fast model's blur of the given FWHM."""
    blurred = gaussian_blur(torch.from_numpy(phantom["activity_bq_ml"]), resolution_fwhm_mm, spacing_mm).numpy()
    return {
        str(v): float(blurred[m].mean() / (SPHERE_TO_BACKGROUND * BACKGROUND_BQ_ML))
        for v, m in phantom["spheres"].items()
    }


def calibrate_fast_model(
    acquisition: Acquisition = Acquisition(),
    grid: Grid = CALIBRATION_GRID,
    seed: int = 0,
    device=None,
    write_to: str | Path | None = None,
) -> dict:
    """Re-measure the fast model's constants against PyTomography (minutes to an hour on 2 CPU cores).

    Returns the calibration record (constants, both models' measurements, settings); with ``write_to`` also writes
    it as JSON there (the package's copy is ``cohort_dosimetry/phantoms/fast_spect_calibration.json``).
    """
    from ._spect_pytomography import reconstruct_pytomography

    phantom = sphere_phantom(grid)
    counts = REFERENCE_COUNTS_PER_ML * phantom["body_ml"]
    started = time.perf_counter()
    realistic, expected, measured = reconstruct_pytomography(
        phantom["activity_bq_ml"][None],
        phantom["density"],
        grid.spacing_mm,
        counts=[counts],
        seed=seed,
        realisations=2,
        acquisition=acquisition,
        device=device,
    )
    seconds = time.perf_counter() - started
    reference = measure_recovery_and_noise(realistic[:, 0], phantom)

    # resolution: the FWHM whose recoveries are closest (least maximum difference) to PyTomography's
    candidates = np.arange(4.0, 30.0, 0.25)
    worst = [
        max(
            abs(fast_recovery(phantom, f, grid.spacing_mm)[k] - reference["recovery"][k]) for k in reference["recovery"]
        )
        for f in candidates
    ]
    resolution_fwhm = float(candidates[int(np.argmin(worst))])

    # noise level: sigma_rel = kappa * (m / mu)^p / sqrt(N / V), from background and 65 mL sphere
    blurred = gaussian_blur(torch.from_numpy(phantom["activity_bq_ml"]), resolution_fwhm, grid.spacing_mm).numpy()
    body = phantom["density"] > BODY_DENSITY_G_CM3
    body_mean = float(blurred[body].mean())
    mu_background = float(blurred[phantom["background"]].mean())
    mu_sphere = float(blurred[phantom["sphere_cores"][max(SPHERE_VOLUMES_ML)]].mean())
    power = float(
        np.log(reference["relative_noise_background"] / reference["relative_noise_sphere_65ml"])
        / np.log(mu_sphere / mu_background)
    )
    kappa = float(
        reference["relative_noise_background"]
        * np.sqrt(counts / phantom["body_ml"])
        / (body_mean / mu_background) ** power
    )

    # noise correlation: the smoothing FWHM whose neighbour correlation along x matches PyTomography's
    target = reference["neighbour_correlation_zyx"][2]
    generator = torch.Generator().manual_seed(seed)
    sample = [
        correlated_noise(grid.shape, f, grid.spacing_mm, generator.manual_seed(seed), "cpu").numpy() for f in candidates
    ]
    lag1 = [_neighbour_correlation(s, phantom["background"])[2] for s in sample]
    noise_fwhm = float(candidates[int(np.argmin(np.abs(np.asarray(lag1) - target)))])

    constants = FastModelCalibration(resolution_fwhm, noise_fwhm, kappa, power)
    fast = reconstruct_fast(
        phantom["activity_bq_ml"][None],
        phantom["density"],
        grid.spacing_mm,
        [counts],
        seed=seed,
        realisations=2,
        calibration=constants,
        device=device,
    )
    record = {
        "note": (
            "Fast SPECT model constants measured by cohort_dosimetry.phantoms.calibrate_fast_model() against "
            "the PyTomography model on a synthetic sphere phantom (see _calibration.py); re-run with "
            "`python bench/calibrate_fast_spect.py`."
        ),
        "measured": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "constants": {name: getattr(constants, name) for name in FastModelCalibration.__dataclass_fields__},
        "pytomography": reference,
        "fast": measure_recovery_and_noise(fast[:, 0], phantom),
        "settings": {
            "grid_shape": list(grid.shape),
            "grid_spacing_mm": list(grid.spacing_mm),
            "sphere_volumes_ml": list(SPHERE_VOLUMES_ML),
            "sphere_to_background": SPHERE_TO_BACKGROUND,
            "counts": counts,
            "counts_per_body_ml": REFERENCE_COUNTS_PER_ML,
            "measured_counts": measured[:, 0].tolist(),
            "n_views": acquisition.n_views,
            "osem_iterations": acquisition.osem_iterations,
            "osem_subsets": acquisition.osem_subsets,
            "pytomography_seconds": seconds,
            "seed": seed,
        },
    }
    if write_to is not None:
        Path(write_to).write_text(json.dumps(record, indent=2) + "\n")
    return record
