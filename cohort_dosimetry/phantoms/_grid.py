"""Voxel grids of the virtual patients (axis order z, y, x; spacing in mm)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Grid:
    """A CT voxel grid: ``shape`` (z, y, x) voxels and ``spacing_mm`` (z, y, x) mm, centred on the LPS origin."""

    shape: tuple[int, int, int]
    spacing_mm: tuple[float, float, float]

    def __post_init__(self) -> None:
        if len(self.shape) != 3 or len(self.spacing_mm) != 3:
            raise ValueError(f"a Grid needs 3 sizes and 3 spacings (z, y, x), got {self.shape} and {self.spacing_mm}")
        if min(self.shape) < 1 or min(self.spacing_mm) <= 0:
            raise ValueError(f"grid sizes must be >= 1 and spacings > 0, got {self.shape} and {self.spacing_mm}")
        object.__setattr__(self, "shape", tuple(int(n) for n in self.shape))
        object.__setattr__(self, "spacing_mm", tuple(float(s) for s in self.spacing_mm))

    @property
    def voxel_volume_ml(self) -> float:
        """Volume of one voxel in mL (cm3)."""
        return float(np.prod(self.spacing_mm)) / 1000.0

    @property
    def extent_mm(self) -> tuple[float, float, float]:
        """Field of view (z, y, x) in mm."""
        return tuple(n * s for n, s in zip(self.shape, self.spacing_mm))

    @property
    def origin_mm(self) -> tuple[float, float, float]:
        """LPS position (z, y, x) in mm of the centre of voxel (0, 0, 0); the grid is centred on (0, 0, 0)."""
        return tuple(-(n - 1) / 2.0 * s for n, s in zip(self.shape, self.spacing_mm))

    def axes_mm(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Voxel-centre coordinates (z, y, x) in LPS mm, float32 1-D arrays; index grows to superior, posterior, left."""
        return tuple(
            (o + s * np.arange(n)).astype(np.float32) for o, s, n in zip(self.origin_mm, self.spacing_mm, self.shape)
        )


#: The two grids: ``compact`` (default, CPU-sized) and ``paper`` (Li et al. 2022 CT grid).
GRIDS: dict[str, Grid] = {
    "compact": Grid((130, 128, 128), (3.0, 3.91, 3.91)),
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
