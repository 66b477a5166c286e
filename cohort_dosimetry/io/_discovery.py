"""Find the scans in a folder of DICOM files of any layout: group, pair SPECT with CT, attach contours and dose.

Only headers are read (``stop_before_pixels``). Files are grouped by patient, study, series and frame of reference.
A SOP instance held by several files counts once: exact copies are noted, and copies that differ are read whole to
keep the one that decodes completely (a broken copy never costs the series; see ``_resolve_repeats``).
Each reconstructed SPECT (NM series with ImageType RECON ..., or a PT series in Bq/mL as some workstations export
SPECT) is one scan (one time point), unless its header names a radionuclide other than Lu-177 (or contradicts itself):
then it is refused here and planned as no scan. Its CT is, by the first rule that finds one:

1. ``same frame of reference``: a CT of the patient with the SPECT's FrameOfReferenceUID (the nearest in time if
   several);
2. ``same study, nearest time``: a CT of the same study, the nearest in acquisition time.

Contours: the DICOM SEG or RTSTRUCT objects that reference the paired CT series, else share its frame of reference;
a SEG is preferred (voxel masks, no rasterisation), then the most recent. External dose: an RTDOSE in the SPECT's or the
CT's frame of reference, the nearest in time. Scans come per patient in SPECT acquisition order; discovery does not
name time points: a scan's identity is its SPECT series, and ingest gives it its label from the store.
"""

from __future__ import annotations

import hashlib
import os
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import cast

import numpy as np
from pydicom.dataset import Dataset
from pydicom.filereader import read_partial

from cohort_dosimetry.io._errors import IngestError, Problem
from cohort_dosimetry.io._headers import (
    NotADicomFile,
    acquisition_datetime,
    check_plausible_size,
    dicom_datetime,
    malformed_header_is,
    pixel_array,
    read_full,
    read_header,
)
from cohort_dosimetry.io._nm import in_activity_concentration
from cohort_dosimetry.io._radionuclide import radionuclide_problem

SEG_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"
#: Modalities a scan is built from; other DICOM objects are noted (info) and left alone. PT: SPECT that some
#: workstations export as PT images in Bq/mL (a PET series is then refused for its nuclide).
USED_MODALITIES = ("CT", "NM", "PT", "RTSTRUCT", "SEG", "RTDOSE")


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
    #: NM/PT only: why the header's radionuclide is refused (not Lu-177, or sources that disagree); None if not
    radionuclide_problem: str | None = None
    #: NM only, from the first item of the Radiopharmaceutical Information Sequence (DICOM PS3.3 C.8.4.10):
    #: RadiopharmaceuticalStartDateTime and RadionuclideTotalDose (Bq); None when absent or unreadable (the SPECT
    #: reader then rejects the scan, naming what is missing).
    injection_datetime: datetime | None = None
    administered_activity_bq: float | None = None


