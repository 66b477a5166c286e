"""Cohort statistics speed: per-scan tables from the store, the one-pass VOI metrics against a per-mask loop.

Inputs: a synthetic virtual patient (``make_anatomy(seed=0, grid="compact")``, 130x128x128 at 3.0x3.91x3.91 mm, no
patient data) with its true activity at 24 h turned into three dose-rate maps (DVK = local-deposition proxy, CNN and
MC = the same with 5 % and 10 % seeded voxel noise): the statistics cost does not depend on how the maps were made.
Two scans are written to a temporary cohort store and read back lazily, as the flows do.

Measured in this run:
- ``voi_metrics`` on one map, and on the 3 maps of a scan sharing one ``VoiIndex`` (voxels grouped by VOI once,
  bincount sums, per-VOI segment sorts), against the baseline: a Python loop over the VOIs that builds each VOI's
  whole-volume mask and calls numpy's mean/median/max/quantile on it;
- ``scan_tables`` on one scan read from the store (3 maps: voi_stats rows and 3 method pairs of concordance);
- ``absorbed_dose`` (time integration) on a 42-scan ``voi_stats`` table (12 patients, 3-4 time points);
- the 42-scan cohort projected as 42 x per-scan + time integration, against the 2-minute goal.

Run: ``.venv/bin/python bench/stats.py``. The machine may be shared: the load average is printed with the table.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr
from _timing import best_of

from cohort_dosimetry.phantoms import activity_true, make_anatomy
from cohort_dosimetry.stats import DR_PERCENTS, VoiIndex, absorbed_dose, scan_tables, voi_metrics
from cohort_dosimetry.store import open_cohort

N_SCANS = 42
N_PATIENTS = 12
GOAL_S = 120.0
DIMS = ("z", "y", "x")


def per_mask_loop(dose_rate: np.ndarray, labels: np.ndarray, names: dict, spacing_mm) -> pd.DataFrame:
    """The baseline: one whole-volume mask per VOI, numpy statistics on each."""
    rows = []
    for label, name in names.items():
        values = dose_rate[labels == label].astype(np.float64)
        row = {
            "voi": name,
            "volume_ml": values.size * float(np.prod(spacing_mm)) / 1000,
            "mean": values.mean(),
            "median": np.median(values),
            "max": values.max(),
        }
        for x in DR_PERCENTS:
            row[f"dr{x}"] = -np.quantile(-values, x / 100, method="inverted_cdf")
        rows.append(row)
    return pd.DataFrame(rows)


def write_bench_cohort(path: Path):
    anatomy = make_anatomy(0, "compact")
    spacing = tuple(anatomy.attrs["spacing_mm"])
    truth = activity_true(anatomy, [24.0]).values[0]
    # Local deposition of the electron energy, 0.1479 MeV per decay (ICRP-107, docs/physics.md), 1.602e-13 J/MeV.
    base = (truth / np.maximum(anatomy["density"].values, 0.1) * 1000 * 0.1479 * 1.602e-13).astype(np.float32)
    rng = np.random.default_rng(0)
    maps = {
        "dvk": base,
        "cnn": base * (1 + 0.05 * rng.standard_normal(base.shape, dtype=np.float32)),
        "mc": base * (1 + 0.10 * rng.standard_normal(base.shape, dtype=np.float32)),
    }
    cohort = open_cohort(path, create=True)
    for timepoint, hours in (("tp1", 24.0), ("tp2", 96.0)):
        scan = xr.Dataset(
            {
                "ct_hu": (DIMS, anatomy["ct_hu"].values, {"units": "HU"}),
                "density": (DIMS, anatomy["density"].values, {"units": "g/cm3"}),
                "activity": (DIMS, truth.astype(np.float32), {"units": "Bq/mL"}),
                "labels": (
                    DIMS,
                    anatomy["labels"].values.astype(np.int16),
                    {"units": "1", "names": dict(anatomy["labels"].attrs["names"])},
                ),
            }
        )
        attrs = {
            "source_hash": f"sha256:bench{timepoint}",
            "source_file_hashes": [f"sha256:bench{timepoint}"],
            "spacing_mm": spacing,
            "origin_mm": (0.0, 0.0, 0.0),
            "direction": (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0),
            "hours_post_injection": hours,
            "acquisition_datetime": "2026-03-02T10:00:00",
            "injection_datetime": "2026-03-01T10:00:00",
            "administered_activity_bq": 7.4e9,
            "nuclide": "Lu177",
            "frame_of_reference_uid": "2.25.1",
            "spect_series_key": f"Hbench{timepoint}",
            "cycle": 1,
            "synthetic": True,
        }
        cohort.write_scan("BENCH", timepoint, scan, attrs)
        cohort.write_arrays(
            "BENCH",
            timepoint,
            xr.Dataset({f"dose_rate_{m}": (DIMS, v, {"units": "Gy/s"}) for m, v in maps.items()}),
            provenance={"method": "bench proxy"},
        )
    return cohort, maps, anatomy["labels"].values, dict(anatomy["labels"].attrs["names"]), spacing


def cohort_voi_stats(one_scan: pd.DataFrame) -> pd.DataFrame:
    """A 42-scan voi_stats table: 12 patients (6 with 4, 6 with 3 time points) with bi-exponential mean curves."""
    rng = np.random.default_rng(1)
    hours_by_patient = [(4.0, 24.0, 96.0, 168.0)] * 6 + [(4.0, 24.0, 96.0)] * 6
    assert sum(len(h) for h in hours_by_patient) == N_SCANS
    parts = []
    for p, hours in enumerate(hours_by_patient):
        washout, uptake = rng.uniform(40, 100), rng.uniform(0.5, 4)
        for k, hour in enumerate(hours):
            shape = np.exp(-np.log(2) * hour / washout) - np.exp(-np.log(2) * hour / uptake)
            noise = 1 + 0.03 * rng.standard_normal(len(one_scan))
            parts.append(
                one_scan.assign(
                    patient=f"P{p:02d}",
                    timepoint=f"tp{k + 1}",
                    hours_post_injection=hour,
                    mean=one_scan["mean"] * shape * noise,
                )
            )
    return pd.concat(parts, ignore_index=True)


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        cohort, maps, labels, names, spacing = write_bench_cohort(Path(tmp) / "cohort")
        n_vois = len(names)
        one_pass = best_of(3, lambda: voi_metrics(maps["mc"], labels, names, spacing))
        loop = best_of(3, lambda: per_mask_loop(maps["mc"], labels, names, spacing))
        loop_3 = best_of(3, lambda: [per_mask_loop(m, labels, names, spacing) for m in maps.values()])

        def one_pass_shared_index():
            index = VoiIndex(labels, names)
            return [voi_metrics(m, None, {}, spacing, index=index) for m in maps.values()]

        one_pass_3 = best_of(3, one_pass_shared_index)
        agree = np.allclose(
            voi_metrics(maps["mc"], labels, names, spacing).iloc[:, 1:].to_numpy(float),
            per_mask_loop(maps["mc"], labels, names, spacing).iloc[:, 1:].to_numpy(float),
            rtol=1e-12,
        )
        per_scan = best_of(3, lambda: scan_tables(cohort.scan("BENCH", "tp1"), "BENCH", "tp1"))
        one_scan = scan_tables(cohort.scan("BENCH", "tp1"), "BENCH", "tp1")["voi_stats"]
    table = cohort_voi_stats(one_scan)
    integration = best_of(1, lambda: absorbed_dose(table))
    n_curves = table.groupby(["patient", "voi", "method"]).ngroups
    projected = N_SCANS * per_scan + integration
    load = os.getloadavg()[0]
    print(
        f"cohort statistics, compact grid 130x128x128, {n_vois} VOIs, 3 methods "
        f"(synthetic virtual patient; load average {load:.1f} on {os.cpu_count()} cores)"
    )
    print(f"{'step':<58}{'seconds':>10}{'ratio':>10}")
    print(f"{'baseline: per-mask loop, 1 map':<58}{loop:>10.3f}{1.0:>10.2f}")
    print(
        f"{'voi_metrics one pass, 1 map (same numbers: ' + str(agree) + ')':<58}{one_pass:>10.3f}"
        f"{loop / one_pass:>10.2f}"
    )
    print(f"{'baseline: per-mask loop, 3 maps of a scan':<58}{loop_3:>10.3f}{1.0:>10.2f}")
    print(f"{'voi_metrics one pass, 3 maps sharing one VoiIndex':<58}{one_pass_3:>10.3f}{loop_3 / one_pass_3:>10.2f}")
    print(f"{'scan_tables, 1 scan from the store (3 maps, 3 pairs)':<58}{per_scan:>10.3f}{'':>10}")
    print(f"{f'absorbed_dose, {N_SCANS}-scan table ({n_curves} curves)':<58}{integration:>10.3f}{'':>10}")
    print(
        f"{f'projected {N_SCANS}-scan cohort (goal {GOAL_S:.0f} s)':<58}{projected:>10.1f}{GOAL_S / projected:>10.2f}"
    )
    print("ratio: baseline time / this time for the one-pass lines; goal / projected time for the cohort line.")


if __name__ == "__main__":
    main()
