"""Undo whatever decay correction a SPECT file applied: stored activity is always the activity at the acquisition start.

The file says what it did in Decay Correction (0054,1102; DICOM PS3.3 C.8.9.1, PET Series Module), with Decay Factor
(0054,1321; C.8.9.4, PET Image Module) and Decay Correction DateTime (0018,9701; C.8.22, Enhanced PET) where given, at
the top level, per slice file or per frame (Multi-frame Functional Groups, C.7.6.16):

- ``START``: the values are the activity at the acquisition start: kept as they are.
- ``ADMIN``: corrected back to the administration time: multiplied by ``exp(-lambda (t_start - t_ref))``.
- ``NONE``: the mean over the frame duration T (ActualFrameDuration (0018,1242) ms, Acquisition Duration
  (0018,9073) s, or for NM the Rotation Information Sequence's frame duration x frames): the activity at the frame's
  start is ``mean x lambda T / (1 - exp(-lambda T))``. Without a duration the values are taken as they are and the
  size of that assumption is stated.
- absent (most NM reconstructions): the values are taken as the activity at the acquisition start.

``t_ref`` is the Decay Correction DateTime where given, else the acquisition start (START) or the
RadiopharmaceuticalStartDateTime (ADMIN). ``t_start`` is the series' earliest acquisition time, the one
``hours_post_injection`` counts to; a slice acquired later (a second PET bed) under NONE is also decayed back to it.
Decay Factor is "the decay factor that was used to scale this image" (C.8.9.4): it is cross-checked against
``exp(lambda (t_slice - t_ref))`` and a disagreement over 1 % is reported. The half-life is the nuclide's ICRP-107 one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import numpy as np
from pydicom.dataset import Dataset

from cohort_dosimetry.io._errors import IngestError
from cohort_dosimetry.io._headers import dicom_datetime, frame_attribute

DECAY_CORRECTIONS = ("NONE", "START", "ADMIN")
#: A Decay Factor that differs from the one the times imply by more than this is reported.
DECAY_FACTOR_TOLERANCE = 0.01
#: A correction that changes the activity by more than this fraction is reported.
REPORTED_CORRECTION = 0.001
#: The acquisition duration used to state the size of the NONE-without-duration assumption.
TYPICAL_ACQUISITION_S = 1800.0


@dataclass(frozen=True)
class SliceDecay:
    """What the header says about the decay correction of one slice (one file or one frame)."""

    correction: str | None  # NONE, START, ADMIN or None (absent)
    factor_in_file: float | None
    reference: datetime | None  # Decay Correction DateTime, where given
    duration_s: float | None
    acquired: datetime  # the slice's own acquisition start


@dataclass(frozen=True)
class DecayUndone:
    """The factors (z,) the slices were multiplied by, the attrs recording it, and notes for the ingest report."""

    factors: np.ndarray
    attrs: dict
    notes: tuple[str, ...]


def slice_decay(ds: Dataset, frame: int | None, acquired: datetime, subject: str) -> SliceDecay:
    """The decay-correction attributes applying to ``frame`` of ``ds`` (None: a single-frame file)."""
    correction = frame_attribute(ds, "DecayCorrection", frame)
    correction = str(correction).strip().upper() if correction not in (None, "") else None
    if correction is not None and correction not in DECAY_CORRECTIONS:
        raise IngestError(
            subject, f"unknown Decay Correction (0054,1102) {correction!r}: expected NONE, START or ADMIN"
        )
    factor = frame_attribute(ds, "DecayFactor", frame)
    factor = float(factor) if factor not in (None, "") else None
    if factor is not None and not (np.isfinite(factor) and factor > 0):
        raise IngestError(subject, f"Decay Factor (0054,1321) {factor!r} is not a positive number")
    reference_value = frame_attribute(ds, "DecayCorrectionDateTime", frame)
    reference = None
    if reference_value not in (None, ""):
        holder = Dataset()
        holder.DecayCorrectionDateTime = reference_value
        try:
            reference = dicom_datetime(holder, "DecayCorrectionDateTime", None, None)
        except ValueError:
            raise IngestError(
                subject, f"Decay Correction DateTime (0018,9701) {reference_value!r} is malformed"
            ) from None
    return SliceDecay(correction, factor, reference, _duration_s(ds, frame), acquired)


def _duration_s(ds: Dataset, frame: int | None) -> float | None:
    """How long the slice's counts were collected, s; None when the header does not say."""
    candidates = []
    seconds = frame_attribute(ds, "AcquisitionDuration", frame)  # (0018,9073), s
    candidates.append(float(seconds) if seconds not in (None, "") else None)
    for keyword in ("FrameAcquisitionDuration", "ActualFrameDuration"):  # (0018,9220), (0018,1242): ms
        ms = frame_attribute(ds, keyword, frame)
        candidates.append(float(ms) / 1000.0 if ms not in (None, "") else None)
    rotations = ds.get("RotationInformationSequence") or []  # NM: per rotation, ms per view x views
    total_ms = 0.0
    for rotation in rotations:
        ms, views = rotation.get("ActualFrameDuration"), rotation.get("NumberOfFramesInRotation")
        if ms in (None, "") or views in (None, ""):
            total_ms = 0.0
            break
        total_ms += float(ms) * int(views)
    candidates.append(total_ms / 1000.0 if total_ms > 0 else None)
    for value in candidates:
        if value is not None and np.isfinite(value) and value > 0:
            return value
    return None


