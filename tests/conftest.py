"""Shared pytest configuration: device markers and seeded factories (xarray-style)."""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch starts its OpenMP threads (see Makefile)

import numpy as np
import pytest
import torch

os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

#: The CUDA tests: `pytest -m cuda` selects them (`make gpu-check` runs them); without a CUDA device they skip.
requires_cuda = pytest.mark.cuda


def pytest_collection_modifyitems(config, items):
    """Skip the tests marked ``cuda`` where torch sees no CUDA device, saying so."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if item.get_closest_marker("cuda") is not None:
            item.add_marker(skip)


@pytest.fixture
def rng() -> np.random.Generator:
    """A seeded generator: every random test input is reproducible."""
    return np.random.default_rng(20261121)


@pytest.fixture(params=["cpu", pytest.param("cuda", marks=requires_cuda)])
def device(request) -> str:
    """Run a test on the CPU and, where present, on CUDA."""
    return request.param
