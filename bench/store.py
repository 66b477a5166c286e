"""Benchmark: the cohort store on the compact grid (130 x 128 x 128 at 3.0 x 3.91 x 3.91 mm).

Rows, each the median of REPEATS runs and its ratio against a baseline measured in the same run:
- publishing a scan (``write_scan``, 4 arrays) against ``np.save`` of the same arrays (the raw-write floor);
- re-ingesting an unchanged scan (``write_scan`` -> "unchanged") against publishing it: ingest's rerun budget is
  10 % of a first ingest, and this is the store's share of it;
- reading an 11-slice pack (one CNN input) against reading the whole ``activity`` volume: what the 16-slice
  chunking buys.
Values are a seeded synthetic volume (a stand-in for a virtual patient; no patient data). Also prints the on-disk
size of one scan against its raw size (compression).

    .venv/bin/python bench/store.py
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import xarray as xr

from cohort_dosimetry.store import open_cohort

SHAPE = (130, 128, 128)
REPEATS = 5
DIMS = ("z", "y", "x")


def make_scan(seed: int) -> tuple[xr.Dataset, dict]:
    """A body-shaped seeded volume: HU, density, activity with hot spots, labels; and the scan attrs."""
    rng = np.random.default_rng(seed)
    z, y, x = np.indices(SHAPE, dtype=np.float32)
    body = ((y - 64) / 50) ** 2 + ((x - 64) / 58) ** 2 <= 1
    ct_hu = np.where(body, rng.normal(40, 20, SHAPE), -1000).astype(np.float32)
    density = np.where(body, 1.04, 0.0012).astype(np.float32)
    activity = np.where(body, rng.gamma(2.0, 200.0, SHAPE), 0).astype(np.float32)
    labels = np.where(body, 1, 0).astype(np.int16)
    organ = ((z - 60) / 20) ** 2 + ((y - 60) / 15) ** 2 + ((x - 40) / 15) ** 2 <= 1
    labels[organ] = 2
    activity[organ] *= 20
    ds = xr.Dataset(
        {
            "ct_hu": (DIMS, ct_hu, {"units": "HU"}),
            "density": (DIMS, density, {"units": "g/cm3"}),
            "activity": (DIMS, activity, {"units": "Bq/mL"}),
            "labels": (DIMS, labels, {"units": "1", "names": {1: "body", 2: "liver"}}),
        }
    )
    attrs = {
        "source_hash": f"sha256:{seed:064x}",
        "source_file_hashes": [f"sha256:{seed:064x}"],
        "spacing_mm": (3.0, 3.91, 3.91),
        "origin_mm": (0.0, 0.0, 0.0),
        "direction": (1, 0, 0, 0, 1, 0, 0, 0, 1),
        "hours_post_injection": 24.0,
        "acquisition_datetime": "2026-03-03T06:00:00",
        "injection_datetime": "2026-03-02T06:00:00",
        "administered_activity_bq": 7.4e9,
        "nuclide": "Lu177",
        "frame_of_reference_uid": "H0123456789abcdef01234567",
    }
    return ds, attrs


def median_seconds(fn) -> float:
    times = []
    for i in range(REPEATS):
        t0 = time.perf_counter()
        fn(i)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ds, attrs = make_scan(seed=0)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        cohort = open_cohort(root / "cohort", create=True)
        raw = root / "raw"
        raw.mkdir()

        t_npsave = median_seconds(lambda i: [np.save(raw / f"{n}{i}.npy", ds[n].values) for n in ds.data_vars])
        t_publish = median_seconds(lambda i: cohort.write_scan(f"P{i}", "tp1", ds, attrs))
        t_unchanged = median_seconds(lambda i: cohort.write_scan(f"P{i}", "tp1", ds, attrs))
        scan = cohort.scan("P0", "tp1")
        t_full = median_seconds(lambda i: scan["activity"].values)
        t_pack = median_seconds(lambda i: scan["activity"].isel(z=slice(60, 71)).values)

        vdir = cohort.store_path / "scans" / "P0" / "tp1" / "v0001"
        stored = sum(p.stat().st_size for p in vdir.rglob("*") if p.is_file())
        raw_bytes = sum(ds[n].nbytes for n in ds.data_vars)

    rows = [
        ("publish one scan (write_scan)", t_publish, "np.save of the 4 arrays", t_npsave),
        ("re-ingest unchanged (no-op)", t_unchanged, "publish one scan", t_publish),
        ("read an 11-slice pack", t_pack, "read the whole activity volume", t_full),
    ]
    print(f"cohort store, compact grid {SHAPE} (z, y, x), synthetic volume, median of {REPEATS}")
    print(f"{'operation':34s} {'time_s':>9s}   {'baseline':34s} {'time_s':>9s} {'ratio':>7s}")
    for name, t, base_name, t_base in rows:
        print(f"{name:34s} {t:9.4f}   {base_name:34s} {t_base:9.4f} {t / t_base:7.3f}")
    print(
        f"one scan on disk: {stored / 2**20:.2f} MiB for {raw_bytes / 2**20:.2f} MiB raw "
        f"(ratio {stored / raw_bytes:.3f}; blosc zstd level 1, byte shuffle)"
    )


if __name__ == "__main__":
    main()
