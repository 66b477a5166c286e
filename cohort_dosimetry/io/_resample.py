"""Resampling onto the dose grid with SimpleITK, in physical (patient) space.

The dose grid is axial in standard orientation (direction the identity: array axes z, y, x along +S, +P, +L of
DICOM patient space) whatever the patient position of the scan, so every dose method and the CNN (trained on
head-first-supine slices: rows anterior -> posterior, columns right -> left) sees the anatomy the same way.
A volume whose grid is a reordering of the target grid (the same voxel centres, its axes permuted or reversed, as
a CT written feet first or prone) is reordered exactly, without interpolation; otherwise one rule per quantity:

- ``activity`` (Bq/mL): linear interpolation, then rescaled so that the total activity inside the dose grid equals
  the SPECT's total activity in the voxels whose centres lie inside the dose grid; the factor is recorded in
  ``attrs["activity_conservation_factor"]`` (and the activity left outside the grid in ``attrs``).
- ``ct_hu``: linear interpolation; outside the CT: air, -1000 HU.
- ``labels``: nearest neighbour, with a guard: a VOI that would lose every voxel (smaller than a dose voxel) gets the
  dose voxel holding the largest fraction of it, so no contoured lesion disappears. A label map of regions (attrs
  ``names`` and ``vois``, see :mod:`cohort_dosimetry.vocabulary`) is resampled region by region and guarded VOI by
  VOI: the rescued voxel keeps the VOIs it lay in and joins the lost VOI (a region for that combination is added
  where there was none), so no VOI loses a voxel to the rescue of another.
- ``dose``: linear interpolation; 0 outside.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import SimpleITK as sitk

from cohort_dosimetry.constants import COMPACT_SPACING_MM, DEFAULT_DOSE_GRID
from cohort_dosimetry.grid import IDENTITY, Grid
from cohort_dosimetry.io._volume import Volume
from cohort_dosimetry.vocabulary import OVERLAP_REGION_START, region_name

#: CT numbers of air, used outside the CT's field of view.
AIR_HU = -1000.0

QUANTITIES = ("activity", "ct_hu", "labels", "dose")
#: A direction cosine within this of 0 or +-1 counts as aligned with a patient axis: over a 500 mm field of view the
#: difference moves a voxel centre by at most 0.005 mm, far below any voxel size. Scanners write aligned axes as exact
#: 0 and 1 or with a few digits of rounding noise; a real tilt (the smallest a scanner offers, about 0.5 degrees, has
#: sines near 1e-2) stays oblique.
AXIS_ALIGNED_TOLERANCE = 1e-5
#: Two grids share their voxel centres when these differ by at most this fraction of a voxel spacing.
SAME_CENTRES_TOLERANCE = 1e-3


def dose_grid(ct: Grid, grid: str | Sequence[float] = DEFAULT_DOSE_GRID) -> Grid:
    """The grid doses are computed on, in standard axial orientation (direction the identity: array axes z, y, x along
    +z, +y, +x of patient space, i.e. superior, posterior, left) whenever the CT's axes are aligned with the patient
    axes (its direction a signed permutation, as for head or feet first, supine or prone, to within
    :data:`AXIS_ALIGNED_TOLERANCE`).

    ``"ct"``: the CT's voxels, only reordered (axes permuted and reversed) into that orientation: the same voxel
    centres, so :func:`resample_to_grid` moves CT values onto it exactly. ``"compact"`` or a spacing (z, y, x) in mm:
    that spacing, as many voxels as cover the CT's extent, centred on it.

    An oblique CT (an axis not aligned with the patient axes) keeps its own orientation on every grid: no standard
    axial grid could hold its voxels without interpolation, and a rotated grid would cut into its field of view.
    """
    ct = _aligned(ct)
    if isinstance(grid, str):
        if grid == "ct":
            return ct
        if grid != "compact":
            raise ValueError(f"unknown dose grid {grid!r}: use 'ct', 'compact' or a spacing (z, y, x) in mm")
        spacing: tuple[float, ...] = COMPACT_SPACING_MM
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


def _aligned(grid: Grid) -> Grid:
    """``grid`` with its axes reordered into the identity direction when it is a signed permutation; else ``grid``."""
    direction = np.asarray(grid.direction, dtype=float)
    rounded = np.round(direction)
    is_permutation = (
        np.abs(direction - rounded).max() <= AXIS_ALIGNED_TOLERANCE
        and np.array_equal(np.abs(rounded).sum(axis=0), np.ones(3))
        and np.array_equal(np.abs(rounded).sum(axis=1), np.ones(3))
    )
    if not is_permutation:
        return grid
    if np.array_equal(rounded, np.eye(3)):
        return Grid(grid.shape, grid.spacing_mm, grid.origin_mm, IDENTITY)
    axis_of = np.abs(rounded).argmax(axis=0)  # axis_of[a]: the array axis that runs along patient axis a
    sign = rounded[axis_of, np.arange(3)]
    shape = np.asarray(grid.shape)[axis_of]
    spacing = np.asarray(grid.spacing_mm, dtype=float)[axis_of]
    # the new first voxel: along each patient axis, the lowest voxel centre of the old grid
    far_corner = (np.asarray(grid.shape) - 1) * np.asarray(grid.spacing_mm, dtype=float)
    steps = np.where(sign[np.argsort(axis_of)] < 0, far_corner, 0.0)  # per old array axis
    origin = np.asarray(grid.origin_mm, dtype=float) + steps @ direction  # an old voxel centre, exactly
    return Grid(
        tuple(int(n) for n in shape), tuple(float(v) for v in spacing), tuple(float(v) for v in origin), IDENTITY
    )


def _reordering(source: Grid, target: Grid) -> tuple[list[int], list[int]] | None:
    """How to read ``target``'s array out of ``source``'s when both hold the same voxel centres, the axes permuted or
    reversed: (source axis for each target axis, target axes to reverse after the transpose); None otherwise."""
    src_dir, tgt_dir = np.asarray(source.direction, dtype=float), np.asarray(target.direction, dtype=float)
    cosines = tgt_dir @ src_dir.T  # [a, i]: target axis a against source axis i
    perm = [int(i) for i in np.abs(cosines).argmax(axis=1)]
    if sorted(perm) != [0, 1, 2]:
        return None
    if np.abs(np.abs(cosines[np.arange(3), perm]) - 1).max() > AXIS_ALIGNED_TOLERANCE:
        return None
    src_shape, src_spacing = np.asarray(source.shape), np.asarray(source.spacing_mm, dtype=float)
    if not np.array_equal(src_shape[perm], np.asarray(target.shape)):
        return None
    tgt_spacing = np.asarray(target.spacing_mm, dtype=float)
    if np.abs(src_spacing[perm] - tgt_spacing).max() > SAME_CENTRES_TOLERANCE * tgt_spacing.min():
        return None
    flips = [a for a in range(3) if cosines[a, perm[a]] < 0]
    # target voxel (0, 0, 0) must be the source voxel it is read from
    index = np.zeros(3)
    for a in flips:
        index[perm[a]] = src_shape[perm[a]] - 1
    first = np.asarray(source.origin_mm, dtype=float) + (index * src_spacing) @ src_dir
    if np.abs(first - np.asarray(target.origin_mm, dtype=float)).max() > SAME_CENTRES_TOLERANCE * tgt_spacing.min():
        return None
    return perm, flips


def _reordered(volume: Volume, grid: Grid, quantity: str) -> Volume | None:
    """``volume``'s values on ``grid`` when ``grid`` holds its voxel centres (see :func:`_reordering`); else None."""
    reordering = _reordering(volume.grid, grid)
    if reordering is None:
        return None
    perm, flips = reordering
    array = volume.array
    if perm != [0, 1, 2] or flips:
        array = np.ascontiguousarray(np.flip(array.transpose(perm), tuple(flips)))
    attrs = dict(volume.attrs)
    if quantity == "activity":
        total_bq = float(volume.array.sum(dtype=np.float64)) * volume.grid.voxel_volume_ml
        attrs.update(activity_conservation_factor=1.0, activity_in_grid_bq=total_bq, activity_outside_grid_bq=0.0)
    return Volume(array, grid, volume.units, attrs)


