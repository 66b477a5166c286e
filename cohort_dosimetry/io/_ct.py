"""CT series (and other single-frame slice stacks) into a :class:`Volume` in Hounsfield units.

Slices are ordered by their position along the slice normal (ImageOrientationPatient row x column), never by
InstanceNumber. The stack must be regular: the checks and their tolerances are stated next to the constants below.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset

from cohort_dosimetry.grid import Grid, grid_from_dicom
from cohort_dosimetry.io._errors import IngestError
from cohort_dosimetry.io._headers import (
    check_plausible_size,
    float_triplets,
    pixel_array,
    read_full,
    read_header,
    reader_of_input,
)
from cohort_dosimetry.io._volume import Volume

#: Direction cosines must be unit vectors and orthogonal to within 1e-3 (about 0.06 degrees); all slices of a series
#: must share them to within the same tolerance.
ORIENTATION_TOLERANCE = 1e-3
#: The slice positions may drift sideways (perpendicular to the slice normal) by at most 0.1 mm over the whole stack;
#: more means the slices are sheared (gantry tilt), which a regular grid cannot represent.
SHEAR_TOLERANCE_MM = 0.1
#: Every gap between neighbouring slice positions must equal the median gap to within 1 % of it or 0.02 mm, whichever
#: is larger (0.02 mm allows for positions written with two decimals).
SPACING_TOLERANCE_FRACTION = 0.01
SPACING_TOLERANCE_MM = 0.02


def orientation(ds: Dataset, subject: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(row cosine, column cosine, slice normal), each (x, y, z), from ImageOrientationPatient, checked orthonormal."""
    iop = float_triplets(ds.get("ImageOrientationPatient"), 6, subject, "ImageOrientationPatient")
    row, col = iop[:3], iop[3:]
    if abs(np.linalg.norm(row) - 1) > ORIENTATION_TOLERANCE or abs(np.linalg.norm(col) - 1) > ORIENTATION_TOLERANCE:
        raise IngestError(subject, f"ImageOrientationPatient {list(iop)} does not hold unit vectors")
    if abs(float(row @ col)) > ORIENTATION_TOLERANCE:
        angle = np.degrees(np.arccos(np.clip(row @ col, -1, 1)))
        raise IngestError(
            subject, f"non-orthogonal image orientation: rows and columns meet at {angle:.2f} degrees, not 90"
        )
    return row, col, np.cross(row, col)


