"""Reconstructed SPECT (NM Image Storage, or PT Image Storage in Bq/mL) into activity concentration at the acquisition
start, with its radiopharmaceutical metadata.

Accepts one multi-frame NM object (frames stacked along the slice normal from the Detector Information Sequence's
ImagePositionPatient, SpacingBetweenSlices apart) or a single-frame series (one file per slice, NM or PT, sorted and
checked like a CT series). Values become Bq/mL by, in this order: a Real World Value Mapping (0040,9096) in UCUM
``Bq/ml`` (its slope and intercept replace the rescale; per frame where the functional groups hold it), Units
(0054,1001) BQML with the rescale, or Units CNTS with a :class:`CountsCalibration`. Then the file's decay correction is
undone (:mod:`._decay`) and negative voxels (filtered back-projection undershoot) are set to zero, counted and reported:
no dose method ever sees a negative activity. The nuclide is read by :mod:`._radionuclide`; only Lu-177 is accepted.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset

from cohort_dosimetry.constants import SYNTHETIC_MODEL_NAME
from cohort_dosimetry.grid import grid_from_dicom
from cohort_dosimetry.io._ct import orientation, slice_stack_grid
from cohort_dosimetry.io._decay import SliceDecay, slice_decay, undo_decay_correction
from cohort_dosimetry.io._errors import IngestError
from cohort_dosimetry.io._headers import (
    acquisition_datetime,
    check_plausible_size,
    dicom_datetime,
    float_triplets,
    frame_attribute,
    pixel_array,
    read_full,
    read_header,
    reader_of_input,
)
from cohort_dosimetry.io._radionuclide import half_life_s as icrp107_half_life_s
from cohort_dosimetry.io._radionuclide import read_nuclide
from cohort_dosimetry.io._volume import Volume

#: Real World Value Mapping units (UCUM code values, compared case-insensitively) that are activity concentration,
#: with their factor to Bq/mL.
BQ_PER_ML_UNITS = {"bq/ml": 1.0, "kbq/ml": 1e3, "mbq/ml": 1e6}
#: The Real World Value Mapping and the Units BQML rescale of one file must agree to this fraction, or it is reported.
MAPPING_AGREEMENT = 1e-3


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
    #: "NM", or "PT" for SPECT that a workstation exported as PT images in Bq/mL
    modality: str = "NM"
    #: the header attributes the nuclide was read from, "stated by the user ..." or "assumed ..."
    nuclide_source: str = ""
    #: how stored values became Bq/mL (Real World Value Mapping, Units BQML + rescale, or counts calibration)
    value_mapping: str = ""
    #: what the file's decay correction was and what was undone (:func:`._decay.undo_decay_correction` attrs)
    decay: dict = field(default_factory=dict)
    #: voxels that were negative after the conversion to Bq/mL and were set to 0, and the magnitude (>= 0, Bq) of
    #: the negative activity they held; the total activity rose by that much
    negative_voxels_clamped: int = 0
    negative_activity_removed_bq: float = 0.0
    #: projection time summed over all views, s (:func:`acquisition_duration_s`); None when the header does not say
    acquisition_duration_s: float | None = None
    #: what the reader assumed or changed, for the ingest report
    notes: tuple[str, ...] = ()

    @property
    def hours_post_injection(self) -> float:
        return (self.acquisition_datetime - self.injection_datetime).total_seconds() / 3600.0

    def reading_attrs(self) -> dict:
        """The scan attrs that record how the file was read: ``nuclide_source``, ``spect_modality``,
        ``spect_value_mapping``, the decay attrs (``activity_reference_datetime``, ``decay_correction_in_file``,
        ``decay_correction_reference_datetime``, ``decay_factor_in_file``, ``decay_frame_duration_s``,
        ``decay_correction_applied``; a list in slice (z) order where slices differ), ``negative_voxels_clamped``,
        ``negative_activity_removed_bq`` and, where the header gives it, ``acquisition_duration_s``."""
        attrs = {
            "nuclide_source": self.nuclide_source,
            "spect_modality": self.modality,
            "spect_value_mapping": self.value_mapping,
            **self.decay,
            "negative_voxels_clamped": self.negative_voxels_clamped,
            "negative_activity_removed_bq": self.negative_activity_removed_bq,
        }
        if self.acquisition_duration_s is not None:
            attrs["acquisition_duration_s"] = self.acquisition_duration_s
        return attrs


@reader_of_input
def read_nm(
    paths: Sequence[Path],
    counts_calibration: CountsCalibration | None = None,
    subject: str | None = None,
    nuclide: str | None = None,
) -> SpectImage:
    """Read a reconstructed SPECT (one multi-frame NM file, or single-frame NM or PT slices) into Bq/mL at the
    acquisition start (the earliest acquisition time of the series).

    ``nuclide``: the nuclide the user states for SPECT whose header names none (only "Lu177" is accepted).
    Raises IngestError naming ``subject`` (default: the first file) for projections instead of a reconstruction,
    unknown units, counts without calibration, missing radiopharmaceutical data, a nuclide other than Lu-177 or
    contradicting nuclide sources, NaNs or a bad geometry.
    """
    subject = subject or str(paths[0])
    paths = [Path(p) for p in paths]
    headers = [read_header(p, f"{subject}: {p.name}") for p in paths]
    first = headers[0]
    modality = str(first.get("Modality", ""))
    if modality not in ("NM", "PT"):
        raise IngestError(subject, f"expected NM (or PT in Bq/mL), found Modality {first.get('Modality')!r}")
    if modality == "NM":
        image_type = [str(v).upper() for v in (first.get("ImageType") or [])]
        if not any(v.startswith("RECON") for v in image_type):
            written = "/".join(image_type) or "(none)"
            raise IngestError(subject, f"NM ImageType {written} is not a reconstructed tomographic image (RECON TOMO)")
    n_frames = int(first.get("NumberOfFrames", 1) or 1)
    multiframe = len(paths) == 1 and n_frames > 1
    units = str(first.get("Units", "") or "").strip().upper()
    if _bq_per_ml_mapping(first, 0 if multiframe else None) is None:
        if modality == "PT" and units != "BQML":
            raise IngestError(
                subject,
                f"PT units {units or '(missing Units (0054,1001))'} are not activity "
                "concentration: PT images are read as SPECT only in BQML or with a Real World "
                "Value Mapping in Bq/ml",
            )
        if units not in ("BQML", "CNTS"):
            raise IngestError(
                subject,
                f"unknown {modality} units {units or '(missing Units (0054,1001))'}: expected "
                "BQML or CNTS, or a Real World Value Mapping (0040,9096) in Bq/ml",
            )
        if units == "CNTS" and counts_calibration is None:
            raise IngestError(
                subject,
                f"{modality} units are CNTS (counts): a counts calibration (sensitivity in cps/MBq and acquisition "
                "duration in s) must be configured to convert them to activity",
            )
    injection, activity_bq, half_life_in_header, reading = _radiopharmaceutical(first, subject, nuclide)
    times = [t for t in (acquisition_datetime(h) for h in headers) if t is not None]
    if not times:
        raise IngestError(subject, "no acquisition date and time (AcquisitionDateTime / AcquisitionDate+Time)")
    acquired = min(times)  # the acquisition start: a later slice is a later bed of the same series
    if acquired < injection:
        raise IngestError(subject, f"acquired {injection - acquired} before the injection")

    decays: list[SliceDecay] = []
    mappings: list[tuple[float, float, str]] = []
    if multiframe:
        check_plausible_size(first, n_frames, subject)
        ds = read_full(paths[0], subject)
        grid = _multiframe_grid(ds, n_frames, subject)
        values = pixel_array(ds, subject).astype(np.float32).reshape(grid.shape)
        for k in range(n_frames):
            mappings.append(_value_mapping(ds, k, units, subject))
            decays.append(slice_decay(ds, k, _frame_acquired(ds, k, acquired), subject))
        slopes = np.asarray([m[0] for m in mappings], dtype=np.float32)[:, None, None]
        intercepts = np.asarray([m[1] for m in mappings], dtype=np.float32)[:, None, None]
        values = values * slopes + intercepts
    else:
        check_plausible_size(first, len(paths), subject)
        order, grid = slice_stack_grid([_with_plane_position(h, subject) for h in headers], subject)
        values = np.empty(grid.shape, dtype=np.float32)
        for k, index in enumerate(order):
            name = f"{subject}: {paths[index].name}"
            ds = read_full(paths[index], name)
            pixels = pixel_array(ds, name).astype(np.float32)
            slope, intercept, source = _value_mapping(ds, None, units, name)
            mappings.append((slope, intercept, source))
            values[k] = pixels.reshape(grid.shape[1:]) * np.float32(slope) + np.float32(intercept)
            decays.append(slice_decay(ds, None, acquisition_datetime(headers[index]) or acquired, name))
    sources = sorted({m[2] for m in mappings})
    if len(sources) > 1:
        raise IngestError(subject, f"the slices map stored values to activity in different ways ({'; '.join(sources)})")
    value_mapping = sources[0]
    bad = int(np.count_nonzero(~np.isfinite(values)))
    if bad:
        raise IngestError(subject, f"{bad} SPECT voxels are NaN or infinite")
    notes = list(reading.notes) + _mapping_disagreement(first, 0 if multiframe else None, units, value_mapping)
    if value_mapping.startswith("Units CNTS"):
        # counts / (cps/MBq * s) = MBq in the voxel; x 1e6 -> Bq; / voxel volume (mL) -> Bq/mL.
        calibration = counts_calibration
        assert calibration is not None  # Units CNTS without a calibration was refused above
        scale = 1e6 / (calibration.sensitivity_cps_per_mbq * calibration.acquisition_duration_s * grid.voxel_volume_ml)
        values *= np.float32(scale)
        value_mapping += (
            f" / counts calibration ({calibration.sensitivity_cps_per_mbq:g} cps/MBq, "
            f"{calibration.acquisition_duration_s:g} s)"
        )
    undone = undo_decay_correction(decays, acquired, injection, icrp107_half_life_s(reading.nuclide))
    if np.any(undone.factors != 1.0):
        values *= undone.factors.astype(np.float32)[:, None, None]
    notes += undone.notes
    clamped, removed_bq = _clamp_negative(values, grid.voxel_volume_ml)
    if clamped:
        total_bq = float(values.sum(dtype=np.float64)) * grid.voxel_volume_ml
        share = f"{100 * removed_bq / total_bq:.2g} % of" if total_bq > 0 else "more than"
        notes.append(
            f"{clamped} SPECT voxels were negative (filtered back-projection undershoot) and were set to 0 "
            f"Bq/mL: {removed_bq:.4g} Bq of negative activity removed ({share} the remaining {total_bq:.4g} "
            "Bq)"
        )
    return SpectImage(
        activity=Volume(values, grid, "Bq/mL"),
        units_in_file=units,
        nuclide=reading.nuclide,
        half_life_s=half_life_in_header,
        administered_activity_bq=activity_bq,
        injection_datetime=injection,
        acquisition_datetime=acquired,
        synthetic=first.get("ManufacturerModelName") == SYNTHETIC_MODEL_NAME,
        modality=modality,
        nuclide_source=reading.source,
        value_mapping=value_mapping,
        decay=undone.attrs,
        negative_voxels_clamped=clamped,
        negative_activity_removed_bq=removed_bq,
        acquisition_duration_s=acquisition_duration_s(first),
        notes=tuple(notes),
    )


def acquisition_duration_s(ds: Dataset) -> float | None:
    """Projection time of a SPECT summed over all its views, s: per item of the Rotation Information Sequence
    (0054,0052), Actual Frame Duration (0018,1242; "nominal acquisition time per angular position", ms) x Number of
    Frames in Rotation (0054,0053; the angular views of the rotation), summed over the items (DICOM PS3.3 C.8.4.12,
    NM Tomo Acquisition Module; one item per rotation, Number of Rotations (0054,0051)).

    Not multiplied by Number of Detectors (0054,0021): a reconstruction (RECON TOMO) has 1 there whatever the camera
    had, its views being one set however many heads acquired them (PS3.3 C.8.4.8.1.3). So this is the time that,
    times the activity and one head's sensitivity (cps/MBq), gives the counts. None when the sequence is absent or
    empty or an item lacks a positive duration or view count: never guessed.
    """
    rotations = ds.get("RotationInformationSequence") or []
    total_ms = 0.0
    for rotation in rotations:
        try:
            ms = float(rotation.get("ActualFrameDuration"))
            views = int(rotation.get("NumberOfFramesInRotation"))
        except (TypeError, ValueError):
            return None
        if not (np.isfinite(ms) and ms > 0 and views > 0):
            return None
        total_ms += ms * views
    return total_ms / 1000.0 if total_ms > 0 else None


def in_activity_concentration(ds: Dataset) -> bool:
    """Whether the header's stored values map to Bq/mL without a calibration: Units (0054,1001) BQML or a Real World
    Value Mapping in Bq/ml (top level, shared or first frame's functional groups). Discovery takes a PT series as a
    SPECT scan only then."""
    if str(ds.get("Units", "") or "").strip().upper() == "BQML":
        return True
    return _bq_per_ml_mapping(ds, 0) is not None


def _radiopharmaceutical(ds: Dataset, subject: str, stated_nuclide: str | None):
    """(injection datetime, administered activity Bq, header half-life s or NaN, :class:`NuclideReading`)."""
    sequence = ds.get("RadiopharmaceuticalInformationSequence")
    if not sequence:
        raise IngestError(subject, "no Radiopharmaceutical Information Sequence: injection time and activity unknown")
    item = sequence[0]
    reading = read_nuclide(item, subject, stated_nuclide)
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
    return injection, activity_bq, half_life_s, reading


def _bq_per_ml_mapping(ds: Dataset, frame: int | None) -> tuple[float, float, str] | None:
    """(slope, intercept) from stored values to Bq/mL by the Real World Value Mapping (DICOM PS3.3 C.7.6.16.2.11)
    whose Measurement Units Code Sequence is UCUM Bq/ml (or kBq/ml, MBq/ml), and a description; None without one.
    Items in other units (e.g. SUV) and lookup-table mappings are passed over."""
    for item in frame_attribute(ds, "RealWorldValueMappingSequence", frame) or []:
        codes = item.get("MeasurementUnitsCodeSequence") or []
        code = str(codes[0].get("CodeValue", "") or "").strip() if codes else ""
        slope = item.get("RealWorldValueSlope")
        if code.lower() not in BQ_PER_ML_UNITS or slope in (None, ""):
            continue
        intercept = item.get("RealWorldValueIntercept")
        scale = BQ_PER_ML_UNITS[code.lower()]
        intercept = 0.0 if intercept in (None, "") else float(intercept)
        return float(slope) * scale, intercept * scale, f"Real World Value Mapping (0040,9096) in {code}"
    return None


def _value_mapping(ds: Dataset, frame: int | None, units: str, subject: str) -> tuple[float, float, str]:
    """(slope, intercept, description): stored value x slope + intercept = Bq/mL, or counts for Units CNTS."""
    mapping = _bq_per_ml_mapping(ds, frame)
    if mapping is not None:
        return mapping
    own_units = str(ds.get("Units", "") or "").strip().upper() or units
    if own_units != units:
        raise IngestError(subject, f"the slices have different Units ({units} and {own_units})")
    slope = frame_attribute(ds, "RescaleSlope", frame)
    intercept = frame_attribute(ds, "RescaleIntercept", frame)
    return (
        1.0 if slope in (None, "") else float(slope),
        0.0 if intercept in (None, "") else float(intercept),
        f"Units {units} x Rescale Slope/Intercept",
    )


def _mapping_disagreement(ds: Dataset, frame: int | None, units: str, value_mapping: str) -> list[str]:
    """A note when a Real World Value Mapping in Bq/ml was used and the Units BQML rescale says otherwise."""
    if units != "BQML" or not value_mapping.startswith("Real World Value Mapping"):
        return []
    mapping = _bq_per_ml_mapping(ds, frame)
    assert mapping is not None  # value_mapping is this slice's Real World Value Mapping
    slope, intercept, _ = mapping
    rescale_slope = frame_attribute(ds, "RescaleSlope", frame)
    rescale_intercept = frame_attribute(ds, "RescaleIntercept", frame)
    rescale_slope = 1.0 if rescale_slope in (None, "") else float(rescale_slope)
    rescale_intercept = 0.0 if rescale_intercept in (None, "") else float(rescale_intercept)
    if abs(rescale_slope / slope - 1) <= MAPPING_AGREEMENT and abs(
        rescale_intercept - intercept
    ) <= MAPPING_AGREEMENT * abs(slope):
        return []
    return [
        f"the Real World Value Mapping (Bq/ml: slope {slope:g}, intercept {intercept:g}) and Units BQML with "
        f"Rescale Slope {rescale_slope:g} / Intercept {rescale_intercept:g} disagree; the mapping was used"
    ]


def _frame_acquired(ds: Dataset, frame: int, default: datetime) -> datetime:
    """A frame's own acquisition start (Frame Acquisition DateTime (0018,9074) in its functional groups), else
    ``default``."""
    value = frame_attribute(ds, "FrameAcquisitionDateTime", frame)
    if value in (None, ""):
        return default
    holder = Dataset()
    holder.FrameAcquisitionDateTime = value
    return dicom_datetime(holder, "FrameAcquisitionDateTime", None, None) or default


def _clamp_negative(values: np.ndarray, voxel_volume_ml: float) -> tuple[int, float]:
    """Set negative voxels of ``values`` (Bq/mL) to 0 in place; (how many, the magnitude of their activity in Bq)."""
    negative = values < 0
    count = int(np.count_nonzero(negative))
    if not count:
        return 0, 0.0
    removed_bq = -float(values[negative].sum(dtype=np.float64)) * voxel_volume_ml
    values[negative] = 0.0
    return count, removed_bq


def _multiframe_grid(ds: Dataset, n_frames: int, subject: str):
    detectors = ds.get("DetectorInformationSequence") or []
    geometry = detectors[0] if detectors else ds
    if "ImagePositionPatient" not in geometry or "ImageOrientationPatient" not in geometry:
        raise IngestError(
            subject,
            "multi-frame NM without ImagePositionPatient/ImageOrientationPatient in the Detector Information "
            "Sequence: its position in the patient is unknown",
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