def resample_to_grid(volume: Volume, grid: Grid, quantity: str) -> Volume:
    """``volume`` on ``grid`` (z, y, x), by the rule for ``quantity`` (see the module docstring); a ``grid`` with the
    volume's own voxel centres in another axis order or direction gets the same values, reordered.

    ``activity`` must be in Bq/mL; the result's attrs record ``activity_conservation_factor``,
    ``activity_in_grid_bq`` and ``activity_outside_grid_bq``. The result keeps the input's units.
    """
    if quantity not in QUANTITIES:
        raise ValueError(f"unknown quantity {quantity!r}: one of {QUANTITIES}")
    if quantity == "activity" and volume.units != "Bq/mL":
        raise ValueError(f"activity must be in Bq/mL to be resampled, got {volume.units!r}")
    reordered = _reordered(volume, grid, quantity)
    if reordered is not None:  # the same voxel centres: an exact reordering, no interpolation
        return reordered
    aligned = _aligned(volume.grid)
    if aligned != volume.grid:
        # interpolate from the standard axial order, so that nearest-neighbour ties (a target voxel centre halfway
        # between source voxels) fall the same way whatever patient position the source was stored in
        volume = _reordered(volume, aligned, quantity) or volume
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
            sitk.Resample(_ones_like(reference), source, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
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


def _fraction(mask: np.ndarray, source: sitk.Image, reference: sitk.Image) -> np.ndarray:
    """Per voxel of ``reference``: the fraction of it that ``mask`` (on ``source``'s grid) covers, by linear
    interpolation of the mask."""
    mask_image = sitk.GetImageFromArray(mask.astype(np.float32))
    mask_image.CopyInformation(source)
    return sitk.GetArrayFromImage(
        sitk.Resample(mask_image, reference, sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    )


def _resample_labels(volume: Volume, grid: Grid, reference: sitk.Image) -> Volume:
    """Plain label maps: ``attrs["labels_kept_by_guard"]`` lists the rescued label values. Region maps (attrs
    ``names`` and ``vois``): the result's attrs hold ``names`` and ``vois`` of the regions present on ``grid`` (a VOI
    that lies outside ``grid`` keeps an empty list) and ``labels_kept_by_guard`` lists the rescued VOI names."""
    source = sitk.Cast(volume.to_sitk(), sitk.sitkInt16)
    out = sitk.GetArrayFromImage(
        sitk.Resample(source, reference, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkInt16)
    )
    if "vois" in volume.attrs:
        return _guard_regions(volume, out, grid, source, reference)
    rescued = []
    for value in np.unique(volume.array):
        if value == 0 or np.any(out == value):
            continue
        fraction = _fraction(volume.array == value, source, reference)
        if fraction.max() > 0:
            out[np.unravel_index(int(np.argmax(fraction)), out.shape)] = value
            rescued.append(int(value))
    attrs = dict(volume.attrs)
    if rescued:
        attrs["labels_kept_by_guard"] = rescued
    return Volume(out.astype(np.int16), grid, volume.units, attrs)


def _guard_regions(volume: Volume, out: np.ndarray, grid: Grid, source: sitk.Image, reference: sitk.Image) -> Volume:
    """The guard on a map of regions, VOI by VOI (see the module docstring)."""
    names = {int(value): str(name) for value, name in volume.attrs["names"].items()}
    vois = {str(name): tuple(int(v) for v in values) for name, values in volume.attrs["vois"].items()}
    members = {value: frozenset(name for name, values in vois.items() if value in values) for value in names}
    region_of = {voi_set: value for value, voi_set in members.items()}
    present = set(np.unique(out).tolist()) - {0}
    rescued = []
    for name, values in vois.items():
        if present.intersection(values):
            continue
        fraction = _fraction(np.isin(volume.array, values), source, reference)
        if fraction.max() <= 0:
            continue
        index = np.unravel_index(int(np.argmax(fraction)), out.shape)
        wanted = members.get(int(out[index]), frozenset()) | {name}
        value = region_of.get(wanted)
        if value is None:
            value = max(OVERLAP_REGION_START - 1, *names) + 1
            if value > np.iinfo(np.int16).max:
                raise ValueError(f"no int16 region value left for VOIs {sorted(wanted)}")
            names[value] = region_name([voi for voi in vois if voi in wanted])
            members[value], region_of[wanted] = wanted, value
            vois = {voi: (*regions, value) if voi in wanted else regions for voi, regions in vois.items()}
        out[index] = value
        present.add(value)
        rescued.append(name)
    attrs = {
        **volume.attrs,
        "names": {value: n for value, n in names.items() if value in present},
        "vois": {voi: tuple(v for v in regions if v in present) for voi, regions in vois.items()},
    }
    if rescued:
        attrs["labels_kept_by_guard"] = rescued
    return Volume(out.astype(np.int16), grid, volume.units, attrs)
