"""The cohort flows. They orchestrate only: every computation is a library step wrapped by a task in ``_tasks``.

``cohort_flow`` = ``ingest_flow`` -> ``dose_flow`` -> ``absorbed_dose_flow`` -> ``aggregate_flow`` -> run record.
Each runs its tasks on Dask (``address`` of an existing cluster, or the embedded default of ``_runtime``). A failed
scan is recorded and the others go on; a rerun computes only the maps the store does not hold for these settings.

No ``from __future__ import annotations`` here: the flows' parameter annotations must be objects, not strings. A
served deployment (``Flow.serve``) runs its flow in a subprocess from a by-value cloudpickle of the function, whose
globals hold only the names its body uses; Prefect validates the run's parameters against the annotations resolved
in those globals, so a string annotation such as ``"Sequence[str]"`` fails every run before it starts.
"""

import contextlib
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import dask
from prefect import flow, get_run_logger
from prefect.runtime import flow_run
from prefect_dask import DaskTaskRunner

from cohort_dosimetry.constants import DEFAULT_DOSE_GRID, MC_DECAYS, MC_SCAN_RULES, METHODS
from cohort_dosimetry.pipeline import (
    StepResult,
    cycle_timepoints,
    failed_planned_scan,
    patient_cycles,
    scan_outcomes,
    select_mc_scans,
)
from cohort_dosimetry.store import lock_timeout
from flows._runtime import cluster_has_gpus, dask_scheduler, parameter_from_environment
from flows._tasks import (
    cohort_tables_task,
    cycle_dose_task,
    cycle_stats_task,
    dose_task,
    finish_ingest_task,
    ingest_scan_task,
    plan_ingest_task,
    record_run_task,
    report_task,
    scan_stats_task,
)

if TYPE_CHECKING:
    from prefect.task_runners import TaskRunner

#: Methods whose work belongs on a GPU when the cluster has one: all of them (DVK and the CNN run on torch, MC too).
GPU_METHODS = frozenset(METHODS)
#: Seconds GPU-tagged dose tasks wait while the cluster has no worker with a GPU resource, before they fail.
DEFAULT_GPU_WAIT_TIMEOUT_S = 600.0


def _failure_message(exc: BaseException) -> str:
    """Why a task did not return, for the run record (the scan is named by the StepResult that carries it)."""
    from distributed import KilledWorker

    if isinstance(exc, KilledWorker):
        return (
            f"every Dask worker that ran the task died while running it (out of memory, or killed): KilledWorker: {exc}"
        )
    return f"{type(exc).__name__}: {exc}"


