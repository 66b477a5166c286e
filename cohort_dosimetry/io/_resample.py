"""Resampling onto the dose grid with SimpleITK, in physical (patient) space.

One rule per quantity:

- ``activity`` (Bq/mL): linear interpolation, then rescaled so that the total activity inside the dose grid equals
  the SPECT's total activity in the voxels whose centres lie inside the dose grid; the factor is recorded in
  ``attrs["activity_conservation_factor"]`` (and the activity left outside the grid in ``attrs``).
- ``ct_hu``: linear interpolation; outside the CT: air, -1000 HU.
- ``labels``: nearest neighbour, with a guard: a VOI that would lose every voxel (smaller than a dose voxel) gets the
  dose voxel holding the largest fraction of it, so no contoured lesion disappears.
- ``dose``: linear interpolation; 0 outside.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import SimpleITK as sitk

from cohort_dosimetry.io._volume import Grid, Volume

#: The compact dose grid spacing (z, y, x) in mm of the virtual patients (issue 3, ``phantoms`` grid "compact").
COMPACT_SPACING_MM = (3.0, 3.91, 3.91)
#: CT numbers of air, used outside the CT's field of view.
AIR_HU = -1000.0

QUANTITIES = ("activity", "ct_hu", "labels", "dose")


def dose_grid(ct: Grid, grid: str | Sequence[float] = "ct") -> Grid:
    """The grid doses are computed on.

    ``"ct"``: the CT grid itself. ``"compact"`` or a spacing (z, y, x) in mm: that spacing, the CT's orientation,
    as many voxels as cover the CT's extent, centred on it.
    """
    if isinstance(grid, str):
        if grid == "ct":
            return ct
        if grid != "compact":
            raise ValueError(f"unknown dose grid {grid!r}: use 'ct', 'compact' or a spacing (z, y, x) in mm")
        spacing = COMPACT_SPACING_MM
    else:
        spacing = tuple(float(s) for s in grid)
        if len(spacing) != 3 or min(spacing) <= 0:
            raise ValueError(f"a dose grid spacing needs three positive numbers (z, y, x) in mm, got {grid!r}")
    extent = np.asarray(ct.shape) * np.asarray(ct.spacing_mm)
    # 1e-6 of a voxel of slack: a CT already at this spacing keeps its shape instead of gaining a voxel to rounding
    shape = np.maximum(np.ceil(extent / np.asarray(spacing) - 1e-6).astype(int), 1)
    # centre of the CT extent, in (z, y, x) patient coordinates; direction rows are the axes
    direction = np.asarray(ct.direction)
    centre = np.asarray(ct.origin_mm) + ((np.asarray(ct.shape) - 1) / 2 * np.asarray(ct.spacing_mm)) @ direction
    origin = centre - ((shape - 1) / 2 * np.asarray(spacing)) @ direction
    return Grid(tuple(int(n) for n in shape), spacing, tuple(float(v) for v in origin), ct.direction)


def resample_to_grid(volume: Volume, grid: Grid, quantity: str) -> Volume:
    """``volume`` on ``grid`` (z, y, x), by the rule for ``quantity`` (see the module docstring).

    ``activity`` must be in Bq/mL; the result's attrs record ``activity_conservation_factor``,
    ``activity_in_grid_bq`` and ``activity_outside_grid_bq``. The result keeps the input's units.
    """
    if quantity not in QUANTITIES:
        raise ValueError(f"unknown quantity {quantity!r}: one of {QUANTITIES}")
    if quantity == "activity" and volume.units != "Bq/mL":
        raise ValueError(f"activity must be in Bq/mL to be resampled, got {volume.units!r}")
    if volume.grid == grid:
        if quantity == "activity":
            total_bq = float(volume.array.sum(dtype=np.float64)) * grid.voxel_volume_ml
            attrs = dict(activity_conservation_factor=1.0, activity_in_grid_bq=total_bq, activity_outside_grid_bq=0.0)
            return Volume(volume.array, grid, volume.units, {**volume.attrs, **attrs})
        return volume
    reference = grid.reference_image()
    source = volume.to_sitk()
    if quantity == "labels":
        return _resample_labels(volume, grid, reference)
    source = sitk.Cast(source, sitk.sitkFloat32)
    default = AIR_HU if quantity == "ct_hu" else 0.0
    out = sitk.GetArrayFromImage(
        sitk.Resample(source, reference, sitk.Transform(), sitk.sitkLinear, default, sitk.sitkFloat32)
    )
    attrs = dict(volume.attrs)
    if quantity == "activity":
        covered = sitk.GetArrayFromImage(
            sitk.Resample(
                _ones_like(reference), source, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8
            )
        ).astype(bool)
        total_bq = float(volume.array.sum(dtype=np.float64)) * volume.grid.voxel_volume_ml
        in_grid_bq = float(volume.array[covered].sum(dtype=np.float64)) * volume.grid.voxel_volume_ml
        resampled_bq = float(out.sum(dtype=np.float64)) * grid.voxel_volume_ml
        factor = in_grid_bq / resampled_bq if resampled_bq != 0 else 1.0
        out *= np.float32(factor)
        attrs.update(
            activity_conservation_factor=factor,
            activity_in_grid_bq=in_grid_bq,
            activity_outside_grid_bq=total_bq - in_grid_bq,
        )
    return Volume(out, grid, volume.units, attrs)


def _ones_like(reference: sitk.Image) -> sitk.Image:
    ones = sitk.Image(reference.GetSize(), sitk.sitkUInt8)
    ones.CopyInformation(reference)
    return ones + 1


def _resample_labels(volume: Volume, grid: Grid, reference: sitk.Image) -> Volume:
    source = sitk.Cast(volume.to_sitk(), sitk.sitkInt16)
    out = sitk.GetArrayFromImage(
        sitk.Resample(source, reference, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkInt16)
    )
    rescued = []
    for value in np.unique(volume.array):
        if value == 0 or np.any(out == value):
            continue
        mask = (volume.array == value).astype(np.float32)
        mask_image = sitk.GetImageFromArray(mask)
        mask_image.CopyInformation(source)
        fraction = sitk.GetArrayFromImage(
            sitk.Resample(mask_image, reference, sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkFloat32)
        )
        if fraction.max() > 0:
            out[np.unravel_index(int(np.argmax(fraction)), out.shape)] = value
            rescued.append(int(value))
    attrs = dict(volume.attrs)
    if rescued:
        attrs["labels_kept_by_guard"] = rescued
    return Volume(out.astype(np.int16), grid, volume.units, attrs)
