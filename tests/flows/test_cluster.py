"""`cohort-dosimetry run --address` on a real multi-process Dask cluster: a `dask scheduler` and three `dask worker`
processes on loopback (one thread each, under their nannies), two advertising ``GPU=1`` and one advertising nothing,
all reporting to one Prefect API.

Where each task ran is read from the scheduler's own records (its task stream). The workers have no CUDA, so the
run record must say that every map was computed on the CPU of a GPU-resource worker. The cases: placement; the GPU
workers gone after the run started; a scheduler address nobody answers at; and, marked slow (20-30 s each on two
cores): a worker SIGKILLed mid-run; a scan whose build kills every worker that tries it (as the out-of-memory killer
does); tasks over the task timeout. The tests share one cluster; a test that kills workers leaves their restart to
the next test's fixture.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

from flows._runtime import executing_keys
from tests.flows._cluster import Cluster, cluster_env, run_command, warm_imports

pytestmark = pytest.mark.usefixtures("prefect_api")

WORKERS = {"gpu-0": True, "gpu-1": True, "cpu-0": False}


class _TestCluster(Cluster):
    def ensure_workers(self) -> None:
        """Every worker of :data:`WORKERS` up (started again if a test killed it for good), imports done."""
        from distributed import Client

        alive = {w.name for w in self.workers if w.proc.poll() is None}
        self.workers = [w for w in self.workers if w.name in alive]
        for name, gpu in WORKERS.items():
            if name not in alive:
                self.start_worker(name, gpu)
        self.wait_for_workers(len(WORKERS))
        with Client(self.address, set_as_default=False, timeout=30) as client:
            client.run(warm_imports)

    def crash_on(self, series_uids: list[str]) -> None:
        """Workers that start to build a scan of these SPECT series kill themselves (tests/flows/_worker_crash.py)."""
        Path(self.env["COHORT_TEST_CRASH_SERIES"]).write_text("\n".join(series_uids))


@pytest.fixture(scope="module")
def cluster(prefect_api, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("dask-cluster")
    env = cluster_env(prefect_api, COHORT_TEST_CRASH_SERIES=str(tmp / "crash-series.txt"))
    with _TestCluster(tmp, env) as c:
        c.start_scheduler()
        c.ensure_workers()
        yield c


@pytest.fixture
def live_cluster(cluster):
    """The module's cluster with all its workers up and no scan set to crash its worker."""
    cluster.crash_on([])
    cluster.ensure_workers()
    yield cluster
    cluster.crash_on([])


@pytest.fixture
def client(live_cluster):
    from distributed import Client

    with Client(live_cluster.address, set_as_default=False, timeout=30) as c:
        c.get_task_stream()  # installs the scheduler's task-stream plugin: it records every task from here on
        yield c


@pytest.fixture(scope="module")
def one_patient_dicom(tiny_dicom, tmp_path_factory):
    """The tiny cohort's patient with four scans, alone (4 scans: at most one per worker and one more)."""
    from cohort_dosimetry.io import discover_studies

    found = discover_studies(tiny_dicom)
    counts = pd.Series([s.patient_id for s in found.scans]).value_counts()
    patient = counts.index[counts == 4][0]
    (folder,) = {
        Path(*Path(f).relative_to(tiny_dicom).parts[:2])
        for s in found.scans
        if s.patient_id == patient
        for f in s.spect.files
    }  # dicom/patient_XX
    out = tmp_path_factory.mktemp("one-patient")
    shutil.copytree(tiny_dicom / folder, out / folder)
    return out


def _run(cluster, dicom, cohort, *options, timeout=300):
    t0 = time.monotonic()
    result = run_command(["run", str(dicom), str(cohort), "--address", cluster.address, *options], cluster.env, timeout)
    result.wall_s = time.monotonic() - t0
    return result


def _kind(key) -> str:
    from dask.utils import key_split

    return key_split(key)


