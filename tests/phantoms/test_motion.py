"""Virtual patients that move between time points (synthetic): the motion stays within its stated limits, the
reference time point is untouched, and the kept truth maps the reference anatomy onto every moved one, checked
independently of SimpleITK (scipy nearest-neighbour look-ups, finite-difference Jacobians)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from cohort_dosimetry.grid import Grid
from cohort_dosimetry.phantoms import BREATHING_ORGANS, make_virtual_patient, motion_points, move_patient
from cohort_dosimetry.physics import hu_to_density
from cohort_dosimetry.vocabulary import label_of

# 240 x 312 x 416 mm around the abdomen (the compact grid's field of view cropped in z and y, 6-6.5 mm voxels): the
# organs at a few voxels across, so nearest-neighbour look-ups still resolve a few-mm motion.
GRID = Grid((40, 48, 64), (6.0, 6.5, 6.5))
HOURS = (4.0, 24.0, 96.0)
ORGANS = ("liver", "spleen", "kidney_left", "kidney_right")


@pytest.fixture(scope="module")
def patient():
    return make_virtual_patient(7, grid=GRID, hours=HOURS)


@pytest.fixture(scope="module")
def moved(patient):
    return move_patient(patient, seed=7)


def _dice(a, b):
    return 2.0 * np.logical_and(a, b).sum() / (a.sum() + b.sum())


def _points(grid: Grid) -> np.ndarray:
    z, y, x = grid.axes_mm()
    return np.stack(np.meshgrid(z, y, x, indexing="ij"), axis=0)  # (3, z, y, x)


def _look_up(array, points_zyx, grid: Grid, order: int):
    """``array`` at physical points (3, ...) mm, scipy map_coordinates (edge values beyond the grid)."""
    index = [(points_zyx[i] - grid.origin_mm[i]) / grid.spacing_mm[i] for i in range(3)]
    return ndimage.map_coordinates(array, index, order=order, mode="nearest")


def test_layout_and_untouched_reference(patient, moved):
    n_t = len(HOURS)
    for name in ("ct_hu", "density", "labels", "activity", "activity_true"):
        assert moved[name].dims == ("timepoint", "z", "y", "x"), name
        assert moved[name].shape == (n_t, *GRID.shape)
    assert moved["displacement_true"].shape == (n_t, 3, *GRID.shape)
    assert list(moved["component"].values) == ["z", "y", "x"]
    assert moved["labels"].attrs["names"] == patient["labels"].attrs["names"]
    assert moved.attrs["seed"] == patient.attrs["seed"] and moved.attrs["reference_timepoint"] == 0
    for name in ("ct_hu", "density", "labels"):
        np.testing.assert_array_equal(moved[name].values[0], patient[name].values)
    for name in ("activity", "activity_true"):
        np.testing.assert_array_equal(moved[name].values[0], patient[name].values[0])
    assert not moved["displacement_true"].values[0].any()
    assert moved["rotation_deg"].values[0] == 0 and moved["shift_mm"].values[0] == 0
    # the moved CT's density follows its own HU
    np.testing.assert_allclose(moved["density"].values[2], hu_to_density(moved["ct_hu"].values[2]), rtol=1e-6)


def test_motion_is_within_its_limits(moved):
    rotation = moved["rigid_rotation"].values
    for t in (1, 2):
        r = rotation[t]
        np.testing.assert_allclose(r @ r.T, np.eye(3), atol=1e-12)
        assert np.linalg.det(r) == pytest.approx(1.0)
        angle = np.rad2deg(np.arccos((np.trace(r) - 1) / 2))
        assert angle == pytest.approx(moved["rotation_deg"].values[t])
        assert 0.3 * 5.0 <= angle <= 5.0
        assert 0.3 * 15.0 <= np.linalg.norm(moved["rigid_translation_mm"].values[t]) <= 15.0
        assert 0 < moved["breathing_max_mm"].values[t] <= 8.0 + 1e-9


def test_organ_deformation_is_small_smooth_mostly_along_z_and_localised(patient, moved):
    """The non-rigid part d(p) = R^T (F(p) - c - t) + c - p, recovered from the truth field."""
    points = _points(GRID)
    labels = patient["labels"].values
    body = labels > 0
    centre = moved["rotation_centre_mm"].values[:, None, None, None]
    organ_mask = np.isin(labels, [label_of(o) for o in ORGANS])
    # organ ellipsoids from the labels (moments), independently of the stored ones
    axes = GRID.axes_mm()
    rho_min = np.full(GRID.shape, np.inf)
    for organ in ORGANS:
        index = np.nonzero(labels == label_of(organ))
        coords = np.stack([axes[i][index[i]] for i in range(3)], axis=1)
        semi = np.sqrt(5.0) * coords.std(axis=0)
        rel = (points - coords.mean(axis=0)[:, None, None, None]) / semi[:, None, None, None]
        rho_min = np.minimum(rho_min, np.sqrt((rel**2).sum(axis=0)))
    for t in (1, 2):
        rotation = moved["rigid_rotation"].values[t]
        shift = moved["rigid_translation_mm"].values[t][:, None, None, None]
        moved_points = points + moved["displacement_true"].values[t]
        d = np.einsum("ji,j...->i...", rotation, moved_points - centre - shift) + centre - points
        size = np.linalg.norm(d, axis=0)
        assert size.max() <= 8.0 + 1e-3
        assert size.max() == pytest.approx(moved["breathing_max_mm"].values[t], rel=1e-3)
        assert np.abs(d[0]).max() >= 2.0 * max(np.abs(d[1]).max(), np.abs(d[2]).max())  # mostly along z
        assert np.median(size[organ_mask]) >= 0.5 * size.max()  # the organs move ...
        far = body & (rho_min >= 2.5)
        assert far.sum() > 1000 and size[far].max() <= 0.1 * size.max()  # ... the body far from them does not
        # smooth and invertible: finite-difference Jacobian determinant of F (a rotation has determinant 1)
        grad = np.stack([np.stack(np.gradient(moved_points[i], *GRID.spacing_mm), axis=0) for i in range(3)])
        det = np.linalg.det(np.moveaxis(grad, (0, 1), (-2, -1)))
        assert det.min() > 0.5 and det.max() < 1.5
        assert det.min() == pytest.approx(moved["jacobian_min"].values[t], abs=0.05)


def test_truth_maps_the_reference_anatomy_onto_the_moved_one(patient, moved):
    """labels_t(F(p)) reproduces labels_ref(p): Dice near 1 for every organ, while without the motion (same voxel)
    the organs overlap clearly less."""
    reference = patient["labels"].values
    points = _points(GRID)
    for t in (1, 2):
        labels_t = moved["labels"].values[t]
        pulled = _look_up(labels_t, points + moved["displacement_true"].values[t], GRID, order=0)
        as_they_lie = []
        for organ in ORGANS:
            k = label_of(organ)
            assert _dice(pulled == k, reference == k) >= 0.95, (t, organ)
            as_they_lie.append(_dice(labels_t == k, reference == k))
        assert min(as_they_lie) < 0.9, (t, as_they_lie)
        # the CT follows the same motion: HU at F(p) match the reference HU in the organs (fresh 6 HU noise)
        ct_pulled = _look_up(
            moved["ct_hu"].values[t].astype(np.float32), points + moved["displacement_true"].values[t], GRID, order=1
        )
        organs = np.isin(reference, [label_of(o) for o in ORGANS])
        assert abs(np.median(ct_pulled[organs] - patient["ct_hu"].values[organs])) < 3.0


def test_motion_points_is_the_field_and_inverts_it(moved):
    points = _points(GRID).reshape(3, -1).T[::97]
    for t in (1, 2):
        forward = motion_points(moved, t, points)
        field = moved["displacement_true"].values[t].reshape(3, -1).T[::97]
        np.testing.assert_allclose(forward, points + field, atol=1e-3)
        np.testing.assert_allclose(motion_points(moved, t, forward, inverse=True), points, atol=1e-4)
    np.testing.assert_allclose(motion_points(moved, 0, points), points)


def test_activity_is_conserved_and_moves_with_the_organs(patient, moved):
    for t in (1, 2):
        for name in ("activity", "activity_true"):
            np.testing.assert_allclose(
                moved[name].values[t].sum(dtype=np.float64), patient[name].values[t].sum(dtype=np.float64), rtol=1e-5
            )
        assert abs(moved["activity_scale"].values[t] - 1.0) < 0.03  # the correction is small
        # each organ keeps its activity where its moved outline is: summed over the organ grown by one voxel, so that
        # the linear interpolation's spill across a sharp edge (a hot lesion next to the liver) stays inside
        for organ in ORGANS:
            k = label_of(organ)
            before = patient["activity_true"].values[t][ndimage.binary_dilation(patient["labels"].values == k)].sum()
            after = moved["activity_true"].values[t][ndimage.binary_dilation(moved["labels"].values[t] == k)].sum()
            assert after == pytest.approx(before, rel=0.03), organ


def test_no_motion_reproduces_the_patient(patient):
    still = move_patient(patient, seed=7, max_shift_mm=0, max_rotation_deg=0, organ_displacement_mm=0, ct_noise_hu=0)
    for name in ("ct_hu", "labels"):
        np.testing.assert_array_equal(still[name].values, np.broadcast_to(patient[name].values, still[name].shape))
    np.testing.assert_allclose(
        still["activity_true"].values,
        patient["activity_true"].values,
        rtol=1e-5,
        atol=1e-3 * float(patient["activity_true"].values.max()),
    )
    assert np.abs(still["displacement_true"].values).max() < 1e-6


def test_seeded_reference_choice_and_realisations():
    patient = make_virtual_patient(8, grid=GRID, hours=(4.0, 24.0), realisations=2)
    a = move_patient(patient, seed=1)
    np.testing.assert_array_equal(a["ct_hu"].values, move_patient(patient, seed=1)["ct_hu"].values)
    assert not np.array_equal(a["displacement_true"].values, move_patient(patient, seed=2)["displacement_true"].values)
    assert a["activity"].dims == ("realisation", "timepoint", "z", "y", "x")
    np.testing.assert_array_equal(a["activity"].values[:, 0], patient["activity"].values[:, 0])
    np.testing.assert_allclose(
        a["activity"].values[:, 1].sum(axis=(1, 2, 3), dtype=np.float64),
        patient["activity"].values[:, 1].sum(axis=(1, 2, 3), dtype=np.float64),
        rtol=1e-5,
    )
    # the motion draws do not depend on which time point is the reference
    b = move_patient(patient, seed=1, reference=1)
    assert not b["displacement_true"].values[1].any() and b["displacement_true"].values[0].any()
    np.testing.assert_array_equal(b["labels"].values[1], patient["labels"].values)
    with pytest.raises(ValueError, match="reference time point 2"):
        move_patient(patient, seed=1, reference=2)
    with pytest.raises(ValueError, match=">= 0"):
        move_patient(patient, seed=1, max_shift_mm=-1.0)
    assert set(BREATHING_ORGANS) == set(ORGANS)
