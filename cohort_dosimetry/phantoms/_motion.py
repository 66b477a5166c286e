"""Virtual patients that lie differently at every time point: rigid repositioning plus a smooth breathing-scale
deformation of liver, spleen and kidneys, with the true transform kept for registration tests (synthetic).

Motion model (all coordinates (z, y, x) LPS mm; ``p`` a point of the reference time point, ``q`` of a moved one)::

    q = F(p) = R (p + d(p) - c) + c + t

* ``d``: the organ (breathing) deformation, in the reference body frame: ``d(p) = a W(p)`` with one amplitude vector
  ``a`` per time point and the envelope ``W = 1 - prod_k (1 - r_k w_k(p))`` over the organs k of
  :data:`BREATHING_ORGANS` present in the labels (``r_k`` their relative amplitude). ``w_k`` is a smooth plateau on
  the ellipsoid fitted to the organ's voxels by its moments (semi-axes ``s = sqrt(5) x`` the standard deviation along
  each axis, exact for a solid ellipsoid): ``w = exp(-ln 2 (rho / 1.3)^4)``, ``rho`` the ellipsoidal radius (1 on the
  fitted surface), so ``w`` is 1 at the organ's centre, 0.78 on its surface, 1/2 at 1.3 times its size and below 0.02
  at twice its size. The organs mostly translate and their surroundings follow smoothly (as a smooth field must: a
  vertebra next to the liver moves a little with it); ``0 <= W <= 1``, so ``|d| <= |a|``, also where organs touch.
  ``a`` is one breathing phase per time point: superior-inferior component ``b x organ_displacement_mm`` with ``b``
  of random sign and size uniform in [0.3, 1], the two other components up to 25 % of it, the whole vector capped at
  ``organ_displacement_mm``. Breathing moves the upper abdominal organs mostly along z, by about 1 to 2.5 cm peak to
  peak for liver and kidneys (reviewed by Langen and Jones, Int J Radiat Oncol Biol Phys 50:265 (2001)); between two
  free-breathing scans the organs' mean positions differ by less, hence a default of up to 8 mm. The relative
  amplitudes of :data:`BREATHING_ORGANS` are assumed (the retroperitoneal kidneys set lower). ``a`` is scaled down,
  if needed, until ``det(I + grad d) >= 0.5`` and the Frobenius norm of ``grad d`` is below 0.9 at every voxel:
  ``d`` is then invertible and its inverse is found by fixed-point iteration (a contraction).
* ``R``, ``t``, ``c``: the rigid repositioning: a rotation by ``max_rotation_deg x U(0.3, 1)`` about an axis of
  random direction through ``c``, the centroid of the reference body (labels > 0), and a shift of
  ``max_shift_mm x U(0.3, 1)`` in a random direction. The lower bound 0.3 makes every moved time point move
  noticeably (the point of these patients).

The reference time point (the first, by default) does not move. A moved time point's arrays are the reference
arrays pulled back through ``G = F^-1`` (``q -> p``), with SimpleITK on the same grid (a displacement-field transform
holding ``G(q) - q`` exactly at the voxel centres, so no transform interpolation is involved); values beyond the
field of view are the nearest edge voxel's (the body continues past the field of view):

* ``ct_hu``: linear interpolation, rounded to int16, plus fresh CT noise (``ct_noise_hu``, Gaussian, body voxels):
  every CT of a series is its own acquisition, so registration cannot lock onto a shared noise pattern;
* ``density``: from the moved CT through :func:`~cohort_dosimetry.physics.hu_to_density` (as the anatomy does);
* ``labels``: nearest neighbour;
* ``activity`` and ``activity_true`` (Bq/mL): cubic B-spline interpolation (negatives, from its overshoot at the
  edges of hot organs, clipped to 0) times the Jacobian determinant of ``G``
  (``1 / det(I + grad d)``): every tissue parcel keeps its activity (Bq) when it is compressed or stretched, then each
  moved time point is rescaled so that its total activity in the field of view equals the unmoved one exactly
  (the factor, variable ``activity_scale``, corrects the interpolation's and the field edges' small losses and is
  reported per time point). B-spline rather than linear interpolation: a real patient's later scan images its moved
  activity afresh, without any resampling; linear interpolation at sub-voxel offsets would blur every hot organ into
  its surroundings (5-12 % of a kidney's or lesion's mean activity lost over a move and a warp back on the compact
  grid, 2.5-10 % with a B-spline warp back), an artefact of the virtual patient that registration tests would
  charge to the registration. The reconstructed SPECT is moved as an image, not simulated again from the moved
  truth: with a rigid motion and a smooth organ deformation that is close to what a camera would see of the moved
  patient (noise texture and resolution move with it).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import xarray as xr

from cohort_dosimetry.grid import Grid, set_sitk_geometry
from cohort_dosimetry.physics import hu_to_density
from cohort_dosimetry.vocabulary import ORGAN_LABELS

#: Organs that move with breathing, with their amplitude relative to the breathing amplitude ``a`` (assumed: liver
#: and spleen follow the diaphragm fully, the retroperitoneal kidneys less).
BREATHING_ORGANS: dict[str, float] = {"liver": 1.0, "spleen": 1.0, "kidney_left": 0.7, "kidney_right": 0.7}

_PLATEAU_RADIUS = 1.3  # w = 1/2 at 1.3 times the fitted organ ellipsoid
_LN2 = float(np.log(2.0))
_MIN_FRACTION = 0.3  # every drawn motion is at least 30 % of its maximum
_OFF_AXIS_FRACTION = 0.25  # breathing's y and x components, at most this fraction of its z component
_MIN_JACOBIAN = 0.5  # the organ deformation is scaled down until det(I + grad d) >= this everywhere
_SALT = 0x6D6F76  # separates the motion's random stream from the anatomy's (same patient seed)


def _rotation_matrix(axis, angle_rad: float) -> np.ndarray:
    """Rotation by ``angle_rad`` about the unit vector ``axis`` (Rodrigues), 3x3 acting on (z, y, x) column vectors."""
    u = np.asarray(axis, dtype=np.float64)
    u = u / np.linalg.norm(u)
    k = np.array([[0.0, -u[2], u[1]], [u[2], 0.0, -u[0]], [-u[1], u[0], 0.0]])
    return np.eye(3) + np.sin(angle_rad) * k + (1.0 - np.cos(angle_rad)) * (k @ k)


def _random_unit(rng: np.random.Generator) -> np.ndarray:
    v = rng.standard_normal(3)
    return v / np.linalg.norm(v)


class _Breathing:
    """The organ deformation ``d(p) = a W(p)``, ``W = 1 - prod_k (1 - r_k w_k(p))``, and its gradient at points
    (N, 3) (z, y, x) mm."""

    def __init__(self, centres, semi_axes, relative, amplitude):
        self.centres = np.asarray(centres, dtype=np.float64).reshape(-1, 3)
        self.semi_axes = np.asarray(semi_axes, dtype=np.float64).reshape(-1, 3)
        self.relative = np.asarray(relative, dtype=np.float64).reshape(-1)
        self.amplitude = np.asarray(amplitude, dtype=np.float64).reshape(3)

    def envelope(self, points: np.ndarray, gradient: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
        """W (N,) in [0, 1] and grad W (N, 3) per mm (None without ``gradient``)."""
        rest = np.ones(len(points))  # prod_k (1 - r_k w_k)
        terms = []
        for centre, semi, r in zip(self.centres, self.semi_axes, self.relative):
            rel = (points - centre) / semi
            rho2 = np.einsum("ni,ni->n", rel, rel)
            u2 = rho2 / _PLATEAU_RADIUS**2
            w = np.exp(-_LN2 * u2 * u2)
            rest = rest * (1.0 - r * w)
            if gradient:
                # d/dp_i of exp(-ln2 rho^4 / r0^4) = -w 4 ln2 rho^2 / r0^4 (p_i - mu_i) / s_i^2
                grad = (-w * 4.0 * _LN2 * rho2 / _PLATEAU_RADIUS**4)[:, None] * (rel / semi)
                terms.append((1.0 - r * w, r * grad))
        if not gradient:
            return 1.0 - rest, None
        grad_envelope = np.zeros((len(points), 3))
        for k, (_, grad_k) in enumerate(terms):
            others = np.ones(len(points))
            for j, (factor_j, _) in enumerate(terms):
                if j != k:
                    others = others * factor_j
            grad_envelope += grad_k * others[:, None]
        return 1.0 - rest, grad_envelope

    def displacement(self, points: np.ndarray) -> np.ndarray:
        return self.envelope(points, gradient=False)[0][:, None] * self.amplitude

    def jacobian(self, points: np.ndarray) -> np.ndarray:
        """grad d (N, 3, 3): [n, i, j] = d d_i / d p_j."""
        grad = self.envelope(points)[1]
        assert grad is not None
        return self.amplitude[None, :, None] * grad[:, None, :]

    def invert(self, targets: np.ndarray, tolerance_mm: float = 1e-5, max_iterations: int = 100) -> np.ndarray:
        """The points p with p + d(p) = targets: fixed-point iteration p <- targets - d(p), a contraction while
        |grad d| < 1 (checked when the field is drawn)."""
        p = targets - self.displacement(targets)
        for _ in range(max_iterations):
            new = targets - self.displacement(p)
            change = float(np.max(np.abs(new - p))) if len(p) else 0.0
            p = new
            if change < tolerance_mm:
                return p
        raise RuntimeError(f"the organ deformation did not invert to {tolerance_mm} mm (last change {change} mm)")


def _voxel_points(grid: Grid) -> np.ndarray:
    """Voxel centres of an axial grid as (N, 3) (z, y, x) mm, C order."""
    z, y, x = grid.axes_mm()
    zz, yy, xx = np.meshgrid(z, y, x, indexing="ij")
    return np.stack([zz.ravel(), yy.ravel(), xx.ravel()], axis=1)


def _grid_of(patient: xr.Dataset) -> Grid:
    shape = tuple(int(patient.sizes[d]) for d in ("z", "y", "x"))
    return Grid(shape, tuple(patient.attrs["spacing_mm"]), tuple(patient.attrs["origin_mm"]))


def _organ_ellipsoids(labels: np.ndarray, grid: Grid) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Organs of :data:`BREATHING_ORGANS` in the labels: names, centroids (k, 3) and moment-fitted semi-axes (k, 3)
    mm (at least one voxel spacing, so that an organ of a few voxels still gets a smooth field)."""
    axes = grid.axes_mm()
    names, centres, semis = [], [], []
    for name in BREATHING_ORGANS:
        index = np.nonzero(labels == ORGAN_LABELS[name])
        if len(index[0]) == 0:
            continue
        coords = np.stack([axes[i][index[i]] for i in range(3)], axis=1)
        names.append(name)
        centres.append(coords.mean(axis=0))
        semis.append(np.maximum(np.sqrt(5.0) * coords.std(axis=0), np.asarray(grid.spacing_mm)))
    return names, np.asarray(centres).reshape(-1, 3), np.asarray(semis).reshape(-1, 3)


