"""Which scans Monte Carlo runs on (``mc_scans`` of the flows and of `cohort-dosimetry run`): the selection is a
plain function of the scans' attrs, tested here without Prefect or Dask."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from cohort_dosimetry.constants import MC_SCAN_RULES
from cohort_dosimetry.pipeline import select_mc_scans

INJECTION = {1: datetime(2024, 1, 8, 9, 0), 2: datetime(2024, 3, 4, 9, 0)}


def _attrs(scans):
    """{(patient, timepoint): attrs} from (patient, timepoint, cycle, hours post injection)."""
    return {
        (patient, timepoint): {
            "cycle": cycle,
            "hours_post_injection": hours,
            "acquisition_datetime": INJECTION[cycle] + timedelta(hours=hours),
        }
        for patient, timepoint, cycle, hours in scans
    }


# Labels count arrivals, not time: PA's tp1 arrived last but is its 168 h scan.
COHORT = _attrs(
    [
        ("PA", "tp1", 1, 168.0),
        ("PA", "tp2", 1, 4.0),
        ("PA", "tp3", 1, 24.0),
        ("PA", "tp4", 1, 96.0),
        ("PA", "tp5", 2, 4.0),
        ("PA", "tp6", 2, 72.0),
        ("PB", "tp1", 1, 4.0),  # PB misses its 96 h scan: 24 h and 168 h are as near, the later one is taken
        ("PB", "tp2", 1, 24.0),
        ("PB", "tp3", 1, 168.0),
        ("PC", "tp1", 1, 20.0),  # one scan only: it is the nearest, however far
    ]
)


def test_mc_scans_nearest_96h_takes_per_patient_and_cycle_the_scan_nearest_96_h():
    assert select_mc_scans(COHORT, "nearest-96h") == {("PA", "tp4"), ("PA", "tp6"), ("PB", "tp3"), ("PC", "tp1")}


def test_mc_scans_first_takes_per_patient_and_cycle_the_earliest_acquisition():
    assert select_mc_scans(COHORT, "first") == {("PA", "tp2"), ("PA", "tp5"), ("PB", "tp1"), ("PC", "tp1")}


def test_mc_scans_all_takes_every_scan_and_an_unknown_rule_is_refused():
    assert select_mc_scans(COHORT, "all") == set(COHORT)
    assert select_mc_scans({}, "nearest-96h") == set()
    assert set(MC_SCAN_RULES) == {"all", "first", "nearest-96h"}
    with pytest.raises(ValueError, match="unknown mc_scans rule 'last'"):
        select_mc_scans(COHORT, "last")


def test_mc_scans_choices_of_the_run_command_are_the_flows_rules():
    import argparse

    from cohort_dosimetry.commands import run

    parser = argparse.ArgumentParser()
    run.add_arguments(parser)
    (action,) = [a for a in parser._actions if a.dest == "mc_scans"]
    assert tuple(action.choices) == MC_SCAN_RULES and action.default == "all"


def test_the_run_summary_says_which_rule_gave_each_methods_absorbed_doses(tmp_path, capsys):
    from cohort_dosimetry.commands.run import print_summary
    from cohort_dosimetry.stats import compute_cohort_tables
    from tests.stats._cohort_factory import make_cohort

    cohort, _ = make_cohort(tmp_path / "cohort")
    chosen = compute_cohort_tables(cohort, progress=False)["absorbed_dose"].query("selected")
    summary = {"cohort_dir": str(cohort.path), "notes": [], "n_done": 1, "n_skipped": 0, "n_failed": 0}
    print_summary(summary | {"wall_time_s": 1.0, "run_id": "local", "report": ""})
    out = capsys.readouterr().out
    mc = chosen[chosen["method"] == "mc"]["model"].value_counts()
    assert "time-integration model chosen" in out
    assert "  MC: " + ", ".join(f"{model} {count}" for model, count in mc.items()) in out
