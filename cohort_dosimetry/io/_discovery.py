"""Find the scans in a folder of DICOM files of any layout: group, pair SPECT with CT, attach contours and dose.

Only headers are read (``stop_before_pixels``). Files are grouped by patient, study, series and frame of reference.
Each reconstructed SPECT (NM series with ImageType RECON ...) is one scan (one time point). Its CT is, by the first
rule that finds one:

1. ``same frame of reference``: a CT of the patient with the SPECT's FrameOfReferenceUID (the nearest in time if
   several);
2. ``same study, nearest time``: a CT of the same study, the nearest in acquisition time.

Contours: the DICOM SEG or RTSTRUCT objects that reference the paired CT series, else share its frame of reference;
a SEG is preferred (voxel masks, no rasterisation), then the most recent. External dose: an RTDOSE in the SPECT's or the
CT's frame of reference, the nearest in time. Time points are named tp1..tpN per patient by SPECT acquisition time.
"""
from __future__ import annotations

import hashlib
import os
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from pydicom.dataset import Dataset

from cohort_dosimetry.io._errors import IngestError, Problem
from cohort_dosimetry.io._headers import (
    NotADicomFile,
    acquisition_datetime,
    check_plausible_size,
    malformed_header_is,
    read_header,
)

SEG_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"
#: Modalities a scan is built from; other DICOM objects are noted (info) and left alone.
USED_MODALITIES = ("CT", "NM", "RTSTRUCT", "SEG", "RTDOSE")


@dataclass
class Series:
    """The files of one DICOM series and what discovery learnt from their headers."""

    series_uid: str
    modality: str
    patient_id: str
    study_uid: str
    frame_of_reference_uid: str
    acquired: datetime | None
    label: str
    files: list[Path] = field(default_factory=list)
    file_sha256: list[str] = field(default_factory=list)
    referenced_series: set[str] = field(default_factory=set)
    is_reconstruction: bool = False
    rows_cols_frames: tuple[int, int, int] = (0, 0, 0)


@dataclass
class ScanSources:
    """Everything one scan (one SPECT/CT time point of one patient) is built from."""

    patient_id: str
    timepoint: str
    spect: Series
    ct: Series | None
    ct_pairing: str  # "same frame of reference", "same study, nearest time", "no CT" or why the CT is missing
    contours: Series | None
    external_dose: Series | None

    @property
    def series(self) -> list[Series]:
        return [s for s in (self.spect, self.ct, self.contours, self.external_dose) if s is not None]

    @property
    def source_file_hashes(self) -> list[str]:
        return sorted(h for s in self.series for h in s.file_sha256)


@dataclass
class Discovery:
    """What :func:`discover_studies` found: ``scans`` in (patient, acquisition) order, ``problems`` for the report,
    and ``identifying_strings``: every patient name, name part, ID and birth date seen, for redacting messages."""

    root: Path
    scans: list[ScanSources]
    problems: list[Problem]
    identifying_strings: frozenset[str]


def discover_studies(dicom_dir: str | os.PathLike) -> Discovery:
    """Walk ``dicom_dir`` (any layout, any file names) and plan the scans to ingest; see the module docstring."""
    root = Path(dicom_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"DICOM folder {root} does not exist or is not a folder")
    problems: list[Problem] = []
    series: dict[str, Series] = {}
    patients_of: dict[str, set[str]] = defaultdict(set)
    identifying: set[str] = set()
    non_dicom: dict[str, list[str]] = defaultdict(list)
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = str(path.relative_to(root))
        try:
            ds = read_header(path, rel)
        except NotADicomFile:
            non_dicom[Path(rel).parts[0] if len(Path(rel).parts) > 1 else "."].append(rel)
            continue
        except IngestError as exc:
            problems.append(Problem("error", rel, exc.problem))
            continue
        try:
            with malformed_header_is(rel):
                _add_file(ds, path, rel, series, patients_of, identifying, problems)
        except IngestError as exc:
            problems.append(Problem("error", exc.subject, exc.problem))
    for folder, files in non_dicom.items():
        problems.append(Problem("info", folder, f"{len(files)} non-DICOM file(s) ignored (e.g. {files[0]})"))

    good: dict[str, Series] = {}
    rejected: dict[str, Series] = {}
    for uid, entry in series.items():
        if len(patients_of[uid]) > 1:
            problems.append(Problem("error", entry.label, f"the series holds files of {len(patients_of[uid])} "
                                    "different patients (PatientID); the whole series is rejected", entry.patient_id))
            rejected[uid] = entry
            continue
        try:
            _check_size(entry)
        except IngestError as exc:
            problems.append(Problem("error", exc.subject, exc.problem, entry.patient_id))
            rejected[uid] = entry
            continue
        good[uid] = entry

    scans = _plan_scans(good, rejected, problems)
    return Discovery(root, scans, problems, frozenset(identifying))


