"""A real multi-process Dask cluster on loopback for the flow tests: ``dask scheduler`` and ``dask worker`` started
as separate processes (each worker under its nanny, which restarts a worker that dies), as a deployment runs them.

Every process gets its own session (process group), so that a worker can be killed whole (nanny included) and
cleanup reaches every child; the scheduler stops itself after an idle hour and workers after a minute without a
scheduler, should a test runner die before cleaning up.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DASK = str(Path(sys.executable).with_name("dask"))
CRASH_PRELOAD = Path(__file__).with_name("_worker_crash.py")


def cluster_env(api_url: str, **extra: str) -> dict[str, str]:
    """The environment of every process of a test cluster and of the `run` command: one Prefect API for all,
    one thread per worker for torch, the project importable."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "DASK_"))}
    env.update(
        PREFECT_API_URL=api_url,
        DO_NOT_TRACK="1",
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        OMP_NUM_THREADS="1",
        MKL_NUM_THREADS="1",
        PYTHONPATH=str(ROOT),
        **extra,
    )
    return env


@dataclass
class WorkerProcess:
    name: str
    gpu: bool
    proc: subprocess.Popen
    log: Path


@dataclass
class Cluster:
    """``dask scheduler`` + ``dask worker`` processes; ``address`` is the scheduler's."""

    tmp: Path
    env: dict[str, str]
    address: str = ""
    scheduler: subprocess.Popen | None = None
    workers: list[WorkerProcess] = field(default_factory=list)

    def start_scheduler(self, timeout: float = 60) -> None:
        info = self.tmp / "scheduler.json"
        self.scheduler = self._spawn(
            "scheduler",
            [
                DASK,
                "scheduler",
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                "--no-dashboard",
                "--scheduler-file",
                str(info),
                "--idle-timeout",
                "3600",
            ],
        )
        deadline = time.monotonic() + timeout
        while not info.is_file() or not info.read_text().strip():
            if self.scheduler.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"dask scheduler did not start: {self.log_of('scheduler')}")
            time.sleep(0.1)
        self.address = json.loads(info.read_text())["address"]

    def start_worker(self, name: str, gpu: bool) -> WorkerProcess:
        """A worker with one thread, advertising ``GPU=1`` if ``gpu``, with the crash preload of the tests."""
        args = [
            DASK,
            "worker",
            self.address,
            "--name",
            name,
            "--nthreads",
            "1",
            "--nworkers",
            "1",
            "--host",
            "127.0.0.1",
            "--no-dashboard",
            "--death-timeout",
            "60",
            "--preload",
            str(CRASH_PRELOAD),
            "--local-directory",
            str(self.tmp / "dask-worker-space"),
        ]
        if gpu:
            args += ["--resources", "GPU=1"]
        worker = WorkerProcess(name, gpu, self._spawn(name, args), self.tmp / f"{name}.log")
        self.workers.append(worker)
        return worker

    def wait_for_workers(self, n: int, timeout: float = 90) -> None:
        from distributed import Client

        with Client(self.address, set_as_default=False, timeout=30) as client:
            client.wait_for_workers(n, timeout=timeout)

    def kill_worker(self, worker: WorkerProcess) -> None:
        """SIGKILL a worker and its nanny: gone for good."""
        _kill_group(worker.proc, signal.SIGKILL)
        worker.proc.wait(timeout=30)

    def log_of(self, name: str) -> str:
        path = self.tmp / f"{name}.log"
        return path.read_text()[-4000:] if path.is_file() else ""

    def close(self) -> None:
        """Stop every process (workers first), by process group; SIGKILL what does not stop within 15 s."""
        procs = [w.proc for w in self.workers] + ([self.scheduler] if self.scheduler else [])
        for proc in procs:
            _kill_group(proc, signal.SIGTERM)
        deadline = time.monotonic() + 15
        for proc in procs:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            _kill_group(proc, signal.SIGKILL)  # the group's leftovers too (a nanny's worker)
            proc.wait()

    def _spawn(self, name: str, args: list[str]) -> subprocess.Popen:
        log = open(self.tmp / f"{name}.log", "w")
        try:
            return subprocess.Popen(
                args, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        finally:
            log.close()

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def warm_imports() -> None:
    """What every task imports; run on each worker (``Client.run``) so that tests time the work, not the imports."""
    import cohort_dosimetry.dose  # noqa: F401
    import cohort_dosimetry.io  # noqa: F401
    import cohort_dosimetry.stats  # noqa: F401
    import flows._tasks  # noqa: F401


def _kill_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass


def run_command(args: list[str], env: dict[str, str], timeout: float) -> subprocess.CompletedProcess:
    """``cohort-dosimetry ARGS`` in its own process group, killed whole (with anything it started) on timeout."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "cohort_dosimetry.cli", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired as timed_out:
        _kill_group(proc, signal.SIGKILL)
        out, err = proc.communicate()
        raise AssertionError(
            f"cohort-dosimetry {' '.join(args)} did not finish in {timeout} s:\n{out}\n{err}"
        ) from timed_out
    finally:
        _kill_group(proc, signal.SIGKILL)  # nothing it started outlives it
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