def _resample(array: np.ndarray, grid: Grid, field_image, interpolator) -> np.ndarray:
    """``array`` (z, y, x) pulled back through the displacement field transform whose field image (on ``grid``)
    ``field_image`` holds ``G(q) - q``; nearest-edge values beyond the field of view."""
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(np.ascontiguousarray(array))
    set_sitk_geometry(image, grid)
    transform = sitk.DisplacementFieldTransform(sitk.Image(field_image))  # the transform takes its own copy
    out = sitk.Resample(image, image, transform, interpolator, 0.0, image.GetPixelID(), True)
    return sitk.GetArrayFromImage(out)


def _field_image(displacement_zyx: np.ndarray, grid: Grid):
    """A SimpleITK float64 vector image (components x, y, z) from a (N, 3) (z, y, x) displacement on ``grid``."""
    import SimpleITK as sitk

    vectors = displacement_zyx[:, ::-1].reshape(*grid.shape, 3)
    image = sitk.GetImageFromArray(np.ascontiguousarray(vectors, dtype=np.float64), isVector=True)
    set_sitk_geometry(image, grid)
    return image


def move_patient(
    patient: xr.Dataset,
    seed: int,
    max_shift_mm: float = 15.0,
    max_rotation_deg: float = 5.0,
    organ_displacement_mm: float = 8.0,
    reference: int = 0,
    ct_noise_hu: float = 6.0,
) -> xr.Dataset:
    """A virtual patient whose anatomy moves between time points (synthetic), with the true motion kept.

    Parameters
    ----------
    patient : a virtual patient from :func:`make_virtual_patient` (static ``ct_hu``, ``density``, ``labels``
        (z, y, x); ``activity``, ``activity_true`` (..., timepoint, z, y, x) Bq/mL; attrs ``spacing_mm``,
        ``origin_mm``), on an axial grid.
    seed : motion seed (independent of the patient's own seed stream).
    max_shift_mm, max_rotation_deg : the largest rigid shift (mm) and rotation (degrees) of a moved time point.
    organ_displacement_mm : the largest organ (breathing) displacement, mm, at any voxel.
        The smallest drawn motion is 30 % of each maximum; every draw is made for every time point, the reference's
        too, so that a time point's motion does not depend on which one is the reference.
    reference : index of the time point that stays where it is (the registration's fixed time point).
    ct_noise_hu : standard deviation of the fresh CT noise added to the body of every moved CT, HU
        (the virtual patients' CT noise).

    Returns
    -------
    xr.Dataset with the patient's coordinates and attrs and
        ``ct_hu`` (timepoint, z, y, x) int16 HU, ``density`` (timepoint, z, y, x) g/cm3, ``labels`` (timepoint, z, y, x)
        int16 (attrs ``names``), ``activity`` and ``activity_true`` (as in the patient, each time point moved) Bq/mL;
        the truth: ``displacement_true`` (timepoint, component, z, y, x) float32 mm, ``F(p) - p`` at the reference
        voxel centres (``component`` = "z", "y", "x"): where each reference point lies at that time point;
        ``rigid_rotation`` (timepoint, row, col) (a (z, y, x) rotation matrix), ``rigid_translation_mm``
        (timepoint, component), ``rotation_centre_mm`` (component), ``rotation_deg`` and ``shift_mm`` (timepoint),
        ``breathing_centre_mm`` and ``breathing_semi_axes_mm`` (organ, component), ``breathing_relative`` (organ),
        ``breathing_amplitude_mm`` (timepoint, component; ``a``), ``breathing_max_mm`` (timepoint; the largest
        ``|d|`` over the grid), ``jacobian_min`` (timepoint; the smallest ``det grad F`` over the grid) and
        ``activity_scale`` (timepoint; the total-activity correction after the Jacobian-weighted resampling).
        :func:`motion_points` maps any points with this truth. Attrs add ``motion_seed``, ``max_shift_mm``,
        ``max_rotation_deg``, ``organ_displacement_mm``, ``reference_timepoint``.

    Reference time point: every array equal to the patient's, the displacement zero.
    """
    import SimpleITK as sitk

    grid = _grid_of(patient)
    if not grid.is_axial:
        raise ValueError("move_patient needs an axial grid")
    n_t = int(patient.sizes["timepoint"])
    if not 0 <= reference < n_t:
        raise ValueError(f"reference time point {reference} outside 0..{n_t - 1}")
    if min(max_shift_mm, max_rotation_deg, organ_displacement_mm, ct_noise_hu) < 0:
        raise ValueError("motion limits and CT noise must be >= 0")
    rng = np.random.default_rng((int(seed), _SALT))
    labels = patient["labels"].values
    ct = patient["ct_hu"].values
    body = labels > 0
    points = _voxel_points(grid)
    centre = points[body.ravel()].mean(axis=0) if body.any() else np.zeros(3)
    organs, organ_centres, organ_semis = _organ_ellipsoids(labels, grid)
    relative = np.array([BREATHING_ORGANS[name] for name in organs])

    names = ("ct_hu", "density", "labels", "activity", "activity_true")
    moved: dict[str, list[np.ndarray]] = {name: [] for name in names}
    displacement = np.zeros((n_t, 3, *grid.shape), dtype=np.float32)
    rotations = np.tile(np.eye(3), (n_t, 1, 1))
    translations = np.zeros((n_t, 3))
    angles = np.zeros(n_t)
    amplitudes = np.zeros((n_t, 3))
    breathing_max = np.zeros(n_t)
    jacobian_min = np.ones(n_t)
    scales = np.ones(n_t)
    activity_axis = {name: patient[name].dims.index("timepoint") for name in ("activity", "activity_true")}

    for t in range(n_t):
        # draw every time point's motion, the reference's too, so that the draws do not depend on `reference`
        phase = rng.choice((-1.0, 1.0)) * rng.uniform(_MIN_FRACTION, 1.0)
        off_axis = rng.uniform(-_OFF_AXIS_FRACTION, _OFF_AXIS_FRACTION, size=2)
        angle = np.deg2rad(max_rotation_deg) * rng.uniform(_MIN_FRACTION, 1.0)
        axis = _random_unit(rng)
        shift = max_shift_mm * rng.uniform(_MIN_FRACTION, 1.0) * _random_unit(rng)
        noise_seed = int(rng.integers(2**31))
        if t == reference:
            for name in ("ct_hu", "density", "labels"):
                moved[name].append(patient[name].values)
            for name in ("activity", "activity_true"):
                moved[name].append(np.take(patient[name].values, t, axis=activity_axis[name]))
            continue

        amplitude = phase * np.array([1.0, *off_axis])
        amplitude *= organ_displacement_mm / max(1.0, float(np.linalg.norm(amplitude)))  # |a| <= the limit
        breathing = _Breathing(organ_centres, organ_semis, relative, amplitude)
        while True:  # keep d invertible: det(I + grad d) >= 0.5, Frobenius |grad d| < 0.9 (a contraction)
            gradient = breathing.jacobian(points)
            det = np.linalg.det(np.eye(3) + gradient)
            if det.min() >= _MIN_JACOBIAN and np.linalg.norm(gradient, axis=(1, 2)).max() < 0.9:
                break
            breathing.amplitude *= 0.8
        d = breathing.displacement(points)
        rotation = _rotation_matrix(axis, angle)

        # truth at the reference voxel centres: F(p) - p
        forward = (points + d - centre) @ rotation.T + centre + shift
        displacement[t] = (forward - points).T.reshape(3, *grid.shape)
        # pull-back at the moved voxel centres: G(q) = D^-1(R^T (q - c - t) + c)
        unrotated = (points - centre - shift) @ rotation + centre
        source = breathing.invert(unrotated)
        jac_g = 1.0 / np.linalg.det(np.eye(3) + breathing.jacobian(source))  # det grad G = 1 / det grad F
        field = _field_image(source - points, grid)
        jac_g = jac_g.reshape(grid.shape)

        ct_t = _resample(ct.astype(np.float32), grid, field, sitk.sitkLinear)
        labels_t = _resample(labels, grid, field, sitk.sitkNearestNeighbor)
        noise = np.random.default_rng(noise_seed).normal(0.0, ct_noise_hu, size=grid.shape).astype(np.float32)
        ct_t = np.clip(np.round(ct_t + noise * (labels_t > 0)), -1024, 3071).astype(np.int16)
        moved["ct_hu"].append(ct_t)
        moved["density"].append(hu_to_density(ct_t))
        moved["labels"].append(labels_t.astype(labels.dtype))
        for name in ("activity", "activity_true"):
            values = np.take(patient[name].values, t, axis=activity_axis[name])
            lead = values.shape[:-3]
            flat = values.reshape(-1, *grid.shape)
            out = np.stack(
                [np.maximum(_resample(v.astype(np.float32), grid, field, sitk.sitkBSpline), 0.0) * jac_g for v in flat]
            )
            totals = flat.sum(axis=(1, 2, 3), dtype=np.float64)
            new_totals = out.sum(axis=(1, 2, 3), dtype=np.float64)
            factor = np.where(new_totals > 0, totals / np.where(new_totals > 0, new_totals, 1.0), 1.0)
            if name == "activity_true":
                scales[t] = float(factor[0])
            moved[name].append(
                (out * factor[:, None, None, None].astype(np.float32)).reshape(*lead, *grid.shape).astype(values.dtype)
            )

        rotations[t], translations[t], angles[t] = rotation, shift, np.rad2deg(angle)
        amplitudes[t] = breathing.amplitude
        breathing_max[t] = float(np.max(np.linalg.norm(d, axis=1))) if len(organs) else 0.0
        jacobian_min[t] = float(det.min()) if len(organs) else 1.0

    static_dims = ("timepoint", "z", "y", "x")
    data: dict[str, Any] = {
        "ct_hu": (static_dims, np.stack(moved["ct_hu"]), patient["ct_hu"].attrs),
        "density": (static_dims, np.stack(moved["density"]).astype(np.float32), patient["density"].attrs),
        "labels": (static_dims, np.stack(moved["labels"]), patient["labels"].attrs),
    }
    for name in ("activity", "activity_true"):
        data[name] = (patient[name].dims, np.stack(moved[name], axis=activity_axis[name]), patient[name].attrs)
    component = ("component", ["z", "y", "x"])
    data.update(
        {
            "displacement_true": (
                ("timepoint", "component", "z", "y", "x"),
                displacement,
                {"units": "mm", "long_name": "true motion F(p) - p at the reference voxel centres"},
            ),
            "rigid_rotation": (
                ("timepoint", "row", "col"),
                rotations,
                {"units": "1", "long_name": "(z, y, x) rotation"},
            ),
            "rigid_translation_mm": (("timepoint", "component"), translations, {"units": "mm"}),
            "rotation_centre_mm": (("component",), centre, {"units": "mm"}),
            "rotation_deg": (("timepoint",), angles, {"units": "degree"}),
            "shift_mm": (("timepoint",), np.linalg.norm(translations, axis=1), {"units": "mm"}),
            "breathing_centre_mm": (("organ", "component"), organ_centres, {"units": "mm"}),
            "breathing_semi_axes_mm": (("organ", "component"), organ_semis, {"units": "mm"}),
            "breathing_relative": (("organ",), relative, {"units": "1"}),
            "breathing_amplitude_mm": (("timepoint", "component"), amplitudes, {"units": "mm"}),
            "breathing_max_mm": (("timepoint",), breathing_max, {"units": "mm"}),
            "jacobian_min": (("timepoint",), jacobian_min, {"units": "1"}),
            "activity_scale": (("timepoint",), scales, {"units": "1", "long_name": "total-activity correction"}),
        }
    )
    coords: dict[Any, Any] = {name: patient.coords[name] for name in patient.coords}
    coords["component"] = component
    coords["organ"] = ("organ", list(organs))
    attrs = dict(patient.attrs)
    attrs.update(
        motion_seed=int(seed),
        max_shift_mm=float(max_shift_mm),
        max_rotation_deg=float(max_rotation_deg),
        organ_displacement_mm=float(organ_displacement_mm),
        reference_timepoint=int(reference),
    )
    return xr.Dataset(data, coords=coords, attrs=attrs)


def motion_points(moved: xr.Dataset, timepoint: int, points_mm, inverse: bool = False) -> np.ndarray:
    """The true motion of :func:`move_patient` at any points: reference points (N, 3) (z, y, x) mm to where they lie
    at time point index ``timepoint`` (``F``), or with ``inverse`` moved points back to the reference (``F^-1``)."""
    points = np.asarray(points_mm, dtype=np.float64).reshape(-1, 3)
    rotation = moved["rigid_rotation"].values[timepoint]
    shift = moved["rigid_translation_mm"].values[timepoint]
    centre = moved["rotation_centre_mm"].values
    breathing = _Breathing(
        moved["breathing_centre_mm"].values,
        moved["breathing_semi_axes_mm"].values,
        moved["breathing_relative"].values,
        moved["breathing_amplitude_mm"].values[timepoint],
    )
    if inverse:
        return breathing.invert((points - centre - shift) @ rotation + centre)
    return (points + breathing.displacement(points) - centre) @ rotation.T + centre + shift
