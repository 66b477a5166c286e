"""Deployments of the cohort flow on a real Prefect server, started here on loopback and protected by an auth string.

Two ways to leave the nightly job running, each proven by a run that completes on the two-patient cohort with its
maps in the store:

- `cohort-dosimetry serve --cron ...` registers a deployment and executes its runs itself;
- deploy/prefect.yaml deployed with `prefect deploy` to a process work pool, whose runs a `prefect worker` executes
  with the folders and the Dask scheduler taken from the worker's environment.

A run is started as the UI's Run button starts it: a flow run created from the deployment through the API. One
server and one Dask cluster (`dask scheduler` + two `dask worker` processes) serve both tests. Every process runs in
a working directory outside the checkout, so an entrypoint that depends on the working directory fails here.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
PREFECT = str(Path(sys.executable).with_name("prefect"))
DASK = str(Path(sys.executable).with_name("dask"))
CRON = "0 2 * * *"
POOL = "cohort-dosimetry"  # the work pool of deploy/prefect.yaml
TERMINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}
# What Prefect's own client retries (429, 502, 503): the server answers 503 when SQLite refuses a write with
# "database is locked" (SQLITE_BUSY_SNAPSHOT: a transaction that read before writing, as create_flow_run does, fails
# at once, without waiting, when another connection wrote in between; a busy machine widens that gap). The request's
# transaction was rolled back, so it may be sent again.
RETRY_CODES = {429, 502, 503}
RETRY_DELAYS_S = (0.5, 1, 2, 4, 8)


def test_every_flow_validates_its_parameters_when_pickled_by_value():
    """A served deployment runs its flow in a subprocess from a by-value cloudpickle of the function, whose globals
    hold only the names the body uses; Prefect validates the run's parameters against the annotations resolved in
    those globals (string annotations of ``from __future__ import annotations`` do not resolve there)."""
    import cloudpickle

    import flows

    given = {
        "cohort_flow": dict(dicom_dir="in", cohort_dir="out", methods=["dvk"], sensitivity_cps_per_mbq=9.0),
        "ingest_flow": dict(dicom_dir="in", cohort_dir="out"),
        "dose_flow": dict(cohort_dir="out", methods=["dvk"]),
        "absorbed_dose_flow": dict(cohort_dir="out", methods=["dvk"]),
        "aggregate_flow": dict(cohort_dir="out", notes=["a note"], calibration_uncertainty=0.05),
    }
    assert set(given) == {name for name in flows.__all__ if name.endswith("_flow")}
    for name, parameters in given.items():
        flow = cloudpickle.loads(cloudpickle.dumps(getattr(flows, name)))
        validated = flow.validate_parameters(parameters)
        assert {k: validated[k] for k in parameters} == parameters, name


def test_compose_runs_a_worker_on_the_pool_of_prefect_yaml_with_the_run_settings_in_its_environment():
    """The deployment leaves the folders and the scheduler to the worker's environment, and the compose worker
    supplies each one (the end-to-end test below runs that arrangement with a real worker)."""
    import yaml

    from flows._runtime import PARAMETER_ENVIRONMENT

    project = yaml.safe_load((ROOT / "deploy" / "prefect.yaml").read_text())
    (deployment,) = project["deployments"]
    assert project["pull"] == [] and deployment["entrypoint"] == "flows._flows.cohort_flow"
    assert not set(PARAMETER_ENVIRONMENT) & set(deployment["parameters"])
    assert "{{" not in str(deployment["parameters"])  # deploy-time placeholders bake the deployer's environment in
    worker = yaml.safe_load((ROOT / "deploy" / "compose.yaml").read_text())["services"]["prefect-worker"]
    command = worker["command"].split()
    assert command[:3] == ["prefect", "worker", "start"]
    assert command[command.index("--pool") + 1] == deployment["work_pool"]["name"]
    assert command[command.index("--type") + 1] == "process"  # the worker creates the pool it polls
    assert set(PARAMETER_ENVIRONMENT.values()) <= set(worker["environment"])
    assert worker["environment"]["DASK_SCHEDULER_ADDRESS"].startswith("tls://dask-scheduler:")


def test_a_parameter_left_unset_comes_from_the_environment_of_the_run_or_fails_naming_the_variable(monkeypatch):
    from flows._runtime import parameter_from_environment

    monkeypatch.delenv("COHORT_DIR", raising=False)
    monkeypatch.delenv("DASK_SCHEDULER_ADDRESS", raising=False)
    with pytest.raises(ValueError, match="'cohort_dir' was not given and COHORT_DIR is not set"):
        parameter_from_environment("cohort_dir", None)
    assert parameter_from_environment("address", None) is None  # no scheduler: the embedded cluster
    monkeypatch.setenv("COHORT_DIR", "/data/cohort")
    assert parameter_from_environment("cohort_dir", None) == "/data/cohort"
    assert parameter_from_environment("cohort_dir", "/given/for/this/run") == "/given/for/this/run"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _spawn(args: list[str], env: dict[str, str], cwd: Path, log: Path) -> subprocess.Popen:
    """A process in its own process group (so that stopping it reaches the flow runs and clusters it starts)."""
    with open(log, "w") as out:
        return subprocess.Popen(args, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM the process group; once its leader has ended (or after 20 s), SIGKILL whatever is left of it."""
    for sig, wait_s in ((signal.SIGTERM, 20), (signal.SIGKILL, 30)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=wait_s)
        except subprocess.TimeoutExpired:
            continue


