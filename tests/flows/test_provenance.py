"""Provenance decides which dose-rate maps a run computes, and concurrent runs never compute one map twice.

The settings of each map (pipeline.map_settings) are compared with what the store's provenance records: a rerun with
the same settings computes nothing, a changed setting recomputes exactly the maps it affects as new versions (the
old map stays readable as superseded), and two runs at once share the work through the scans' compute locks.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
METHODS = ("dvk", "cnn", "mc")


def _run(cohort_dir, scans, run_id, **settings) -> list[dict]:
    """One run of the dose step over ``scans`` with all three methods, recorded in runs / run_maps."""
    from cohort_dosimetry import pipeline

    t0 = time.perf_counter()
    results = [
        r for p, t in scans for r in pipeline.compute_scan_dose(cohort_dir, p, t, METHODS, device="cpu", **settings)
    ]
    pipeline.record_run(cohort_dir, run_id, results, time.perf_counter() - t0, METHODS)
    return results


def _computed(results) -> Counter:
    return Counter(r["step"][5:] for r in results if r["status"] == "done")


@pytest.fixture(scope="module")
def other_weights(tmp_path_factory):
    """A model card whose weights differ from the shipped ones in one parameter (another sha256)."""
    import torch

    from cohort_dosimetry.model import load_model, save_model

    model, card = load_model()
    with torch.no_grad():
        next(model.parameters()).mul_(1.01)
    return save_model(model, card, tmp_path_factory.mktemp("weights") / "other.json")


def test_changed_settings_recompute_exactly_the_maps_they_affect_as_new_versions(
    cohort_copy, other_weights, monkeypatch
):
    from cohort_dosimetry import pipeline
    from cohort_dosimetry.dose import _dvk as dose_dvk
    from cohort_dosimetry.store import open_cohort, validate_cohort

    cohort = open_cohort(cohort_copy)
    patient = cohort.scans()[0][0]
    scans = [(p, t) for p, t in cohort.scans() if p == patient]  # one patient's scans keep the test short
    n = len(scans)
    assert n >= 3

    first = _run(cohort_copy, scans, "first", mc_decays=20_000)
    assert _computed(first) == {"dvk": n, "cnn": n, "mc": n}
    assert {r["message"] for r in first} == {"no map stored"}
    before = {s: cohort.scan(*s)[["dose_rate_mc", "dose_rate_cnn"]].load() for s in scans}

    assert _computed(_run(cohort_copy, scans, "same", mc_decays=20_000)) == {}

    decays = _run(cohort_copy, scans, "decays", mc_decays=30_000)
    assert _computed(decays) == {"mc": n}
    assert {r["message"] for r in decays if r["status"] == "done"} == {"settings changed: n_decays 20000 -> 30000"}

    weights = _run(cohort_copy, scans, "weights", mc_decays=30_000, weights=str(other_weights))
    assert _computed(weights) == {"cnn": n}
    (reason,) = {r["message"] for r in weights if r["status"] == "done"}
    assert reason.startswith("settings changed: weights_sha256 ") and "normalisation" not in reason

    assert _computed(_run(cohort_copy, scans, "same again", mc_decays=30_000, weights=str(other_weights))) == {}

    # A new DVK kernel: the DVK maps are recomputed, and the CNN maps made on the old DVK maps with them.
    monkeypatch.setattr(dose_dvk, "kernel_sha256", lambda spacing, nuclide=None: "f" * 64)
    kernel = _run(cohort_copy, scans, "kernel", mc_decays=30_000, weights=str(other_weights))
    assert _computed(kernel) == {"dvk": n, "cnn": n}
    assert {r["message"] for r in kernel if r["step"] == "dose_cnn"} == {
        "settings changed: its DVK prior has other settings"
    }

    # Every map records what made it; each recomputation superseded the old map, which stays readable.
    assert validate_cohort(cohort_copy) == []
    for p, t in scans:
        provenance = cohort.scan_attrs(p, t)["provenance"]
        mc, cnn, dvk = (provenance[f"dose_rate_{m}"] for m in ("mc", "cnn", "dvk"))
        assert mc["settings"]["n_decays"] == 30_000 and mc["settings"]["seed"] == 0
        assert mc["settings"]["engine_version"] and mc["device"] == "cpu" and mc["software_version"]
        assert dvk["settings"]["kernel_sha256"] == "f" * 64
        assert dvk["settings"]["grid_spacing_mm"] == list(cohort.scan_attrs(p, t)["spacing_mm"])
        assert cnn["settings"]["weights_sha256"] != pipeline.weights_sha256()
        assert cnn["settings"]["prior_dvk"] == {
            "settings_sha256": dvk["settings_sha256"],
            "written_utc": dvk["written_utc"],
        }
        slots = cohort.superseded_maps(p, t)
        # mc (decays), cnn (weights), then dvk and cnn (kernel): four replacing writes
        assert [sorted(s["provenance"]) for s in slots] == [
            ["dose_rate_mc", "dose_rate_mc_uncertainty"],
            ["dose_rate_cnn"],
            ["dose_rate_dvk"],
            ["dose_rate_cnn"],
        ]
        old_mc = slots[0]["provenance"]["dose_rate_mc"]
        assert old_mc["settings"]["n_decays"] == 20_000 and mc["supersedes"] == f"superseded/{slots[0]['slot']}"
        np.testing.assert_array_equal(
            cohort.superseded_dataset(p, t, slots[0]["slot"])["dose_rate_mc"].values,
            before[(p, t)]["dose_rate_mc"].values,
        )
        np.testing.assert_array_equal(
            cohort.superseded_dataset(p, t, slots[1]["slot"])["dose_rate_cnn"].values,
            before[(p, t)]["dose_rate_cnn"].values,
        )
        assert cnn["supersedes"] == f"superseded/{slots[3]['slot']}"

    runs = cohort.run_maps()
    counts = runs[runs["status"] == "computed"].groupby("run_id", sort=False).size().to_dict()
    assert counts == {"first": 3 * n, "decays": n, "weights": n, "kernel": 2 * n}
    assert set(runs[runs["run_id"].isin(["same", "same again"])]["status"]) == {"reused"}
    assert len(runs) == 6 * 3 * n and list(cohort.runs()["run_id"]) == [
        "first",
        "same",
        "decays",
        "weights",
        "same again",
        "kernel",
    ]
    assert list(cohort.runs()["n_maps_computed"]) == [3 * n, 0, n, n, 0, 2 * n]
    assert list(cohort.runs()["n_maps_reused"]) == [0, 3 * n, 2 * n, 2 * n, 3 * n, n]


def test_a_run_that_waited_for_the_lock_reuses_the_map_the_holder_stored(cohort_copy, monkeypatch):
    """The check after taking the compute lock: a map stored by the run that held the lock is not computed again."""
    from cohort_dosimetry import pipeline
    from cohort_dosimetry.store import open_cohort
    from cohort_dosimetry.store._cohort import Cohort

    cohort = open_cohort(cohort_copy)
    patient, timepoint = cohort.scans()[0]
    waiting = threading.Event()
    original = Cohort.compute_lock

    def compute_lock(self, *args, **kwargs):
        waiting.set()  # past its first look at the provenance, which found no map
        return original(self, *args, **kwargs)

    results = []
    with cohort.compute_lock(patient, timepoint, "dvk"):  # another run, computing the DVK map of this scan
        monkeypatch.setattr(Cohort, "compute_lock", compute_lock)
        waiter = threading.Thread(
            target=lambda: results.extend(
                pipeline.compute_scan_dose(cohort_copy, patient, timepoint, ("dvk",), device="cpu")
            )
        )
        waiter.start()
        assert waiting.wait(60), "the second run never came to the compute lock"
        settings = pipeline.map_settings("dvk", cohort.scan_attrs(patient, timepoint)["spacing_mm"])
        maps = _dvk_map(cohort, patient, timepoint)
        stored = cohort.write_arrays(
            patient,
            timepoint,
            maps,
            {"method": "dvk", "settings": settings, "settings_sha256": pipeline.settings_sha256(settings)},
        )
    waiter.join(120)
    assert not waiter.is_alive()
    (result,) = results
    assert result["status"] == "skipped"
    assert result["message"] == "computed by a concurrent run while this run waited"
    assert result["map_record"]["written_utc"] == stored["written_utc"] and result["map_record"]["waited_s"] > 0
    assert cohort.superseded_maps(patient, timepoint) == []  # nothing was computed and stored a second time


def _dvk_map(cohort, patient, timepoint):
    from cohort_dosimetry.dose import dose_rates

    return dose_rates(cohort.scan(patient, timepoint).load(), methods=("dvk",), device="cpu")


# Two dose-flow runs in two processes, started together: each says "ready", waits for "go" on its stdin, runs the
# dose flow with all three methods and records its run.
_TWO_RUNS_SCRIPT = """
import json, sys, time
from cohort_dosimetry import pipeline
from flows import dose_flow
cohort_dir, run_id, decays = sys.argv[1], sys.argv[2], int(sys.argv[3])
methods = ("dvk", "cnn", "mc")
print("ready", flush=True)
assert sys.stdin.readline().strip() == "go"
t0 = time.time()
results = dose_flow(cohort_dir, methods=methods, mc_decays=decays)
t1 = time.time()
pipeline.record_run(cohort_dir, run_id, results, t1 - t0, methods)
print("span " + json.dumps([t0, t1]), flush=True)
sys.exit(1 if any(r["status"] == "failed" for r in results) else 0)
"""


def _read_until(proc, word: str, timeout_s: float) -> list[str]:
    """Lines of ``proc``'s stdout up to the one starting with ``word`` (bounded wait; fails if the process ends)."""
    lines, deadline = [], time.monotonic() + timeout_s
    while True:
        left = deadline - time.monotonic()
        assert left > 0, f"no {word!r} from the run within {timeout_s} s: {lines}"
        ready, _, _ = select.select([proc.stdout], [], [], left)
        if not ready:
            continue
        line = proc.stdout.readline()
        assert line, f"the run ended before saying {word!r}: {lines}"
        lines.append(line.rstrip())
        if line.startswith(word):
            return lines


