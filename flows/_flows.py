"""The cohort flows. They orchestrate only: every computation is a library step wrapped by a task in ``_tasks``.

``cohort_flow`` = ``ingest_flow`` -> ``dose_flow`` -> ``aggregate_flow`` -> run record. Each runs its tasks on Dask
(``address`` of an existing cluster, or the embedded default of ``_runtime``). A failed scan is recorded and the
others go on; a rerun computes only what the store does not hold yet.
"""
from __future__ import annotations

import contextlib
import time
from collections.abc import Sequence

import dask
from prefect import flow, get_run_logger
from prefect.runtime import flow_run
from prefect_dask import DaskTaskRunner

from cohort_dosimetry.pipeline import METHODS, StepResult, scan_outcomes
from flows._runtime import cluster_has_gpus, dask_scheduler
from flows._tasks import (
    cohort_tables_task,
    dose_task,
    ingest_task,
    record_run_task,
    report_task,
    scan_stats_task,
)

#: Methods whose work belongs on a GPU when the cluster has one.
GPU_METHODS = frozenset({"cnn", "mc"})


def _outcomes(future, steps: list[str], patient: str, timepoint: str) -> list[dict]:
    """The StepResults of a finished task future (a list, or one dict); a failure fails each of its ``steps``."""
    future.wait()
    if future.state.is_completed():
        result = future.result()
        return result if isinstance(result, list) else [result]
    try:
        future.result()
        message = f"task ended in state {future.state.name}"
    except Exception as exc:  # the task's own error, recorded against the scan
        message = f"{type(exc).__name__}: {exc}"
    return [StepResult(step, patient, timepoint, "failed", 0.0, message).as_dict() for step in steps]


@flow(name="ingest", log_prints=True)
def ingest_flow(dicom_dir: str, cohort_dir: str, grid: str = "compact",
                roi_names: dict[str, str] | None = None) -> list[dict]:
    """Ingest a DICOM folder into the cohort store (idempotent: unchanged files are a no-op). ``roi_names``: the
    user's {ROI name as written: vocabulary name}, extending the built-in clinical synonyms."""
    return ingest_task(dicom_dir, cohort_dir, grid, roi_names)


@flow(name="dose", log_prints=True)
def dose_flow(
    cohort_dir: str,
    methods: Sequence[str] = ("dvk", "cnn"),
    mc_scans: str = "all",
    mc_decays: int = 5_000_000,
    seed: int = 0,
    use_gpu_resources: bool = False,
) -> list[dict]:
    """Per scan: DVK, then CNN (on the DVK map of the same scan), and MC where asked.

    ``mc_scans``: "all", or "first" for the earliest scan of each patient's therapy cycle only (to bound MC cost on
    a CPU).
    """
    from cohort_dosimetry.store import open_cohort

    unknown = set(methods) - set(METHODS)
    if unknown:
        raise ValueError(f"unknown dose methods {sorted(unknown)}; expected some of {METHODS}")
    cohort = open_cohort(cohort_dir)
    scans = cohort.scans()
    # "first": the earliest acquisition of each patient's therapy cycle (labels count arrivals, not time)
    first_tp = {}
    for patient, timepoint in sorted(scans, key=lambda s: cohort.scan_attrs(*s)["acquisition_datetime"]):
        first_tp.setdefault((patient, cohort.scan_attrs(patient, timepoint)["cycle"]), timepoint)
    first_scans = {(patient, timepoint) for (patient, _), timepoint in first_tp.items()}
    # One task per scan for DVK -> CNN (the CNN's prior is the DVK map) and one for MC, which needs neither.
    # No task waits on another inside Dask, so every worker runs one task at a time.
    pending = []
    for patient, timepoint in scans:
        kernel_methods = tuple(m for m in ("dvk", "cnn") if m in methods)
        run_mc = "mc" in methods and (mc_scans == "all" or (patient, timepoint) in first_scans)
        for group in (kernel_methods, ("mc",) if run_mc else ()):
            if not group:
                continue
            # dask.annotate returns a one-shot context manager: a fresh one for every submission
            on_gpu = use_gpu_resources and GPU_METHODS & set(group)
            with dask.annotate(resources={"GPU": 1}) if on_gpu else contextlib.nullcontext():
                fut = dose_task.submit(cohort_dir, patient, timepoint, group, mc_decays, seed)
            pending.append((fut, [f"dose_{m}" for m in group], patient, timepoint))
    return [r for p in pending for r in _outcomes(*p)]


