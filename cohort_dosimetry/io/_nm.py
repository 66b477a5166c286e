"""Reconstructed SPECT (NM Image Storage) into activity concentration, with its radiopharmaceutical metadata.

Accepts one multi-frame NM object (frames stacked along the slice normal from the Detector Information Sequence's
ImagePositionPatient, SpacingBetweenSlices apart) or a single-frame series (one file per slice, sorted and checked
like a CT series). Units (0054,1001) BQML are Bq/mL already; CNTS need a :class:`CountsCalibration`.
"""
from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset

from cohort_dosimetry.io._ct import orientation, slice_stack_grid
from cohort_dosimetry.io._errors import IngestError
from cohort_dosimetry.phantoms._identity import SYNTHETIC_MODEL_NAME
from cohort_dosimetry.io._headers import (
    acquisition_datetime,
    check_plausible_size,
    dicom_datetime,
    float_triplets,
    pixel_array,
    read_full,
    read_header,
    reader_of_input,
)
from cohort_dosimetry.io._volume import Volume, grid_from_dicom

_ELEMENTS = {"lutetium": "Lu", "yttrium": "Y", "technetium": "Tc", "iodine": "I", "indium": "In", "gallium": "Ga"}


@dataclass(frozen=True)
class CountsCalibration:
    """How reconstructed counts become activity: system sensitivity in counts per second per MBq and the acquisition
    duration in seconds over which the counts were collected (site configuration; not reliably in the header)."""

    sensitivity_cps_per_mbq: float
    acquisition_duration_s: float

    def __post_init__(self) -> None:
        if not (self.sensitivity_cps_per_mbq > 0 and self.acquisition_duration_s > 0):
            raise ValueError(f"a counts calibration needs positive sensitivity and duration, got {self}")


@dataclass(frozen=True)
class SpectImage:
    """A reconstructed SPECT: ``activity`` (z, y, x) float32 Bq/mL and what the header says about the dose given."""

    activity: Volume
    units_in_file: str
    nuclide: str
    half_life_s: float
    administered_activity_bq: float
    injection_datetime: datetime
    acquisition_datetime: datetime
    #: written by cohort-dosimetry's virtual-patient exporter (ManufacturerModelName), i.e. not patient data
    synthetic: bool = False

    @property
    def hours_post_injection(self) -> float:
        return (self.acquisition_datetime - self.injection_datetime).total_seconds() / 3600.0


@reader_of_input
def read_nm(
    paths: Sequence[Path], counts_calibration: CountsCalibration | None = None, subject: str | None = None
) -> SpectImage:
    """Read a reconstructed NM series (one multi-frame file, or single-frame slices) into Bq/mL.

    Raises IngestError naming ``subject`` (default: the first file) for projections instead of a reconstruction,
    unknown units, counts without calibration, missing radiopharmaceutical data, NaNs or a bad geometry.
    """
    subject = subject or str(paths[0])
    paths = [Path(p) for p in paths]
    headers = [read_header(p, f"{subject}: {p.name}") for p in paths]
    first = headers[0]
    if first.get("Modality") != "NM":
        raise IngestError(subject, f"expected NM, found Modality {first.get('Modality')!r}")
    image_type = [str(v).upper() for v in (first.get("ImageType") or [])]
    if not any(v.startswith("RECON") for v in image_type):
        written = "/".join(image_type) or "(none)"
        raise IngestError(subject, f"NM ImageType {written} is not a reconstructed tomographic image (RECON TOMO)")
    units = str(first.get("Units", "")).upper()
    if units not in ("BQML", "CNTS"):
        raise IngestError(subject, f"unknown NM units {units or '(missing Units (0054,1001))'}: expected BQML or CNTS")
    if units == "CNTS" and counts_calibration is None:
        raise IngestError(
            subject,
            "NM units are CNTS (counts): a counts calibration (sensitivity in cps/MBq and acquisition duration in s) "
            "must be configured to convert them to activity",
        )
    injection, activity_bq, nuclide, half_life_s = _radiopharmaceutical(first, subject)
    acquired = acquisition_datetime(first)
    if acquired is None:
        raise IngestError(subject, "no acquisition date and time (AcquisitionDateTime / AcquisitionDate+Time)")
    if acquired < injection:
        raise IngestError(subject, f"acquired {injection - acquired} before the injection")

    n_frames = int(first.get("NumberOfFrames", 1) or 1)
    if len(paths) == 1 and n_frames > 1:
        check_plausible_size(first, n_frames, subject)
        ds = read_full(paths[0], subject)
        grid = _multiframe_grid(ds, n_frames, subject)
        stored = pixel_array(ds, subject).astype(np.float32).reshape(grid.shape)
        values = stored * np.float32(_slope(ds)) + np.float32(_intercept(ds))
    else:
        check_plausible_size(first, len(paths), subject)
        order, grid = slice_stack_grid([_with_plane_position(h, subject) for h in headers], subject)
        values = np.empty(grid.shape, dtype=np.float32)
        for k, index in enumerate(order):
            ds = read_full(paths[index], f"{subject}: {paths[index].name}")
            pixels = pixel_array(ds, f"{subject}: {paths[index].name}").astype(np.float32)
            values[k] = pixels.reshape(grid.shape[1:]) * np.float32(_slope(ds)) + np.float32(_intercept(ds))
    bad = int(np.count_nonzero(~np.isfinite(values)))
    if bad:
        raise IngestError(subject, f"{bad} SPECT voxels are NaN or infinite")
    if units == "CNTS":
        # counts / (cps/MBq * s) = MBq in the voxel; x 1e6 -> Bq; / voxel volume (mL) -> Bq/mL.
        calibration = counts_calibration
        scale = 1e6 / (
            calibration.sensitivity_cps_per_mbq * calibration.acquisition_duration_s * grid.voxel_volume_ml
        )
        values *= np.float32(scale)
    return SpectImage(
        activity=Volume(values, grid, "Bq/mL"),
        units_in_file=units,
        nuclide=nuclide,
        half_life_s=half_life_s,
        administered_activity_bq=activity_bq,
        injection_datetime=injection,
        acquisition_datetime=acquired,
        synthetic=first.get("ManufacturerModelName") == SYNTHETIC_MODEL_NAME,
    )


