"""A tiny seeded synthetic cohort with known kinetics, written through the store (no patient data).

Every voxel of VOI v carries ``texture(voxel) * AMPLITUDE[v] * (exp(-ln2 t / washout) - exp(-ln2 t / uptake))``
as its MC dose-rate (Gy/s), so the VOI's mean MC dose-rate curve is exactly bi-exponential and its absorbed dose is
``mean(texture) * AMPLITUDE * (washout - uptake) / ln 2 * 3600`` Gy. CNN = MC with 5 % voxel noise; DVK = 0.9 MC.
Patients named in ``second_cycle`` get a second therapy cycle 8 weeks later with the same kinetics and protocol
(labels continue: a 4-scan patient's second cycle is tp5..tp8), so each cycle's absorbed dose is the same.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np
import xarray as xr

from cohort_dosimetry.pipeline import weights_sha256
from cohort_dosimetry.store import open_cohort

DIMS = ("z", "y", "x")
SHAPE = (8, 10, 12)
SPACING_MM = (3.0, 3.91, 3.91)
NAMES = {1: "body", 4: "liver", 5: "kidney_left", 101: "lesion_1"}
#: VOI: (amplitude Gy/s, washout half-life h, uptake half-life h); the effective half-lives are below Lu-177's.
KINETICS = {
    "body": (2e-7, 30.0, 0.5),
    "liver": (1e-6, 60.0, 1.0),
    "kidney_left": (2e-6, 45.0, 1.5),
    "lesion_1": (5e-6, 90.0, 3.0),
}
PROTOCOL_H = (4.0, 24.0, 96.0, 168.0)
#: patient: hours of its scans (4, 3 and 1 time points).
PATIENTS = {"PA": PROTOCOL_H, "PB": PROTOCOL_H[:3], "PC": (96.0,)}
#: Injections of the first and second therapy cycle (Lu-177 DOTATATE cycles are 8 weeks apart).
INJECTIONS = (datetime(2026, 3, 2, 6, 0), datetime(2026, 3, 2, 6, 0) + timedelta(weeks=8))


def tac(voi: str, hours):
    amplitude, washout, uptake = KINETICS[voi]
    t = np.asarray(hours, dtype=np.float64)
    return amplitude * (np.exp(-np.log(2) * t / washout) - np.exp(-np.log(2) * t / uptake))


def exact_absorbed_dose_gy(voi: str, mean_texture: float) -> float:
    amplitude, washout, uptake = KINETICS[voi]
    return mean_texture * amplitude * (washout - uptake) / np.log(2) * 3600.0


def patient_anatomy(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Label map (z, y, x) int16 with every VOI of NAMES, and a positive texture (z, y, x)."""
    rng = np.random.default_rng(seed)
    labels = np.zeros(SHAPE, np.int16)
    labels[1:-1, 1:-1, 1:-1] = 1
    labels[2:6, 2:6, 2:6] = 4
    labels[2:6, 6:9, 7:10] = 5
    labels[5:7, 2:4, 8:11] = 101
    texture = rng.uniform(0.6, 1.4, SHAPE)
    return labels, texture


def make_cohort(path, seed: int = 0, second_cycle=(), acquisition_duration_s: float | None = None):
    """Write the cohort at ``path``; returns (cohort, {patient: (labels, texture)}). The activity is 1 Bq/mL in every
    voxel; ``acquisition_duration_s``: the scans' attr of that name (None: absent, as from a header without it)."""
    cohort = open_cohort(path, create=True)
    anatomy = {}
    for k, (patient, hours) in enumerate(PATIENTS.items()):
        labels, texture = patient_anatomy(seed + k)
        anatomy[patient] = (labels, texture)
        rng = np.random.default_rng(seed + 100 + k)
        scans = [(1, hour) for hour in hours] + [(2, hour) for hour in hours if patient in second_cycle]
        for i, (cycle, hour) in enumerate(scans):
            timepoint = f"tp{i + 1}"
            injection = INJECTIONS[cycle - 1]
            scan = xr.Dataset(
                {
                    "ct_hu": (DIMS, np.zeros(SHAPE, np.float32), {"units": "HU"}),
                    "density": (DIMS, np.ones(SHAPE, np.float32), {"units": "g/cm3"}),
                    "activity": (DIMS, np.ones(SHAPE, np.float32), {"units": "Bq/mL"}),
                    "labels": (DIMS, labels, {"units": "1", "names": dict(NAMES)}),
                }
            )
            attrs = {
                "source_hash": f"sha256:{patient}{timepoint}",
                "source_file_hashes": [f"sha256:{patient}{timepoint}"],
                "spacing_mm": SPACING_MM,
                "origin_mm": (0.0, 0.0, 0.0),
                "direction": (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0),
                "hours_post_injection": hour,
                "acquisition_datetime": (injection + timedelta(hours=hour)).isoformat(),
                "injection_datetime": injection.isoformat(),
                "administered_activity_bq": 7.4e9,
                "nuclide": "Lu177",
                "frame_of_reference_uid": "2.25.1",
                "spect_series_key": f"H{patient}{timepoint}",
                "cycle": cycle,
                "synthetic": True,
            }
            if acquisition_duration_s is not None:
                attrs["acquisition_duration_s"] = acquisition_duration_s
            cohort.write_scan(patient, timepoint, scan, attrs)
            mc = np.zeros(SHAPE)
            for label, voi in NAMES.items():
                mc[labels == label] = texture[labels == label] * tac(voi, hour)
            maps = {"mc": mc, "cnn": mc * (1 + 0.05 * rng.standard_normal(SHAPE)), "dvk": 0.9 * mc}
            for method, dose_rate in maps.items():
                attrs = {"units": "Gy/s"}
                if method == "cnn":  # as dose_rates records it: these maps stand in for the shipped weights'
                    attrs["weights_sha256"] = weights_sha256()
                cohort.write_arrays(
                    patient,
                    timepoint,
                    xr.Dataset({f"dose_rate_{method}": (DIMS, dose_rate.astype(np.float32), attrs)}),
                    provenance={"method": method, "note": "synthetic test cohort"},
                )
    return cohort, anatomy
