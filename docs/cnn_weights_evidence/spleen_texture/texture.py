"""Fine-scale content of PyTomography and fast SPECT in organ interiors, TRAINING and VALIDATION patients only (A's 9
PyTomography fine-tuning scans and fast scans of the same patients and times). Session 15, descriptive.

Per scan and organ (interior: the VOI eroded by 2 voxels): the standard deviation of the 1-voxel high-pass
(scan - Gaussian(scan, sigma 1 voxel)) relative to the interior mean, for the PyTomography scan and for fast scans made
with the stored constants and with the refitted ones (calibration.py); for fast scans also the relative noise from
two realisations ((r0 - r1) / sqrt 2). Activity inside an organ's interior is uniform in the virtual patients, so the
high-pass there is noise texture or reconstruction structure, not anatomy.

Usage, from the repository: .venv/bin/python docs/cnn_weights_evidence/spleen_texture/texture.py PYT_DATA OUT.parquet
(PYT_DATA: the fine-tuning data folder of `cohort-dosimetry train`, <out>/data_fine_tuning.)
"""
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import ndimage as ndi

from cohort_dosimetry.model._pipeline import FINE_TUNING
from cohort_dosimetry.phantoms import _spect_fast, make_virtual_patient
from cohort_dosimetry.phantoms._spect_fast import FastModelCalibration

STORED = FastModelCalibration.stored()
#: kappa and p refitted so that the fast model, measured like PyTomography, matches its one stored realisation pair
#: (calibration.py); resolution and noise FWHM unchanged.
REFIT = FastModelCalibration(STORED.resolution_fwhm_mm, STORED.noise_fwhm_mm, 2.1635, 0.3079)


def interior(labels: np.ndarray, names: dict, organ: str) -> np.ndarray:
    return ndi.binary_erosion(np.isin(labels, [int(k) for k, v in names.items() if v.startswith(organ)]), iterations=2)


def high_pass(x: np.ndarray) -> np.ndarray:
    return x - ndi.gaussian_filter(x, 1.0)


def fast_scans(seed: int, hours: float, calibration: FastModelCalibration) -> np.ndarray:
    """Two fast realisations (realisation, z, y, x) Bq/mL under ``calibration``."""
    stored = _spect_fast.FastModelCalibration.stored
    _spect_fast.FastModelCalibration.stored = classmethod(lambda cls: calibration)
    try:
        return make_virtual_patient(seed, hours=[hours], spect="fast", realisations=2)["activity"].values[:, 0]
    finally:
        _spect_fast.FastModelCalibration.stored = stored


def main(pyt_data: str, out: str) -> None:
    rows = []
    for seed, hours in FINE_TUNING.train_scans + FINE_TUNING.validation_scans:
        directory = Path(pyt_data) / f"patient_{seed}"
        names = json.loads((directory / "patient.json").read_text())["voi_names"]
        labels = np.load(directory / "labels.npy")
        pyt = np.load(directory / "spect_t0_r0.npy")
        fast = {"stored": fast_scans(seed, hours, STORED), "refit": fast_scans(seed, hours, REFIT)}
        for organ in ("spleen", "kidney", "liver"):
            m = interior(labels, names, organ)
            row = {"seed": seed, "hours": hours, "organ": organ, "pyt_hp": high_pass(pyt)[m].std() / pyt[m].mean()}
            for name, f in fast.items():
                row[f"{name}_hp"] = high_pass(f[0])[m].std() / f[0][m].mean()
                row[f"{name}_noise"] = ((f[0] - f[1])[m] / np.sqrt(2.0)).std() / f[0][m].mean()
            rows.append(row)
    table = pd.DataFrame(rows)
    table.to_parquet(out)
    print(table.to_string(index=False, float_format="%.3f"))
    print(table.groupby("organ")[["pyt_hp", "stored_hp", "refit_hp", "stored_noise", "refit_noise"]].mean()
          .to_string(float_format="%.3f"))
    ratio = table.assign(ratio=table.pyt_hp / table.stored_hp).groupby("organ").ratio
    print("PyTomography / fast (stored) high-pass, min / mean / max:")
    print(ratio.agg(["min", "mean", "max"]).to_string(float_format="%.2f"))


if __name__ == "__main__":
    main(*sys.argv[1:])