def _tail(path: Path, n: int = 6000) -> str:
    return path.read_text(errors="replace")[-n:] if path.is_file() else f"({path} not written)"


@dataclass
class Orchestrator:
    """The Prefect server and the Dask cluster of this module's tests."""

    api: str
    auth: tuple[str, str]
    env: dict[str, str]  # for processes that talk to the server: URL and auth string, nothing of the test's own
    dask_address: str
    tmp: Path

    def request(self, method: str, path: str, **kwargs) -> httpx.Response:
        """Send a request to the API, and send it again (up to 5 times, over 15.5 s) while it answers a code that
        Prefect's client retries (``RETRY_CODES``), as every Prefect client of the server (`serve`, workers, the CLI)
        does."""
        for delay_s in (*RETRY_DELAYS_S, None):
            response = httpx.request(method, f"{self.api}{path}", auth=self.auth, timeout=10, **kwargs)
            if response.status_code not in RETRY_CODES or delay_s is None:
                return response
            time.sleep(delay_s)
        raise AssertionError("unreachable")

    def get(self, path: str) -> httpx.Response:
        return self.request("GET", path)

    def post(self, path: str, body: dict) -> httpx.Response:
        return self.request("POST", path, json=body)

    def dask_transitions(self) -> int:
        """How many task state transitions this module's Dask scheduler has made (it grows as tasks run on it)."""
        from distributed import Client

        with Client(self.dask_address, set_as_default=False, timeout=30) as client:
            return client.run_on_scheduler(lambda dask_scheduler: dask_scheduler.transition_counter)

    def wait_for(self, what: str, probe, proc: subprocess.Popen, log: Path, timeout: float = 120):
        """Poll ``probe()`` until it returns something truthy; fail if ``proc`` exits or ``timeout`` s pass."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                pytest.fail(f"{proc.args[:4]} exited with {proc.returncode} while waiting for {what}:\n{_tail(log)}")
            found = probe()
            if found:
                return found
            time.sleep(0.5)
        pytest.fail(f"{what} did not happen within {timeout} s:\n{_tail(log)}")

    def wait_for_scheduled_runs(self, deployment: dict, proc: subprocess.Popen, timeout: float = 30) -> list[dict]:
        """The flow runs the server's scheduler service creates for ``deployment`` from its cron schedule (state
        SCHEDULED, auto-scheduled), each at 02:00 UTC of a day to come; on failure the tail of server.log, where the
        scheduler's errors are."""

        def scheduled():
            of_deployment = {"deployment_id": {"any_": [deployment["id"]]}, "state": {"type": {"any_": ["SCHEDULED"]}}}
            runs = self.post("/flow_runs/filter", {"flow_runs": of_deployment}).json()
            return [run for run in runs if run["auto_scheduled"]]

        what = f"the scheduler's runs of deployment {deployment['name']}"
        runs = self.wait_for(what, scheduled, proc, self.tmp / "server.log", timeout)
        now = datetime.now(UTC)
        for run in runs:
            start = datetime.fromisoformat(run["expected_start_time"]).astimezone(UTC)
            assert start > now and (start.hour, start.minute, start.second) == (2, 0, 0), run["expected_start_time"]
        return runs

    def run_deployment(
        self, deployment: dict, parameters: dict, proc: subprocess.Popen, log: Path, timeout: float = 300
    ) -> dict:
        """Create a flow run of ``deployment`` (what the UI's Run button does) and wait for it to end."""
        # the idempotency key makes a resent request return the run the first one created instead of a second run
        body = {"parameters": parameters, "idempotency_key": str(uuid.uuid4())}
        r = self.post(f"/deployments/{deployment['id']}/create_flow_run", body)
        r.raise_for_status()
        run_id = r.json()["id"]

        def ended():
            run = self.get(f"/flow_runs/{run_id}").json()
            return run if run["state_type"] in TERMINAL else None

        run = self.wait_for(
            f"the end of flow run {run_id} of deployment {deployment['name']}", ended, proc, log, timeout
        )
        assert run["state_type"] == "COMPLETED", f"{run['state_name']}: {run['state']['message']}\n{_tail(log)}"
        return run