@dataclass
class ScanSources:
    """Everything one scan (one SPECT/CT time point of one patient) is built from; the SPECT series is its identity."""

    patient_id: str
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
    first_copies: dict[str, _Copy] = {}  # SOP Instance UID -> the file filed under its series
    repeats: dict[str, list[_Copy]] = defaultdict(list)  # SOP Instance UID -> later files holding it, set aside
    unfiled: list[tuple[str, str, IngestError, str]] = []  # (SOP Instance UID, rel, error, patient): files whose
    # header failed; broken copies if another file of their instance is filed
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = str(path.relative_to(root))
        try:
            ds = read_header(path, rel)
        except NotADicomFile:
            non_dicom[Path(rel).parts[0] if len(Path(rel).parts) > 1 else "."].append(rel)
            continue
        except IngestError as exc:
            unfiled.append((_salvaged_sop_instance_uid(path), rel, IngestError(rel, exc.problem), ""))
            continue
        copy = None
        try:
            with malformed_header_is(rel):
                copy = _instance_copy(ds, path, rel)
                if copy is not None and copy.sop_instance_uid in first_copies:
                    repeats[copy.sop_instance_uid].append(copy)
                    identifying.update(_identifying_strings(ds))
                    continue
                _add_file(ds, path, rel, series, patients_of, identifying, problems, copy.sha256 if copy else None)
                if copy is not None:
                    first_copies[copy.sop_instance_uid] = copy
        except IngestError as exc:
            if copy is not None:
                unfiled.append((copy.sop_instance_uid, rel, exc, copy.patient_id))
            else:
                problems.append(Problem("error", exc.subject, exc.problem))
    for sop_instance_uid, rel, error, patient_id in unfiled:
        holder = first_copies.get(sop_instance_uid) if sop_instance_uid else None
        if holder is None:
            problems.append(Problem("error", error.subject, error.problem))
        else:
            problems.append(
                Problem(
                    "warning",
                    rel,
                    f"broken copy of {holder.rel} (same SOP Instance UID), not used: {error.problem}",
                    patient_id or holder.patient_id,
                )
            )
    copy_conflicts = _resolve_repeats(root, first_copies, repeats, series, patients_of, identifying, problems)
    for folder, files in non_dicom.items():
        problems.append(Problem("info", folder, f"{len(files)} non-DICOM file(s) ignored (e.g. {files[0]})"))

    good: dict[str, Series] = {}
    rejected: dict[str, Series] = {}
    for uid, entry in series.items():
        if uid in copy_conflicts:
            conflicts = copy_conflicts[uid]
            more = f" ({len(conflicts) - 1} more images of the series likewise)" if len(conflicts) > 1 else ""
            problems.append(Problem("error", entry.label, conflicts[0] + more, entry.patient_id))
            rejected[uid] = entry
            continue
        if len(patients_of[uid]) > 1:
            problems.append(
                Problem(
                    "error",
                    entry.label,
                    f"the series holds files of {len(patients_of[uid])} "
                    "different patients (PatientID); the whole series is rejected",
                    entry.patient_id,
                )
            )
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


def _add_file(
    ds: Dataset,
    path: Path,
    rel: str,
    series: dict[str, Series],
    patients_of: dict[str, set[str]],
    identifying: set[str],
    problems: list[Problem],
    sha256: str | None = None,
) -> None:
    """File one header under its series (``sha256``: the file's content hash if known), or note why it is not used."""
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
    uid = _series_uid(ds, rel)
    if uid not in series:
        series[uid] = _new_series(ds, uid, modality, patient_id, rel)
    entry = series[uid]
    entry.files.append(path)
    entry.file_sha256.append(sha256 or _sha256(path))
    patients_of[uid].add(patient_id)