def _radiopharmaceutical(ds: Dataset, subject: str) -> tuple[datetime, float, str, float]:
    sequence = ds.get("RadiopharmaceuticalInformationSequence")
    if not sequence:
        raise IngestError(subject, "no Radiopharmaceutical Information Sequence: injection time and activity unknown")
    item = sequence[0]
    try:
        injection = dicom_datetime(item, "RadiopharmaceuticalStartDateTime", None, None)
    except Exception:
        injection = None
    if injection is None:
        raise IngestError(
            subject,
            "RadiopharmaceuticalStartDateTime (injection date and time) is missing or malformed; a start time "
            "without a date is ambiguous for scans days after injection",
        )
    try:
        activity_bq = float(item.get("RadionuclideTotalDose"))
    except (TypeError, ValueError):
        activity_bq = float("nan")
    if not (np.isfinite(activity_bq) and activity_bq > 0):
        raise IngestError(subject, "RadionuclideTotalDose (administered activity, Bq) is missing or not positive")
    try:
        half_life_s = float(item.get("RadionuclideHalfLife"))
    except (TypeError, ValueError):
        half_life_s = float("nan")
    codes = item.get("RadionuclideCodeSequence") or []
    meaning = str(codes[0].get("CodeMeaning", "")) if codes else ""
    return injection, activity_bq, _nuclide_name(meaning), half_life_s


def _nuclide_name(code_meaning: str) -> str:
    """'^177^Lutetium' or 'Lutetium-177' -> 'Lu177'; anything unrecognised is kept as written."""
    mass = re.search(r"\d+", code_meaning)
    for name, symbol in _ELEMENTS.items():
        if name in code_meaning.lower() and mass:
            return f"{symbol}{mass.group()}"
    return code_meaning


def _multiframe_grid(ds: Dataset, n_frames: int, subject: str):
    detectors = ds.get("DetectorInformationSequence") or []
    geometry = detectors[0] if detectors else ds
    if "ImagePositionPatient" not in geometry or "ImageOrientationPatient" not in geometry:
        raise IngestError(
            subject, "multi-frame NM without ImagePositionPatient/ImageOrientationPatient in the Detector Information "
            "Sequence: its position in the patient is unknown"
        )
    row, col, normal = orientation(geometry, subject)
    position = float_triplets(geometry.ImagePositionPatient, 3, subject, "ImagePositionPatient")
    pixel_spacing = float_triplets(ds.get("PixelSpacing"), 2, subject, "PixelSpacing")
    spacing = ds.get("SpacingBetweenSlices") or ds.get("SliceThickness")
    if spacing is None or float(spacing) <= 0 or np.any(pixel_spacing <= 0):
        raise IngestError(subject, "multi-frame NM needs positive PixelSpacing and SpacingBetweenSlices")
    return grid_from_dicom(
        position, row, col, normal, pixel_spacing, float(spacing), (n_frames, int(ds.Rows), int(ds.Columns))
    )


def _with_plane_position(ds: Dataset, subject: str) -> Dataset:
    """Single-frame NM may keep its plane position in the Detector Information Sequence: lift it to the top level."""
    if "ImagePositionPatient" in ds:
        return ds
    detectors = ds.get("DetectorInformationSequence") or []
    if not detectors or "ImagePositionPatient" not in detectors[0]:
        raise IngestError(subject, "NM slice without ImagePositionPatient: its position in the patient is unknown")
    lifted = Dataset()
    lifted.update(ds)
    lifted.ImagePositionPatient = detectors[0].ImagePositionPatient
    lifted.ImageOrientationPatient = detectors[0].ImageOrientationPatient
    return lifted


def _slope(ds: Dataset) -> float:
    value = ds.get("RescaleSlope")
    return 1.0 if value in (None, "") else float(value)


def _intercept(ds: Dataset) -> float:
    value = ds.get("RescaleIntercept")
    return 0.0 if value in (None, "") else float(value)