@pytest.fixture(scope="module")
def orchestrator(tmp_path_factory):
    """`prefect server start` (auth string, PREFECT_HOME in tmp) and a two-worker Dask cluster, both on loopback."""
    tmp = tmp_path_factory.mktemp("orchestrator")
    port = _free_port()
    api = f"http://127.0.0.1:{port}/api"
    user, secret = "cohort", "test-only-" + os.urandom(6).hex()
    base = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "DASK_"))}
    base.update(
        PREFECT_HOME=str(tmp / "prefect-home"),
        DO_NOT_TRACK="1",
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        OMP_NUM_THREADS="1",
        MKL_NUM_THREADS="1",
    )
    server_log = tmp / "server.log"
    client_env = {**base, "PREFECT_API_URL": api, "PREFECT_API_AUTH_STRING": f"{user}:{secret}"}
    procs = [
        _spawn(
            [PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port)],
            {
                **base,
                "PREFECT_SERVER_API_AUTH_STRING": f"{user}:{secret}",
                "PREFECT_UI_ENABLED": "false",
                # the server logs the cause of each 503 it answers (server.log in the module's tmp folder)
                "PREFECT_API_LOG_RETRYABLE_ERRORS": "true",
                # the scheduler service visits every deployment each 2 s (default 60 s), so that the cron
                # deployments below get their scheduled runs within seconds
                "PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS": "2",
            },
            tmp,
            server_log,
        )
    ]
    try:
        # the Dask cluster starts while the server does; its workers report task runs to the server
        dask_port = _free_port()
        dask_address = f"tcp://127.0.0.1:{dask_port}"
        procs.append(
            _spawn(
                [DASK, "scheduler", "--host", "127.0.0.1", "--port", str(dask_port), "--no-dashboard"],
                base,
                tmp,
                tmp / "scheduler.log",
            )
        )
        for i in range(2):
            procs.append(
                _spawn(
                    [
                        DASK,
                        "worker",
                        dask_address,
                        "--name",
                        f"worker-{i}",
                        "--nworkers",
                        "1",
                        "--nthreads",
                        "1",
                        "--host",
                        "127.0.0.1",
                        "--no-dashboard",
                        "--local-directory",
                        str(tmp / "dask-worker-space"),
                    ],
                    client_env,
                    tmp,
                    tmp / f"worker-{i}.log",
                )
            )
        orchestrator = Orchestrator(api, (user, secret), client_env, dask_address, tmp)

        def healthy():
            try:
                return orchestrator.get("/health").status_code == 200
            except httpx.HTTPError:
                return False

        orchestrator.wait_for("a healthy Prefect server", healthy, procs[0], server_log, timeout=150)
        from distributed import Client

        with Client(dask_address, set_as_default=False, timeout=60) as client:
            client.wait_for_workers(2, timeout=90)
        yield orchestrator
    finally:
        for proc in reversed(procs):
            _stop(proc)


def _assert_maps_in_store(cohort_dir: Path, run: dict, dask_transitions: int) -> None:
    """Both patients' scans hold their DVK map, the run record names the flow run, and its tasks ran on the module's
    Dask cluster (``dask_transitions``: how many task transitions the scheduler made during the run)."""
    from cohort_dosimetry.store import open_cohort

    cohort = open_cohort(cohort_dir)
    scans = cohort.scans()
    assert len({p for p, _ in scans}) == 2 and len(scans) >= 6, scans
    assert all(cohort.has_arrays(p, t, ["dose_rate_dvk"]) for p, t in scans)
    assert run["id"] in set(cohort.runs()["run_id"])  # the run record names the deployment's flow run
    assert dask_transitions >= len(scans), "the run's tasks did not run on the Dask scheduler it was given"


