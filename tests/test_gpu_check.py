"""``make gpu-check`` (bench/gpu_check.py): where torch sees no CUDA it says so, writes nothing and exits 0 at once;
its cohort part, run on the CPU (``--allow-cpu``, slow), writes the record it prints."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "bench" / "gpu_check.py"


def test_make_gpu_check_runs_the_gpu_check_script():
    lines = (ROOT / "Makefile").read_text().splitlines()
    start = lines.index(next(line for line in lines if line.startswith("gpu-check:")))
    recipe = [line.strip() for line in lines[start + 1 :] if line.startswith("\t")][:1]
    assert recipe == ["$(PY) bench/gpu_check.py"]


def test_without_cuda_it_says_so_writes_nothing_and_exits_0_in_seconds(tmp_path):
    out = tmp_path / "gpu_check.json"
    # torch sees no GPU, whatever the machine has; Python reports every module it imports
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "PYTHONPROFILEIMPORTTIME": "1"}
    cpu0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--out", str(out)], env=env, capture_output=True, text=True, timeout=120
    )
    cpu1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "no CUDA device" in done.stdout and "Nothing to check here" in done.stdout, done.stdout
    assert not out.exists()
    imported = {line.rsplit("|", 1)[1].strip() for line in done.stderr.splitlines() if line.startswith("import time:")}
    assert "torch" in imported
    assert not {m for m in imported if m.split(".")[0] in ("prefect", "distributed", "flows", "cohort_dosimetry")}
    # CPU seconds, not wall time (the machine may be shared): about 2 s, Python and torch starting
    cpu_s = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
    assert cpu_s < 8, f"the no-CUDA path took {cpu_s:.1f} CPU seconds"


@pytest.mark.slow
def test_cohort_part_on_the_cpu_writes_timings_devices_and_the_run_outcome(tmp_path):
    out = tmp_path / "gpu_check.json"
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "--allow-cpu",
            "--skip-tests",
            "--patients",
            "1",
            "--mc-decays",
            "20000",
            "--cpu-workers",
            "2",
            "--out",
            str(out),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=1500,
    )
    assert done.returncode == 0, done.stdout[-5000:] + done.stderr[-5000:]
    record = json.loads(out.read_text())
    assert record["exit_status"] == 0 and record["cuda_device_count"] == 0 and record["scans"]["failed"] == 0
    n_scans = record["scans"]["done"]
    assert 3 <= n_scans <= 4  # one virtual patient: 3 or 4 time points
    assert {"synth", "ingest", "dose", "stats+report"} <= set(record["stage_wall_s"])
    assert all(v > 0 for v in record["stage_wall_s"].values())
    assert {"dose_dvk", "dose_cnn", "dose_mc"} <= set(record["task_seconds"])
    # DVK and CNN on every scan, MC on the first: all computed, all on the CPU here
    assert record["dose_map_devices"] == {"cpu": 2 * n_scans + 1}
    assert record["peak_gpu_memory"] == {"torch_per_worker": {}, "nvidia_smi_mib_per_gpu": {}}
    assert "stage wall s: synth" in done.stdout and "dose-rate maps computed on: cpu x" in done.stdout
