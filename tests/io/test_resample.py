"""Resampling onto the dose grid: activity conservation, CT linearity, small lesions, grid construction."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from cohort_dosimetry.constants import COMPACT_SPACING_MM
from cohort_dosimetry.grid import Grid, grid_from_dicom
from cohort_dosimetry.io import Volume, dose_grid, resample_to_grid

# The paper's CT grid spacing (Li et al. 2022: 0.98 x 0.98 x 3 mm), on a small field of view.
CT_GRID = Grid((24, 96, 96), (3.0, 0.98, 0.98), (-34.5, -46.55, -46.55))


def _total_bq(volume: Volume) -> float:
    return float(volume.array.sum(dtype=np.float64)) * volume.grid.voxel_volume_ml


def _blobs(grid: Grid, rng, n=6) -> np.ndarray:
    """Bq/mL: a few Gaussian hot spots plus a uniform background, all well inside the grid."""
    z, y, x = np.meshgrid(
        *[o + s * np.arange(n_) for o, s, n_ in zip(grid.origin_mm, grid.spacing_mm, grid.shape)], indexing="ij"
    )
    activity = np.full(grid.shape, 1e3)
    for _ in range(n):
        c = [rng.uniform(-0.3, 0.3) * n_ * s for n_, s in zip(grid.shape, grid.spacing_mm)]
        w = rng.uniform(4, 12)
        activity += rng.uniform(1e4, 1e5) * np.exp(-((z - c[0]) ** 2 + (y - c[1]) ** 2 + (x - c[2]) ** 2) / (2 * w * w))
    return activity.astype(np.float32)


@pytest.mark.parametrize("target", ["ct", "compact", (2.0, 2.5, 2.5)])
def test_activity_is_conserved_within_one_percent(rng, target):
    # SPECT on a 4.8 mm grid (the paper's reconstruction), covering the CT; the CT extent cuts none of the activity
    spect_grid = Grid((18, 24, 24), (4.8, 4.8, 4.8), (-40.8, -55.2, -55.2))
    activity = np.zeros(spect_grid.shape, dtype=np.float32)
    inner = Grid((10, 14, 14), (4.8, 4.8, 4.8), (-40.8 + 4 * 4.8, -55.2 + 5 * 4.8, -55.2 + 5 * 4.8))
    activity[4:14, 5:19, 5:19] = _blobs(inner, rng)
    spect = Volume(activity, spect_grid, "Bq/mL")
    out = resample_to_grid(spect, dose_grid(CT_GRID, target), "activity")
    assert _total_bq(out) == pytest.approx(_total_bq(spect), rel=0.01)
    assert out.attrs["activity_outside_grid_bq"] == pytest.approx(0.0, abs=1e-6 * _total_bq(spect))
    # the rescaling corrects a small interpolation error, it does not invent activity
    assert 0.9 < out.attrs["activity_conservation_factor"] < 1.1


def test_activity_outside_the_dose_grid_is_accounted_for():
    # uniform 1000 Bq/mL in a SPECT twice as long in z as the CT: exactly half of it lies outside
    spect_grid = Grid((40, 20, 20), (3.0, 5.0, 5.0), (-58.5, -47.5, -47.5))
    spect = Volume(np.full(spect_grid.shape, 1000.0, dtype=np.float32), spect_grid, "Bq/mL")
    ct_grid = Grid((20, 50, 50), (3.0, 2.0, 2.0), (-28.5, -49.0, -49.0))
    out = resample_to_grid(spect, ct_grid, "activity")
    ct_volume_ml = 20 * 3.0 * 50 * 2.0 * 50 * 2.0 / 1000
    assert _total_bq(out) == pytest.approx(1000.0 * ct_volume_ml, rel=0.01)
    assert out.attrs["activity_outside_grid_bq"] == pytest.approx(_total_bq(spect) / 2, rel=0.01)
    np.testing.assert_allclose(out.array[2:-2, 2:-2, 2:-2], 1000.0, rtol=0.01)  # interior concentration unchanged


def test_ct_is_interpolated_linearly():
    # a HU ramp linear in patient z and x is reproduced exactly at every interior dose voxel
    z = CT_GRID.origin_mm[0] + CT_GRID.spacing_mm[0] * np.arange(CT_GRID.shape[0])
    x = CT_GRID.origin_mm[2] + CT_GRID.spacing_mm[2] * np.arange(CT_GRID.shape[2])
    hu = (2.0 * z[:, None, None] - 3.0 * x[None, None, :] + np.zeros(CT_GRID.shape)).astype(np.float32)
    target = dose_grid(CT_GRID, "compact")
    out = resample_to_grid(Volume(hu, CT_GRID, "HU"), target, "ct_hu")
    tz = target.origin_mm[0] + target.spacing_mm[0] * np.arange(target.shape[0])
    tx = target.origin_mm[2] + target.spacing_mm[2] * np.arange(target.shape[2])
    expected = 2.0 * tz[:, None, None] - 3.0 * tx[None, None, :] + np.zeros(target.shape)
    inside = (slice(1, -1), slice(1, -1), slice(1, -1))
    np.testing.assert_allclose(out.array[inside], expected[inside], atol=1e-3)


def _sphere(grid: Grid, centre_mm, volume_ml) -> np.ndarray:
    radius = (3 * volume_ml * 1000 / (4 * np.pi)) ** (1 / 3)
    axes = [o + s * np.arange(n) for o, s, n in zip(grid.origin_mm, grid.spacing_mm, grid.shape)]
    z, y, x = np.meshgrid(*axes, indexing="ij")
    return (z - centre_mm[0]) ** 2 + (y - centre_mm[1]) ** 2 + (x - centre_mm[2]) ** 2 <= radius**2


def test_a_2_ml_lesion_survives_with_its_volume():
    labels = np.zeros(CT_GRID.shape, dtype=np.int16)
    labels[2:-2, 10:-10, 10:-10] = 4  # liver
    lesion = _sphere(CT_GRID, (1.3, -2.1, 3.7), 2.0)
    labels[lesion] = 101
    ct_volume_ml = lesion.sum() * CT_GRID.voxel_volume_ml
    assert ct_volume_ml == pytest.approx(2.0, rel=0.05)  # the rasterised sphere itself is right
    target = dose_grid(CT_GRID, "compact")
    out = resample_to_grid(Volume(labels, CT_GRID, "1"), target, "labels")
    dose_volume_ml = np.count_nonzero(out.array == 101) * target.voxel_volume_ml
    assert dose_volume_ml == pytest.approx(ct_volume_ml, rel=0.25)
    assert "labels_kept_by_guard" not in out.attrs


def test_a_lesion_smaller_than_a_dose_voxel_keeps_one_voxel():
    labels = np.zeros(CT_GRID.shape, dtype=np.int16)
    labels[2:-2, 10:-10, 10:-10] = 4
    # one CT voxel (0.003 mL) that nearest-neighbour sampling onto the dose grid never picks
    target = dose_grid(CT_GRID, "compact")
    index_image = sitk.GetImageFromArray(np.arange(labels.size, dtype=np.int32).reshape(labels.shape))
    index_image.CopyInformation(Volume(labels, CT_GRID, "1").to_sitk())
    sampled = set(
        sitk.GetArrayFromImage(
            sitk.Resample(
                index_image, target.reference_image(), sitk.Transform(), sitk.sitkNearestNeighbor, -1, sitk.sitkInt32
            )
        ).ravel()
    )
    middle = np.ravel_multi_index((12, 48, 48), labels.shape)
    lesion_voxel = next(i for i in range(middle, labels.size) if i not in sampled)
    lesion_index = np.unravel_index(lesion_voxel, labels.shape)
    labels[lesion_index] = 102
    out = resample_to_grid(Volume(labels, CT_GRID, "1"), target, "labels")
    assert np.count_nonzero(out.array == 102) == 1
    assert out.attrs["labels_kept_by_guard"] == [102]
    # it lands where the lesion is: the dose voxel containing the lesion's centre
    index = np.argwhere(out.array == 102)[0]
    centre = np.asarray(target.origin_mm) + index * np.asarray(target.spacing_mm)
    lesion_centre = np.asarray(CT_GRID.origin_mm) + np.asarray(lesion_index) * np.asarray(CT_GRID.spacing_mm)
    assert np.all(np.abs(centre - lesion_centre) <= np.asarray(target.spacing_mm) / 2 + 1e-6)


def _unsampled_voxel(target: Grid, start: tuple[int, int, int]) -> tuple[int, ...]:
    """The first CT voxel from ``start`` on (flat order) that nearest-neighbour sampling onto ``target`` skips."""
    shape = CT_GRID.shape
    index_image = sitk.GetImageFromArray(np.arange(int(np.prod(shape)), dtype=np.int32).reshape(shape))
    index_image.CopyInformation(Volume(np.zeros(shape, np.int16), CT_GRID, "1").to_sitk())
    sampled = set(
        sitk.GetArrayFromImage(
            sitk.Resample(
                index_image, target.reference_image(), sitk.Transform(), sitk.sitkNearestNeighbor, -1, sitk.sitkInt32
            )
        ).ravel()
    )
    first = np.ravel_multi_index(start, shape)
    return tuple(
        int(i) for i in np.unravel_index(next(i for i in range(first, int(np.prod(shape))) if i not in sampled), shape)
    )


def test_overlapping_vois_keep_their_overlaps_and_a_tiny_lesion_joins_them():
    """A map of regions (External around the liver, a one-voxel lesion in the liver but drawn outside External)."""
    target = dose_grid(CT_GRID, "compact")
    labels = np.zeros(CT_GRID.shape, dtype=np.int16)
    labels[1:-1, 4:-4, 4:-4] = 1000  # external only
    labels[2:-2, 10:-10, 10:-10] = 10000  # external and liver
    lesion = _unsampled_voxel(target, (12, 48, 48))
    labels[lesion] = 10001  # liver and lesion_1 (the lesion's contour reaches outside the outline: not External's)
    names = {1000: "external", 10000: "external+liver", 10001: "liver+lesion_1"}
    vois = {"external": (1000, 10000), "liver": (10000, 10001), "lesion_1": (10001,)}
    out = resample_to_grid(Volume(labels, CT_GRID, "1", {"names": names, "vois": vois}), target, "labels")
    plain = resample_to_grid(
        Volume(np.isin(labels, (10000, 10001)).astype(np.int16), CT_GRID, "1"), target, "labels"
    )  # the liver alone, as a plain map
    assert out.attrs["labels_kept_by_guard"] == ["lesion_1"]
    # the rescued dose voxel lay in external and liver: it keeps both and joins lesion_1 in a new region
    new = int(out.array[tuple(np.argwhere(np.isin(out.array, out.attrs["vois"]["lesion_1"]))[0])])
    assert new == 10002 and out.attrs["names"][new] == "external+liver+lesion_1"
    assert out.attrs["vois"] == {"external": (1000, 10000, 10002), "liver": (10000, 10002), "lesion_1": (10002,)}
    assert np.count_nonzero(out.array == new) == 1
    np.testing.assert_array_equal(np.isin(out.array, out.attrs["vois"]["liver"]), plain.array == 1)
    assert 10001 not in out.attrs["names"]  # the source's liver+lesion_1 voxel has no dose voxel of its own


def test_compact_dose_grid_covers_the_ct_extent_centred():
    grid = dose_grid(CT_GRID, "compact")
    assert grid.spacing_mm == COMPACT_SPACING_MM
    ct_extent = np.asarray(CT_GRID.shape) * np.asarray(CT_GRID.spacing_mm)
    extent = np.asarray(grid.shape) * np.asarray(grid.spacing_mm)
    assert np.all(extent >= ct_extent - 1e-9) and np.all(extent - ct_extent < np.asarray(grid.spacing_mm))
    ct_centre = np.asarray(CT_GRID.origin_mm) + (np.asarray(CT_GRID.shape) - 1) / 2 * np.asarray(CT_GRID.spacing_mm)
    centre = np.asarray(grid.origin_mm) + (np.asarray(grid.shape) - 1) / 2 * np.asarray(grid.spacing_mm)
    np.testing.assert_allclose(centre, ct_centre, atol=1e-9)
    assert dose_grid(CT_GRID, "ct") == CT_GRID
    # a CT already at the compact spacing keeps its grid
    compact_ct = Grid((10, 12, 12), COMPACT_SPACING_MM, (0.0, 0.0, 0.0))
    assert dose_grid(compact_ct, "compact") == compact_ct


def test_grid_geometry_matches_the_dicom_formula_for_an_oblique_orientation():
    # DICOM PS3.3 C.7.6.2.1.1: P = S + i * dc * row_cosine + j * dr * column_cosine (+ k * dz * normal)
    angle = np.radians(30)
    row = np.array([np.cos(angle), np.sin(angle), 0.0])
    col = np.array([-np.sin(angle), np.cos(angle), 0.0])
    normal = np.cross(row, col)
    first = np.array([10.0, -20.0, 35.0])
    grid = grid_from_dicom(first, row, col, normal, (1.5, 0.75), 2.5, (4, 5, 6))
    image = grid.reference_image()
    for k, j, i in [(0, 0, 0), (3, 4, 5), (1, 2, 3)]:
        expected = first + i * 0.75 * row + j * 1.5 * col + k * 2.5 * normal
        np.testing.assert_allclose(image.TransformIndexToPhysicalPoint((i, j, k)), expected, atol=1e-9)
        # and the (z, y, x) convention of Grid: origin + sum_axis index * spacing * direction row
        steps = np.array([k, j, i]) * np.asarray(grid.spacing_mm)
        zyx = np.asarray(grid.origin_mm) + steps @ np.asarray(grid.direction)
        np.testing.assert_allclose(zyx, expected[::-1], atol=1e-9)


# (z, y, x) direction rows of CT grids as scanners store them: feet first supine (slices run to the feet, each row to
# the patient's right), head first prone (rows to the right, columns to anterior) and a sagittal stack (slices run to
# the left, columns to the feet, rows to posterior)
STORED_DIRECTIONS = {
    "FFS": ((-1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, -1.0)),
    "HFP": ((1.0, 0.0, 0.0), (0.0, -1.0, 0.0), (0.0, 0.0, -1.0)),
    "sagittal": ((0.0, 0.0, 1.0), (-1.0, 0.0, 0.0), (0.0, 1.0, 0.0)),
}


def _centres(grid: Grid) -> np.ndarray:
    """Every voxel centre (z, y, x) mm of ``grid`` in array order, by the Grid convention."""
    index = np.argwhere(np.ones(grid.shape, dtype=bool)) * np.asarray(grid.spacing_mm)
    return np.asarray(grid.origin_mm) + index @ np.asarray(grid.direction)


@pytest.mark.parametrize("stored", sorted(STORED_DIRECTIONS))
def test_an_axis_aligned_ct_gets_the_standard_axial_grid_with_its_own_voxels(rng, stored):
    ct_grid = Grid((5, 6, 7), (2.0, 3.0, 4.0), (10.0, -20.0, 30.0), STORED_DIRECTIONS[stored])
    grid = dose_grid(ct_grid, "ct")
    assert grid.direction == ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0))
    # the same voxel centres, in another order
    ct_centres, centres = _centres(ct_grid), _centres(grid)
    np.testing.assert_allclose(np.unique(centres.round(6), axis=0), np.unique(ct_centres.round(6), axis=0))
    # ... ascending along +z, +y, +x
    assert np.all(np.diff(centres.reshape(*grid.shape, 3)[:, 0, 0, 0]) > 0)
    assert np.all(np.diff(centres.reshape(*grid.shape, 3)[0, :, 0, 1]) > 0)
    assert np.all(np.diff(centres.reshape(*grid.shape, 3)[0, 0, :, 2]) > 0)
    # every quantity moves onto it exactly: the value at each physical point is unchanged
    values = rng.uniform(-1000.0, 1000.0, ct_grid.shape).astype(np.float32)
    by_point = dict(zip(map(tuple, ct_centres.round(6)), values.ravel()))
    for quantity, units in (("ct_hu", "HU"), ("activity", "Bq/mL"), ("labels", "1")):
        array = np.abs(values) if quantity == "activity" else values
        if quantity == "labels":
            array = np.rint(array / 100).astype(np.int16)
        out = resample_to_grid(Volume(array, ct_grid, units), grid, quantity)
        expected = [by_point[p] for p in map(tuple, centres.round(6))]
        if quantity == "activity":
            expected = np.abs(expected)
            assert out.attrs["activity_conservation_factor"] == 1.0
            assert out.attrs["activity_outside_grid_bq"] == 0.0
        if quantity == "labels":
            expected = np.rint(np.asarray(expected) / 100).astype(np.int16)
        np.testing.assert_array_equal(out.array.ravel(), expected, err_msg=quantity)
    # the compact grid: standard orientation too, centred on the same CT extent
    compact = dose_grid(ct_grid, "compact")
    assert compact.direction == grid.direction
    np.testing.assert_allclose(_centres(compact).mean(axis=0), ct_centres.mean(axis=0), atol=1e-9)
    extent = np.asarray(compact.shape) * np.asarray(compact.spacing_mm)
    assert np.all(extent >= np.asarray(grid.shape) * np.asarray(grid.spacing_mm) - 1e-9)


def test_an_oblique_ct_keeps_its_orientation():
    angle = np.radians(12.0)
    tilted = ((1.0, 0.0, 0.0), (0.0, np.cos(angle), np.sin(angle)), (0.0, -np.sin(angle), np.cos(angle)))
    ct_grid = Grid((5, 6, 7), (2.0, 3.0, 4.0), (10.0, -20.0, 30.0), tilted)
    assert dose_grid(ct_grid, "ct") == ct_grid
    assert dose_grid(ct_grid, "compact").direction == tilted
    # rounding noise in the direction cosines is no tilt
    noisy = tuple(tuple(v + 3e-7 for v in row) for row in STORED_DIRECTIONS["FFS"])
    assert dose_grid(Grid((5, 6, 7), (2.0, 3.0, 4.0), (10.0, -20.0, 30.0), noisy), "ct").direction == (
        (1.0, 0.0, 0.0),
        (0.0, 1.0, 0.0),
        (0.0, 0.0, 1.0),
    )
