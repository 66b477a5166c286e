"""The registry of dose-rate methods: one :class:`DoseMethod` per name in ``constants.METHODS``.

Each method lives in its own module (``_dvk``, ``_cnn``, ``_mc``) and registers itself here; :func:`dose_rates`
and the cohort pipeline look methods up here and nowhere else.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import xarray as xr

from cohort_dosimetry.constants import MC_DECAYS, METHODS

if TYPE_CHECKING:
    import torch


@dataclass
class DoseInputs:
    """One time point of one scan, checked, as the methods take it.

    ``activity_bq`` (z, y, x) Bq per voxel, ``density`` (z, y, x) g/cm3, ``spacing_mm`` (z, y, x) mm; ``scan`` the
    Dataset they came from (a method may reuse a map stored on it); ``name`` names the scan in messages. ``dvk`` holds
    the DVK map (z, y, x) Gy/s once one method has computed or loaded it, so that the CNN's prior is computed once.
    """

    name: str
    scan: xr.Dataset
    activity_bq: np.ndarray
    density: np.ndarray
    spacing_mm: tuple[float, ...]
    device: str | torch.device | None = None
    mc_decays: int = MC_DECAYS
    seed: int = 0
    weights: str | Path | None = None
    dvk: np.ndarray | None = field(default=None, repr=False)


#: A method's output: store array name -> ((z, y, x) float32 array, attrs). Dose-rates are in Gy/s.
Maps = dict[str, tuple[np.ndarray, dict]]


@dataclass(frozen=True)
class DoseMethod:
    """A dose-rate method: its ``name``, the store ``arrays`` it writes, ``compute(inputs) -> Maps``, ``check(inputs)``
    (raises ValueError before any method computes when the inputs cannot serve it) and ``settings(spacing_mm,
    mc_decays, seed, weights) -> dict`` (what decides its values, beside grid and method; see
    ``pipeline.map_settings``)."""

    name: str
    arrays: tuple[str, ...]
    compute: Callable[[DoseInputs], Maps]
    settings: Callable[..., dict]
    check: Callable[[DoseInputs], None] = lambda inputs: None


REGISTRY: dict[str, DoseMethod] = {}


def register(method: DoseMethod) -> DoseMethod:
    """Add a method under its name (one of ``constants.METHODS``)."""
    if method.name not in METHODS:
        raise ValueError(f"dose method {method.name!r} is not one of {METHODS}")
    REGISTRY[method.name] = method
    return method


def dose_method(name: str) -> DoseMethod:
    """The registered method called ``name``; ValueError naming the known ones otherwise."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown dose method {name!r}; expected one of {METHODS}") from None


def dose_arrays(method: str) -> tuple[str, ...]:
    """Names of the store arrays a dose method produces."""
    return dose_method(method).arrays
