"""Where a flow's tasks run: an existing Dask cluster, or the embedded default.

Embedded default: a process-based ``distributed.LocalCluster`` sized to the machine (one single-threaded worker per
core; with CUDA, one worker per GPU via dask-cuda) and Prefect's local mode (a temporary API server started once).
Every worker process is pointed at that ONE API URL: without it each worker would start a temporary server of its
own. Commands that run a flow (`run`, `demo`) hold the server with ``prefect_api`` and
``exit_on_termination_signals``: it stops when the run ends, fails or is interrupted, and dies with a killed process.

A deployment's run takes the parameters it was not given from the environment (``parameter_from_environment``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

log = logging.getLogger(__name__)


def prefect_api_url() -> str:
    """The API URL this process reports to, starting Prefect's temporary local server when none is configured.

    The URL is exported to the environment so that worker processes started afterwards report to the same API.
    A server started here stops when this process exits, also when it is killed (Linux; ``temporary_prefect_server``);
    ``prefect_api`` stops it earlier, when a command's run ends.
    """
    from prefect.settings import PREFECT_API_URL

    url = PREFECT_API_URL.value()
    if not url:
        url = temporary_prefect_server().api_url
    os.environ["PREFECT_API_URL"] = url
    return url


# Run as `python -c _DIE_WITH_PARENT PARENT_PID ARGS...`: ask Linux to send SIGTERM when the parent dies
# (PR_SET_PDEATHSIG, kept across exec), give up if the parent is already gone, then become `python ARGS...`.
_DIE_WITH_PARENT = """\
import ctypes, os, signal, sys
try:
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)
except (AttributeError, OSError):
    pass
if os.getppid() != int(sys.argv[1]):
    sys.exit(0)
os.execv(sys.executable, [sys.executable, *sys.argv[2:]])
"""


def temporary_prefect_server():
    """Start (once per process) Prefect's temporary local API server and return it (``.api_url``, ``.stop()``).

    It is the process-wide ``SubprocessASGIServer`` instance that Prefect's own client also uses when no
    PREFECT_API_URL is configured. Prefect stops it from an ``atexit`` hook, which does not run when the process is
    killed (SIGKILL, the out-of-memory killer) or ends on a signal whose handler is the default (SIGTERM, SIGHUP):
    the server then outlived its run, orphaned. Started here from the main thread on Linux, the server process
    gets SIGTERM from the kernel when this process dies, however it dies.
    """
    import subprocess
    import sys
    import threading

    import prefect
    from prefect.server.api.server import SubprocessASGIServer
    from prefect.settings import get_current_settings

    class _ServerThatDiesWithItsParent(SubprocessASGIServer):
        def _run_uvicorn_command(self) -> subprocess.Popen:
            # Prefect 3.8's own command and environment, started through _DIE_WITH_PARENT. The death signal is tied
            # to the thread that starts the child, so only the main thread (which lives as long as the process)
            # uses it.
            if threading.current_thread() is not threading.main_thread() or not sys.platform.startswith("linux"):
                return super()._run_uvicorn_command()
            uvicorn = [
                "-m",
                "uvicorn",
                "--app-dir",
                str(prefect.__module_path__.parent),
                "--factory",
                "prefect.server.api.server:create_app",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--log-level",
                "error",
                "--lifespan",
                "on",
            ]
            env = {
                **os.environ,
                "PREFECT_UI_ENABLED": "0",
                "PREFECT__SERVER_EPHEMERAL": "1",
                "PREFECT__SERVER_FINAL": "1",
                **get_current_settings().to_environment_variables(exclude_unset=True),
            }
            return subprocess.Popen([sys.executable, "-c", _DIE_WITH_PARENT, str(os.getpid()), *uvicorn], env=env)

    server = _ServerThatDiesWithItsParent()  # or the instance Prefect's client already started
    server.start()
    return server


@contextmanager
def prefect_api() -> Iterator[str]:
    """Yield the Prefect API URL for the length of a command's run: PREFECT_API_URL when configured, else that of a
    temporary local server started here and stopped on leaving, on success, on an error and on an interrupt alike.

    Prefect's client in this process and every process started from here (Dask workers) report to that URL.
    """
    from prefect.settings import PREFECT_API_URL, temporary_settings

    url = PREFECT_API_URL.value()
    if url:
        yield url
        return
    server = temporary_prefect_server()
    previous = os.environ.get("PREFECT_API_URL")
    os.environ["PREFECT_API_URL"] = server.api_url
    try:
        with temporary_settings(updates={PREFECT_API_URL: server.api_url}):
            try:
                yield server.api_url
            finally:
                _drain_prefect_clients()
    finally:
        server.stop()
        if previous is None:
            os.environ.pop("PREFECT_API_URL", None)
        else:
            os.environ["PREFECT_API_URL"] = previous


def _drain_prefect_clients(timeout_s: float = 10.0) -> None:
    """Send the logs and events this process still holds to the API, before the server that takes them stops."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    for worker in (APILogWorker, EventsWorker):
        try:
            worker.drain_all(timeout=timeout_s)
        except Exception as exc:  # the run's outcome is what matters; losing its last log lines is not an error
            log.debug("could not drain %s: %s", worker.__name__, exc)


