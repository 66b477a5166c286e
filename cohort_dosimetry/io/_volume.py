"""A voxel volume in DICOM patient space, in the project's (z, y, x) axis order, and its SimpleITK twin.

Conventions (docs/architecture.md): arrays are indexed (z, y, x); ``spacing_mm`` and ``origin_mm`` are (z, y, x);
physical coordinates are DICOM patient coordinates (LPS, mm) written in (z, y, x) order, i.e. (S, P, L) components.
``direction`` is a 3x3 matrix whose row i is the unit vector, in (z, y, x) patient coordinates, along which array
axis i (z, y, x) increases (the store schema's ``direction``, flattened row-major). An axial image in standard
orientation has the identity. ``origin_mm`` is the centre of voxel (0, 0, 0). SimpleITK orders all three (x, y, z)
and keeps axis directions in columns; :meth:`Volume.to_sitk` and :meth:`Volume.from_sitk` convert.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import SimpleITK as sitk

# (z, y, x) <-> (x, y, z): the reversal permutation, its own inverse.
_REVERSE = np.eye(3)[::-1]


@dataclass(frozen=True)
class Grid:
    """Where a volume's voxels are: shape (z, y, x), spacing_mm (z, y, x), origin_mm (z, y, x), direction 3x3
    (row i = unit vector of array axis i in (z, y, x) patient coordinates)."""

    shape: tuple[int, int, int]
    spacing_mm: tuple[float, float, float]
    origin_mm: tuple[float, float, float]
    direction: tuple[tuple[float, ...], ...] = ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0))

    @property
    def voxel_volume_ml(self) -> float:
        """Volume of one voxel in mL (cm3)."""
        return float(np.prod(self.spacing_mm)) / 1000.0

    def reference_image(self) -> sitk.Image:
        """An empty SimpleITK image on this grid (the resampling reference)."""
        image = sitk.Image([int(n) for n in self.shape[::-1]], sitk.sitkUInt8)
        _set_geometry(image, self)
        return image

    def as_attrs(self) -> dict:
        """The store's geometry attrs: spacing_mm, origin_mm (z, y, x) and direction (9 numbers, row-major)."""
        return {
            "spacing_mm": [float(v) for v in self.spacing_mm],
            "origin_mm": [float(v) for v in self.origin_mm],
            "direction": [float(v) for row in self.direction for v in row],
        }


@dataclass(frozen=True)
class Volume:
    """A 3-D array (z, y, x) on a :class:`Grid`, with its unit and provenance attributes."""

    array: np.ndarray
    grid: Grid
    units: str
    attrs: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if tuple(self.array.shape) != tuple(self.grid.shape):
            raise ValueError(f"array shape {self.array.shape} does not match grid shape {self.grid.shape}")

    def to_sitk(self) -> sitk.Image:
        """The same voxels as a SimpleITK image (SimpleITK orders everything x, y, z)."""
        image = sitk.GetImageFromArray(self.array)
        _set_geometry(image, self.grid)
        return image

    @classmethod
    def from_sitk(cls, image: sitk.Image, units: str, attrs: dict | None = None) -> Volume:
        return cls(sitk.GetArrayFromImage(image), grid_of(image), units, dict(attrs or {}))


def grid_of(image: sitk.Image) -> Grid:
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


def _set_geometry(image: sitk.Image, grid: Grid) -> None:
    direction_xyz = _REVERSE @ np.asarray(grid.direction, dtype=float).T @ _REVERSE
    image.SetSpacing([float(v) for v in grid.spacing_mm[::-1]])
    image.SetOrigin([float(v) for v in grid.origin_mm[::-1]])
    image.SetDirection([float(v) for v in direction_xyz.ravel()])
