"""The cohort flows on a real process-based Dask LocalCluster and a Prefect test server.

Each test states the failure it provokes; the assertions are on the store (the source of truth), the run record and
the per-scan results the flows return.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.usefixtures("prefect_api")

ROOT = Path(__file__).resolve().parents[2]


def _dose_arrays_present(cohort_dir, name):
    from cohort_dosimetry.store import open_cohort

    c = open_cohort(cohort_dir)
    return {s: c.has_arrays(*s, [name]) for s in c.scans()}


def test_cohort_flow_end_to_end_then_rerun_is_a_no_op(tiny_dicom, tmp_path):
    from cohort_dosimetry.store import open_cohort, validate_cohort
    from flows import cohort_flow

    cohort_dir = tmp_path / "cohort"
    summary = cohort_flow(
        str(tiny_dicom), str(cohort_dir), methods=("dvk", "cnn", "mc"), grid="ct", mc_scans="first", mc_decays=200_000
    )
    assert summary["n_failed"] == 0, summary
    cohort = open_cohort(cohort_dir)
    scans = cohort.scans()
    assert len(scans) >= 6  # 2 patients x 3-4 time points
    first = {}
    for p, t in scans:
        first.setdefault(p, t)
        assert cohort.has_arrays(p, t, ["dose_rate_dvk", "dose_rate_cnn"])
        assert cohort.has_arrays(p, t, ["dose_rate_mc"]) == (first[p] == t)
    assert validate_cohort(cohort_dir) == []
    stats = cohort.voi_stats()
    assert set(stats["method"]) == {"dvk", "cnn", "mc"}
    assert set(map(tuple, stats[["patient", "timepoint"]].drop_duplicates().values)) == set(scans)
    assert Path(summary["report"]).is_file()
    runs = cohort.runs()
    assert len(runs) == 1 and runs.iloc[0]["n_scans_failed"] == 0 and runs.iloc[0]["n_scans_done"] == len(scans)
    # per therapy cycle: DVK and CNN absorbed-dose maps; MC (one scan per cycle) has none, with the reason
    assert cohort.cycle_results() == sorted((p, 1) for p in first)
    for p in first:
        cycle = cohort.cycle(p, 1)
        assert {"absorbed_dose_dvk", "absorbed_dose_cnn"} <= set(cycle.data_vars)
        assert "absorbed_dose_mc" not in cycle and "no mc dose-rate map" in cycle.attrs["methods_skipped"]["mc"]
    voxel = cohort.read_table("voxel_absorbed_dose")
    kidneys = voxel[voxel["voi_type"] == "kidney"]
    # no motion: a SPECT-based method's map mean matches its own VOI-level result within 10 %
    assert len(kidneys) == 2 * 2 * len(first) and (kidneys["difference_percent"].abs() < 10).all(), kidneys
    assert len(cohort.read_table("registrations")) == len(scans) - len(first)

    again = cohort_flow(
        str(tiny_dicom), str(cohort_dir), methods=("dvk", "cnn", "mc"), grid="ct", mc_scans="first", mc_decays=200_000
    )
    runs = open_cohort(cohort_dir).runs()
    assert len(runs) == 2 and runs.iloc[1]["n_scans_failed"] == 0
    # the rerun ingested nothing and computed no dose-rate map: every such step was skipped
    work = [r for r in again["results"] if r["step"].startswith(("dose_", "absorbed_dose_")) or r["step"] == "ingest"]
    assert work and all(r["status"] == "skipped" for r in work), work


def test_worker_killed_mid_flow_still_completes_every_scan(cohort_copy):
    from distributed import Client, LocalCluster
    from prefect_dask import DaskTaskRunner

    from flows import dose_flow

    with LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        dashboard_address=None,
        env={"PREFECT_API_URL": os.environ["PREFECT_API_URL"], "OMP_NUM_THREADS": "1"},
    ) as cluster:
        with Client(cluster, set_as_default=False) as client:
            pids = list(client.run(os.getpid).values())
        killed = []

        def kill_one_worker_when_work_started():
            deadline = time.time() + 120
            while time.time() < deadline and not any(_dose_arrays_present(cohort_copy, "dose_rate_mc").values()):
                time.sleep(0.2)
            os.kill(pids[0], signal.SIGKILL)
            killed.append(pids[0])

        killer = threading.Thread(target=kill_one_worker_when_work_started)
        killer.start()
        results = dose_flow.with_options(task_runner=DaskTaskRunner(address=cluster.scheduler_address))(
            str(cohort_copy), methods=("dvk", "mc"), mc_decays=400_000
        )
        killer.join()
    assert killed, "the worker was never killed: the test did not exercise anything"
    assert [r for r in results if r["status"] == "failed"] == []
    assert all(_dose_arrays_present(cohort_copy, "dose_rate_mc").values())
    assert all(_dose_arrays_present(cohort_copy, "dose_rate_dvk").values())


def test_corrupt_scan_among_good_ones_is_isolated_and_recorded(tiny_dicom, tmp_path):
    import shutil

    from cohort_dosimetry.store import open_cohort
    from flows import cohort_flow

    dicom = tmp_path / "dicom"
    shutil.copytree(tiny_dicom, dicom)
    nm_files = sorted(p for p in dicom.rglob("*") if p.is_file() and _modality(p) == "NM")
    bad = nm_files[0]
    bad.write_bytes(bad.read_bytes()[:2000])  # truncated mid-header: a corrupt SPECT file
    summary = cohort_flow(str(dicom), str(tmp_path / "cohort"), methods=("dvk",), grid="ct")
    cohort = open_cohort(tmp_path / "cohort")
    assert len(cohort.scans()) == len(nm_files) - 1
    assert all(cohort.has_arrays(p, t, ["dose_rate_dvk"]) for p, t in cohort.scans())
    run = cohort.runs().iloc[-1]
    assert run["n_scans_failed"] >= 1 and summary["n_failed"] >= 1
    assert bad.name in run["failures"] or str(bad.parent.name) in run["failures"], run["failures"]


def test_cohort_off_the_cnn_grid_gets_dvk_and_mc_and_each_cnn_step_refused_by_name(tiny_dicom, tmp_path):
    """Ingested on a 2 mm grid, not the shipped weights' 3 x 3.91 x 3.91 mm: the CNN step of every scan fails
    with the scan's name and what to do, and nothing else is lost: DVK and MC maps are stored for every scan."""
    from cohort_dosimetry.store import open_cohort
    from flows import cohort_flow

    summary = cohort_flow(
        str(tiny_dicom), str(tmp_path / "cohort"), methods=("dvk", "cnn", "mc"), grid="2,2,2", mc_decays=100_000
    )
    cohort = open_cohort(tmp_path / "cohort")
    scans = cohort.scans()
    assert len(scans) >= 6 and summary["n_failed"] == len(scans)
    for patient, timepoint in scans:
        assert cohort.scan_attrs(patient, timepoint)["spacing_mm"] == (2.0, 2.0, 2.0)
        assert cohort.has_arrays(patient, timepoint, ["dose_rate_dvk", "dose_rate_mc"])
        assert not cohort.has_arrays(patient, timepoint, ["dose_rate_cnn"])
    failures = cohort.runs().iloc[-1]["failures"]
    for patient, timepoint in scans:
        assert f"{patient}/{timepoint}: grid spacing (2.0, 2.0, 2.0) mm" in failures, failures
    assert "ingest the scan on that grid (`--grid compact`)" in failures


