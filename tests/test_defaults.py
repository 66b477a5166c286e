"""One default per setting: every entry point that takes a dose grid or a number of MC decays uses the one in
``cohort_dosimetry.constants``, so that ``ingest`` then ``run`` computes on the grid the scans were stored on
(instead of ingesting every scan again) and the library, the flows and the commands simulate the same MC."""

import argparse
import inspect

import pytest

from cohort_dosimetry import constants, io, pipeline
from cohort_dosimetry.commands import demo, ingest, run
from cohort_dosimetry.dose import REGISTRY, dose_rates
from cohort_dosimetry.physics import run_monte_carlo
from flows import _flows


def _default(function, name):
    function = getattr(function, "fn", function)  # a Prefect flow wraps the function
    return inspect.signature(function).parameters[name].default


def _cli_default(module, option):
    parser = argparse.ArgumentParser()
    module.add_arguments(parser)
    return next(a.default for a in parser._actions if option in a.option_strings)


@pytest.mark.parametrize(
    "function",
    [io.ingest, io.plan_ingest, io.dose_grid, pipeline.plan_cohort_ingest, _flows.ingest_flow, _flows.cohort_flow],
)
def test_every_entry_point_has_the_same_dose_grid_default(function):
    assert _default(function, "grid") == constants.DEFAULT_DOSE_GRID


def test_ingest_and_run_commands_default_to_the_same_dose_grid():
    assert _cli_default(ingest, "--grid") == _cli_default(run, "--grid") == constants.DEFAULT_DOSE_GRID


@pytest.mark.parametrize(
    "function",
    [
        dose_rates,
        run_monte_carlo,
        pipeline.compute_scan_dose,
        pipeline.map_settings,
        _flows.dose_flow,
        _flows.cohort_flow,
    ],
)
def test_every_mc_entry_point_has_the_same_decays_default(function):
    name = "n_decays" if "n_decays" in inspect.signature(getattr(function, "fn", function)).parameters else "mc_decays"
    assert _default(function, name) == constants.MC_DECAYS


def test_run_and_demo_commands_default_to_the_same_mc_decays():
    assert _cli_default(run, "--mc-decays") == _cli_default(demo, "--mc-decays") == constants.MC_DECAYS


def test_the_dose_registry_holds_exactly_the_methods():
    assert tuple(REGISTRY) == constants.METHODS
    assert all(REGISTRY[m].name == m for m in constants.METHODS)