def _watch(
    entries: list[tuple[Any, bool]], task_timeout_s: float | None = None, gpu_wait_timeout_s: float | None = None
) -> dict[int, str]:
    """Wait until every task future of ``entries`` ((future, asks for a GPU), ...) has finished, giving up on those
    that cannot or should not finish; returns {id(future): why} for those, each cancelled.

    * ``task_timeout_s``: a task seen computing on a worker for longer (checked every second) is cancelled and its
      worker restarted by its nanny, which stops the computation (a thread cannot be stopped otherwise; Prefect's
      own task timeout, an exception sent into the thread, can be swallowed on its way, e.g. by a garbage-collector
      callback of the Dask worker).
    * ``gpu_wait_timeout_s``: when the cluster has had no worker with a ``GPU`` resource for that long, the
      GPU-tagged tasks still waiting are cancelled (Dask would keep them waiting for one forever). A GPU worker back
      within the wait (a nanny restarting one that died) resets the clock.
    """
    from concurrent.futures import CancelledError

    from distributed import wait

    from flows._runtime import executing_keys, gpu_worker_addresses

    watch_gpu = gpu_wait_timeout_s is not None and any(gpu for _, gpu in entries)
    if not entries or (task_timeout_s is None and not watch_gpu):
        return {}
    client = entries[0][0].wrapped_future.client
    given_up: dict[int, str] = {}
    started: dict[str, float] = {}  # key -> when it was first seen computing
    without_gpu_since = None
    while True:
        waiting = [(f, gpu) for f, gpu in entries if id(f) not in given_up and not f.wrapped_future.done()]
        if not waiting:
            return given_up
        now = time.monotonic()
        if watch_gpu and any(gpu for _, gpu in waiting):
            if gpu_worker_addresses(client.scheduler_info(n_workers=-1)["workers"]):
                without_gpu_since = None
            else:
                assert gpu_wait_timeout_s is not None  # watch_gpu needs it
                without_gpu_since = without_gpu_since or now
                if now - without_gpu_since >= gpu_wait_timeout_s:
                    stranded = [f for f, gpu in waiting if gpu]
                    client.cancel([f.wrapped_future for f in stranded])
                    given_up.update(
                        {
                            id(f): (
                                f"no Dask worker with a GPU resource was left for {gpu_wait_timeout_s:g} s "
                                "(the GPU wait timeout, --gpu-wait-timeout): the task waited for one and was "
                                "cancelled"
                            )
                            for f in stranded
                        }
                    )
        if task_timeout_s is not None:
            by_key = {str(f.wrapped_future.key): f for f, _ in waiting if id(f) not in given_up}
            busy = [w for w, keys in client.processing().items() if by_key.keys() & {str(k) for k in keys}]
            computing = client.run(executing_keys, workers=busy, on_error="return") if busy else {}
            for worker, keys in computing.items():
                for key in keys if isinstance(keys, list) else []:
                    if key not in by_key or now - started.setdefault(key, now) < task_timeout_s:
                        continue
                    client.cancel([by_key[key].wrapped_future])
                    restarted = client.restart_workers([worker], timeout=120, raise_for_error=False).get(worker)
                    given_up[id(by_key[key])] = (
                        f"ran longer than the task timeout of {task_timeout_s:g} s (--task-timeout) on {worker}: "
                        "cancelled, "
                        + (
                            "its worker restarted"
                            if restarted == "OK"
                            else f"its worker could not be restarted ({restarted}) and computes on"
                        )
                    )
        still = [f.wrapped_future for f, _ in waiting if id(f) not in given_up]
        try:  # the next check after a second, or as soon as one of them finishes
            with client.as_current():
                wait(still, timeout=1.0, return_when="FIRST_COMPLETED")
        except (TimeoutError, CancelledError):  # cancelled elsewhere: its own result says so
            pass


def _settled(future) -> tuple[Any, str | None]:
    """Wait for a task future: (its result, None), or (None, why it failed). Reads the Dask future and the final
    state it carries, so a task whose worker died before it reported to the API is a failure too, not an error."""
    future.wait()
    try:
        return future.result(), None
    except Exception as exc:  # the task's own error, a dead worker, a timeout: recorded against the scan
        return None, _failure_message(exc)


def _outcomes(future, steps: list[str], patient: str, timepoint: str) -> list[dict]:
    """The StepResults of a finished task future (a list, or one dict); a failure fails each of its ``steps``."""
    result, message = _settled(future)
    if message is None:
        return result if isinstance(result, list) else [result]
    return [StepResult(step, patient, timepoint, "failed", 0.0, message).as_dict() for step in steps]


@flow(name="ingest", log_prints=True)
def ingest_flow(
    dicom_dir: str,
    cohort_dir: str,
    grid: str = DEFAULT_DOSE_GRID,
    roi_names: dict[str, str] | None = None,
    lock_timeout_s: float | None = None,
    task_timeout_s: float | None = None,
) -> list[dict]:
    """Ingest a DICOM folder into the cohort store (idempotent: unchanged files are a no-op). ``roi_names``: the
    user's {ROI name as written: vocabulary name}, extending the built-in clinical synonyms.

    Discovery, pseudonyms and labels once, here (the plan: the pseudonym key is the one of the process that runs
    the flow), then one task per scan, so that a scan whose build kills its worker (out of memory) or times out
    (``task_timeout_s``) fails alone and the run record names it; then cycle notes and the ingest report.
    ``lock_timeout_s``: the longest wait for a store lock (None: the configured wait, see
    ``cohort_dosimetry.store.lock_timeout``).
    """
    with lock_timeout(lock_timeout_s):
        plan = plan_ingest_task(dicom_dir, cohort_dir, grid, roi_names)
    submitted = [
        (ingest_scan_task.submit(cohort_dir, scan, lock_timeout_s=lock_timeout_s), scan) for scan in plan.scans
    ]
    given_up = _watch([(future, False) for future, _ in submitted], task_timeout_s=task_timeout_s)
    outcomes = []
    result: Any  # the task's outcome dict where message is None
    for future, scan in submitted:
        result, message = (None, given_up[id(future)]) if id(future) in given_up else _settled(future)
        outcomes.append(result if message is None else failed_planned_scan(scan, f"ingest did not finish: {message}"))
    with lock_timeout(lock_timeout_s):
        return finish_ingest_task(cohort_dir, plan, outcomes)


