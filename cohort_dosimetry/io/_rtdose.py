"""External (e.g. Monte Carlo) dose imported as RTDOSE, recorded with its units exactly as given."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cohort_dosimetry.grid import grid_from_dicom
from cohort_dosimetry.io._ct import orientation
from cohort_dosimetry.io._errors import IngestError
from cohort_dosimetry.io._headers import check_plausible_size, float_triplets, pixel_array, read_full, reader_of_input
from cohort_dosimetry.io._volume import Volume


@dataclass(frozen=True)
class ExternalDose:
    """An RTDOSE grid: ``dose`` float32 Volume (z, y, x) in ``dose.units`` (DoseUnits as written: GY or RELATIVE);
    whether it is a total dose or a rate is not encoded in DICOM, so ``dose_type`` and ``summation_type`` are kept
    as given for the user to interpret."""

    dose: Volume
    dose_type: str
    summation_type: str


@reader_of_input
def read_rtdose(path: Path, subject: str | None = None) -> ExternalDose:
    """Read an RTDOSE grid: frames at ImagePositionPatient + GridFrameOffsetVector along the slice normal,
    values x DoseGridScaling."""
    subject = subject or str(path)
    ds = read_full(Path(path), subject)
    if ds.get("Modality") != "RTDOSE":
        raise IngestError(subject, f"expected RTDOSE, found Modality {ds.get('Modality')!r}")
    if "PixelData" not in ds:
        raise IngestError(subject, "RTDOSE without a dose grid (no Pixel Data): DVH-only objects are not imported")
    n_frames = int(ds.get("NumberOfFrames", 1) or 1)
    check_plausible_size(ds, n_frames, subject)
    row, col, normal = orientation(ds, subject)
    position = float_triplets(ds.get("ImagePositionPatient"), 3, subject, "ImagePositionPatient")
    pixel_spacing = float_triplets(ds.get("PixelSpacing"), 2, subject, "PixelSpacing")
    if n_frames > 1:
        offsets = float_triplets(ds.get("GridFrameOffsetVector"), n_frames, subject, "GridFrameOffsetVector")
        steps = np.diff(offsets)
        if steps[0] == 0 or np.any(np.abs(steps - steps[0]) > max(0.01 * abs(steps[0]), 0.02)):
            raise IngestError(subject, f"RTDOSE frames are not evenly spaced (GridFrameOffsetVector {list(offsets)})")
        spacing = float(steps[0])
    else:
        offsets, spacing = np.zeros(1), float(ds.get("SliceThickness") or 1.0)
    stored = pixel_array(ds, subject).astype(np.float32).reshape(n_frames, int(ds.Rows), int(ds.Columns))
    if spacing < 0:  # frames stacked against the normal: reverse them so z ascends along the normal
        stored, offsets, spacing = stored[::-1], offsets[::-1], -spacing
    grid = grid_from_dicom(position + offsets[0] * normal, row, col, normal, pixel_spacing, spacing, stored.shape)
    dose = stored * np.float32(float(ds.get("DoseGridScaling", 1.0) or 1.0))
    if not np.all(np.isfinite(dose)):
        raise IngestError(subject, "RTDOSE holds NaN or infinite values")
    units = str(ds.get("DoseUnits", "")).upper() or "UNKNOWN"
    return ExternalDose(Volume(dose, grid, units), str(ds.get("DoseType", "")), str(ds.get("DoseSummationType", "")))
