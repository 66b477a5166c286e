"""`cohort-dosimetry serve` against a real Prefect server started here on loopback, protected by an auth string."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import httpx
import pytest

CRON = "0 2 * * *"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_healthy(url: str, auth: tuple[str, str], proc: subprocess.Popen, timeout: float = 150) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"prefect server exited with {proc.returncode}: {proc.stdout.read()}")
        try:
            if httpx.get(f"{url}/health", auth=auth, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    pytest.fail("prefect server did not become healthy")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_serve_registers_a_cron_deployment_on_a_real_server(tmp_path):
    port = _free_port()
    api = f"http://127.0.0.1:{port}/api"
    user, secret = "cohort", "test-only-" + os.urandom(6).hex()
    base = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    base.update(PREFECT_HOME=str(tmp_path / "prefect-home"), DO_NOT_TRACK="1",
                PREFECT_SERVER_ANALYTICS_ENABLED="false")
    server = subprocess.Popen(
        [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env={**base, "PREFECT_SERVER_API_AUTH_STRING": f"{user}:{secret}", "PREFECT_UI_ENABLED": "false"},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    serve = None
    try:
        _wait_healthy(api, (user, secret), server)
        # the API refuses a client without the auth string
        assert httpx.post(f"{api}/deployments/filter", json={}, timeout=10).status_code == 401
        serve = subprocess.Popen(
            [sys.executable, "-m", "cohort_dosimetry.cli", "serve", "--cron", CRON, "--methods", "dvk",
             str(tmp_path / "dicom"), str(tmp_path / "cohort")],
            env={**base, "PREFECT_API_URL": api, "PREFECT_API_AUTH_STRING": f"{user}:{secret}"},
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        deadline = time.time() + 120
        deployments = []
        while time.time() < deadline and not deployments:
            assert serve.poll() is None, serve.stdout.read()
            r = httpx.post(f"{api}/deployments/filter", json={}, auth=(user, secret), timeout=10)
            r.raise_for_status()
            deployments = [d for d in r.json() if d["name"] == "nightly"]
            time.sleep(1)
        assert deployments, "the deployment never appeared in the Prefect API"
        dep = deployments[0]
        crons = [s["schedule"].get("cron") for s in dep["schedules"]]
        assert crons == [CRON]
        assert dep["parameters"]["methods"] == ["dvk"]
        flow = httpx.get(f"{api}/flows/{dep['flow_id']}", auth=(user, secret), timeout=10).json()
        assert flow["name"] == "cohort"
    finally:
        if serve is not None:
            _stop(serve)
        _stop(server)
