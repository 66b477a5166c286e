"""The steps of a cohort run as plain functions of paths and ids, usable without Prefect.

Each step opens the store itself, does one unit of work and returns a small, picklable summary, so that an
orchestrator (the Prefect flows in ``flows/``, a notebook, a shell loop) can run steps anywhere -- another process, a
Dask worker on another machine -- and pass only ids and paths between them, never arrays.

Every step is idempotent: it looks in the store first and skips work that is complete, so a rerun after a crash
computes only what is missing.
"""
from __future__ import annotations

import hashlib
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd

from cohort_dosimetry import __version__

#: Dose-rate methods in the order a scan's maps are computed (the CNN needs the DVK map).
METHODS = ("dvk", "cnn", "mc")


@dataclass(frozen=True)
class StepResult:
    """What one step did for one scan: ``status`` is "done", "skipped" (already complete) or "failed"."""

    step: str
    patient: str
    timepoint: str
    status: str
    seconds: float
    message: str = ""

    def as_dict(self) -> dict:
        return asdict(self)


def _parse_grid(grid: str) -> str | tuple[float, float, float]:
    """``"ct"``, ``"compact"`` or ``"Z,Y,X"`` (mm) as the ingest takes it."""
    if "," in grid:
        return tuple(float(v) for v in grid.split(","))
    return grid


#: Ingest report status -> step status of the run record.
_INGEST_STATUS = {"written": "done", "new_version": "done", "unchanged": "skipped", "rejected": "failed"}


def ingest_cohort(dicom_dir: str | Path, cohort_dir: str | Path, grid: str = "compact",
                  roi_names: dict[str, str] | None = None) -> list[dict]:
    """Ingest a DICOM folder (a no-op for unchanged files); one StepResult per scan or rejected file/series.

    ``roi_names``: the user's {ROI name as written: vocabulary name} (``cohort_dosimetry.vocabulary.read_roi_names``).
    The full report, warnings included, is in the store's ``ingest_report`` table.
    """
    from cohort_dosimetry.io import ingest

    t0 = time.perf_counter()
    report = ingest(dicom_dir, cohort_dir, grid=_parse_grid(grid), roi_names=roi_names)
    seconds = time.perf_counter() - t0
    rows = report[report["status"].isin(list(_INGEST_STATUS)) & (report["severity"] != "warning")]
    return [
        StepResult("ingest", r.patient, r.timepoint, _INGEST_STATUS[r.status], seconds / max(len(rows), 1),
                   "" if r.status != "rejected" else f"{r.source}: {r.message}").as_dict()
        for r in rows.itertuples()
    ]


def dose_arrays(method: str) -> tuple[str, ...]:
    """Names of the store arrays a dose method produces."""
    if method not in METHODS:
        raise ValueError(f"unknown dose method {method!r}; expected one of {METHODS}")
    return ("dose_rate_mc", "dose_rate_mc_uncertainty") if method == "mc" else (f"dose_rate_{method}",)


def compute_scan_dose(
    cohort_dir: str | Path,
    patient: str,
    timepoint: str,
    methods: tuple[str, ...],
    device: str | None = None,
    mc_decays: int = 5_000_000,
    seed: int = 0,
) -> list[dict]:
    """Compute the dose-rate maps of one scan that the store does not hold yet, in the order of :data:`METHODS`.

    The scan is read once; the CNN takes the DVK map (stored earlier or computed just before) as its prior. Each
    map is stored as soon as it is computed, so a crash loses at most the method in progress.
    Returns one StepResult (as a dict) per method: "done" or "skipped".
    """
    from cohort_dosimetry.dose import dose_rates
    from cohort_dosimetry.physics import resolve_device
    from cohort_dosimetry.store import open_cohort

    cohort = open_cohort(cohort_dir)
    ordered = [m for m in METHODS if m in methods]
    todo = [m for m in ordered if not cohort.has_arrays(patient, timepoint, dose_arrays(m))]
    results = {m: StepResult(f"dose_{m}", patient, timepoint, "skipped", 0.0) for m in ordered if m not in todo}
    if todo:
        dev = resolve_device(device)
        lazy = cohort.scan(patient, timepoint)
        version = lazy.attrs["version"]
        scan = lazy[[v for v in ("activity", "density", "dose_rate_dvk") if v in lazy]].load()
        for method in todo:
            t0 = time.perf_counter()
            maps = dose_rates(scan, methods=(method,), device=dev, mc_decays=mc_decays, seed=seed)
            seconds = time.perf_counter() - t0
            provenance = {"method": method, "software_version": __version__, "device": str(dev),
                          "wall_time_s": round(seconds, 3)}
            cohort.write_arrays(patient, timepoint, maps[list(dose_arrays(method))], provenance=provenance,
                                version=version)
            if method == "dvk":
                scan["dose_rate_dvk"] = maps["dose_rate_dvk"]
            results[method] = StepResult(f"dose_{method}", patient, timepoint, "done", seconds)
    return [results[m].as_dict() for m in ordered]


