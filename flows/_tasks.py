"""Prefect tasks: thin wrappers that call one library step (cohort_dosimetry.pipeline and friends) each.

Tasks take and return ids, paths and small summaries; they never pass volumes. Retries are for transient failures
(I/O, a lost worker); a data problem (ValueError and its kin) fails at once and is recorded against its scan.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import dask
from prefect import task
from prefect.cache_policies import NO_CACHE

from cohort_dosimetry import pipeline
from cohort_dosimetry.store import lock_timeout

if TYPE_CHECKING:
    from cohort_dosimetry.io import IngestPlan

_DATA_ERRORS = (ValueError, KeyError, TypeError, FileNotFoundError)


def _transient(task, task_run, state) -> bool:
    """Retry unless the failure is a data error (rerunning the same bad input gives the same error) or a timeout (the
    task or a store lock already waited as long as it was allowed to)."""
    try:
        state.result()
    except (*_DATA_ERRORS, TimeoutError):
        return False
    except Exception:
        return True
    return False


@contextmanager
def _self_contained(lock_timeout_s: float | None = None) -> Iterator[None]:
    """Around a task's library call: store locks wait at most ``lock_timeout_s`` (None: the configured wait), and
    the task's own lazy array reads (xarray on Zarr) run in its thread with dask's synchronous scheduler. Inside a
    Dask worker, dask would otherwise send each chunk read to the cluster as a task of its own: a GPU task's reads
    would run on workers without a GPU, and the task would hold its worker's only thread while they queue."""
    with dask.config.set(scheduler="synchronous"), lock_timeout(lock_timeout_s):
        yield


_step: dict[str, Any] = dict(
    retries=2, retry_delay_seconds=2, retry_condition_fn=_transient, cache_policy=NO_CACHE, persist_result=False
)


@task(name="plan-ingest", **_step)
def plan_ingest_task(dicom_dir: str, cohort_dir: str, grid: str, roi_names: dict[str, str] | None = None) -> IngestPlan:
    return pipeline.plan_cohort_ingest(dicom_dir, cohort_dir, grid=grid, roi_names=roi_names)


@task(name="ingest-scan", task_run_name="ingest {scan.subject}", **_step)
def ingest_scan_task(cohort_dir: str, scan, lock_timeout_s: float | None = None) -> dict:
    with _self_contained():
        return pipeline.ingest_planned_scan(cohort_dir, scan, lock_timeout_s=lock_timeout_s)


@task(name="finish-ingest", **_step)
def finish_ingest_task(cohort_dir: str, plan, outcomes: list[dict]) -> list[dict]:
    return pipeline.finish_cohort_ingest(cohort_dir, plan, outcomes)


@task(name="dose-rate", task_run_name="{methods} {patient}/{timepoint}", **_step)
def dose_task(
    cohort_dir: str,
    patient: str,
    timepoint: str,
    methods: tuple[str, ...],
    mc_decays: int,
    seed: int,
    lock_timeout_s: float | None = None,
) -> list[dict]:
    with _self_contained(lock_timeout_s):
        return pipeline.compute_scan_dose(cohort_dir, patient, timepoint, methods, mc_decays=mc_decays, seed=seed)


@task(name="scan-statistics", task_run_name="stats {patient}/{timepoint}", **_step)
def scan_stats_task(cohort_dir: str, patient: str, timepoint: str) -> dict:
    with _self_contained():
        return pipeline.scan_statistics(cohort_dir, patient, timepoint)


@task(name="absorbed-dose", task_run_name="absorbed dose {patient} cycle {cycle}", **_step)
def cycle_dose_task(
    cohort_dir: str, patient: str, cycle: int, methods: tuple[str, ...], lock_timeout_s: float | None = None
) -> list[dict]:
    with _self_contained(lock_timeout_s):
        return pipeline.cycle_absorbed_dose(cohort_dir, patient, cycle, methods)


@task(name="cycle-statistics", task_run_name="stats {patient} cycle {cycle}", **_step)
def cycle_stats_task(cohort_dir: str, patient: str, cycle: int) -> dict:
    with _self_contained():
        return pipeline.cycle_statistics(cohort_dir, patient, cycle)


@task(name="cohort-tables", **_step)
def cohort_tables_task(
    cohort_dir: str,
    per_scan: list[dict],
    per_cycle: list[dict],
    sensitivity_cps_per_mbq: float | None = None,
    calibration_uncertainty: float | None = None,
) -> dict:
    return pipeline.write_cohort_tables(
        cohort_dir, per_scan, per_cycle, sensitivity_cps_per_mbq, calibration_uncertainty
    )


@task(name="report", **_step)
def report_task(cohort_dir: str, notes: list[str]) -> str:
    return pipeline.write_cohort_report(cohort_dir, notes=notes)


@task(name="record-run", **_step)
def record_run_task(
    cohort_dir: str, run_id: str, results: list[dict], wall_time_s: float, methods: tuple[str, ...]
) -> None:
    pipeline.record_run(
        cohort_dir,
        run_id,
        results,
        wall_time_s,
        methods,
        weights_sha256=pipeline.weights_sha256() if "cnn" in methods else "",
        kernel_sha256=pipeline.kernel_sha256(cohort_dir),
    )