@flow(name="dose", log_prints=True)
def dose_flow(
    cohort_dir: str,
    methods: Sequence[str] = ("dvk", "cnn"),
    mc_scans: str = "all",
    mc_decays: int = MC_DECAYS,
    seed: int = 0,
    use_gpu_resources: bool = False,
    gpu_wait_timeout_s: float = DEFAULT_GPU_WAIT_TIMEOUT_S,
    task_timeout_s: float | None = None,
    lock_timeout_s: float | None = None,
) -> list[dict]:
    """Per scan: DVK, then CNN (on the DVK map of the same scan), and MC where asked.

    ``mc_scans``: "all"; or, to bound MC cost on a CPU, one scan per patient and therapy cycle: "first" (the
    earliest) or "nearest-96h" (the one nearest 96 h after injection, where a single-time-point absorbed dose
    holds; ``cohort_dosimetry.pipeline.select_mc_scans``). ``use_gpu_resources``: every dose task asks for a
    worker's ``GPU`` resource (the cluster has such workers); each worker computes on its own CUDA device if it has
    one, else on its CPU. When the cluster has had no GPU worker for ``gpu_wait_timeout_s`` seconds (they died or
    left), the dose tasks still waiting for one fail, naming their scans. ``task_timeout_s``: the longest a dose task
    may run (None: no limit); ``lock_timeout_s``: the longest wait for a store lock (None: the configured wait).
    """
    from cohort_dosimetry.store import open_cohort

    unknown = set(methods) - set(METHODS)
    if unknown:
        raise ValueError(f"unknown dose methods {sorted(unknown)}; expected some of {METHODS}")
    cohort = open_cohort(cohort_dir)
    scans = cohort.scans()
    mc_selected = select_mc_scans({s: cohort.scan_attrs(*s) for s in scans}, mc_scans) if "mc" in methods else set()
    # One task per scan for DVK -> CNN (the CNN's prior is the DVK map) and one for MC, which needs neither.
    # No task waits on another inside Dask, so every worker runs one task at a time.
    pending, on_gpu = [], []
    for patient, timepoint in scans:
        kernel_methods = tuple(m for m in ("dvk", "cnn") if m in methods)
        run_mc = (patient, timepoint) in mc_selected
        for group in (kernel_methods, ("mc",) if run_mc else ()):
            if not group:
                continue
            # dask.annotate returns a one-shot context manager: a fresh one for every submission
            gpu = bool(use_gpu_resources and GPU_METHODS & set(group))
            with dask.annotate(resources={"GPU": 1}) if gpu else contextlib.nullcontext():
                fut = dose_task.submit(
                    cohort_dir, patient, timepoint, group, mc_decays, seed, lock_timeout_s=lock_timeout_s
                )
            pending.append((fut, [f"dose_{m}" for m in group], patient, timepoint))
            on_gpu.append(gpu)
    given_up = _watch(
        [(p[0], gpu) for p, gpu in zip(pending, on_gpu)],
        task_timeout_s=task_timeout_s,
        gpu_wait_timeout_s=gpu_wait_timeout_s,
    )
    stranded = sorted({f"{p}/{t}" for fut, _, p, t in pending if "GPU wait" in given_up.get(id(fut), "")})
    if stranded:
        get_run_logger().error(
            "no Dask worker with a GPU resource for %g s (the GPU wait timeout): the dose tasks "
            "of %d scan(s) that waited for one fail: %s",
            gpu_wait_timeout_s,
            len(stranded),
            ", ".join(stranded),
        )
    return _collect(pending, given_up)


def _collect(pending: list, given_up: dict[int, str]) -> list[dict]:
    """The StepResults of submitted tasks ``(future, steps, patient, timepoint)``: a task given up on fails each
    of its steps with the reason."""
    results = []
    for fut, steps, patient, timepoint in pending:
        if id(fut) in given_up:
            results += [StepResult(s, patient, timepoint, "failed", 0.0, given_up[id(fut)]).as_dict() for s in steps]
        else:
            results += _outcomes(fut, steps, patient, timepoint)
    return results