@flow(name="aggregate", log_prints=True)
def aggregate_flow(cohort_dir: str, notes: Sequence[str] = ()) -> dict:
    """Per-scan VOI statistics in parallel, then the cohort tables (incl. absorbed dose) and the HTML report."""
    from cohort_dosimetry.store import open_cohort

    scans = open_cohort(cohort_dir).scans()
    futures = [(scan_stats_task.submit(cohort_dir, p, t), p, t) for p, t in scans]
    per_scan, failures = [], []
    for fut, p, t in futures:
        fut.wait()
        if fut.state.is_completed():
            per_scan.append(fut.result())
        else:  # statistics are recomputed every run, so only their failures belong in the run record
            failures += _outcomes(fut, ["stats"], p, t)
    summary = cohort_tables_task(cohort_dir, per_scan)
    summary["report"] = report_task(cohort_dir, list(notes))
    summary["results"] = failures
    return summary


@flow(name="cohort", log_prints=True)
def cohort_flow(
    dicom_dir: str,
    cohort_dir: str,
    methods: Sequence[str] = ("dvk", "cnn", "mc"),
    address: str | None = None,
    grid: str = "compact",
    mc_scans: str = "all",
    mc_decays: int = 5_000_000,
    seed: int = 0,
    roi_names: dict[str, str] | None = None,
) -> dict:
    """The whole overnight job: ingest, dose-rate maps, statistics, report, run record.

    ``address``: a Dask scheduler (``tcp://host:8786``); None starts the embedded default for the length of the run.
    ``roi_names``: the user's {ROI name as written: vocabulary name} for ingest
    (``cohort_dosimetry.vocabulary.read_roi_names``).
    """
    logger = get_run_logger()
    t0 = time.perf_counter()
    methods = tuple(methods)
    notes = []
    if "mc" in methods and mc_scans == "first":
        notes.append("Monte Carlo was run on the earliest scan of each patient's therapy cycle only, to bound its "
                     "CPU cost.")
    with dask_scheduler(address) as addr:
        runner = DaskTaskRunner(address=addr)
        gpus = cluster_has_gpus(addr)
        logger.info("tasks run on Dask at %s (GPU workers: %s)", addr, gpus)
        stage_wall_s = {}
        t = time.perf_counter()
        results = list(ingest_flow.with_options(task_runner=runner)(dicom_dir, cohort_dir, grid, roi_names))
        stage_wall_s["ingest"] = time.perf_counter() - t
        t = time.perf_counter()
        results += dose_flow.with_options(task_runner=runner)(
            cohort_dir, methods, mc_scans=mc_scans, mc_decays=mc_decays, seed=seed, use_gpu_resources=gpus)
        stage_wall_s["dose"] = time.perf_counter() - t
        t = time.perf_counter()
        summary = aggregate_flow.with_options(task_runner=runner)(cohort_dir, notes)
        stage_wall_s["stats+report"] = time.perf_counter() - t
    results += summary.pop("results")
    wall = time.perf_counter() - t0
    run_id = str(flow_run.get_id() or "local")
    record_run_task(cohort_dir, run_id, results, wall, methods)
    failed = [r for r in results if r["status"] == "failed"]
    for r in failed:
        logger.warning("FAILED %s %s/%s: %s", r["step"], r["patient"], r["timepoint"], r["message"])
    task_seconds = {}
    for r in results:
        task_seconds[r["step"]] = task_seconds.get(r["step"], 0.0) + r["seconds"]
    summary.update(run_id=run_id, wall_time_s=wall, stage_wall_s=stage_wall_s, task_seconds=task_seconds,
                   results=results, notes=notes, **{f"n_{k}": v for k, v in scan_outcomes(results).items()})
    return summary