def _plan_scans(series: dict[str, Series], rejected: dict[str, Series], problems: list[Problem]) -> list[ScanSources]:
    by_patient: dict[str, dict[str, list[Series]]] = defaultdict(lambda: defaultdict(list))
    for entry in series.values():
        by_patient[entry.patient_id][entry.modality].append(entry)
    scans = []
    for patient_id in sorted(by_patient):
        kinds = by_patient[patient_id]
        spects = []
        for nm in kinds["NM"] + kinds["PT"]:
            if not nm.is_reconstruction:
                problems.append(
                    Problem(
                        "warning",
                        nm.label,
                        "NM series is not a reconstructed SPECT (ImageType has no "
                        "RECON): projections or planar images are not ingested"
                        if nm.modality == "NM"
                        else "PT series is not in activity concentration (Units BQML or a Real World "
                        "Value Mapping in Bq/ml): not ingested",
                        patient_id,
                    )
                )
            elif nm.radionuclide_problem:
                problems.append(Problem("error", nm.label, nm.radionuclide_problem, patient_id))
            else:
                spects.append(nm)
        spects.sort(key=lambda s: (s.acquired or datetime.max, s.series_uid))
        used_contours, used_doses = set(), set()
        for spect in spects:
            ct, rule = _pair_ct(spect, kinds["CT"])
            if ct is None:
                rejected_ct, _ = _pair_ct(
                    spect, [r for r in rejected.values() if r.modality == "CT" and r.patient_id == patient_id]
                )
                rule = f"its CT ({rejected_ct.label}) was rejected" if rejected_ct else rule
            contours = _pick_contours(ct, kinds["SEG"] + kinds["RTSTRUCT"]) if ct else None
            dose = _pick_dose(spect, ct, kinds["RTDOSE"])
            used_contours.add(id(contours))
            used_doses.add(id(dose))
            scans.append(ScanSources(patient_id, spect, ct, rule, contours, dose))
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
                problems.append(
                    Problem("info", entry.label, "RTDOSE not used: it shares no scan's frame of reference", patient_id)
                )
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
    injection, administered = _injection(ds) if modality in ("NM", "PT") else (None, None)
    return Series(
        series_uid=uid,
        modality=modality,
        patient_id=patient_id,
        study_uid=str(ds.get("StudyInstanceUID", "")),
        frame_of_reference_uid=frame_of_reference,
        acquired=acquisition_datetime(ds),
        label=label,
        referenced_series=referenced - {""},
        is_reconstruction=(
            in_activity_concentration(ds) if modality == "PT" else any(v.startswith("RECON") for v in image_type)
        ),
        rows_cols_frames=(
            int(ds.get("Rows", 0) or 0),
            int(ds.get("Columns", 0) or 0),
            int(ds.get("NumberOfFrames", 1) or 1),
        ),
        injection_datetime=injection,
        administered_activity_bq=administered,
        radionuclide_problem=radionuclide_problem(ds) if modality in ("NM", "PT") else None,
    )


def _injection(ds: Dataset) -> tuple[datetime | None, float | None]:
    """(RadiopharmaceuticalStartDateTime, RadionuclideTotalDose in Bq) of the Radiopharmaceutical Information
    Sequence's first item (DICOM PS3.3 C.8.4.10), each None when absent or malformed."""
    items = ds.get("RadiopharmaceuticalInformationSequence") or []
    if not items:
        return None, None
    item = items[0]
    try:
        injection = dicom_datetime(item, "RadiopharmaceuticalStartDateTime", None, None)
    except Exception:  # a malformed value: the SPECT reader reports it
        injection = None
    try:
        administered = float(item.get("RadionuclideTotalDose"))
    except (TypeError, ValueError):
        administered = None
    return injection, administered if administered is not None and administered > 0 else None


def _check_size(entry: Series) -> None:
    if entry.modality not in ("CT", "NM", "PT", "RTDOSE"):
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


# ------------------------------------------------------------------------------------------ duplicate instances
#: Attributes that say how the pixel data is encoded, not what the image is: two copies of one instance that differ
#: only in these (and in the transfer syntax, file meta group 0002) hold the same image, e.g. an instance exported
#: once as received and once JPEG Lossless compressed (DICOM PS3.3 C.7.6.1.1.5 Lossy Image Compression, C.7.6.1
#: Derivation Description, PS3.5 7.2 Data Set Trailing Padding).
_ENCODING_KEYWORDS = frozenset(
    {
        "PixelData",
        "DerivationDescription",
        "LossyImageCompression",
        "LossyImageCompressionRatio",
        "LossyImageCompressionMethod",
        "DataSetTrailingPadding",
    }
)
#: Objects of these modalities hold pixel data (CT, NM and PT images, RT Dose grids, SEG masks); RTSTRUCT holds none.
_PIXEL_MODALITIES = ("CT", "NM", "PT", "RTDOSE", "SEG")


@dataclass(frozen=True)
class _Copy:
    """One file holding a SOP instance of a modality ingest uses."""

    sop_instance_uid: str
    path: Path
    rel: str
    sha256: str
    series_uid: str
    modality: str
    patient_id: str


def _series_uid(ds: Dataset, rel: str) -> str:
    return str(ds.get("SeriesInstanceUID", "")) or f"(no SeriesInstanceUID) {rel}"