def undo_decay_correction(
    slices: Sequence[SliceDecay], start: datetime, injection: datetime, half_life_s: float
) -> DecayUndone:
    """Factors (z,) that turn each slice's values into the activity at ``start`` (the acquisition start); see the
    module docstring for the rules. ``half_life_s``: the nuclide's physical half-life (ICRP-107)."""
    rate = np.log(2.0) / half_life_s
    factors, references, notes = [], [], []
    for s in slices:
        if s.correction in ("ADMIN", "START"):
            reference = s.reference or (injection if s.correction == "ADMIN" else start)
            factor = np.exp(-rate * (start - reference).total_seconds())
            implied = float(np.exp(rate * (s.acquired - reference).total_seconds()))
        elif s.correction == "NONE":
            reference = None
            decayed = float(np.exp(rate * (s.acquired - start).total_seconds()))
            factor = decayed * (_mean_to_start(rate, s.duration_s) if s.duration_s else 1.0)
            implied = 1.0
        else:
            reference, factor, implied = None, 1.0, None
        factors.append(float(factor))
        references.append(reference)
        if (
            s.factor_in_file is not None
            and implied is not None
            and abs(s.factor_in_file / implied - 1) > DECAY_FACTOR_TOLERANCE
        ):
            notes.append(
                f"Decay Factor {s.factor_in_file:g} in the file disagrees with the {implied:.6g} implied by "
                f"Decay Correction {s.correction} ("
                + (f"reference {reference.isoformat()}, " if reference is not None else "no reference, ")
                + f"acquired "
                f"{s.acquired.isoformat()}) by {100 * abs(s.factor_in_file / implied - 1):.2g} %; the "
                "times were used"
            )
        elif (
            s.factor_in_file is not None and s.correction is None and abs(s.factor_in_file - 1) > DECAY_FACTOR_TOLERANCE
        ):
            notes.append(
                f"Decay Factor {s.factor_in_file:g} without Decay Correction (0054,1102): the values were "
                "taken as the activity at the acquisition start"
            )
    missing_duration = [s for s in slices if s.correction == "NONE" and not s.duration_s]
    if missing_duration:
        typical = _mean_to_start(rate, TYPICAL_ACQUISITION_S) - 1
        lost = 1 - np.exp(-rate * TYPICAL_ACQUISITION_S)
        notes.append(
            f"Decay Correction NONE without a frame or acquisition duration: the values (a mean over the "
            f"acquisition) were taken as the activity at its start; over a {TYPICAL_ACQUISITION_S / 60:g}-min "
            f"acquisition the activity decays by {100 * lost:.2g} %, so this understates it by about "
            f"{100 * typical:.2g} %"
        )
    factors_array = np.asarray(factors, dtype=np.float64)
    corrections = [s.correction for s in slices]
    attrs = {
        "activity_reference_datetime": start.isoformat(),
        "decay_correction_in_file": _uniform(corrections),
        "decay_correction_reference_datetime": _uniform([r.isoformat() if r else None for r in references]),
        "decay_factor_in_file": _uniform([s.factor_in_file for s in slices]),
        "decay_frame_duration_s": _uniform([s.duration_s if s.correction == "NONE" else None for s in slices]),
        "decay_correction_applied": _uniform([float(f) for f in factors_array]),
    }
    worst = float(np.max(np.abs(factors_array - 1))) if factors_array.size else 0.0
    if worst > REPORTED_CORRECTION:
        written = "/".join(sorted({c or "(absent)" for c in corrections}))
        low, high = float(factors_array.min()), float(factors_array.max())
        factor_text = f"{low:.6g}" if np.isclose(low, high, rtol=1e-9) else f"{low:.6g} to {high:.6g}"
        notes.append(
            f"decay correction undone: the file's values were decay-corrected {written}"
            f"{_reference_text(references)}; multiplied by {factor_text} to give the activity at the "
            f"acquisition start {start.isoformat()}"
        )
    return DecayUndone(factors_array, attrs, tuple(dict.fromkeys(notes)))


def _mean_to_start(rate: float, duration_s: float) -> float:
    """Activity at the start of a frame of ``duration_s`` over its decay-weighted mean: lambda T / (1 - e^-lambda T)."""
    x = rate * duration_s
    return float(x / -np.expm1(-x))


def _reference_text(references: list[datetime | None]) -> str:
    given = sorted({r for r in references if r is not None})
    return f" to {given[0].isoformat()}" if len(given) == 1 else ""


def _uniform(values: list):
    """One value when every slice has the same, else the list in slice (z) order."""
    return values[0] if values and all(v == values[0] for v in values) else list(values)