def test_serve_runs_its_cron_deployment_when_triggered(orchestrator, tiny_dicom, tmp_path):
    o = orchestrator
    # the API refuses a client without the auth string
    assert httpx.post(f"{o.api}/deployments/filter", json={}, timeout=10).status_code == 401
    cohort = tmp_path / "cohort"
    workdir = tmp_path / "elsewhere"
    workdir.mkdir()
    log = tmp_path / "serve.log"
    serve = _spawn(
        [
            sys.executable,
            "-m",
            "cohort_dosimetry.cli",
            "serve",
            "--cron",
            CRON,
            "--name",
            "served",
            "--methods",
            "dvk",
            "--grid",
            "ct",
            "--address",
            o.dask_address,
            str(tiny_dicom),
            str(cohort),
        ],
        {**o.env, "PREFECT_RUNNER_POLL_FREQUENCY": "1"},
        workdir,
        log,
    )
    try:

        def registered():
            r = o.get("/deployments/name/cohort/served")
            return r.json() if r.status_code == 200 else None

        dep = o.wait_for("the served deployment in the Prefect API", registered, serve, log)
        assert [s["schedule"].get("cron") for s in dep["schedules"]] == [CRON]
        assert dep["parameters"]["methods"] == ["dvk"]
        assert dep["entrypoint"] == "flows._flows.cohort_flow"  # a module, wherever `serve` runs
        assert o.get(f"/flows/{dep['flow_id']}").json()["name"] == "cohort"
        o.wait_for_scheduled_runs(dep, serve)  # the cron schedule creates runs, as it must to run nightly

        before = o.dask_transitions()
        run = o.run_deployment(dep, {}, serve, log)
        _assert_maps_in_store(cohort, run, o.dask_transitions() - before)
    finally:
        _stop(serve)


@pytest.mark.slow  # about a minute; the serve test above runs the same server, scheduler and flow in `make test`
def test_prefect_yaml_deployment_runs_on_a_process_worker(orchestrator, tiny_dicom, tmp_path):
    o = orchestrator
    cohort = tmp_path / "cohort"
    workdir = tmp_path / "elsewhere"
    workdir.mkdir()
    log = tmp_path / "worker.log"
    # as in deploy/compose.yaml: the worker creates the process work pool, and its environment names the folders
    # and the Dask scheduler of the runs it executes
    worker = _spawn(
        [PREFECT, "worker", "start", "--pool", POOL, "--type", "process", "--name", "test-worker"],
        {
            **o.env,
            "COHORT_DICOM_DIR": str(tiny_dicom),
            "COHORT_DIR": str(cohort),
            "DASK_SCHEDULER_ADDRESS": o.dask_address,
            "PREFECT_WORKER_QUERY_SECONDS": "1",
        },
        workdir,
        log,
    )
    try:
        o.wait_for(f"work pool {POOL}", lambda: o.get(f"/work_pools/{POOL}").status_code == 200, worker, log)
        deploy = subprocess.run(
            [PREFECT, "--no-prompt", "deploy", "--prefect-file", str(ROOT / "deploy" / "prefect.yaml"), "--all"],
            cwd=workdir,
            env=o.env,
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert deploy.returncode == 0, deploy.stdout[-4000:] + deploy.stderr[-4000:]

        dep = o.get("/deployments/name/cohort/nightly").json()
        assert dep["entrypoint"] == "flows._flows.cohort_flow" and dep["pull_steps"] == []
        assert dep["work_pool_name"] == POOL
        assert [s["schedule"].get("cron") for s in dep["schedules"]] == [CRON]
        # no path or host is baked into the deployment: the worker's environment supplies them
        assert not {"dicom_dir", "cohort_dir", "address"} & set(dep["parameters"]), dep["parameters"]
        o.wait_for_scheduled_runs(dep, worker)

        before = o.dask_transitions()
        run = o.run_deployment(dep, {"methods": ["dvk"], "grid": "ct"}, worker, log)
        _assert_maps_in_store(cohort, run, o.dask_transitions() - before)  # the scheduler of DASK_SCHEDULER_ADDRESS
    finally:
        _stop(worker)
