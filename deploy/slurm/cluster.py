"""Start a Dask cluster on SLURM GPU nodes with dask-jobqueue and run the cohort flow on it.

    pip install 'cohort-dosimetry[cluster]'
    python deploy/slurm/cluster.py DICOM_DIR COHORT_DIR --jobs 4 --partition gpu

Each SLURM job is one Dask worker with one GPU, declared to Dask as the resource GPU=1 (the dose tasks ask for it).
Adjust account, partition, walltime and memory to your site; nothing here is specific to one.
"""
import argparse

from dask_jobqueue import SLURMCluster

from flows import cohort_flow

p = argparse.ArgumentParser()
p.add_argument("dicom_dir")
p.add_argument("cohort_dir")
p.add_argument("--jobs", type=int, default=4)
p.add_argument("--partition", default="gpu")
p.add_argument("--account", default=None)
p.add_argument("--walltime", default="08:00:00")
args = p.parse_args()

cluster = SLURMCluster(
    queue=args.partition,
    account=args.account,
    cores=4,
    processes=1,
    memory="32GB",
    walltime=args.walltime,
    job_extra_directives=["--gres=gpu:1"],
    worker_extra_args=["--resources", "GPU=1"],
    # the scheduler listens on the submit host's interface that the compute nodes reach; it is not exposed further
)
cluster.scale(jobs=args.jobs)
try:
    summary = cohort_flow(args.dicom_dir, args.cohort_dir, address=cluster.scheduler_address)
    print(f"report: {summary['report']}")
finally:
    cluster.close()
