"""The GPU check: the CUDA tests, then the 42-scan compact virtual cohort (synthetic virtual patients, not patient
data) through the cohort flow on the GPUs this machine has, one Dask worker per GPU. Prints per-stage wall times,
per-method task seconds, the device every dose-rate map was computed on and peak GPU memory, and writes them to
bench/results/gpu_check.json.

    make gpu-check            (or: .venv/bin/python bench/gpu_check.py [--out FILE] [--mc-decays N])

Without CUDA it says so, writes nothing and exits 0. Exit status 1: a CUDA test failed, a scan failed, or a dose-rate
map was computed on something else than a GPU.

The cluster: the embedded default of ``cohort-dosimetry run`` for GPUs (``flows._runtime.dask_scheduler``: a dask-cuda
``LocalCUDACluster``, one worker per GPU, each declaring the resource GPU=1; without dask-cuda, one ``dask worker``
process per GPU pinned with CUDA_VISIBLE_DEVICES), joined by ``--cpu-workers`` CPU-only workers that take the
ingest and statistics tasks (dose-rate tasks ask for a GPU and run on the GPU workers only). The run is that of
``cohort-dosimetry run DICOM COHORT --address ... --grid compact --mc-scans first --mc-decays N``: its arguments are
parsed by ``run``'s own parser and turned into the flow's parameters by ``run``'s own code.

Sized to finish within 5 minutes on one H100:
- Monte Carlo: 1e6 decays per scan (default 5e6), on the earliest scan of each patient's cycle (12 of the 42 scans,
  as the demo does). CUDA Monte Carlo ran at 3.5e5 decays/s on an H200 on a phantom of this grid
  (docs/model.md): 12 x 1e6 decays is about 35 s of GPU time, where the default 5e6 would take about
  170 s on one GPU. 1e6 decays still puts every map through the whole transport path; its noise is not what is
  checked here.
- The CUDA tests run while the cohort is synthesised (the synthesis uses the CPU cores; the tests one GPU); the
  cohort run itself starts after both, alone on the machine.
- Ingest of a study takes seconds of one CPU core; with one worker per GPU, 42 scans would be ingested and
  summarised one after the other, hence the CPU workers (default: one per core left, at most 12).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from contextlib import ExitStack, contextmanager
from pathlib import Path
from xml.etree import ElementTree

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "bench" / "results" / "gpu_check.json"
#: Monte Carlo decays per scan: see the module docstring for the 5-minute budget this fits.
DEFAULT_MC_DECAYS = 1_000_000
CUDA_TESTS_TIMEOUT_S = 240
CLUSTER_START_TIMEOUT_S = 180
GIB = 2**30


def nvidia_smi_gpus() -> list[str]:
    """The GPUs the NVIDIA driver lists ("name, driver, memory"), or [] without nvidia-smi or a driver."""
    if not shutil.which("nvidia-smi"):
        return []
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [line.strip() for line in out.stdout.splitlines() if line.strip()] if out.returncode == 0 else []


def no_cuda_message(torch) -> str:
    """Why this machine gets no GPU check, and what would give it one."""
    build = f"CUDA {torch.version.cuda} build" if torch.version.cuda else "a CPU-only build"
    gpus = nvidia_smi_gpus()
    if gpus and not torch.version.cuda:
        hint = (
            f"; the driver lists {len(gpus)} GPU(s) ({gpus[0]}): install a CUDA build of torch 2.13.0 "
            "(deploy/install.sh with TORCH_INDEX_URL set to a CUDA wheel index) to check them"
        )
    elif gpus:
        hint = f"; the driver lists {len(gpus)} GPU(s) but torch cannot use them (CUDA_VISIBLE_DEVICES, driver?)"
    else:
        hint = "; no NVIDIA driver or GPU found"
    return f"gpu-check: no CUDA device for torch {torch.__version__} ({build}){hint}. Nothing to check here."


def run_cuda_tests(junit: Path) -> subprocess.Popen:
    """Start the CUDA tests (every test marked ``cuda``; not the slow ones)."""
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-m",
            "cuda and not slow",
            "--junitxml",
            str(junit),
            "tests",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def cuda_test_outcome(proc: subprocess.Popen, junit: Path, started: float) -> dict:
    try:
        output, _ = proc.communicate(timeout=max(1.0, CUDA_TESTS_TIMEOUT_S - (time.perf_counter() - started)))
    except subprocess.TimeoutExpired:
        proc.kill()
        output, _ = proc.communicate()
        output += f"\n(gpu-check: the CUDA tests were stopped after {CUDA_TESTS_TIMEOUT_S} s)"
    counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    if junit.exists():
        root = ElementTree.parse(junit).getroot()
        for suite in [root] if root.tag == "testsuite" else root.iter("testsuite"):
            for key in counts:
                counts[key] += int(suite.get(key, 0))
    failed = [line for line in output.splitlines() if line.startswith(("FAILED", "ERROR"))]
    return {
        "returncode": proc.returncode,
        "wall_s": round(time.perf_counter() - started, 1),
        "passed": counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"],
        "failed": counts["failures"] + counts["errors"],
        "skipped": counts["skipped"],
        "failures": failed,
        "summary": output.strip().splitlines()[-1] if output.strip() else "",
    }


class GpuMemorySampler:
    """Peak ``memory.used`` per GPU from nvidia-smi, sampled every ``period_s`` in a thread (all processes on the
    GPU, CUDA contexts included; what torch's own counters do not see)."""

    def __init__(self, period_s: float = 0.5):
        self.period_s, self.peak_mib = period_s, {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.is_set():
            try:
                out = subprocess.run(
                    ["nvidia-smi", "--query-gpu=index,memory.used", "--format=csv,noheader,nounits"],
                    capture_output=True,
                    text=True,
                    timeout=10,
                ).stdout
            except (OSError, subprocess.TimeoutExpired):
                return
            for line in out.splitlines():
                index, used = (v.strip() for v in line.split(","))
                self.peak_mib[index] = max(self.peak_mib.get(index, 0), int(used))
            self._stop.wait(self.period_s)

    def __enter__(self):
        if shutil.which("nvidia-smi"):
            self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=15)


def worker_gpu_memory() -> dict:
    """Run on a Dask worker: torch's peak allocated and reserved CUDA memory of this process (bytes)."""
    import torch

    if not torch.cuda.is_available():
        return {"device": "cpu"}
    i = torch.cuda.current_device()
    return {
        "device": torch.cuda.get_device_name(i),
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "max_allocated_bytes": torch.cuda.max_memory_allocated(i),
        "max_reserved_bytes": torch.cuda.max_memory_reserved(i),
        "total_bytes": torch.cuda.get_device_properties(i).total_memory,
    }


def _spawn(stack: ExitStack, argv: list[str], env: dict, log: Path) -> subprocess.Popen:
    proc = subprocess.Popen(argv, env=env, stdout=stack.enter_context(log.open("wb")), stderr=subprocess.STDOUT)

    def stop() -> None:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=20)

    stack.callback(stop)
    return proc