def _placement(records: list[dict], names: dict[str, str]) -> pd.DataFrame:
    """One row per task the scheduler saw finish: its kind (the task function) and the worker's name."""
    rows = [
        {"kind": _kind(r["key"]), "worker": names.get(r["worker"], r["worker"]), "status": r["status"]} for r in records
    ]
    return pd.DataFrame(rows, columns=["kind", "worker", "status"])


def _worker_names(client) -> dict[str, str]:
    return {address: w["name"] for address, w in client.scheduler_info(n_workers=-1)["workers"].items()}


def test_dose_tasks_run_only_on_gpu_workers_and_ingest_and_statistics_anywhere(
    live_cluster, client, tiny_dicom, tmp_path
):
    from cohort_dosimetry.store import open_cohort

    names = _worker_names(client)
    gpu_workers = {name for name, gpu in WORKERS.items() if gpu}
    t0 = time.time()
    result = _run(live_cluster, tiny_dicom, tmp_path / "cohort", "--methods", "dvk,cnn,mc", "--mc-decays", "20000")
    assert result.returncode == 0, result.stdout + result.stderr
    placement = _placement(client.get_task_stream(start=t0), names)
    cohort = open_cohort(tmp_path / "cohort")
    scans = cohort.scans()
    assert len(scans) >= 6

    table = placement.groupby(["kind", "worker"]).size().unstack(fill_value=0)
    print(
        f"\ntasks per worker (GPU=1: {sorted(gpu_workers)}; no resources: cpu-0), run of {result.wall_s:.0f} s:\n"
        f"{table.to_string()}"
    )
    assert (placement["status"] == "OK").all(), placement
    dose = placement[placement["kind"] == "dose_task"]
    assert len(dose) == 2 * len(scans)  # per scan: one DVK -> CNN task, one MC task
    assert set(dose["worker"]) <= gpu_workers, table
    # ingest (one task per scan) and statistics ask for nothing: the plain worker takes its share. The first three
    # ingest tasks go to the three idle workers, so cpu-0 always runs one.
    ingest = placement[placement["kind"] == "ingest_scan_task"]
    stats = placement[placement["kind"] == "scan_stats_task"]
    assert len(ingest) == len(scans) and len(stats) == len(scans)
    assert "cpu-0" in set(ingest["worker"]), table
    # per patient and cycle: one absorbed-dose task (registration and integration, CPU) and its statistics
    n_cycles = len({(p, cohort.scan_attrs(p, t)["cycle"]) for p, t in scans})
    for kind in ("cycle_dose_task", "cycle_stats_task"):
        assert (placement["kind"] == kind).sum() == n_cycles, table
    kinds = {"ingest_scan_task", "dose_task", "scan_stats_task", "cycle_dose_task", "cycle_stats_task"}
    assert set(placement["kind"]) == kinds, table

    # no worker has CUDA: every map says it was computed on the CPU, in the run record and in the map's provenance
    run = cohort.runs().iloc[-1]
    assert run["n_scans_failed"] == 0 and run["n_scans_done"] == len(scans)
    devices = dict(entry.rsplit(": ", 1) for entry in run["dose_devices"].split("; "))
    assert devices == {f"dose_{m} {p}/{t}": "cpu" for p, t in scans for m in ("dvk", "cnn", "mc")}
    for p, t in scans:
        provenance = cohort.scan_attrs(p, t)["provenance"]
        assert {provenance[f"dose_rate_{m}"]["device"] for m in ("dvk", "cnn", "mc")} == {"cpu"}