def _instance_copy(ds: Dataset, path: Path, rel: str) -> _Copy | None:
    """The file as one copy of its SOP instance; None for modalities ingest does not use or no SOP Instance UID."""
    modality = str(ds.get("Modality", ""))
    sop_instance_uid = str(ds.get("SOPInstanceUID", "") or "").strip()
    if modality not in USED_MODALITIES or not sop_instance_uid:
        return None
    return _Copy(
        sop_instance_uid, path, rel, _sha256(path), _series_uid(ds, rel), modality, str(ds.get("PatientID", "")).strip()
    )


def _salvaged_sop_instance_uid(path: Path) -> str:
    """The SOP Instance UID of a file whose header does not read whole (e.g. a copy cut off early), read up to that
    element only; "" when even that fails."""
    try:
        with open(path, "rb") as f:
            ds = read_partial(f, stop_when=lambda tag, vr, length: tag > 0x00080018, force=True)  # (0008,0018)
        return str(ds.get("SOPInstanceUID", "") or "").strip()
    except Exception:
        return ""


def _resolve_repeats(
    root: Path,
    first_copies: dict[str, _Copy],
    repeats: dict[str, list[_Copy]],
    series: dict[str, Series],
    patients_of: dict[str, set[str]],
    identifying: set[str],
    problems: list[Problem],
) -> dict[str, list[str]]:
    """Count every SOP instance once: a SOP Instance UID names one image (DICOM PS3.3 C.12.1.1.1).

    Files holding the same SOP Instance UID: exact copies (same SHA-256) count once (info). Copies that differ are read
    whole, pixel data decoded (only these; discovery reads headers otherwise): the one that reads completely is used
    and the broken ones are reported (warning); readable copies showing the same image in another encoding count once
    (info); readable copies that differ, or copies none of which reads, reject every series holding them.

    ``first_copies`` are filed under their series already, ``repeats`` (later files, in path order) are not.
    Returns {series uid: [why the series is rejected, ...]}; refiles the series whose filed copy was not the one used.
    """
    conflicts: dict[str, list[str]] = defaultdict(list)
    dropped: set[Path] = set()
    added: list[_Copy] = []
    for sop_instance_uid, later in repeats.items():
        first = first_copies[sop_instance_uid]
        distinct = {first.sha256: first}
        for copy in later:
            original = distinct.setdefault(copy.sha256, copy)
            if original is not copy:
                problems.append(
                    Problem(
                        "info",
                        copy.rel,
                        f"exact copy of {original.rel} (same SOP Instance UID, same content): counted once",
                        copy.patient_id,
                    )
                )
        if len(distinct) == 1:
            continue
        used, why = _choose_copies(list(distinct.values()), problems)
        dropped.update(c.path for c in distinct.values() if c not in used)
        added += [c for c in used if c is not first]
        for copy in used if why else ():
            assert why is not None  # the loop runs only with a reason
            if why not in conflicts[copy.series_uid]:
                conflicts[copy.series_uid].append(why)
    if dropped or added:
        _refile(root, dropped, added, series, patients_of, identifying, problems)
    return dict(conflicts)


