"""CT-to-CT registration of the time points of one therapy cycle: rigid, then a diffeomorphic deformable step.

The patient lies differently at every scan (4 h ... 7 days after injection) and breathes: before voxel dose-rates of
several time points can be integrated voxel by voxel, each time point is mapped onto a reference time point. This
module registers one time point's CT (the *moving* image) to the reference CT (the *fixed* image) and warps that time
point's maps (activity, dose-rate, labels) onto the reference grid.

Conventions: arrays (z, y, x), spacings and points (z, y, x) LPS mm (:mod:`cohort_dosimetry.grid`); SimpleITK's
(x, y, z) order is handled inside. A transform maps **fixed (reference) points to moving points**, ``p -> T(p)``;
warping pulls a moving array back onto the fixed grid, ``warped(p) = moving(T(p))``, which is how SimpleITK resamples.

Method
------
1. Rigid: ``sitk.Euler3DTransform`` started from the centred-moments initialiser (the two CTs' centres of mass of
   HU + 1000 aligned), mean squares of HU (both images are CT of one patient on one scanner and calibration, so
   equal tissue has equal HU: the metric's assumption holds, and it is smooth near the optimum) on a seeded random
   10 % of the voxels, regular-step gradient descent with parameter scales from physical shifts, multi-resolution:
   shrink 4 and 2 (Gaussian smoothing 2 and 1 mm), and a full-resolution level only when no deformable step
   follows (the deformable step refines what that level would: the same errors on the compact grid in half the
   time); levels with fewer than 16 voxels along an axis are left out.
2. Deformable: ``sitk.DiffeomorphicDemonsRegistrationFilter`` (Vercauteren et al., "Diffeomorphic demons: efficient
   non-parametric image registration", NeuroImage 45:S61 (2009)) on the fixed CT and the rigidly resampled moving CT
   (HU clipped to [-1000, 1000]), at half (and, if asked, at full) resolution, with Gaussian smoothing of the
   displacement field after every iteration (``smoothing_mm``, 12 mm). Chosen over a B-spline because: the
   diffeomorphic update (the exponential of the smoothed update field, composed with the current field) keeps the
   transform invertible, which voxel-wise time integration needs (no folding: no tissue counted twice), and the
   Jacobian determinant checks it; demons assumes the same intensity for the same tissue, which holds for CT to CT of
   one patient; the Gaussian regulariser is one interpretable length (mm) instead of a control-point mesh and a
   bending-energy weight; and it runs in seconds to tens of seconds on a CPU on the compact grid. A demons level
   whose voxels are coarser than ``max_demons_spacing_mm`` (8 mm) is skipped: on the virtual patients, demons on
   12-16 mm voxels made the fields worse than the rigid step alone (organs a few voxels across), so on such grids the
   result is rigid.
   Settings were chosen on virtual patients (synthetic; seeds 11 and 12, compact grid and a 6-6.5 mm grid): field
   smoothing 12 mm against 6 and 20 mm, the whole HU range against a soft-tissue window [-400, 400] HU (worse).
   Iterations: 60 at half resolution and none at full resolution by default (all 60 at full resolution on a grid
   whose half-resolution voxels would be coarser than ``max_demons_spacing_mm``), since a cohort run registers every
   scan but the first of each cycle: on a moving virtual patient (seed 21, compact grid, two time points) the
   organ TRE was 0.76-0.78 mm mean with 60 half-resolution iterations alone, 0.68-0.79 mm with 10 more at full
   resolution and 0.75-0.84 mm with 40 more, the half-resolution step alone costing a third to a quarter of the
   time (8 s against 31-39 s on 2 heavily shared cores); all well below the voxel size (3 x 3.9 x 3.9 mm).
The total transform is ``T(p) = R (p + d(p) - c) + c + t``: the demons displacement ``d`` on the fixed grid, then the
rigid transform (rotation ``R`` about the centre ``c``, translation ``t``), stored as one displacement field
``T(p) - p`` at the fixed voxel centres (exact at those centres, which are the points a warp onto the fixed grid
evaluates). Its Jacobian determinant is ``det(I + grad d)`` (a rotation has determinant 1).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from cohort_dosimetry.grid import Grid, set_sitk_geometry
from cohort_dosimetry.vocabulary import name_of

#: HU range of the deformable step (see the module docstring).
DEMONS_WINDOW_HU = (-1000.0, 1000.0)
#: Warp kinds: linear (activity concentration, dose-rate, CT), nearest (labels), conserving (linear times the
#: Jacobian determinant: the amount per tissue parcel is kept, e.g. Bq when an organ is compressed), bspline (cubic
#: B-spline interpolation, negatives clipped to 0: less blur of a hot organ into its surroundings than linear).
WARP_KINDS = ("linear", "nearest", "conserving", "bspline")


def _grid(spacing_or_grid, shape) -> Grid:
    if isinstance(spacing_or_grid, Grid):
        if tuple(spacing_or_grid.shape) != tuple(shape):
            raise ValueError(f"array shape {tuple(shape)} does not match its grid {spacing_or_grid.shape}")
        return spacing_or_grid
    return Grid(tuple(shape), tuple(float(s) for s in spacing_or_grid))


def _image(array: np.ndarray, grid: Grid, dtype=np.float32):
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(np.ascontiguousarray(array, dtype=dtype))
    set_sitk_geometry(image, grid)
    return image


def _voxel_points(grid: Grid) -> np.ndarray:
    """Voxel centres (3, z, y, x) in LPS mm, (z, y, x) components, on any (also oblique) grid."""
    index = np.indices(grid.shape, dtype=np.float64)
    steps = np.asarray(grid.direction).T * np.asarray(grid.spacing_mm)  # column i: mm per index step along axis i
    return np.einsum("ij,j...->i...", steps, index) + np.asarray(grid.origin_mm)[:, None, None, None]


def _field_image(displacement_zyx: np.ndarray, grid: Grid):
    """A float64 vector image (components x, y, z) from a (3, z, y, x) (z, y, x)-component displacement."""
    import SimpleITK as sitk

    vectors = np.moveaxis(np.asarray(displacement_zyx, dtype=np.float64)[::-1], 0, -1)
    image = sitk.GetImageFromArray(np.ascontiguousarray(vectors), isVector=True)
    set_sitk_geometry(image, grid)
    return image


def _field_array(image) -> np.ndarray:
    """(3, z, y, x) (z, y, x)-component float32 array of a SimpleITK vector image (x, y, z components)."""
    import SimpleITK as sitk

    return np.ascontiguousarray(np.moveaxis(sitk.GetArrayFromImage(image), -1, 0)[::-1], dtype=np.float32)


_REVERSE = np.eye(3)[::-1]


@dataclass
class RegistrationResult:
    """One moving time point registered to the fixed (reference) one.

    Attributes
    ----------
    fixed_grid, moving_grid : the two CTs' grids.
    rotation : (3, 3) rigid rotation acting on (z, y, x) column vectors; ``centre_mm`` and ``translation_mm`` (3,)
        (z, y, x) mm: the rigid part maps ``p -> rotation (p - centre) + centre + translation``.
    rotation_deg : the rigid rotation's angle, degrees.
    deformable_mm : (3, z, y, x) float32, the demons displacement ``d`` on the fixed grid (zeros when the deformable
        step is off), applied before the rigid part.
    displacement_mm : (3, z, y, x) float32, the total ``T(p) - p`` at the fixed voxel centres, mm.
    jacobian : (z, y, x) float32 Jacobian determinant of the deformable part on the fixed grid.
    jacobian_range : (min, max) of ``jacobian``: > 0 everywhere means no folding.
    rigid_metric : the rigid step's final metric (mean squared HU difference on its sample points, HU^2).
    metric_before, metric : mean squared HU difference over the fixed body (HU > -500) before any registration
        (identity) and after the whole registration (HU^2).
    seconds : wall time of the registration.
    """

    fixed_grid: Grid
    moving_grid: Grid
    rotation: np.ndarray
    centre_mm: np.ndarray
    translation_mm: np.ndarray
    deformable_mm: np.ndarray
    displacement_mm: np.ndarray
    jacobian: np.ndarray
    rigid_metric: float
    metric_before: float
    metric: float
    seconds: float
    settings: dict = field(default_factory=dict)

    @classmethod
    def from_transform(
        cls, fixed_grid: Grid, moving_grid: Grid, rotation, centre_mm, translation_mm, deformable_mm, settings: dict
    ) -> RegistrationResult:
        """The result of a known transform ``T(p) = R (p + d(p) - c) + c + t`` (class docstring): the total
        displacement and the Jacobian determinant follow from the parts; metrics NaN, seconds 0."""
        rotation = np.asarray(rotation, dtype=np.float64)
        centre = np.asarray(centre_mm, dtype=np.float64)
        translation = np.asarray(translation_mm, dtype=np.float64)
        deformable_mm = np.asarray(deformable_mm, dtype=np.float32)
        points = _voxel_points(fixed_grid)
        moved = (
            np.einsum("ij,j...->i...", rotation, points + deformable_mm - centre[:, None, None, None])
            + (centre + translation)[:, None, None, None]
        )
        return cls(
            fixed_grid=fixed_grid,
            moving_grid=moving_grid,
            rotation=rotation,
            centre_mm=centre,
            translation_mm=translation,
            deformable_mm=deformable_mm,
            displacement_mm=(moved - points).astype(np.float32),
            jacobian=_jacobian_determinant(deformable_mm, fixed_grid),
            rigid_metric=float("nan"),
            metric_before=float("nan"),
            metric=float("nan"),
            seconds=0.0,
            settings=settings,
        )

    @property
    def rotation_deg(self) -> float:
        return float(np.rad2deg(np.arccos(np.clip((np.trace(self.rotation) - 1.0) / 2.0, -1.0, 1.0))))

    @property
    def jacobian_range(self) -> tuple[float, float]:
        return float(self.jacobian.min()), float(self.jacobian.max())

    def map_points(self, points_mm) -> np.ndarray:
        """Fixed points (N, 3) (z, y, x) mm to the moving points they correspond to, ``T(p)`` (the deformable part
        linearly interpolated, zero outside the fixed grid)."""
        import SimpleITK as sitk

        points = np.asarray(points_mm, dtype=np.float64).reshape(-1, 3)
        transform = sitk.DisplacementFieldTransform(_field_image(self.deformable_mm, self.fixed_grid))
        deformed = np.array([transform.TransformPoint(tuple(p[::-1]))[::-1] for p in points]).reshape(-1, 3)
        return (deformed - self.centre_mm) @ self.rotation.T + self.centre_mm + self.translation_mm

    def transform(self):
        """The total transform as a SimpleITK transform (fixed physical points (x, y, z) -> moving points)."""
        import SimpleITK as sitk

        return sitk.DisplacementFieldTransform(_field_image(self.displacement_mm, self.fixed_grid))

    def warp(self, array, kind: str = "linear", default_value: float | None = None) -> np.ndarray:
        """A moving time point's (z, y, x) array resampled onto the fixed grid.

        kind : ``"linear"`` (activity concentration Bq/mL, dose-rate Gy/s, CT), ``"nearest"`` (labels; keeps the
            dtype), ``"conserving"`` (linear times the Jacobian determinant: each tissue parcel keeps its amount, e.g.
            Bq of a compressed organ), ``"bspline"`` (cubic B-spline interpolation, ``sitk.sitkBSpline``, for
            non-negative maps such as dose-rate: it keeps sharper edges than linear, but overshoots at steep edges,
            above the local maximum as well as below zero; negative values are clipped to 0, the overshoot above is
            kept).
        default_value : value beyond the moving field of view; None = the nearest edge voxel's.
        """
        import SimpleITK as sitk

        if kind not in WARP_KINDS:
            raise ValueError(f"warp kind {kind!r}: use one of {WARP_KINDS}")
        array = np.asarray(array)
        if array.shape != tuple(self.moving_grid.shape):
            raise ValueError(f"array shape {array.shape} is not the moving grid's {self.moving_grid.shape}")
        nearest = kind == "nearest"
        interpolator = {"nearest": sitk.sitkNearestNeighbor, "bspline": sitk.sitkBSpline}.get(kind, sitk.sitkLinear)
        image = _image(array, self.moving_grid, dtype=array.dtype if nearest else np.float32)
        reference = _image(np.zeros(self.fixed_grid.shape, np.uint8), self.fixed_grid, dtype=np.uint8)
        out = sitk.Resample(
            image,
            reference,
            self.transform(),
            interpolator,
            0.0 if default_value is None else float(default_value),
            image.GetPixelID(),
            default_value is None,
        )
        warped = sitk.GetArrayFromImage(out)
        if kind == "conserving":
            warped = warped * self.jacobian
        elif kind == "bspline":
            np.maximum(warped, 0.0, out=warped)
        return warped


def _levels(shape, wanted=(4, 2, 1), minimum: int = 16) -> list[int]:
    """Shrink factors of the rigid pyramid that keep at least ``minimum`` voxels along every axis."""
    levels = [f for f in wanted if min(shape) / f >= minimum]
    return levels or [1]


def register(
    fixed_ct,
    moving_ct,
    spacing_mm,
    moving_spacing_mm=None,
    deformable: bool = True,
    smoothing_mm: float = 12.0,
    max_step_voxels: float = 0.5,
    image_smoothing_mm: float = 0.0,
    window_hu: tuple[float, float] = DEMONS_WINDOW_HU,
    max_demons_spacing_mm: float = 8.0,
    iterations: tuple[int, int] = (60, 0),
    rigid_iterations: int = 200,
    rigid_shrink: tuple[int, ...] | None = None,
    sampling: float = 0.1,
    seed: int = 0,
) -> RegistrationResult:
    """Register a moving time point's CT to the fixed (reference) CT: rigid, then diffeomorphic demons.

    Parameters
    ----------
    fixed_ct, moving_ct : (z, y, x) CT in HU.
    spacing_mm : the fixed CT's grid: a :class:`~cohort_dosimetry.grid.Grid` or a (z, y, x) spacing in mm (a grid
        centred on the origin).
    moving_spacing_mm : the moving CT's grid likewise; None = the fixed one's (both arrays on one grid).
    deformable : run the deformable step (else the result is rigid only).
    smoothing_mm : standard deviation of the Gaussian that regularises the demons displacement field, mm.
    max_step_voxels : the demons' largest update per iteration, voxels.
    image_smoothing_mm : Gaussian smoothing of both CTs before the demons step, mm (0: none).
    window_hu : the HU range the demons step sees (CT clipped to it).
    max_demons_spacing_mm : demons levels with a coarser voxel (largest spacing, mm) are skipped.
    iterations : demons iterations at half and at full resolution; where half-resolution voxels would be coarser
        than ``max_demons_spacing_mm``, all of them at full resolution.
    rigid_iterations : the rigid optimiser's largest number of iterations per level.
    rigid_shrink : shrink factors of the rigid levels; None = (4, 2) with the deformable step, (4, 2, 1) without.
    sampling, seed : the fraction of voxels the rigid metric samples (random) and its seed.

    Returns
    -------
    :class:`RegistrationResult` (transform fixed -> moving, ``warp``, metrics, Jacobian determinant range, time).
    """
    import SimpleITK as sitk

    start = time.perf_counter()
    fixed_ct = np.asarray(fixed_ct)
    moving_ct = np.asarray(moving_ct)
    fixed_grid = _grid(spacing_mm, fixed_ct.shape)
    moving_grid = _grid(spacing_mm if moving_spacing_mm is None else moving_spacing_mm, moving_ct.shape)
    if fixed_ct.ndim != 3 or moving_ct.ndim != 3:
        raise ValueError("register takes (z, y, x) CT arrays")
    fixed = _image(np.clip(fixed_ct, -1000, 3000).astype(np.float32) + 1000.0, fixed_grid)
    moving = _image(np.clip(moving_ct, -1000, 3000).astype(np.float32) + 1000.0, moving_grid)

    # --- rigid ---
    initial = sitk.CenteredTransformInitializer(
        fixed, moving, sitk.Euler3DTransform(), sitk.CenteredTransformInitializerFilter.MOMENTS
    )
    method = sitk.ImageRegistrationMethod()
    method.SetMetricAsMeanSquares()
    method.SetMetricSamplingStrategy(method.RANDOM)
    method.SetMetricSamplingPercentage(float(sampling), int(seed))
    method.SetInterpolator(sitk.sitkLinear)
    method.SetOptimizerAsRegularStepGradientDescent(
        learningRate=2.0,
        minStep=1e-3,
        numberOfIterations=int(rigid_iterations),
        gradientMagnitudeTolerance=1e-8,
        relaxationFactor=0.5,
    )
    method.SetOptimizerScalesFromPhysicalShift()
    if rigid_shrink is None:  # the demons step refines what a full-resolution rigid level would
        rigid_shrink = (4, 2) if deformable else (4, 2, 1)
    levels = _levels(fixed_ct.shape, rigid_shrink)
    method.SetShrinkFactorsPerLevel(levels)
    method.SetSmoothingSigmasPerLevel([f / 2.0 if f > 1 else 0.0 for f in levels])
    method.SetInitialTransform(initial, inPlace=True)
    method.Execute(fixed, moving)
    rigid_metric = float(method.GetMetricValue())
    rigid = sitk.Euler3DTransform(initial)
    matrix_xyz = np.asarray(rigid.GetMatrix()).reshape(3, 3)
    rotation = _REVERSE @ matrix_xyz @ _REVERSE
    centre = np.asarray(rigid.GetCenter())[::-1].copy()
    translation = np.asarray(rigid.GetTranslation())[::-1].copy()

    # --- deformable (on the fixed grid) ---
    deformable_mm = np.zeros((3, *fixed_grid.shape), dtype=np.float32)
    levels_run: list[int] = []
    if deformable:
        low, high = window_hu
        fixed_w = _image(np.clip(fixed_ct, low, high), fixed_grid)
        moving_w = _image(np.clip(moving_ct, low, high), moving_grid)
        if image_smoothing_mm > 0:
            fixed_w = sitk.SmoothingRecursiveGaussian(fixed_w, float(image_smoothing_mm))
            moving_w = sitk.SmoothingRecursiveGaussian(moving_w, float(image_smoothing_mm))
        moving_rigid = sitk.Resample(moving_w, fixed_w, rigid, sitk.sitkLinear, 0.0, sitk.sitkFloat32, True)
        displacement = None
        plan = list(zip((2, 1), iterations))
        if 2 * max(fixed_w.GetSpacing()) > max_demons_spacing_mm:  # no half level: its iterations at full resolution
            plan = [(1, sum(iterations))]
        for shrink, n_iterations in plan:
            level_spacing = [shrink * s for s in fixed_w.GetSpacing()]
            if n_iterations <= 0 or max(level_spacing) > max_demons_spacing_mm:
                continue
            if shrink > 1:
                sigma = float(min(fixed_grid.spacing_mm))
                # both images are sampled at the same points of the coarse grid (Shrink alone would take the fixed
                # image's values half a fine voxel away from the coarse voxel centres where the moving one is read)
                level_grid = sitk.Shrink(fixed_w, [shrink] * 3)
                f_level = sitk.Resample(sitk.SmoothingRecursiveGaussian(fixed_w, sigma), level_grid)
                m_level = sitk.Resample(sitk.SmoothingRecursiveGaussian(moving_rigid, sigma), level_grid)
            else:
                f_level, m_level = fixed_w, moving_rigid
            if displacement is not None:
                displacement = sitk.Resample(
                    displacement, f_level, sitk.Transform(), sitk.sitkLinear, 0.0, displacement.GetPixelID()
                )
            demons = sitk.DiffeomorphicDemonsRegistrationFilter()
            demons.SetNumberOfIterations(int(n_iterations))
            demons.SetSmoothDisplacementField(True)
            demons.SetStandardDeviations([float(smoothing_mm) / s for s in f_level.GetSpacing()])  # voxels
            demons.SetMaximumUpdateStepLength(float(max_step_voxels))
            demons.SetUseGradientType(demons.Symmetric)
            if displacement is None:
                displacement = demons.Execute(f_level, m_level)
            else:
                displacement = demons.Execute(f_level, m_level, displacement)
            levels_run.append(shrink)
        if displacement is not None:
            displacement = sitk.Resample(
                displacement, fixed_w, sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkVectorFloat64
            )
            deformable_mm = _field_array(displacement)
    result = RegistrationResult.from_transform(
        fixed_grid,
        moving_grid,
        rotation,
        centre,
        translation,
        deformable_mm,
        {
            "deformable": bool(deformable),
            "smoothing_mm": float(smoothing_mm),
            "iterations": list(iterations),
            "window_hu": list(window_hu),
            "rigid_levels": levels,
            "demons_levels": levels_run,
            "sampling": float(sampling),
            "seed": int(seed),
        },
    )
    result.rigid_metric = rigid_metric
    body = fixed_ct > -500
    if fixed_grid == moving_grid:
        result.metric_before = float(np.mean((fixed_ct[body].astype(np.float64) - moving_ct[body]) ** 2))
    warped = result.warp(moving_ct.astype(np.float32), "linear")
    result.metric = float(np.mean((fixed_ct[body].astype(np.float64) - warped[body]) ** 2))
    result.seconds = time.perf_counter() - start
    return result


def _jacobian_determinant(displacement_mm: np.ndarray, grid: Grid) -> np.ndarray:
    """det(I + grad d) (z, y, x) float32 of a (3, z, y, x) displacement field (sitk's
    DisplacementFieldJacobianDeterminant, physical spacing)."""
    import SimpleITK as sitk

    if not np.any(displacement_mm):
        return np.ones(grid.shape, dtype=np.float32)
    image = sitk.DisplacementFieldJacobianDeterminant(_field_image(displacement_mm, grid), True)
    return sitk.GetArrayFromImage(image).astype(np.float32)


def identity_result(fixed_ct, spacing_mm) -> RegistrationResult:
    """No registration: the identity on the fixed grid (the moving time point used as it lies)."""
    fixed_ct = np.asarray(fixed_ct)
    grid = _grid(spacing_mm, fixed_ct.shape)
    zeros = np.zeros((3, *grid.shape), dtype=np.float32)
    return RegistrationResult(
        fixed_grid=grid,
        moving_grid=grid,
        rotation=np.eye(3),
        centre_mm=np.zeros(3),
        translation_mm=np.zeros(3),
        deformable_mm=zeros,
        displacement_mm=zeros.copy(),
        jacobian=np.ones(grid.shape, np.float32),
        rigid_metric=float("nan"),
        metric_before=float("nan"),
        metric=float("nan"),
        seconds=0.0,
        settings={"identity": True},
    )


def dice(a_mask, b_mask) -> float:
    """Dice similarity coefficient 2 |A and B| / (|A| + |B|) of two boolean masks of one shape; nan when both are
    empty."""
    a = np.asarray(a_mask, dtype=bool)
    b = np.asarray(b_mask, dtype=bool)
    if a.shape != b.shape:
        raise ValueError(f"dice of masks of different shapes {a.shape} and {b.shape}")
    total = int(a.sum()) + int(b.sum())
    return float("nan") if total == 0 else 2.0 * float(np.logical_and(a, b).sum()) / total


def contour_dice(
    fixed_labels, moving_labels, result: RegistrationResult | None = None, names: Mapping[int, str] | None = None
) -> dict[str, float]:
    """Dice per VOI of the fixed labels and the moving labels warped onto the fixed grid (nearest neighbour).

    Every label present (> 0) in both label maps gets a value, keyed by its VOI name (``names`` {label: name}, else
    the vocabulary's). ``result`` None compares the moving labels as they lie (no registration; same grid).
    """
    fixed_labels = np.asarray(fixed_labels)
    moving_labels = np.asarray(moving_labels)
    if result is None:
        if moving_labels.shape != fixed_labels.shape:
            raise ValueError("without a registration the two label maps need one grid")
        warped = moving_labels
    else:
        warped = result.warp(moving_labels, "nearest", default_value=0)
    names = {int(k): v for k, v in (names or {}).items()}
    out = {}
    for label in sorted(set(np.unique(fixed_labels).tolist()) & set(np.unique(moving_labels).tolist()) - {0}):
        name = names.get(int(label))
        if name is None:
            try:
                name = name_of(int(label))
            except ValueError:
                name = str(label)
        out[name] = dice(fixed_labels == label, warped == label)
    return out


def target_registration_error(estimated, true_displacement_mm, mask=None) -> dict[str, float]:
    """Target registration error against a known transform: the distance between where the registration and where
    the truth put each fixed point, ``|T_est(p) - T_true(p)|`` mm, over the voxels of ``mask`` (z, y, x) (default
    all; landmark points are a mask of their voxels).

    estimated : a :class:`RegistrationResult`, a (3, z, y, x) displacement ``T(p) - p`` in mm, or None (identity: no
        registration, the error is the true motion itself).
    true_displacement_mm : (3, z, y, x) true ``T(p) - p`` on the fixed grid, mm.

    Returns {"mean_mm", "median_mm", "p95_mm", "max_mm", "n"}.
    """
    truth = np.asarray(true_displacement_mm, dtype=np.float64)
    if isinstance(estimated, RegistrationResult):
        estimated = estimated.displacement_mm
    estimated = np.zeros_like(truth) if estimated is None else np.asarray(estimated, dtype=np.float64)
    if estimated.shape != truth.shape or truth.ndim != 4 or truth.shape[0] != 3:
        raise ValueError(f"displacements must both be (3, z, y, x), got {estimated.shape} and {truth.shape}")
    error = np.linalg.norm(estimated - truth, axis=0)
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != error.shape:
            raise ValueError(f"mask shape {mask.shape} is not the grid's {error.shape}")
        error = error[mask]
    error = error.ravel()
    if error.size == 0:
        raise ValueError("target registration error over an empty mask")
    return {
        "mean_mm": float(error.mean()),
        "median_mm": float(np.median(error)),
        "p95_mm": float(np.percentile(error, 95)),
        "max_mm": float(error.max()),
        "n": int(error.size),
    }