@pytest.mark.slow
def test_a_worker_killed_mid_run_costs_nothing_but_time(live_cluster, client, one_patient_dicom, tmp_path):
    """SIGKILL of a GPU worker while it computes a dose-rate map: Dask runs the map again on the other GPU worker
    and the run completes with every map."""
    from cohort_dosimetry.store import open_cohort

    names = _worker_names(client)
    pids = client.run(os.getpid)
    victim = next(a for a, n in names.items() if n == "gpu-0")
    killed = {}

    def kill_gpu_0_mid_dose_task():
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            executing = client.run(executing_keys, workers=[victim]).get(victim, [])
            dose = [k for k in executing if _kind(k) == "dose_task"]
            if dose:
                os.kill(pids[victim], signal.SIGKILL)
                killed["key"] = dose[0]
                return
            time.sleep(0.05)

    killer = threading.Thread(target=kill_gpu_0_mid_dose_task)
    t0 = time.time()
    killer.start()
    try:
        result = _run(
            live_cluster, one_patient_dicom, tmp_path / "cohort", "--methods", "dvk,mc", "--mc-decays", "300000"
        )
    finally:
        killer.join()
    assert killed, "gpu-0 never ran a dose task: the test killed nothing"
    assert result.returncode == 0, result.stdout + result.stderr
    cohort = open_cohort(tmp_path / "cohort")
    scans = cohort.scans()
    assert len(scans) == 4
    assert all(cohort.has_arrays(p, t, ["dose_rate_dvk", "dose_rate_mc"]) for p, t in scans)
    assert cohort.runs().iloc[-1]["n_scans_failed"] == 0
    # the task the dead worker was computing finished elsewhere, on the other GPU worker
    again = [r["worker"] for r in client.get_task_stream(start=t0) if r["key"] == killed["key"]]
    assert again and victim not in again
    assert names.get(again[0]) == "gpu-1"


@pytest.mark.slow
def test_a_scan_that_kills_its_workers_fails_alone_and_the_run_record_names_it(
    live_cluster, one_patient_dicom, tmp_path
):
    """The last scan's build kills whichever worker runs it (SIGKILL, as the out-of-memory killer does). Dask gives
    it to four workers in turn (their nannies restart them), then gives up: that scan fails, named; the other three
    are ingested and get their maps."""
    from cohort_dosimetry.io import discover_studies
    from cohort_dosimetry.store import open_cohort

    planned = discover_studies(one_patient_dicom).scans
    live_cluster.crash_on([planned[-1].spect.series_uid])
    result = _run(live_cluster, one_patient_dicom, tmp_path / "cohort", "--methods", "dvk")
    assert result.returncode == 1, result.stdout + result.stderr
    cohort = open_cohort(tmp_path / "cohort")
    assert len(cohort.scans()) == 3
    assert all(cohort.has_arrays(p, t, ["dose_rate_dvk"]) for p, t in cohort.scans())
    run = cohort.runs().iloc[-1]
    assert run["n_scans_failed"] == 1 and run["n_scans_done"] == 3
    report = cohort.ingest_report()
    rejected = report[report["status"] == "rejected"]
    assert len(rejected) == 1
    subject = rejected.iloc[0]["source"]
    assert subject == planned[-1].spect.label  # the SPECT series of the crashing scan
    assert "KilledWorker" in rejected.iloc[0]["message"] and "died" in rejected.iloc[0]["message"]
    # the run record names the scan: its patient, the label planned for it, its SPECT series and what happened
    patient = rejected.iloc[0]["patient"]
    failure = f"ingest {patient}/{rejected.iloc[0]['timepoint']}: {subject}: ingest did not finish: every Dask worker"
    assert run["failures"].startswith(failure), run["failures"]


@pytest.mark.slow
def test_a_task_over_the_task_timeout_fails_naming_its_scan(live_cluster, cohort_copy):
    """Dose tasks that run longer than the task timeout are stopped and fail, each naming its scan; the timeout is
    not retried (it would only time out again)."""
    from prefect_dask import DaskTaskRunner

    from cohort_dosimetry.store import open_cohort
    from flows import dose_flow

    t0 = time.monotonic()
    results = dose_flow.with_options(task_runner=DaskTaskRunner(address=live_cluster.address))(
        str(cohort_copy), methods=("mc",), mc_scans="first", mc_decays=50_000_000, task_timeout_s=2
    )
    elapsed = time.monotonic() - t0
    scans = open_cohort(cohort_copy).scans()
    assert len(results) == len({p for p, _ in scans}) == 2  # "first": one MC map per patient's therapy cycle
    for r in results:
        assert r["step"] == "dose_mc" and r["status"] == "failed", r
        assert r["message"].startswith("ran longer than the task timeout of 2 s (--task-timeout) on tcp://127.0.0.1:")
        assert r["message"].endswith(": cancelled, its worker restarted"), r["message"]
    assert elapsed < 120  # 50 million decays per scan would take minutes each
    assert not any(open_cohort(cohort_copy).has_arrays(p, t, ["dose_rate_mc"]) for p, t in scans)
    assert {w.name for w in live_cluster.workers if w.proc.poll() is None} == set(WORKERS)  # nannies kept


