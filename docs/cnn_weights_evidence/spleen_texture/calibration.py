"""How precisely does the fast model's stored calibration pin the noise level? Session 15, descriptive.

The stored constants (fast_spect_calibration.json) were fitted to ONE pair of PyTomography realisations of the sphere
phantom. Here the fast model is measured the same way (two realisations, measure_recovery_and_noise) over noise seeds
0-15: the seed-to-seed spread of each relative-noise estimate is the sampling precision of that one PyTomography
pair too. Then kappa and p are refitted by fixed-point iteration so that the fast model's mean over seeds 0-3 matches
the PyTomography pair exactly (the REFIT constants of texture.py).

Usage, from the repository: .venv/bin/python docs/cnn_weights_evidence/spleen_texture/calibration.py
"""
import json
from importlib import resources

import numpy as np
import torch

from cohort_dosimetry.phantoms._calibration import (CALIBRATION_GRID, REFERENCE_COUNTS_PER_ML, SPHERE_VOLUMES_ML,
                                                    measure_recovery_and_noise, sphere_phantom)
from cohort_dosimetry.phantoms._spect_fast import FastModelCalibration, gaussian_blur, reconstruct_fast

KEYS = ("relative_noise_background", "relative_noise_sphere_65ml")
PHANTOM = sphere_phantom(CALIBRATION_GRID)
COUNTS = REFERENCE_COUNTS_PER_ML * PHANTOM["body_ml"]


def measured(calibration: FastModelCalibration, seeds) -> np.ndarray:
    """(seed, key) relative noise of the fast model measured like PyTomography's."""
    out = []
    for seed in seeds:
        scans = reconstruct_fast(PHANTOM["activity_bq_ml"][None], PHANTOM["density"], CALIBRATION_GRID.spacing_mm,
                                 [COUNTS], seed=seed, realisations=2, calibration=calibration, device="cpu")
        record = measure_recovery_and_noise(scans[:, 0], PHANTOM)
        out.append([record[k] for k in KEYS])
    return np.asarray(out)


def refit(reference: dict, calibration: FastModelCalibration, iterations: int = 5) -> FastModelCalibration:
    blurred = gaussian_blur(torch.from_numpy(PHANTOM["activity_bq_ml"]), calibration.resolution_fwhm_mm,
                            CALIBRATION_GRID.spacing_mm).numpy()
    log_contrast = np.log(blurred[PHANTOM["sphere_cores"][max(SPHERE_VOLUMES_ML)]].mean()
                          / blurred[PHANTOM["background"]].mean())
    for _ in range(iterations):
        background, sphere = measured(calibration, range(4)).mean(axis=0)
        rb, rs = reference[KEYS[0]] / background, reference[KEYS[1]] / sphere
        calibration = FastModelCalibration(calibration.resolution_fwhm_mm, calibration.noise_fwhm_mm,
                                           calibration.noise_kappa * rb,
                                           calibration.noise_power - np.log(rs / rb) / log_contrast)
    return calibration


def main() -> None:
    reference = json.loads(resources.files("cohort_dosimetry.phantoms")
                           .joinpath("fast_spect_calibration.json").read_text())["pytomography"]
    print("PyTomography, one pair (seed 0):", {k: round(reference[k], 4) for k in KEYS})
    stored = FastModelCalibration.stored()
    refitted = refit(reference, stored)
    print(f"refitted: kappa {refitted.noise_kappa:.4f}, p {refitted.noise_power:.4f} "
          f"(stored {stored.noise_kappa:.4f}, {stored.noise_power:.4f})")
    for name, calibration in (("stored", stored), ("refitted", refitted)):
        m = measured(calibration, range(16))
        mean, sd = m.mean(axis=0), m.std(axis=0, ddof=1)
        print(f"{name}, seeds 0-15: " + ", ".join(f"{k} {a:.4f} +- {s:.4f} (cv {s / a:.2f})"
                                                   for k, a, s in zip(KEYS, mean, sd)))


if __name__ == "__main__":
    main()