def scan_statistics(cohort_dir: str | Path, patient: str, timepoint: str) -> dict[str, pd.DataFrame]:
    """The ``voi_stats`` and ``concordance`` rows of one scan (small tables; the volumes stay in the store)."""
    from cohort_dosimetry.stats import scan_tables
    from cohort_dosimetry.store import open_cohort

    return scan_tables(open_cohort(cohort_dir).scan(patient, timepoint), patient, timepoint)


def write_cohort_tables(cohort_dir: str | Path, per_scan: list[dict[str, pd.DataFrame]]) -> dict:
    """Concatenate per-scan rows, integrate over time per therapy cycle and write ``voi_stats``, ``concordance``,
    ``absorbed_dose`` and ``absorbed_dose_total`` (the sum over each patient's cycles)."""
    from cohort_dosimetry.stats import write_cohort_tables as write_tables
    from cohort_dosimetry.store import open_cohort

    if not per_scan:
        raise ValueError(f"cohort {cohort_dir}: no scan has statistics; nothing to tabulate")
    tables = write_tables(
        open_cohort(cohort_dir),
        pd.concat([t["voi_stats"] for t in per_scan], ignore_index=True),
        pd.concat([t["concordance"] for t in per_scan], ignore_index=True),
    )
    return {f"n_{name}_rows": len(table) for name, table in tables.items()}


def write_cohort_report(cohort_dir: str | Path, notes: list[str] | tuple[str, ...] = ()) -> str:
    """Write the self-contained HTML report; returns its path."""
    from cohort_dosimetry.stats import write_report
    from cohort_dosimetry.store import open_cohort

    return str(write_report(open_cohort(cohort_dir), notes=list(notes)))


def run_software_versions() -> dict[str, str]:
    """The store's software versions plus the packages that compute the numbers of a run (torch, prefect)."""
    import torch

    from cohort_dosimetry.store import software_versions

    versions = {**software_versions(), "torch": torch.__version__}
    try:
        import prefect

        versions["prefect"] = prefect.__version__
    except ImportError:  # the library runs without Prefect
        pass
    return versions


def weights_sha256() -> str:
    """sha256 of the shipped CNN weights, as their model card records it (and inference checks)."""
    from cohort_dosimetry.model import SHIPPED_CARD, ModelCard

    return ModelCard.from_json(SHIPPED_CARD).weights_sha256


def kernel_sha256(cohort_dir: str | Path, nuclide: str = "Lu177") -> str:
    """sha256 of the DVK kernel(s) the cohort's scans are convolved with (one per distinct dose-grid spacing)."""
    from cohort_dosimetry.physics import default_kernel_shape, voxel_kernel
    from cohort_dosimetry.store import open_cohort

    cohort = open_cohort(cohort_dir)
    spacings = sorted({tuple(cohort.scan_attrs(p, t)["spacing_mm"]) for p, t in cohort.scans()})
    return ",".join(
        hashlib.sha256(voxel_kernel(nuclide, s, default_kernel_shape(s), kind="total").tobytes()).hexdigest()
        for s in spacings
    )


def scan_outcomes(results: list[dict]) -> dict[str, int]:
    """Per-scan counts from step results: a scan failed if any of its steps failed, was done if any step did work,
    else it was skipped (complete already). A rejected input with no scan id counts as one failed scan."""
    by_scan: dict[tuple, set[str]] = {}
    for i, r in enumerate(results):
        key = (r["patient"], r["timepoint"]) if r["timepoint"] else ("rejected", i)
        by_scan.setdefault(key, set()).add(r["status"])
    counts = {"done": 0, "skipped": 0, "failed": 0}
    for statuses in by_scan.values():
        counts["failed" if "failed" in statuses else "done" if "done" in statuses else "skipped"] += 1
    return counts


def record_run(
    cohort_dir: str | Path,
    run_id: str,
    results: list[dict],
    wall_time_s: float,
    methods: tuple[str, ...],
    weights_sha256: str = "",
    kernel_sha256: str = "",
) -> pd.DataFrame:
    """Append one row to ``tables/runs.parquet``: what this run did, with which software, weights and kernels."""
    from cohort_dosimetry.store import open_cohort

    counts = scan_outcomes(results)
    failed = [r for r in results if r["status"] == "failed"]
    row = {
        "run_id": run_id,
        "started_utc": pd.Timestamp.now(tz="UTC") - pd.Timedelta(seconds=wall_time_s),
        "software_version": ";".join(f"{k}={v}" for k, v in run_software_versions().items()),
        "weights_hash": weights_sha256,
        "kernel_hash": kernel_sha256,
        "n_scans_done": counts["done"],
        "n_scans_skipped": counts["skipped"],
        "n_scans_failed": counts["failed"],
        "wall_time_s": float(wall_time_s),
        "methods": ",".join(methods),
        "failures": "; ".join(f"{r['step']} {r['patient']}/{r['timepoint']}: {r['message']}" for r in failed),
    }
    df = pd.DataFrame([row])
    open_cohort(cohort_dir).append_table("runs", df)
    return df