@flow(name="absorbed-dose", log_prints=True)
def absorbed_dose_flow(
    cohort_dir: str,
    methods: Sequence[str] = METHODS,
    task_timeout_s: float | None = None,
    lock_timeout_s: float | None = None,
) -> list[dict]:
    """Per patient and therapy cycle, in parallel: register the cycle's CTs onto its earliest scan, warp the
    dose-rate maps and integrate them voxel by voxel into absorbed-dose maps (``pipeline.cycle_absorbed_dose``).
    A cycle that fails is recorded against its reference scan; the others go on."""
    pending = []
    for patient, cycle in patient_cycles(cohort_dir):
        reference = cycle_timepoints(cohort_dir, patient, cycle)[0]
        future = cycle_dose_task.submit(cohort_dir, patient, cycle, tuple(methods), lock_timeout_s=lock_timeout_s)
        pending.append((future, [f"absorbed_dose_{m}" for m in methods], patient, reference))
    return _collect(pending, _watch([(p[0], False) for p in pending], task_timeout_s=task_timeout_s))


@flow(name="aggregate", log_prints=True)
def aggregate_flow(
    cohort_dir: str,
    notes: Sequence[str] = (),
    sensitivity_cps_per_mbq: float | None = None,
    calibration_uncertainty: float | None = None,
) -> dict:
    """Per-scan VOI statistics and per-cycle absorbed-dose-map statistics in parallel, then the cohort tables
    (incl. absorbed dose, with the uncertainty components that ``sensitivity_cps_per_mbq`` and
    ``calibration_uncertainty`` allow: ``cohort_dosimetry.stats.absorbed_dose``) and the HTML report."""
    from cohort_dosimetry.store import open_cohort

    cohort = open_cohort(cohort_dir)
    futures = [(scan_stats_task.submit(cohort_dir, p, t), p, t) for p, t in cohort.scans()]
    cycle_futures = [(cycle_stats_task.submit(cohort_dir, p, c), p, c) for p, c in cohort.cycle_results()]
    per_scan, per_cycle, failures = [], [], []
    for fut, p, t in futures:
        result, message = _settled(fut)
        if message is None:
            per_scan.append(result)
        else:  # statistics are recomputed every run, so only their failures belong in the run record
            failures.append(StepResult("stats", p, t, "failed", 0.0, message).as_dict())
    for fut, p, c in cycle_futures:
        result, message = _settled(fut)
        if message is None:
            per_cycle.append(result)
        else:
            reference = cohort.cycle_attrs(p, c) or {}
            failures.append(
                StepResult("stats", p, reference.get("reference_timepoint", ""), "failed", 0.0, message).as_dict()
            )
    if per_scan:
        summary = cohort_tables_task(cohort_dir, per_scan, per_cycle, sensitivity_cps_per_mbq, calibration_uncertainty)
        summary["report"] = report_task(cohort_dir, list(notes))
    else:  # no scan has a dose-rate map (each one's failure is in ``failures``): no tables or report; a run record
        summary = {"report": ""}
    summary["results"] = failures
    return summary