@contextmanager
def cluster(n_gpus: int, cpu_workers: int, workdir: Path):
    """Yield (scheduler address, description): one worker per GPU declaring GPU=1, plus ``cpu_workers`` CPU-only
    workers, all on 127.0.0.1; everything started here is stopped on leaving."""
    import importlib.util

    from distributed import Client

    from flows._runtime import dask_scheduler

    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "DO_NOT_TRACK": "1",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    }
    dask = [sys.executable, "-m", "dask"]
    with ExitStack() as stack:
        if n_gpus and importlib.util.find_spec("dask_cuda"):
            address = stack.enter_context(dask_scheduler())  # the embedded default: LocalCUDACluster
            kind = f"{n_gpus} GPU worker(s) of dask-cuda's LocalCUDACluster (the embedded default of run)"
        else:
            scheduler_file = workdir / "scheduler.json"
            scheduler = _spawn(
                stack,
                [
                    *dask,
                    "scheduler",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    "0",
                    "--no-dashboard",
                    "--scheduler-file",
                    str(scheduler_file),
                ],
                env,
                workdir / "scheduler.log",
            )
            deadline = time.monotonic() + CLUSTER_START_TIMEOUT_S
            while not scheduler_file.exists() or not scheduler_file.read_text().strip().endswith("}"):
                if scheduler.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"gpu-check: the Dask scheduler did not start; see {workdir / 'scheduler.log'}")
                time.sleep(0.1)
            address = json.loads(scheduler_file.read_text())["address"]
            for i in range(n_gpus):
                _spawn(
                    stack,
                    [
                        *dask,
                        "worker",
                        address,
                        "--host",
                        "127.0.0.1",
                        "--nthreads",
                        "1",
                        "--no-dashboard",
                        "--resources",
                        "GPU=1",
                        "--name",
                        f"gpu-{i}",
                    ],
                    {**env, "CUDA_VISIBLE_DEVICES": str(i)},
                    workdir / f"worker-gpu-{i}.log",
                )
            kind = (
                f"{n_gpus} GPU worker(s), one `dask worker` per GPU (dask-cuda is not installed)"
                if n_gpus
                else "no GPU worker (--allow-cpu)"
            )
        if cpu_workers:
            _spawn(
                stack,
                [
                    *dask,
                    "worker",
                    address,
                    "--host",
                    "127.0.0.1",
                    "--nworkers",
                    str(cpu_workers),
                    "--nthreads",
                    "1",
                    "--no-dashboard",
                    "--name",
                    "cpu",
                ],
                {**env, "CUDA_VISIBLE_DEVICES": ""},
                workdir / "workers-cpu.log",
            )
        with Client(address, timeout=CLUSTER_START_TIMEOUT_S, set_as_default=False) as client:
            client.wait_for_workers(n_gpus + cpu_workers, timeout=CLUSTER_START_TIMEOUT_S)
        yield address, f"{kind} + {cpu_workers} CPU worker(s)"


