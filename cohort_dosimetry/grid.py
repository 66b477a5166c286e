"""The one voxel grid: where a volume's voxels are in patient space.

Conventions (docs/architecture.md): arrays are indexed (z, y, x); ``shape``, ``spacing_mm`` and ``origin_mm`` are
(z, y, x); physical coordinates are DICOM patient coordinates (LPS, mm) written in (z, y, x) order, i.e. (S, P, L)
components. ``direction`` is a 3x3 matrix whose row i is the unit vector, in (z, y, x) patient coordinates, along
which array axis i increases (the store schema's ``direction``, flattened row-major); an axial image in standard
orientation has the identity. ``origin_mm`` is the centre of voxel (0, 0, 0).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cohort_dosimetry.constants import COMPACT_SHAPE, COMPACT_SPACING_MM

IDENTITY: tuple[tuple[float, ...], ...] = ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0))
# (z, y, x) <-> (x, y, z): the reversal permutation, its own inverse.
_REVERSE = np.eye(3)[::-1]


@dataclass(frozen=True)
class Grid:
    """Voxels ``shape`` (z, y, x) of ``spacing_mm`` (z, y, x) mm, voxel (0, 0, 0) centred at ``origin_mm`` (z, y, x)
    LPS mm, array axes along the rows of ``direction``.

    Without ``origin_mm`` the grid is centred on the patient-space origin (the virtual patients' convention).
    """

    shape: tuple[int, ...]
    spacing_mm: tuple[float, ...]
    origin_mm: tuple[float, ...] | None = None
    direction: tuple[tuple[float, ...], ...] = IDENTITY

    def __post_init__(self) -> None:
        if len(self.shape) != 3 or len(self.spacing_mm) != 3:
            raise ValueError(f"a Grid needs 3 sizes and 3 spacings (z, y, x), got {self.shape} and {self.spacing_mm}")
        if min(self.shape) < 1 or min(self.spacing_mm) <= 0:
            raise ValueError(f"grid sizes must be >= 1 and spacings > 0, got {self.shape} and {self.spacing_mm}")
        shape = tuple(int(n) for n in self.shape)
        spacing = tuple(float(s) for s in self.spacing_mm)
        origin = (
            tuple(-(n - 1) / 2.0 * s for n, s in zip(shape, spacing))
            if self.origin_mm is None
            else tuple(float(v) for v in self.origin_mm)
        )
        if len(origin) != 3:
            raise ValueError(f"a Grid's origin needs 3 coordinates (z, y, x), got {self.origin_mm}")
        object.__setattr__(self, "shape", shape)
        object.__setattr__(self, "spacing_mm", spacing)
        object.__setattr__(self, "origin_mm", origin)
        object.__setattr__(self, "direction", tuple(tuple(float(v) for v in row) for row in self.direction))

    @property
    def voxel_volume_ml(self) -> float:
        """Volume of one voxel in mL (cm3)."""
        return float(np.prod(self.spacing_mm)) / 1000.0

    @property
    def extent_mm(self) -> tuple[float, ...]:
        """Field of view (z, y, x) in mm."""
        return tuple(n * s for n, s in zip(self.shape, self.spacing_mm))

    @property
    def is_axial(self) -> bool:
        """Whether the array axes run along +z, +y, +x of patient space (direction the identity)."""
        return bool(np.allclose(self.direction, IDENTITY))

    def axes_mm(self) -> tuple[np.ndarray, ...]:
        """Voxel-centre coordinates (z, y, x) in LPS mm along each array axis, float64 1-D arrays (index grows to
        superior, posterior, left). Only an axial grid has them: an oblique grid's voxel centres are not a product of
        three axes."""
        if not self.is_axial:
            raise ValueError(f"an oblique grid (direction {self.direction}) has no per-axis patient coordinates")
        assert self.origin_mm is not None  # __post_init__ fills it
        return tuple(o + s * np.arange(n) for o, s, n in zip(self.origin_mm, self.spacing_mm, self.shape))

    def as_attrs(self) -> dict:
        """The store's geometry attrs: spacing_mm, origin_mm (z, y, x) and direction (9 numbers, row-major)."""
        assert self.origin_mm is not None  # __post_init__ fills it
        return {
            "spacing_mm": [float(v) for v in self.spacing_mm],
            "origin_mm": [float(v) for v in self.origin_mm],
            "direction": [float(v) for row in self.direction for v in row],
        }

    @classmethod
    def from_attrs(cls, shape, attrs: dict) -> Grid:
        """The grid of a stored volume of ``shape`` (z, y, x) from its :meth:`as_attrs` attrs."""
        direction = attrs.get("direction")
        return cls(
            tuple(shape),
            tuple(attrs["spacing_mm"]),
            tuple(attrs["origin_mm"]) if "origin_mm" in attrs else None,
            IDENTITY if direction is None else tuple(tuple(direction[3 * i : 3 * i + 3]) for i in range(3)),
        )

    def sitk_direction(self) -> list[float]:
        """The direction as SimpleITK stores it: (x, y, z) order, axis directions in columns, row-major."""
        return [float(v) for v in (_REVERSE @ np.asarray(self.direction, dtype=float).T @ _REVERSE).ravel()]

    def reference_image(self):
        """An empty SimpleITK image on this grid (the resampling reference); SimpleITK orders everything (x, y, z)."""
        import SimpleITK as sitk

        image = sitk.Image([int(n) for n in self.shape[::-1]], sitk.sitkUInt8)
        set_sitk_geometry(image, self)
        return image


def set_sitk_geometry(image, grid: Grid) -> None:
    """Give a SimpleITK image ``grid``'s spacing, origin and direction (reordered to SimpleITK's (x, y, z))."""
    assert grid.origin_mm is not None  # Grid.__post_init__ fills it
    image.SetSpacing([float(v) for v in grid.spacing_mm[::-1]])
    image.SetOrigin([float(v) for v in grid.origin_mm[::-1]])
    image.SetDirection(grid.sitk_direction())


def grid_of_sitk(image) -> Grid:
    """The :class:`Grid` of a SimpleITK image."""
    direction_xyz = np.asarray(image.GetDirection(), dtype=float).reshape(3, 3)
    direction_zyx = (_REVERSE @ direction_xyz @ _REVERSE).T
    return Grid(
        shape=tuple(int(n) for n in image.GetSize()[::-1]),
        spacing_mm=tuple(float(v) for v in image.GetSpacing()[::-1]),
        origin_mm=tuple(float(v) for v in image.GetOrigin()[::-1]),
        direction=tuple(tuple(float(v) for v in row) for row in direction_zyx),
    )


def grid_from_dicom(
    first_position_xyz, row_cosine_xyz, column_cosine_xyz, normal_xyz, pixel_spacing, slice_spacing, shape
) -> Grid:
    """A grid from DICOM geometry: ImagePositionPatient of the first slice (x, y, z), the two direction cosines of
    ImageOrientationPatient (along a row = array x, down a column = array y), the slice normal the slices are
    stacked along (array z), PixelSpacing (row spacing = y, column spacing = x), the slice spacing and shape (z, y, x).
    """
    direction_xyz = np.column_stack([row_cosine_xyz, column_cosine_xyz, normal_xyz])
    direction_zyx = (_REVERSE @ direction_xyz @ _REVERSE).T
    return Grid(
        shape=tuple(int(n) for n in shape),
        spacing_mm=(float(slice_spacing), float(pixel_spacing[0]), float(pixel_spacing[1])),
        origin_mm=tuple(float(v) for v in np.asarray(first_position_xyz, dtype=float)[::-1]),
        direction=tuple(tuple(float(v) for v in row) for row in direction_zyx),
    )


#: Named grids of the virtual patients: ``compact`` (default, CPU-sized; the shipped CNN's grid) and ``paper``
#: (the CT grid of Li et al. 2022), both centred on the patient-space origin.
GRIDS: dict[str, Grid] = {
    "compact": Grid(COMPACT_SHAPE, COMPACT_SPACING_MM),
    "paper": Grid((130, 512, 512), (3.0, 0.98, 0.98)),
}


def resolve_grid(grid: str | Grid) -> Grid:
    """A :class:`Grid` from a grid name in :data:`GRIDS` or a Grid."""
    if isinstance(grid, Grid):
        return grid
    try:
        return GRIDS[grid]
    except (KeyError, TypeError):
        raise ValueError(f"unknown grid {grid!r}: use one of {sorted(GRIDS)} or a Grid(shape, spacing_mm)") from None


def parse_dose_grid(grid) -> str | tuple[float, float, float]:
    """A dose-grid choice as ``ingest`` and ``run`` take it: ``"ct"`` (the CT's voxels), ``"compact"``
    (:data:`~cohort_dosimetry.constants.COMPACT_SPACING_MM`), or a spacing (z, y, x) in mm, given as three numbers or
    as the text ``"Z,Y,X"``. ValueError naming the choices otherwise."""
    if isinstance(grid, str) and grid in ("ct", "compact"):
        return grid
    try:
        spacing = tuple(float(v) for v in (grid.split(",") if isinstance(grid, str) else grid))
    except (TypeError, ValueError):
        spacing = ()
    if len(spacing) != 3 or not all(np.isfinite(s) and s > 0 for s in spacing):
        raise ValueError(f"a dose grid is ct, compact or a spacing Z,Y,X of three positive numbers in mm, got {grid!r}")
    return spacing