def _choose_copies(copies: list[_Copy], problems: list[Problem]) -> tuple[list[_Copy], str | None]:
    """Of differing copies of one instance, those to file and, when the series cannot be trusted, why."""
    readings = {copy.path: _complete_reading(copy) for copy in copies}
    images: list[list[_Copy]] = []  # readable copies, grouped by the image they hold
    for copy in copies:
        if isinstance(readings[copy.path], str):
            continue
        for group in images:  # copies in a group, and this one, read completely: (dataset, pixels), not a str
            if _same_image(cast(tuple, readings[group[0].path]), cast(tuple, readings[copy.path])):
                group.append(copy)
                break
        else:
            images.append([copy])
    if not images:
        listing = "; ".join(f"{c.rel}: {readings[c.path]}" for c in copies)
        return copies, f"{len(copies)} files hold one of its images (same SOP Instance UID) and none reads ({listing})"
    for group in images:
        for copy in group[1:]:
            problems.append(
                Problem(
                    "info",
                    copy.rel,
                    f"the same image as {group[0].rel} in another encoding (same "
                    "SOP Instance UID, pixel values and attributes): counted once",
                    copy.patient_id,
                )
            )
    used = [group[0] for group in images]
    for copy in copies:
        if isinstance(readings[copy.path], str):
            problems.append(
                Problem(
                    "warning",
                    copy.rel,
                    f"broken copy of {used[0].rel} (same SOP Instance UID), not used: {readings[copy.path]}",
                    copy.patient_id,
                )
            )
    if len(used) == 1:
        return used, None
    others = f" and {len(used) - 2} more files" if len(used) > 2 else ""
    return used, (
        f"{used[0].rel} and {used[1].rel}{others} hold the same SOP Instance UID with different content and "
        "each reads completely: which is right is unknown, so the series is rejected (remove the wrong copy)"
    )


def _complete_reading(copy: _Copy) -> tuple[Dataset, np.ndarray | None] | str:
    """The whole file and its decoded pixel values (None for objects without pixel data), or why it is broken:
    unreadable, truncated, or pixel data that does not decode to every value the header announces."""
    try:
        ds = read_full(copy.path, copy.rel)
        with malformed_header_is(copy.rel):
            try:
                ds.walk(lambda dataset, element: None)  # converts every value now: a cut-off one fails here
            except Exception as exc:  # whatever pydicom raises for a value that does not parse: the copy is broken
                return f"header does not parse ({type(exc).__name__}: {exc})"
            if copy.modality not in _PIXEL_MODALITIES and "PixelData" not in ds:
                return ds, None
            pixels = pixel_array(ds, copy.rel)
            expected = (
                int(ds.Rows)
                * int(ds.Columns)
                * int(ds.get("NumberOfFrames", 1) or 1)
                * int(ds.get("SamplesPerPixel", 1) or 1)
            )
            if pixels.size != expected:
                return f"pixel data incomplete: {pixels.size} of the {expected} values the header announces"
            return ds, pixels
    except IngestError as exc:
        return exc.problem


def _same_image(a: tuple[Dataset, np.ndarray | None], b: tuple[Dataset, np.ndarray | None]) -> bool:
    """Equal decoded pixel values and equal attributes, apart from those describing the encoding."""
    (ds_a, pixels_a), (ds_b, pixels_b) = a, b
    if (pixels_a is None) != (pixels_b is None):
        return False
    if pixels_a is not None and not np.array_equal(pixels_a, cast(np.ndarray, pixels_b)):  # both None or neither
        return False

    def attributes(ds: Dataset) -> dict:
        return {element.tag: element.value for element in ds if element.keyword not in _ENCODING_KEYWORDS}

    return attributes(ds_a) == attributes(ds_b)


def _refile(
    root: Path,
    dropped: set[Path],
    added: list[_Copy],
    series: dict[str, Series],
    patients_of: dict[str, set[str]],
    identifying: set[str],
    problems: list[Problem],
) -> None:
    """File the ``added`` copies, and build anew from their headers the series that had filed a ``dropped`` one
    (a series takes its description from its first file, which may have been the broken copy)."""
    affected = [uid for uid, entry in series.items() if dropped.intersection(entry.files)]
    hashes = {path: digest for uid in affected for path, digest in zip(series[uid].files, series[uid].file_sha256)}
    hashes.update((copy.path, copy.sha256) for copy in added)
    for uid in affected:
        del series[uid]
        patients_of.pop(uid, None)
    for path in sorted(set(hashes) - dropped):
        rel = str(path.relative_to(root))
        try:
            ds = read_header(path, rel)
            with malformed_header_is(rel):
                _add_file(ds, path, rel, series, patients_of, identifying, problems, hashes[path])
        except IngestError as exc:
            problems.append(Problem("error", exc.subject, exc.problem))
