"""A voxel volume in DICOM patient space, in the project's (z, y, x) axis order, and its SimpleITK twin.

Conventions (docs/architecture.md): arrays are indexed (z, y, x); ``spacing_mm`` and ``origin_mm`` are (z, y, x);
physical coordinates are DICOM patient coordinates (LPS, mm) written in (z, y, x) order, i.e. (S, P, L) components.
``direction`` is a 3x3 matrix whose row i is the unit vector, in (z, y, x) patient coordinates, along which array
axis i (z, y, x) increases (the store schema's ``direction``, flattened row-major). An axial image in standard
orientation has the identity. ``origin_mm`` is the centre of voxel (0, 0, 0). SimpleITK orders all three (x, y, z)
and keeps axis directions in columns; :meth:`Volume.to_sitk` and :meth:`Volume.from_sitk` convert.

The grid itself is :class:`cohort_dosimetry.grid.Grid`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import SimpleITK as sitk

from cohort_dosimetry.grid import Grid, grid_of_sitk, set_sitk_geometry


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
        set_sitk_geometry(image, self.grid)
        return image

    @classmethod
    def from_sitk(cls, image: sitk.Image, units: str, attrs: dict | None = None) -> Volume:
        return cls(sitk.GetArrayFromImage(image), grid_of_sitk(image), units, dict(attrs or {}))