@pytest.mark.usefixtures("prefect_api")
def test_two_runs_at_once_compute_every_map_exactly_once(cohort_copy):
    from cohort_dosimetry.store import open_cohort, validate_cohort

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = {
        run_id: subprocess.Popen(
            [sys.executable, "-c", _TWO_RUNS_SCRIPT, str(cohort_copy), run_id, "50000"],
            cwd=ROOT,
            env=env,
            start_new_session=True,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for run_id in ("run-a", "run-b")
    }
    try:
        for proc in procs.values():
            _read_until(proc, "ready", 120)
        for proc in procs.values():  # both start the dose flow now
            proc.stdin.write("go\n")
            proc.stdin.close()
        spans = {run_id: json.loads(_read_until(proc, "span", 300)[-1][5:]) for run_id, proc in procs.items()}
        for proc in procs.values():
            proc.wait(60)
        outs = {run_id: proc.stdout.read() for run_id, proc in procs.items()}
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, 9)
                proc.wait()
    assert [p.returncode for p in procs.values()] == [0, 0], outs
    (a0, a1), (b0, b1) = spans.values()
    assert a0 < b1 and b0 < a1, f"the two runs did not overlap: {spans}"

    cohort = open_cohort(cohort_copy)
    scans = cohort.scans()
    runs = cohort.run_maps()
    assert len(runs) == 2 * 3 * len(scans) and set(runs["status"]) <= {"computed", "reused"}
    for (p, t, method), rows in runs.groupby(["patient", "timepoint", "method"]):
        assert sorted(rows["status"]) == ["computed", "reused"], rows  # computed by one run, reused by the other
        record = cohort.scan_attrs(p, t)["provenance"][f"dose_rate_{method}"]
        assert set(rows["map_written_utc"]) == {record["written_utc"]}  # both runs name the one stored map
        assert set(rows["settings_sha256"]) == {record["settings_sha256"]}
    for p, t in scans:
        assert cohort.superseded_maps(p, t) == []  # no map was written twice
        provenance = cohort.scan_attrs(p, t)["provenance"]
        assert (
            provenance["dose_rate_cnn"]["settings"]["prior_dvk"]["written_utc"]
            == provenance["dose_rate_dvk"]["written_utc"]
        )
    assert validate_cohort(cohort_copy) == []
    computed = runs[runs["status"] == "computed"].groupby("run_id").size().to_dict()
    waited = runs[runs["reason"] == "computed by a concurrent run while this run waited"].groupby("run_id").size()
    print(f"maps computed per run: {computed}; reused after waiting for the other run: {waited.to_dict()}")
