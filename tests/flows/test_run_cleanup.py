"""`cohort-dosimetry run` stops every process it started when it is interrupted or killed mid-run.

A run without PREFECT_API_URL starts Prefect's temporary API server and an embedded Dask cluster (worker
processes). Each test starts a real run as a subprocess, waits until both are up and the flow is running on them,
interrupts it with a signal and checks that every process the run had started is gone.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

#: signal -> the exit status `run` ends with
EXPECTED_STATUS = {signal.SIGTERM: 128 + signal.SIGTERM, signal.SIGINT: 130, signal.SIGKILL: -signal.SIGKILL}


def _descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def _alive(proc: psutil.Process) -> bool:
    """Running, and not a zombie waiting for a parent (or an init that does not reap) to collect it."""
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _describe(procs: list[psutil.Process]) -> str:
    lines = []
    for p in procs:
        try:
            lines.append(f"{p.pid}: {' '.join(p.cmdline())[:160]}")
        except psutil.Error:
            lines.append(f"{p.pid}: (gone)")
    return "\n".join(lines)


# SIGTERM (docker stop, systemd, SLURM, Kubernetes) in every run; Ctrl-C and the out-of-memory killer's SIGKILL (the
# kernel's parent-death signal stops the server) take another 20 s each: `make test-slow`.
@pytest.mark.parametrize(
    "sig",
    [
        signal.SIGTERM,
        pytest.param(signal.SIGINT, marks=pytest.mark.slow),
        pytest.param(signal.SIGKILL, marks=pytest.mark.slow),
    ],
    ids=lambda s: s.name,
)
def test_an_interrupted_run_leaves_no_process_behind(sig, tiny_dicom, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "DASK_"))}
    env.update(
        PREFECT_HOME=str(tmp_path / "prefect-home"),
        DO_NOT_TRACK="1",
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        OMP_NUM_THREADS="1",
    )
    log = tmp_path / "run.log"
    with open(log, "w") as out:
        run = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "cohort_dosimetry.cli",
                "run",
                "--methods",  # Monte Carlo of 10^9 decays per scan: still running when the signal comes
                "dvk,mc",
                "--mc-decays",
                "1000000000",
                "--grid",
                "ct",
                str(tiny_dicom),
                str(tmp_path / "cohort"),
            ],
            env=env,
            cwd=tmp_path,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    started: dict[int, psutil.Process] = {}
    try:
        # mid-run: the flow logs where its tasks run once the server and the embedded cluster are up
        deadline = time.monotonic() + 180
        while "tasks run on Dask at" not in log.read_text(errors="replace"):
            assert run.poll() is None, f"run exited with {run.returncode} before its flow started:\n{log.read_text()}"
            assert time.monotonic() < deadline, f"the flow did not start within 180 s:\n{log.read_text()}"
            time.sleep(0.2)
        started = {p.pid: p for p in _descendants(run.pid)}
        cmdlines = [" ".join(p.cmdline()) for p in started.values()]
        assert any("uvicorn" in c and "prefect.server.api.server:create_app" in c for c in cmdlines), cmdlines
        assert any("multiprocessing" in c for c in cmdlines), cmdlines  # the embedded cluster's worker processes

        run.send_signal(sig)
        try:
            status = run.wait(timeout=90)
        except subprocess.TimeoutExpired:
            pytest.fail(f"run did not end within 90 s of {sig.name}:\n{log.read_text()[-4000:]}")
        assert status == EXPECTED_STATUS[sig], log.read_text()[-4000:]
        started.update((p.pid, p) for p in _descendants(run.pid))  # none, unless the run outlived its main process
        deadline = time.monotonic() + 30
        while (left := [p for p in started.values() if _alive(p)]) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not left, f"{sig.name} to run left processes behind:\n{_describe(left)}\n{log.read_text()[-3000:]}"
    finally:
        try:
            os.killpg(run.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        run.wait()
        for p in started.values():  # whatever a failed check found alive: stop it, it is this test's
            if _alive(p):
                p.kill()
