"""Seeded tiny scans for the store tests (synthetic stand-ins: no patient data)."""

from __future__ import annotations

import numpy as np
import xarray as xr

DIMS = ("z", "y", "x")
SHAPE = (20, 6, 5)  # 20 slices: two z-chunks of the store (16 + 4)
LABEL_NAMES = {1: "liver", 2: "kidney_left", 3: "lesion_1"}


def make_scan(
    seed: int, shape: tuple[int, int, int] = SHAPE, spect_series_key: str | None = None
) -> tuple[xr.Dataset, dict]:
    """A (dataset, attrs) pair as ingest would hand it to ``Cohort.write_scan``; values drawn from ``seed``.

    ``spect_series_key``: the scan's SPECT series; default one of its own per seed (pass the key of a stored scan to
    make a new version of it)."""
    rng = np.random.default_rng(seed)
    ds = xr.Dataset(
        {
            "ct_hu": (DIMS, rng.normal(0.0, 300.0, shape).astype(np.float32), {"units": "HU"}),
            "density": (DIMS, rng.uniform(0.0, 2.0, shape).astype(np.float32), {"units": "g/cm3"}),
            "activity": (DIMS, rng.gamma(2.0, 500.0, shape).astype(np.float32), {"units": "Bq/mL"}),
            "labels": (DIMS, rng.integers(0, 4, shape).astype(np.int16), {"units": "1", "names": dict(LABEL_NAMES)}),
        }
    )
    attrs = {
        "source_hash": f"sha256:{rng.integers(1 << 62):016x}",
        "source_file_hashes": sorted(f"sha256:{rng.integers(1 << 62):016x}" for _ in range(3)),
        "spacing_mm": (3.0, 3.91, 3.91),
        "origin_mm": (-30.0, -11.7, -9.8),
        "direction": (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0),
        "hours_post_injection": float(rng.uniform(2.0, 170.0)),
        "acquisition_datetime": "2026-03-02T10:15:00",
        "injection_datetime": "2026-03-02T06:00:00",
        "administered_activity_bq": 7.4e9,
        "nuclide": "Lu177",
        "frame_of_reference_uid": "2.25.1234567890",
        "spect_series_key": spect_series_key or f"Hseries{seed:018d}",
        "cycle": 1,
    }
    return ds, attrs


def make_dose_rate(seed: int, name: str = "dose_rate_dvk", shape: tuple[int, int, int] = SHAPE) -> xr.Dataset:
    """A derived dose-rate map (Gy/s) as the dose flow would hand it to ``Cohort.write_arrays``."""
    rng = np.random.default_rng(seed)
    return xr.Dataset({name: (DIMS, rng.uniform(0.0, 1e-5, shape).astype(np.float32), {"units": "Gy/s"})})