@flow(name="cohort", log_prints=True)
def cohort_flow(
    dicom_dir: str | None = None,
    cohort_dir: str | None = None,
    methods: Sequence[str] = ("dvk", "cnn", "mc"),
    address: str | None = None,
    grid: str = DEFAULT_DOSE_GRID,
    mc_scans: str = "all",
    mc_decays: int = MC_DECAYS,
    seed: int = 0,
    roi_names: dict[str, str] | None = None,
    gpu_wait_timeout_s: float = DEFAULT_GPU_WAIT_TIMEOUT_S,
    task_timeout_s: float | None = None,
    lock_timeout_s: float | None = None,
    sensitivity_cps_per_mbq: float | None = None,
    calibration_uncertainty: float | None = None,
) -> dict:
    """The whole overnight job: ingest, dose-rate maps, absorbed-dose maps per therapy cycle, statistics, report,
    run record.

    ``address``: a Dask scheduler (``tcp://host:8786``); None starts the embedded default for the length of the run.
    ``roi_names``: the user's {ROI name as written: vocabulary name} for ingest
    (``cohort_dosimetry.vocabulary.read_roi_names``).
    ``sensitivity_cps_per_mbq`` (the site's camera, cps/MBq) and ``calibration_uncertainty`` (relative, e.g. 0.05):
    the count-noise and calibration components of the absorbed dose's uncertainty (None: not estimated; the
    ``absorbed_dose`` table and the report say so).
    Timeouts, in seconds, each failing what waited and naming its scan in the run record: ``gpu_wait_timeout_s``,
    how long dose tasks wait while the cluster has no GPU worker (it had one at the start); ``task_timeout_s``, the
    longest an ingest or dose task may run (None: no limit); ``lock_timeout_s``, the longest wait for a store lock
    (None: ``$COHORT_DOSIMETRY_LOCK_TIMEOUT_S`` or the store's default).
    ``dicom_dir``, ``cohort_dir`` and ``address`` left unset (None) are read when the run starts from the environment
    of the process that runs it (``COHORT_DICOM_DIR``, ``COHORT_DIR``, ``DASK_SCHEDULER_ADDRESS``; for a deployment,
    the Prefect worker's), so that a deployment names no path or host (deploy/prefect.yaml).
    """
    dicom_dir = parameter_from_environment("dicom_dir", dicom_dir)
    cohort_dir = parameter_from_environment("cohort_dir", cohort_dir)
    address = parameter_from_environment("address", address)
    assert dicom_dir is not None and cohort_dir is not None  # required: parameter_from_environment raised otherwise
    logger = get_run_logger()
    t0 = time.perf_counter()
    methods = tuple(methods)
    if mc_scans not in MC_SCAN_RULES:  # refused before anything runs
        raise ValueError(f"unknown mc_scans rule {mc_scans!r}; expected one of {MC_SCAN_RULES}")
    notes = []
    if "mc" in methods and mc_scans != "all":
        which = "the earliest scan" if mc_scans == "first" else "the scan nearest 96 h after injection"
        notes.append(
            f"Monte Carlo was run on {which} of each patient's therapy cycle only, to bound its CPU cost: each MC "
            "absorbed dose is a single-time-point estimate (Hänscheid's formula for a scan at 72-120 h, else "
            "Madsen's with the VOI class's prior effective half-life inside its window, else none); the "
            "absorbed-dose table names the rule and the reason for each."
        )
    with dask_scheduler(address) as addr:
        # prefect_dask's runner subclasses TaskRunner unparametrised, which prefect's with_options does not accept
        runner: TaskRunner[Any] = DaskTaskRunner(address=addr)
        gpus = cluster_has_gpus(addr)
        logger.info("tasks run on Dask at %s (GPU workers: %s)", addr, gpus)
        stage_wall_s = {}
        t = time.perf_counter()
        results = list(
            ingest_flow.with_options(task_runner=runner)(
                dicom_dir, cohort_dir, grid, roi_names, lock_timeout_s=lock_timeout_s, task_timeout_s=task_timeout_s
            )
        )
        stage_wall_s["ingest"] = time.perf_counter() - t
        t = time.perf_counter()
        results += dose_flow.with_options(task_runner=runner)(
            cohort_dir,
            methods,
            mc_scans=mc_scans,
            mc_decays=mc_decays,
            seed=seed,
            use_gpu_resources=gpus,
            gpu_wait_timeout_s=gpu_wait_timeout_s,
            task_timeout_s=task_timeout_s,
            lock_timeout_s=lock_timeout_s,
        )
        stage_wall_s["dose"] = time.perf_counter() - t
        t = time.perf_counter()
        results += absorbed_dose_flow.with_options(task_runner=runner)(
            cohort_dir, methods, task_timeout_s=task_timeout_s, lock_timeout_s=lock_timeout_s
        )
        stage_wall_s["absorbed dose"] = time.perf_counter() - t
        t = time.perf_counter()
        with lock_timeout(lock_timeout_s):
            summary = aggregate_flow.with_options(task_runner=runner)(
                cohort_dir, notes, sensitivity_cps_per_mbq, calibration_uncertainty
            )
        stage_wall_s["stats+report"] = time.perf_counter() - t
    results += summary.pop("results")
    wall = time.perf_counter() - t0
    run_id = str(flow_run.get_id() or "local")
    with lock_timeout(lock_timeout_s):
        record_run_task(cohort_dir, run_id, results, wall, methods)
    failed = [r for r in results if r["status"] == "failed"]
    for r in failed:
        logger.warning("FAILED %s %s/%s: %s", r["step"], r["patient"], r["timepoint"], r["message"])
    task_seconds: dict[str, float] = {}
    for r in results:
        task_seconds[r["step"]] = task_seconds.get(r["step"], 0.0) + r["seconds"]
    summary.update(
        run_id=run_id,
        wall_time_s=wall,
        stage_wall_s=stage_wall_s,
        task_seconds=task_seconds,
        results=results,
        notes=notes,
        **{f"n_{k}": v for k, v in scan_outcomes(results).items()},
    )
    return summary