def check(args: argparse.Namespace, torch) -> tuple[dict, int]:
    """Run the check; returns (the record written to JSON, exit status)."""
    from distributed import Client

    from cohort_dosimetry.cli import build_parser
    from cohort_dosimetry.commands.run import flow_parameters, print_summary
    from cohort_dosimetry.phantoms import export_cohort
    from flows import cohort_flow
    from flows._runtime import prefect_api

    t_start = time.perf_counter()
    n_gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    record = {
        "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "host": platform.node(),
        # names from the driver: asking torch would open a CUDA context in this process, which runs no CUDA work
        "cuda_device_count": n_gpus,
        "gpus": nvidia_smi_gpus(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "python": platform.python_version(),
        "commit": _git_commit(),
        "cohort": {
            "patients": args.patients,
            "grid": "compact",
            "spect": "fast",
            "mc_scans": "first",
            "mc_decays": args.mc_decays,
            "seed": args.seed,
        },
    }
    print(f"gpu-check: {n_gpus} CUDA device(s) {record['gpus']}, torch {torch.__version__} (CUDA {torch.version.cuda})")
    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="gpu-check-"))
    work.mkdir(parents=True, exist_ok=True)
    dicom_dir, cohort_dir = work / "dicom", work / "cohort"
    status = 0
    try:
        t0 = time.perf_counter()
        tests = None if args.skip_tests else run_cuda_tests(work / "cuda-tests.xml")
        if (dicom_dir / ".complete").exists():
            print(f"gpu-check: synthetic cohort already in {dicom_dir}")
        else:
            print(
                f"gpu-check: synthesising {args.patients} virtual patients (compact grid, fast SPECT)"
                + ("" if tests is None else " while the CUDA tests run")
            )
            export_cohort(
                dicom_dir, n_patients=args.patients, seed=args.seed, grid="compact", spect="fast", progress=False
            )
            (dicom_dir / ".complete").write_text("export finished\n")
        synth_s = time.perf_counter() - t0
        if tests is not None:
            record["cuda_tests"] = cuda_test_outcome(tests, work / "cuda-tests.xml", t0)
            ct = record["cuda_tests"]
            print(
                f"CUDA tests: {ct['passed']} passed, {ct['failed']} failed, {ct['skipped']} skipped "
                f"({ct['wall_s']:.0f} s, alongside the synthesis): {ct['summary']}"
            )
            for line in ct["failures"]:
                print(f"  {line}")
            if ct["returncode"] != 0:
                status = 1

        run_argv = [
            "run",
            str(dicom_dir),
            str(cohort_dir),
            "--grid",
            "compact",
            "--mc-scans",
            "first",
            "--mc-decays",
            str(args.mc_decays),
            "--seed",
            str(args.seed),
        ]
        with prefect_api(), cluster(n_gpus, args.cpu_workers, work) as (address, kind):
            print(f"gpu-check: cluster at {address}: {kind}")
            run_args = build_parser().parse_args([*run_argv, "--address", address])
            t_run = time.perf_counter()
            with GpuMemorySampler() as sampler:
                summary = cohort_flow(**flow_parameters(run_args))
            run_s = time.perf_counter() - t_run
            with Client(address, set_as_default=False) as client:
                gpu_workers = [
                    a
                    for a, w in client.scheduler_info(n_workers=-1)["workers"].items()
                    if w.get("resources", {}).get("GPU")
                ]
                worker_memory = client.run(worker_gpu_memory, workers=gpu_workers) if gpu_workers else {}
        summary["cohort_dir"] = str(cohort_dir)
        print_summary(summary)

        results = summary.get("results", [])
        devices = Counter(
            r.get("device") or "not recorded"
            for r in results
            if r["step"].startswith("dose_") and r["status"] == "done"
        )
        record.update(
            cluster=kind,
            command="cohort-dosimetry " + " ".join([*run_argv, "--address", "ADDRESS"]),
            scans={k: summary.get(f"n_{k}") for k in ("done", "skipped", "failed")},
            run_wall_s=round(run_s, 1),
            stage_wall_s={
                "synth": round(synth_s, 1),
                **{k: round(v, 1) for k, v in summary.get("stage_wall_s", {}).items()},
            },
            task_seconds={k: round(v, 1) for k, v in sorted(summary.get("task_seconds", {}).items())},
            dose_map_devices=dict(devices),
            peak_gpu_memory={"torch_per_worker": worker_memory, "nvidia_smi_mib_per_gpu": sampler.peak_mib},
        )
        print(
            "stage wall s: "
            + ", ".join(f"{k} {v:.1f}" for k, v in record["stage_wall_s"].items())
            + f" (run {run_s:.1f})"
        )
        print("task s, summed over workers: " + ", ".join(f"{k} {v:.1f}" for k, v in record["task_seconds"].items()))
        print(
            "dose-rate maps computed on: "
            + (", ".join(f"{d} x{n}" for d, n in sorted(devices.items())) or "none (all reused)")
        )
        for address, mem in sorted(worker_memory.items()):
            if "max_allocated_bytes" in mem:
                print(
                    f"peak GPU memory, worker {address} ({mem['device']}): torch allocated "
                    f"{mem['max_allocated_bytes'] / GIB:.2f} GiB, reserved {mem['max_reserved_bytes'] / GIB:.2f} "
                    f"GiB of {mem['total_bytes'] / GIB:.0f} GiB"
                )
        for index, mib in sorted(sampler.peak_mib.items()):
            print(f"peak GPU memory, nvidia-smi GPU {index}: {mib / 1024:.2f} GiB used (all processes)")
        if summary.get("n_failed"):
            status = 1
        if n_gpus and any(not d.startswith("cuda") for d in devices):
            print("gpu-check: FAILED: dose-rate maps were computed off the GPU: " + str(dict(devices)))
            status = 1
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)
    record["total_wall_s"] = round(time.perf_counter() - t_start, 1)
    record["exit_status"] = status
    return record, status


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=str(DEFAULT_OUT), help=f"JSON record (default: {DEFAULT_OUT.relative_to(ROOT)})")
    p.add_argument("--mc-decays", type=int, default=DEFAULT_MC_DECAYS, help="Monte Carlo decays per scan")
    p.add_argument("--patients", type=int, default=12, help="virtual patients (12 give the 42 scans)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--cpu-workers",
        type=int,
        default=None,
        help="CPU-only Dask workers beside the GPU workers (default: one per core left, at most 12)",
    )
    p.add_argument("--workdir", default=None, help="keep the DICOM and the store here (default: a temporary folder)")
    p.add_argument("--skip-tests", action="store_true", help="do not run the CUDA tests")
    p.add_argument(
        "--allow-cpu",
        action="store_true",
        help="without CUDA, run the cohort part on the CPU anyway: checks this script, not a GPU",
    )
    args = p.parse_args(argv)

    import torch

    if not torch.cuda.is_available() and not args.allow_cpu:
        print(no_cuda_message(torch))
        return 0
    n_gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if args.cpu_workers is None:
        args.cpu_workers = max(0 if n_gpus else 1, min(12, (os.cpu_count() or 1) - n_gpus))
    record, status = check(args, torch)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"gpu-check: wrote {out} ({record['total_wall_s']:.0f} s in all); exit status {status}")
    return status


if __name__ == "__main__":
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as the Makefile sets it: before torch loads OpenMP
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    sys.path.insert(0, str(ROOT))
    sys.exit(main())