def slice_stack_grid(headers: Sequence[Dataset], subject: str) -> tuple[list[int], Grid]:
    """Sort single-frame slices along the slice normal and check they form a regular grid.

    Returns the order (indices into ``headers``, first slice first) and the :class:`Grid` (z, y, x).
    Raises IngestError for a gantry tilt, non-orthogonal or mixed orientation, mixed matrix sizes or pixel spacing,
    duplicate positions, a missing slice or non-uniform spacing.
    """
    first = headers[0]
    if first.get("GantryDetectorTilt") not in (None, "") and abs(float(first.GantryDetectorTilt)) > 1e-3:
        raise IngestError(
            subject,
            f"gantry tilt of {float(first.GantryDetectorTilt):g} degrees: tilted acquisitions are not supported",
        )
    row, col, normal = orientation(first, subject)
    pixel_spacing = float_triplets(first.get("PixelSpacing"), 2, subject, "PixelSpacing")
    if np.any(pixel_spacing <= 0):
        raise IngestError(subject, f"PixelSpacing must be positive, got {list(pixel_spacing)}")
    size = (int(first.Rows), int(first.Columns))
    positions: list[np.ndarray] | np.ndarray  # the rows, then their (z, 3) array
    positions = []
    for ds in headers:
        other_row, other_col, _ = orientation(ds, subject)
        if max(np.abs(other_row - row).max(), np.abs(other_col - col).max()) > ORIENTATION_TOLERANCE:
            raise IngestError(subject, "slices have different ImageOrientationPatient")
        if (int(ds.Rows), int(ds.Columns)) != size:
            raise IngestError(subject, f"slices have different matrix sizes ({size} and {(ds.Rows, ds.Columns)})")
        if np.abs(float_triplets(ds.get("PixelSpacing"), 2, subject, "PixelSpacing") - pixel_spacing).max() > 1e-4:
            raise IngestError(subject, "slices have different PixelSpacing")
        positions.append(float_triplets(ds.get("ImagePositionPatient"), 3, subject, "ImagePositionPatient"))
    positions = np.asarray(positions)
    along = positions @ normal
    order = [int(i) for i in np.argsort(along, kind="stable")]
    along, positions = along[order], positions[order]
    if len(order) > 1:
        drift = (positions[-1] - positions[0]) - (along[-1] - along[0]) * normal
        if np.linalg.norm(drift) > SHEAR_TOLERANCE_MM:
            angle = np.degrees(np.arctan2(np.linalg.norm(drift), along[-1] - along[0]))
            raise IngestError(
                subject,
                f"slices are sheared by {np.linalg.norm(drift):.2f} mm over the stack ({angle:.2f} degrees): "
                "gantry tilt or inconsistent ImagePositionPatient; tilted acquisitions are not supported",
            )
        gaps = np.diff(along)
        if np.any(gaps < 1e-3):
            k = int(np.argmin(gaps))
            raise IngestError(subject, f"two slices share the position {along[k]:.2f} mm along the slice normal")
        nominal = float(np.median(gaps))
        tolerance = max(SPACING_TOLERANCE_FRACTION * nominal, SPACING_TOLERANCE_MM)
        for k, gap in enumerate(gaps):
            multiple = round(gap / nominal)
            if multiple >= 2 and abs(gap - multiple * nominal) <= tolerance * multiple:
                raise IngestError(
                    subject,
                    f"{multiple - 1} missing slice(s) between positions {along[k]:.2f} and {along[k + 1]:.2f} mm "
                    f"(slice spacing {nominal:.3f} mm)",
                )
        worst = int(np.argmax(np.abs(gaps - nominal)))
        if abs(gaps[worst] - nominal) > tolerance:
            raise IngestError(
                subject,
                f"non-uniform slice spacing: gap of {gaps[worst]:.3f} mm between positions {along[worst]:.2f} and "
                f"{along[worst + 1]:.2f} mm where the series has {nominal:.3f} mm (tolerance {tolerance:.3f} mm)",
            )
        slice_spacing = float((along[-1] - along[0]) / (len(along) - 1))
    else:
        slice_spacing = float(first.get("SpacingBetweenSlices") or first.get("SliceThickness") or 1.0)
    grid = grid_from_dicom(positions[0], row, col, normal, pixel_spacing, slice_spacing, (len(order), *size))
    return order, grid


@reader_of_input
def read_ct_series(paths: Sequence[Path], subject: str | None = None) -> Volume:
    """Read a CT series (one file per slice, any order) into HU.

    Parameters
    ----------
    paths : the files of one series.
    subject : how errors name the series (default: the first file's path).

    Returns
    -------
    Volume with float32 array (z, y, x) in HU (stored values x RescaleSlope + RescaleIntercept), z ascending along the
    slice normal, in the order the scanner stored it (see ``dose_grid`` for the standard orientation); attrs
    ``patient_position``: Patient Position (0018,5100) as written ("" when absent).
    """
    subject = subject or str(paths[0])
    headers = [read_header(Path(p), f"{subject}: {Path(p).name}") for p in paths]
    check_plausible_size(headers[0], len(headers), subject)
    for ds in headers:
        if ds.get("Modality") != "CT":
            raise IngestError(subject, f"expected CT slices, found Modality {ds.get('Modality')!r}")
        if int(ds.get("NumberOfFrames", 1) or 1) != 1:
            raise IngestError(subject, "multi-frame CT (Enhanced CT) is not supported; export single-frame slices")
    order, grid = slice_stack_grid(headers, subject)
    hu = np.empty(grid.shape, dtype=np.float32)
    for k, index in enumerate(order):
        path = Path(paths[index])
        ds = read_full(path, f"{subject}: {path.name}")
        pixels = pixel_array(ds, f"{subject}: {path.name}")
        if pixels.shape != grid.shape[1:]:
            raise IngestError(f"{subject}: {path.name}", f"pixel data shape {pixels.shape} does not match the header")
        slope = float(ds.get("RescaleSlope", 1.0) or 1.0)
        intercept = float(ds.get("RescaleIntercept", 0.0) or 0.0)
        hu[k] = pixels.astype(np.float32) * np.float32(slope) + np.float32(intercept)
    bad = int(np.count_nonzero(~np.isfinite(hu)))
    if bad:
        raise IngestError(subject, f"{bad} CT voxels are NaN or infinite")
    position = str(headers[order[0]].get("PatientPosition", "") or "").strip().upper()
    return Volume(hu, grid, "HU", {"patient_position": position})