def _modality(path):
    import pydicom

    try:
        return pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["Modality"]).get("Modality")
    except Exception:
        return None


_DOSE_SCRIPT = """
import sys
from flows import dose_flow
results = dose_flow(sys.argv[1], methods=tuple(sys.argv[2].split(",")), mc_decays=int(sys.argv[3]))
sys.exit(1 if any(r["status"] == "failed" for r in results) else 0)
"""


def _start_dose_flow(cohort_dir, methods, mc_decays=200_000):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-c", _DOSE_SCRIPT, str(cohort_dir), methods, str(mc_decays)],
        cwd=ROOT,
        env=env,
        start_new_session=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_crash_of_the_whole_flow_then_rerun_computes_only_unfinished_scans(cohort_copy):
    from cohort_dosimetry.store import validate_cohort
    from flows import dose_flow

    proc = _start_dose_flow(cohort_copy, "mc", mc_decays=1_500_000)
    deadline = time.time() + 240
    while time.time() < deadline and not any(_dose_arrays_present(cohort_copy, "dose_rate_mc").values()):
        assert proc.poll() is None, proc.stdout.read()
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)  # the whole flow process and its children, mid-run
    proc.wait()
    done_before = {s for s, ok in _dose_arrays_present(cohort_copy, "dose_rate_mc").items() if ok}
    assert done_before and len(done_before) < len(_dose_arrays_present(cohort_copy, "dose_rate_mc"))
    assert validate_cohort(cohort_copy) == []

    results = dose_flow(str(cohort_copy), methods=("mc",), mc_decays=1_500_000)
    status = {(r["patient"], r["timepoint"]): r["status"] for r in results}
    assert {s for s, st in status.items() if st == "skipped"} == done_before
    assert {s for s, st in status.items() if st == "done"} == set(status) - done_before
    assert all(_dose_arrays_present(cohort_copy, "dose_rate_mc").values())


def test_two_flows_on_one_cohort_at_once_do_not_corrupt_it(cohort_copy):
    from cohort_dosimetry.dose import dose_rates
    from cohort_dosimetry.store import open_cohort, validate_cohort

    procs = [_start_dose_flow(cohort_copy, "dvk") for _ in range(2)]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert validate_cohort(cohort_copy) == []
    cohort = open_cohort(cohort_copy)
    for p, t in cohort.scans():
        scan = cohort.scan(p, t).load()
        expected = dose_rates(scan[["activity", "density", "labels"]], methods=("dvk",), device="cpu")
        np.testing.assert_allclose(
            scan["dose_rate_dvk"].values, expected["dose_rate_dvk"].values, rtol=1e-5, atol=1e-12
        )


@pytest.mark.parametrize(("user_value", "expected"), [(None, 120.0), ("45", 45.0)])
def test_importing_the_flows_gives_the_local_api_server_time_to_start_unless_the_user_chose(user_value, expected):
    """Prefect reads its settings once, at import: the longer start-up wait must be in place by then (a fresh process,
    as the CLI is), and a value the user set must be kept."""
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"}
    if user_value is not None:
        env["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"] = user_value
    code = (
        "import flows; from prefect.settings import PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS as s; "
        "print(s.value())"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True, cwd=Path(__file__).parents[2]
    )
    assert float(out.stdout.split()[-1]) == expected