def test_gpu_work_with_no_gpu_worker_left_fails_after_the_stated_wait_naming_each_scan(
    live_cluster, client, one_patient_dicom, tmp_path
):
    """The cluster has GPU workers when the run starts (so dose tasks ask for a GPU); both die for good during
    ingest. The dose tasks wait --gpu-wait-timeout seconds for a GPU worker, then fail, each naming its scan."""
    from cohort_dosimetry.store import open_cohort

    wait_s = 3
    gone = {}

    def kill_the_gpu_workers_once_ingest_started():
        t0, deadline = time.time(), time.monotonic() + 240
        while time.monotonic() < deadline:
            keys = [k for ks in client.processing().values() for k in ks]
            keys += [r["key"] for r in client.get_task_stream(start=t0)]
            if any(_kind(k) == "ingest_scan_task" for k in keys):
                for worker in live_cluster.workers:
                    if worker.gpu:
                        live_cluster.kill_worker(worker)
                gone["at"] = time.monotonic()
                return
            time.sleep(0.05)

    killer = threading.Thread(target=kill_the_gpu_workers_once_ingest_started)
    killer.start()
    try:
        result = _run(
            live_cluster,
            one_patient_dicom,
            tmp_path / "cohort",
            "--methods",
            "dvk",
            "--gpu-wait-timeout",
            str(wait_s),
            timeout=180,
        )
    finally:
        killer.join()
    finished = time.monotonic()
    assert gone, "ingest never started: the GPU workers were not killed"
    assert result.returncode == 1, result.stdout + result.stderr
    assert finished - gone["at"] >= wait_s  # the dose tasks waited the stated time for a GPU worker
    assert not any(w["resources"].get("GPU") for w in client.scheduler_info(n_workers=-1)["workers"].values())
    cohort = open_cohort(tmp_path / "cohort")
    scans = cohort.scans()
    assert len(scans) == 4  # ingest asks for no GPU: what the GPU workers had not done, the plain worker did
    assert not any(cohort.has_arrays(p, t, ["dose_rate_dvk"]) for p, t in scans)
    run = cohort.runs().iloc[-1]
    assert run["n_scans_failed"] == 4
    why = f"no Dask worker with a GPU resource was left for {wait_s} s (the GPU wait timeout, --gpu-wait-timeout)"
    for p, t in scans:
        assert f"dose_dvk {p}/{t}: {why}" in run["failures"], run["failures"]
    log = result.stdout + result.stderr
    assert (
        f"no Dask worker with a GPU resource for {wait_s} s" in log and ", ".join(f"{p}/{t}" for p, t in scans) in log
    )


def test_an_unreachable_scheduler_fails_within_the_connect_timeout(prefect_api, tiny_dicom, tmp_path):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    address = f"tcp://127.0.0.1:{port}"
    t0 = time.monotonic()
    result = run_command(
        ["run", str(tiny_dicom), str(tmp_path / "cohort"), "--address", address, "--connect-timeout", "2"],
        cluster_env(prefect_api),
        timeout=60,
    )
    elapsed = time.monotonic() - t0
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"no Dask scheduler answered at {address} within 2 s" in result.stderr
    assert "nothing done" in result.stderr
    assert 2 <= elapsed < 30  # the 2 s of trying and the command's start-up, not Dask's own 30 s connect timeout
    assert not (tmp_path / "cohort").exists()