@contextmanager
def exit_on_termination_signals() -> Iterator[None]:
    """Turn SIGTERM and SIGHUP into ``SystemExit(128 + signal)`` for the length of the block (main thread only).

    With the default handlers these signals end the process at once: no ``finally`` block and no ``atexit`` hook
    runs, so whatever the run started (the embedded Dask cluster, the temporary Prefect server) is left behind.
    Raised as an exception instead, they unwind the run as Ctrl-C (SIGINT, KeyboardInterrupt) does. Prefect's flow
    engine handles SIGTERM itself while a flow runs (the run is marked crashed), then passes it on to this handler.
    """
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def _exit(signum, frame):
        raise SystemExit(128 + signum)

    previous = {sig: signal.signal(sig, _exit) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


#: The environment variable that ``cohort_flow`` reads each of these parameters from when it is left unset.
PARAMETER_ENVIRONMENT = {
    "dicom_dir": "COHORT_DICOM_DIR",
    "cohort_dir": "COHORT_DIR",
    "address": "DASK_SCHEDULER_ADDRESS",
}
#: Parameters that may stay unset (no scheduler address: the embedded cluster).
_OPTIONAL_PARAMETERS = {"address"}


def parameter_from_environment(name: str, value: str | None) -> str | None:
    """``value``, or when it is unset (None or empty) the environment variable ``PARAMETER_ENVIRONMENT[name]`` of
    this process (for a deployment's run, the Prefect worker's environment).

    Raises ValueError naming the parameter, the variable and the host when a required one is in neither.
    """
    if value:
        return value
    variable = PARAMETER_ENVIRONMENT[name]
    found = os.environ.get(variable) or None
    if found is None and name not in _OPTIONAL_PARAMETERS:
        import socket

        raise ValueError(
            f"parameter {name!r} was not given and {variable} is not set in the environment of this run "
            f"(host {socket.gethostname()}): pass {name} or set {variable} where the run starts (for a "
            "deployment: in the Prefect worker's environment)"
        )
    return found


def gpu_count() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


@contextmanager
def dask_scheduler(address: str | None = None, n_workers: int | None = None) -> Iterator[str]:
    """Yield a Dask scheduler address: ``address`` when given, else that of an embedded cluster torn down on exit."""
    if address:
        check_scheduler_security(address)
        yield address
        return
    prefect_api_url()
    # The scheduler's connection chatter drowns the per-scan progress of the flow log; keep its warnings.
    logging.getLogger("distributed").setLevel(logging.WARNING)
    n_gpus = gpu_count()
    # Workers run one task at a time and torch uses one thread per worker: the parallelism is across scans.
    worker_env = {
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "DO_NOT_TRACK": "1",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_API_URL": os.environ["PREFECT_API_URL"],
    }
    if n_gpus:
        try:
            from dask_cuda import LocalCUDACluster
        except ImportError as exc:
            raise RuntimeError(
                "CUDA is present but dask-cuda is not installed: install the 'gpu' extra "
                "(pip install 'cohort-dosimetry[gpu]') or pass --address of a cluster"
            ) from exc
        cluster = LocalCUDACluster(resources={"GPU": 1}, dashboard_address=None, env=worker_env)
    else:
        from distributed import LocalCluster

        n = n_workers or max(1, os.cpu_count() or 1)
        cluster = LocalCluster(
            n_workers=n, threads_per_worker=1, processes=True, dashboard_address=None, env=worker_env
        )
    log.info("embedded Dask cluster at %s (%d GPUs)", cluster.scheduler_address, n_gpus)
    try:
        yield cluster.scheduler_address
    finally:
        cluster.close()


#: Dask's TLS settings for a client and the file of a TLS folder (deploy/make-certs.sh) that each one names.
TLS_CLIENT_FILES = {
    "distributed.comm.tls.ca-file": "ca.pem",
    "distributed.comm.tls.client.cert": "client.pem",
    "distributed.comm.tls.client.key": "client.key",
}


def _dask_env_name(key: str) -> str:
    """The environment variable Dask reads a config key from: ``a.b-c`` -> ``DASK_A__B_C``."""
    return "DASK_" + key.upper().replace(".", "__").replace("-", "_")


def use_tls_dir(tls_dir: str | os.PathLike) -> dict[str, str]:
    """Connect to Dask schedulers over TLS with the CA and client certificate of ``tls_dir`` (``ca.pem``,
    ``client.pem``, ``client.key``, as deploy/make-certs.sh writes them).

    Sets Dask's config ``distributed.comm.tls.*`` in this process, which every ``distributed.Client`` made without
    an explicit ``security`` (Prefect's DaskTaskRunner included) uses, and exports it as
    ``DASK_DISTRIBUTED__COMM__TLS__*`` so that processes started from here (the flow-run subprocesses of ``serve``)
    use it too. Returns the settings.
    Raises FileNotFoundError naming every missing file.
    """
    import dask

    folder = Path(tls_dir).expanduser().resolve()
    settings = {key: str(folder / name) for key, name in TLS_CLIENT_FILES.items()}
    missing = [path for path in settings.values() if not Path(path).is_file()]
    if missing:
        raise FileNotFoundError(
            f"TLS folder {folder} lacks {', '.join(missing)}: make the CA and the client "
            "certificate with deploy/make-certs.sh"
        )
    dask.config.set(settings)
    for key, value in settings.items():
        os.environ[_dask_env_name(key)] = value
    return settings


def check_scheduler_security(address: str) -> None:
    """Refuse, before connecting, a scheduler address whose protocol does not match this process's TLS settings.

    A ``tls://`` scheduler needs a client certificate (without one Dask fails with an unhelpful message); with a
    client certificate configured, a ``tcp://`` address would send task arguments and results unencrypted.
    """
    import dask

    scheme = address.split("://", 1)[0] if "://" in address else dask.config.get("distributed.comm.default-scheme")
    has_certificate = all(dask.config.get(key, None) for key in TLS_CLIENT_FILES)
    env = ", ".join(_dask_env_name(key) for key in TLS_CLIENT_FILES)
    if scheme == "tls" and not has_certificate:
        raise ValueError(
            f"Dask scheduler {address} speaks TLS but no client certificate is configured: pass "
            f"--tls-dir DIR (ca.pem, client.pem, client.key from deploy/make-certs.sh) or set {env}"
        )
    if scheme != "tls" and has_certificate:
        raise ValueError(
            f"a TLS client certificate is configured ({env}) but the Dask scheduler address {address} "
            "is not tls://: connect to the scheduler's tls:// address (unencrypted connections are not "
            "made while a certificate is configured)"
        )


#: Seconds a run tries to reach its Dask scheduler (which may still be starting) before it fails.
SCHEDULER_CONNECT_TIMEOUT_S = 10.0


class SchedulerUnreachable(ConnectionError):
    """No Dask scheduler answered at the address within the connect timeout."""


def cluster_workers(address: str, timeout_s: float = SCHEDULER_CONNECT_TIMEOUT_S) -> dict[str, dict]:
    """The workers of the Dask cluster at ``address`` ({worker address: scheduler's info, with ``resources``}).

    Raises :class:`SchedulerUnreachable` naming the address when no scheduler answers within ``timeout_s`` seconds
    (Dask would otherwise retry for its own connect timeout, 30 s by default, and say less).
    """
    from distributed import Client

    try:
        with Client(address, set_as_default=False, timeout=timeout_s) as client:
            return client.scheduler_info(n_workers=-1)["workers"]
    except (OSError, TimeoutError) as exc:
        raise SchedulerUnreachable(
            f"no Dask scheduler answered at {address} within {timeout_s:g} s ({type(exc).__name__}: {exc}); start "
            "one (`dask scheduler`) or pass the address of a running one (--address)"
        ) from exc


def gpu_worker_addresses(workers: dict[str, dict]) -> list[str]:
    """The workers (of :func:`cluster_workers` or ``Client.scheduler_info()["workers"]``) that declare a ``GPU``
    resource (started with ``--resources GPU=1``)."""
    return sorted(a for a, w in workers.items() if (w.get("resources") or {}).get("GPU", 0) > 0)


def executing_keys(dask_worker) -> list[str]:
    """The keys a Dask worker is computing now (``Client.run(executing_keys)`` runs it on each worker)."""
    return [str(ts.key) for ts in dask_worker.state.tasks.values() if ts.state == "executing"]


def cluster_has_gpus(address: str, timeout_s: float = SCHEDULER_CONNECT_TIMEOUT_S) -> bool:
    """Whether any worker of the cluster declares a ``GPU`` resource (workers started with ``--resources GPU=1``).
    Raises :class:`SchedulerUnreachable` as :func:`cluster_workers` does."""
    return bool(gpu_worker_addresses(cluster_workers(address, timeout_s)))