def _add_file(ds: Dataset, path: Path, rel: str, series: dict[str, Series], patients_of: dict[str, set[str]],
              identifying: set[str], problems: list[Problem]) -> None:
    """File one header under its series, or note why it is not used."""
    patient_id = str(ds.get("PatientID", "")).strip()
    identifying.update(_identifying_strings(ds))
    modality = str(ds.get("Modality", ""))
    if ds.get("SOPClassUID") == "1.2.840.10008.1.3.10":
        problems.append(Problem("info", rel, "DICOMDIR (media directory); ignored, the files are found directly"))
        return
    if modality not in USED_MODALITIES:
        problems.append(
            Problem("info", rel, f"modality {modality or '(none)'} is not used by ingest; ignored", patient_id)
        )
        return
    uid = str(ds.get("SeriesInstanceUID", "")) or f"(no SeriesInstanceUID) {rel}"
    if uid not in series:
        series[uid] = _new_series(ds, uid, modality, patient_id, rel)
    entry = series[uid]
    entry.files.append(path)
    entry.file_sha256.append(_sha256(path))
    patients_of[uid].add(patient_id)


def _plan_scans(series: dict[str, Series], rejected: dict[str, Series], problems: list[Problem]) -> list[ScanSources]:
    by_patient: dict[str, dict[str, list[Series]]] = defaultdict(lambda: defaultdict(list))
    for entry in series.values():
        by_patient[entry.patient_id][entry.modality].append(entry)
    scans = []
    for patient_id in sorted(by_patient):
        kinds = by_patient[patient_id]
        spects = []
        for nm in kinds["NM"]:
            if nm.is_reconstruction:
                spects.append(nm)
            else:
                problems.append(Problem("warning", nm.label, "NM series is not a reconstructed SPECT (ImageType has no "
                                        "RECON): projections or planar images are not ingested", patient_id))
        spects.sort(key=lambda s: (s.acquired or datetime.max, s.series_uid))
        used_contours, used_doses = set(), set()
        for number, spect in enumerate(spects, start=1):
            ct, rule = _pair_ct(spect, kinds["CT"])
            if ct is None:
                rejected_ct, _ = _pair_ct(spect, [r for r in rejected.values()
                                                  if r.modality == "CT" and r.patient_id == patient_id])
                rule = f"its CT ({rejected_ct.label}) was rejected" if rejected_ct else rule
            contours = _pick_contours(ct, kinds["SEG"] + kinds["RTSTRUCT"]) if ct else None
            dose = _pick_dose(spect, ct, kinds["RTDOSE"])
            used_contours.add(id(contours))
            used_doses.add(id(dose))
            scans.append(ScanSources(patient_id, f"tp{number}", spect, ct, rule, contours, dose))
        paired_cts = [scan.ct for scan in scans if scan.patient_id == patient_id and scan.ct is not None]
        for entry in kinds["SEG"] + kinds["RTSTRUCT"]:
            if id(entry) in used_contours:
                continue
            if any(_pick_contours(ct, [entry]) for ct in paired_cts):
                why = "contours not used: another contour object of the same CT was preferred (SEG first, then newest)"
            else:
                why = "contours not used: they reference no scan's CT and share no scan CT's frame of reference"
            problems.append(Problem("info", entry.label, why, patient_id))
        for entry in kinds["RTDOSE"]:
            if id(entry) not in used_doses:
                problems.append(Problem("info", entry.label, "RTDOSE not used: it shares no scan's frame of reference",
                                        patient_id))
    return scans


