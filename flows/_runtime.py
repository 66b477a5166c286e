"""Where a flow's tasks run: an existing Dask cluster, or the embedded default.

Embedded default: a process-based ``distributed.LocalCluster`` sized to the machine (one single-threaded worker per
core; with CUDA, one worker per GPU via dask-cuda) and Prefect's local mode (a temporary API server started once).
Every worker process is pointed at that ONE API URL: without it each worker would start a temporary server of its
own (DESIGN.md section 5).
"""
from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager

log = logging.getLogger(__name__)


def prefect_api_url() -> str:
    """The API URL this process reports to, starting Prefect's temporary local server when none is configured.

    The URL is exported to the environment so that worker processes started afterwards report to the same API.
    """
    from prefect.settings import PREFECT_API_URL

    url = PREFECT_API_URL.value()
    if not url:
        from prefect.server.api.server import SubprocessASGIServer

        server = SubprocessASGIServer()  # the process-wide instance Prefect's own client also uses
        server.start()
        url = server.api_url
    os.environ["PREFECT_API_URL"] = url
    return url


def gpu_count() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


@contextmanager
def dask_scheduler(address: str | None = None, n_workers: int | None = None) -> Iterator[str]:
    """Yield a Dask scheduler address: ``address`` when given, else that of an embedded cluster torn down on exit."""
    if address:
        yield address
        return
    prefect_api_url()
    # The scheduler's connection chatter drowns the per-scan progress of the flow log; keep its warnings.
    logging.getLogger("distributed").setLevel(logging.WARNING)
    n_gpus = gpu_count()
    # Workers run one task at a time and torch uses one thread per worker: the parallelism is across scans.
    worker_env = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "DO_NOT_TRACK": "1",
                  "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_API_URL": os.environ["PREFECT_API_URL"]}
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
            n_workers=n, threads_per_worker=1, processes=True, dashboard_address=None, env=worker_env,
        )
    log.info("embedded Dask cluster at %s (%d GPUs)", cluster.scheduler_address, n_gpus)
    try:
        yield cluster.scheduler_address
    finally:
        cluster.close()


def cluster_has_gpus(address: str) -> bool:
    """Whether any worker of the cluster declares a ``GPU`` resource (workers started with ``--resources GPU=1``)."""
    from distributed import Client

    with Client(address, set_as_default=False) as client:
        workers = client.scheduler_info(n_workers=-1)["workers"].values()
        return any(w.get("resources", {}).get("GPU", 0) > 0 for w in workers)
