"""Start a TLS-only Dask cluster on SLURM GPU nodes with dask-jobqueue and run the cohort flow on it.

    pip install 'cohort-dosimetry[cluster]'
    deploy/make-certs.sh ~/.cohort-dosimetry/tls          # once; a folder the compute nodes read (shared home)
    export COHORT_DOSIMETRY_PSEUDONYM_KEY_FILE=~/.cohort-dosimetry/pseudonym.key
    python deploy/slurm/cluster.py DICOM_DIR COHORT_DIR --tls-dir ~/.cohort-dosimetry/tls --jobs 4 --partition gpu

The scheduler runs in this process, the workers in SLURM jobs; every connection between them and this process's
client is TLS with the certificates of --tls-dir (scheduler, worker and client roles, one CA). The worker jobs get the
pseudonym key file from COHORT_DOSIMETRY_PSEUDONYM_KEY_FILE (exported in their job script). Each SLURM job is one
Dask worker with one GPU, declared to Dask as the resource GPU=1 (the dose tasks ask for it). Adjust account,
partition, walltime and memory to your site; nothing here is specific to one.
"""

import argparse
import os
import shlex
from pathlib import Path

from dask_jobqueue import SLURMCluster
from distributed.security import Security

from flows import cohort_flow
from flows._runtime import use_tls_dir

p = argparse.ArgumentParser()
p.add_argument("dicom_dir")
p.add_argument("cohort_dir")
p.add_argument("--tls-dir", required=True, help="deploy/make-certs.sh's folder, on a file system the nodes share")
p.add_argument("--jobs", type=int, default=4)
p.add_argument("--partition", default="gpu")
p.add_argument("--account", default=None)
p.add_argument("--walltime", default="08:00:00")
args = p.parse_args()

tls = Path(args.tls_dir).expanduser().resolve()
use_tls_dir(tls)  # the flow's own Dask client (ca.pem, client.pem, client.key); refuses a folder lacking them
security = Security(
    tls_ca_file=str(tls / "ca.pem"),
    tls_scheduler_cert=str(tls / "scheduler.pem"),
    tls_scheduler_key=str(tls / "scheduler.key"),
    tls_worker_cert=str(tls / "worker.pem"),
    tls_worker_key=str(tls / "worker.key"),
    tls_client_cert=str(tls / "client.pem"),
    tls_client_key=str(tls / "client.key"),
    require_encryption=True,
)
key_file = os.environ.get("COHORT_DOSIMETRY_PSEUDONYM_KEY_FILE")
if not key_file:
    p.error("set COHORT_DOSIMETRY_PSEUDONYM_KEY_FILE to the pseudonym key file (readable by the worker jobs)")
cluster = SLURMCluster(
    queue=args.partition,
    account=args.account,
    cores=4,
    processes=1,
    memory="32GB",
    walltime=args.walltime,
    protocol="tls://",
    security=security,  # the workers get --tls-ca-file/--tls-cert/--tls-key of the worker role
    job_extra_directives=["--gres=gpu:1"],
    job_script_prologue=[
        "export COHORT_DOSIMETRY_PSEUDONYM_KEY_FILE=" + shlex.quote(str(Path(key_file).expanduser().resolve()))
    ],
    worker_extra_args=["--resources", "GPU=1"],
    # the scheduler listens on the submit host's interface that the compute nodes reach; it is not exposed further
)
cluster.scale(jobs=args.jobs)
try:
    summary = cohort_flow(args.dicom_dir, args.cohort_dir, address=cluster.scheduler_address)
    print(f"report: {summary['report']}")
finally:
    cluster.close()