def _pair_ct(spect: Series, cts: list[Series]) -> tuple[Series | None, str]:
    def nearest(candidates):
        return min(candidates, key=lambda c: (_hours_apart(spect.acquired, c.acquired), c.series_uid))

    frame = spect.frame_of_reference_uid
    same_frame = [c for c in cts if frame and c.frame_of_reference_uid == frame]
    if same_frame:
        return nearest(same_frame), "same frame of reference"
    same_study = [c for c in cts if c.study_uid == spect.study_uid]
    if same_study:
        return nearest(same_study), "same study, nearest time"
    return None, "no CT"


def _pick_contours(ct: Series, candidates: list[Series]) -> Series | None:
    referencing = [c for c in candidates if ct.series_uid in c.referenced_series]
    pool = referencing or [
        c for c in candidates if c.frame_of_reference_uid and c.frame_of_reference_uid == ct.frame_of_reference_uid
    ]
    if not pool:
        return None
    return max(pool, key=lambda c: (c.modality == "SEG", c.acquired or datetime.min, c.series_uid))


def _pick_dose(spect: Series, ct: Series | None, doses: list[Series]) -> Series | None:
    frames = {spect.frame_of_reference_uid, ct.frame_of_reference_uid if ct else None} - {None, ""}
    pool = [d for d in doses if d.frame_of_reference_uid in frames]
    if not pool:
        return None
    return min(pool, key=lambda d: (_hours_apart(spect.acquired, d.acquired), d.series_uid))


def _hours_apart(a: datetime | None, b: datetime | None) -> float:
    if a is None or b is None:
        return float("inf")
    return abs((a - b).total_seconds()) / 3600.0


def _new_series(ds: Dataset, uid: str, modality: str, patient_id: str, rel: str) -> Series:
    referenced = set()
    for frame in ds.get("ReferencedFrameOfReferenceSequence") or []:  # RTSTRUCT
        for study in frame.get("RTReferencedStudySequence") or []:
            for item in study.get("RTReferencedSeriesSequence") or []:
                referenced.add(str(item.get("SeriesInstanceUID", "")))
    for item in ds.get("ReferencedSeriesSequence") or []:  # SEG and others
        referenced.add(str(item.get("SeriesInstanceUID", "")))
    frame_of_reference = str(ds.get("FrameOfReferenceUID", ""))
    if not frame_of_reference:
        for frame in ds.get("ReferencedFrameOfReferenceSequence") or []:
            frame_of_reference = str(frame.get("FrameOfReferenceUID", ""))
    image_type = [str(v).upper() for v in (ds.get("ImageType") or [])]
    number = ds.get("SeriesNumber", "")
    description = str(ds.get("SeriesDescription", "")).strip()
    folder = str(Path(rel).parent)
    label = f"{modality} series {number}{f' {description!r}' if description else ''} in {folder}"
    return Series(
        series_uid=uid,
        modality=modality,
        patient_id=patient_id,
        study_uid=str(ds.get("StudyInstanceUID", "")),
        frame_of_reference_uid=frame_of_reference,
        acquired=acquisition_datetime(ds),
        label=label,
        referenced_series=referenced - {""},
        is_reconstruction=any(v.startswith("RECON") for v in image_type),
        rows_cols_frames=(int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0),
                          int(ds.get("NumberOfFrames", 1) or 1)),
    )


def _check_size(entry: Series) -> None:
    if entry.modality not in ("CT", "NM", "RTDOSE"):
        return
    rows, cols, frames = entry.rows_cols_frames
    header = Dataset()
    header.Rows, header.Columns = rows, cols
    check_plausible_size(header, frames * len(entry.files), entry.label)


def _identifying_strings(ds: Dataset) -> set[str]:
    """Patient name (whole and its parts), ID, birth date: strings that must not appear in anything ingest writes."""
    found = set()
    name = str(ds.get("PatientName", "") or "")
    if name:
        found.add(name)
        found.update(part for part in name.replace("=", "^").split("^") if len(part.strip()) >= 3)
    for keyword in ("PatientID", "PatientBirthDate", "OtherPatientIDs"):
        value = str(ds.get(keyword, "") or "").strip()
        if len(value) >= 3:
            found.add(value)
    return {s.strip() for s in found if s.strip()}


def _sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()
