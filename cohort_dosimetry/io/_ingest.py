"""DICOM folder -> cohort store: one complete, pseudonymised scan per SPECT/CT time point, and a report of the rest.

Bad input never stops the cohort: every problem becomes a row of ``tables/ingest_report.parquet`` (and a log line)
naming the file or series, and the other scans proceed; the store only ever shows complete scans (``write_scan``
publishes atomically). Nothing written (store, tables, logs) carries a patient name, ID or birth date: patients are
keyed pseudonyms, file paths are not stored, and every report message is redacted against all identifying strings
found in the headers.
"""
from __future__ import annotations

import hashlib
import hmac
import logging
import multiprocessing
import os
import re
import warnings
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone

import numpy as np
import pandas as pd
import xarray as xr
from tqdm import tqdm

from cohort_dosimetry.io._contours import LabelMap, read_rtstruct, read_seg
from cohort_dosimetry.io._ct import read_ct_series
from cohort_dosimetry.io._discovery import ScanSources, discover_studies
from cohort_dosimetry.io._errors import IngestError
from cohort_dosimetry.io._nm import CountsCalibration, read_nm
from cohort_dosimetry.io._resample import dose_grid, resample_to_grid
from cohort_dosimetry.io._rtdose import read_rtdose
from cohort_dosimetry.physics import hu_to_density
from cohort_dosimetry.store import open_cohort, pseudonym_key, pseudonymise_patient_id

log = logging.getLogger("cohort_dosimetry.io")

#: Bump when ingest would build different arrays from the same files: it enters every source_hash, so the next
#: ingest writes new versions instead of keeping scans built the old way.
INGEST_VERSION = "1"
#: A SPECT with more than this fraction of its activity outside the dose grid (the CT's extent) gets a warning.
OUTSIDE_ACTIVITY_WARNING_FRACTION = 0.05
REPORT_TABLE = "ingest_report"


@dataclass(frozen=True)
class _Job:
    sources: ScanSources
    grid: str | tuple[float, float, float]
    counts_calibration: CountsCalibration | None


@dataclass(frozen=True)
class _Built:
    dataset: xr.Dataset
    attrs: dict
    notes: list[str]


def ingest(
    dicom_dir: str | os.PathLike,
    cohort_dir: str | os.PathLike,
    grid: str | Sequence[float] = "ct",
    key: bytes | str | None = None,
    workers: int = 1,
    counts_calibration: CountsCalibration | None = None,
    progress: bool = False,
) -> pd.DataFrame:
    """Ingest every SPECT/CT scan found under ``dicom_dir`` into the cohort at ``cohort_dir`` (created if needed).

    Parameters
    ----------
    grid : the dose grid: ``"ct"``, ``"compact"`` (3.0 x 3.91 x 3.91 mm) or a spacing (z, y, x) in mm.
    key : pseudonym key; None takes the configured one (``cohort_dosimetry.store.pseudonym_key``).
    workers : processes that read and resample scans in parallel (1 = in this process). They are spawned, so a
        script calling this with ``workers > 1`` needs the usual ``if __name__ == "__main__":`` guard.
    counts_calibration : needed only for SPECT stored in counts (Units CNTS).
    progress : show a progress bar (stderr).

    Returns
    -------
    The report of this run (also appended to ``tables/ingest_report.parquet``): one row per scan with status
    written / new_version / unchanged / rejected, plus rows for warnings and for files or series that were rejected
    or ignored. Columns: source, patient (pseudonym or ""), timepoint, status, message, severity, run_utc.
    """
    grid = grid if isinstance(grid, str) else tuple(float(s) for s in grid)
    _check_grid_argument(grid)
    with _pydicom_silenced():
        return _ingest(dicom_dir, cohort_dir, grid, key, workers, counts_calibration, progress)


def _ingest(dicom_dir, cohort_dir, grid, key, workers, counts_calibration, progress) -> pd.DataFrame:
    discovery = discover_studies(dicom_dir)
    cohort = open_cohort(cohort_dir, create=True)
    key = pseudonym_key(cohort_dir) if key is None else key
    redact = _Redactor(discovery.identifying_strings)
    pseudonym = _Pseudonyms(key)
    rows: list[dict] = []

    def add(severity: str, source: str, patient_id: str, timepoint: str, status: str, message: str) -> None:
        row = dict(
            source=redact(source), patient=pseudonym(patient_id), timepoint=timepoint, status=status,
            message=redact(message), severity=severity,
        )
        rows.append(row)
        level = {"error": logging.ERROR, "warning": logging.WARNING}.get(severity, logging.INFO)
        log.log(level, "%s %s %s: %s: %s", row["patient"] or "-", timepoint or "-", status, row["source"],
                row["message"])

    for problem in discovery.problems:
        status = "rejected" if problem.severity == "error" else "ignored"
        add(problem.severity, problem.subject, problem.patient_id, "", status, problem.problem)

    jobs = []
    for sources in discovery.scans:
        patient = pseudonym(sources.patient_id)
        subject = sources.spect.label
        if sources.ct is None:
            why = ("no CT series of this patient shares its frame of reference or its study"
                   if sources.ct_pairing == "no CT" else sources.ct_pairing)
            add("error", subject, sources.patient_id, sources.timepoint, "rejected", f"SPECT without CT: {why}")
            continue
        if sources.contours is None:
            add("error", subject, sources.patient_id, sources.timepoint, "rejected",
                f"no contours (RTSTRUCT or SEG) reference the CT ({sources.ct.label}) or share its frame of reference")
            continue
        source_hash = _source_hash(sources, grid, counts_calibration)
        if _stored_hash(cohort, patient, sources.timepoint) == source_hash:
            add("info", subject, sources.patient_id, sources.timepoint, "unchanged", "source files unchanged; not read")
            continue
        jobs.append((_Job(sources, grid, counts_calibration), source_hash))

    bar = tqdm(total=len(jobs), desc="ingest", unit="scan", disable=not progress)
    for (job, source_hash), outcome in zip(jobs, _run(jobs, workers)):
        sources = job.sources
        patient = pseudonym(sources.patient_id)
        if isinstance(outcome, IngestError):
            add("error", outcome.subject, sources.patient_id, sources.timepoint, "rejected", outcome.problem)
        else:
            attrs = {
                **outcome.attrs,
                "source_hash": source_hash,
                "source_file_hashes": sources.source_file_hashes,
                "frame_of_reference_uid": _keyed_hash(key, sources.ct.frame_of_reference_uid),
            }
            try:
                status = cohort.write_scan(patient, sources.timepoint, outcome.dataset, attrs)
            except (ValueError, TypeError) as exc:
                add("error", sources.spect.label, sources.patient_id, sources.timepoint, "rejected",
                    f"the store refused the scan: {exc}")
            else:
                add("info", sources.spect.label, sources.patient_id, sources.timepoint, status,
                    f"paired with {sources.ct.label} by {sources.ct_pairing}; contours from {sources.contours.label}")
                for note in outcome.notes:
                    add("warning", sources.spect.label, sources.patient_id, sources.timepoint, status, note)
        bar.update()
    bar.close()
    report = pd.DataFrame(rows, columns=["source", "patient", "timepoint", "status", "message", "severity"])
    report["run_utc"] = datetime.now(timezone.utc).isoformat()
    if len(report):
        cohort.append_table(REPORT_TABLE, report)
    return report


def _check_grid_argument(grid) -> None:
    """Reject a bad ``grid`` argument before any file is touched."""
    if isinstance(grid, str) and grid not in ("ct", "compact"):
        raise ValueError(f"unknown dose grid {grid!r}: use 'ct', 'compact' or a spacing (z, y, x) in mm")
    if not isinstance(grid, str) and (len(grid) != 3 or min(grid) <= 0):
        raise ValueError(f"a dose grid spacing needs three positive numbers (z, y, x) in mm, got {grid!r}")


def _run(jobs, workers: int):
    """Outcomes (_Built or IngestError) of the jobs, in order; scans are built in ``workers`` processes."""
    if workers <= 1 or len(jobs) <= 1:
        for job, _ in jobs:
            yield _build_or_error(job)
        return
    # spawn, not fork: the caller may be a multi-threaded flow runner, and a forked child can inherit held locks
    with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        yield from pool.map(_build_or_error, [job for job, _ in jobs])


def _build_or_error(job: _Job) -> _Built | IngestError:
    try:
        with _pydicom_silenced():
            return _build_scan(job)
    except IngestError as exc:
        return exc
    except Exception as exc:  # a defect or an input nobody foresaw: report it, keep the cohort going
        return IngestError(job.sources.spect.label, f"unexpected {type(exc).__name__}: {exc}")


def _build_scan(job: _Job) -> _Built:
    """Read, check and resample one scan onto its dose grid: ct_hu, density, activity, labels (z, y, x) + attrs."""
    sources = job.sources
    notes: list[str] = []
    ct_label = sources.ct.label
    ct = read_ct_series(sources.ct.files, ct_label)
    spect = read_nm(sources.spect.files, job.counts_calibration, sources.spect.label)
    contour_file = sources.contours.files[0]
    if len(sources.contours.files) > 1:
        notes.append(
            f"{sources.contours.label}: {len(sources.contours.files)} objects in one series; the first is used"
        )
    reader = read_seg if sources.contours.modality == "SEG" else read_rtstruct
    label_map: LabelMap = reader(contour_file, ct.grid, sources.contours.label)
    notes += label_map.notes
    if not label_map.names:
        raise IngestError(sources.contours.label, "no contour of it covers any CT voxel")
    grid = dose_grid(ct.grid, job.grid)
    activity = resample_to_grid(spect.activity, grid, "activity")
    ct_hu = resample_to_grid(ct, grid, "ct_hu")
    labels = resample_to_grid(label_map.labels, grid, "labels")
    total_bq = activity.attrs["activity_in_grid_bq"] + activity.attrs["activity_outside_grid_bq"]
    if total_bq > 0 and activity.attrs["activity_in_grid_bq"] <= 0:
        raise IngestError(sources.spect.label, f"the SPECT does not overlap its CT ({ct_label})")
    outside = activity.attrs["activity_outside_grid_bq"] / total_bq if total_bq > 0 else 0.0
    if outside > OUTSIDE_ACTIVITY_WARNING_FRACTION:
        notes.append(f"{100 * outside:.1f} % of the SPECT's activity lies outside the CT's extent and is not ingested")
    if sources.ct_pairing != "same frame of reference":
        notes.append(f"CT paired by {sources.ct_pairing}: the frames of reference differ, so SPECT and CT are assumed "
                     "to share patient coordinates (no registration is done)")
    lost = sorted(set(label_map.names) - set(np.unique(labels.array).tolist()))
    if lost:
        vanished = [label_map.names[v] for v in lost]
        raise IngestError(sources.contours.label, f"VOIs {vanished} vanished on the dose grid")
    dims = ("z", "y", "x")
    dataset = xr.Dataset(
        {
            "ct_hu": (dims, ct_hu.array.astype(np.float32), {"units": "HU"}),
            "density": (dims, hu_to_density(ct_hu.array), {"units": "g/cm3"}),
            "activity": (dims, activity.array.astype(np.float32), {"units": "Bq/mL"}),
            "labels": (dims, labels.array.astype(np.int16), {"units": "1", "names": dict(label_map.names)}),
        }
    )
    attrs = {
        **grid.as_attrs(),
        "hours_post_injection": spect.hours_post_injection,
        "acquisition_datetime": spect.acquisition_datetime.isoformat(),
        "injection_datetime": spect.injection_datetime.isoformat(),
        "administered_activity_bq": spect.administered_activity_bq,
        "nuclide": spect.nuclide,
        "synthetic": spect.synthetic,
        "half_life_s_from_header": spect.half_life_s if np.isfinite(spect.half_life_s) else None,
        "spect_units_in_file": spect.units_in_file,
        "dose_grid": job.grid if isinstance(job.grid, str) else list(job.grid),
        "ct_pairing": sources.ct_pairing,
        "contours_from": sources.contours.modality,
        "activity_conservation_factor": activity.attrs["activity_conservation_factor"],
        "activity_outside_grid_bq": activity.attrs["activity_outside_grid_bq"],
        "labels_kept_by_guard": [label_map.names[v] for v in labels.attrs.get("labels_kept_by_guard", [])],
        "ingest_version": INGEST_VERSION,
    }
    if sources.external_dose is not None:
        dose = read_rtdose(sources.external_dose.files[0], sources.external_dose.label)
        attrs["external_dose"] = {
            "dose_units": dose.dose.units, "dose_type": dose.dose_type, "summation_type": dose.summation_type,
            "max": float(dose.dose.array.max()),
        }
        notes.append(f"{sources.external_dose.label}: external dose found ({dose.dose.units}, {dose.dose_type}, "
                     f"{dose.summation_type}); recorded in attrs, the store has no array for it yet")
    return _Built(dataset, attrs, notes)


@contextmanager
def _pydicom_silenced() -> Iterator[None]:
    """pydicom's own warnings and log lines quote file paths and header values, which can carry PHI: ingest keeps them
    out of the logs (every problem is reported, redacted, through the ingest report instead)."""
    logger = logging.getLogger("pydicom")
    was_disabled, logger.disabled = logger.disabled, True
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.disabled = was_disabled


def _source_hash(sources: ScanSources, grid, counts_calibration) -> str:
    digest = hashlib.sha256()
    digest.update(f"ingest {INGEST_VERSION}; grid {grid!r}; counts {counts_calibration!r}\n".encode())
    for role, entry in (("spect", sources.spect), ("ct", sources.ct), ("contours", sources.contours),
                        ("external_dose", sources.external_dose)):
        for file_hash in sorted(entry.file_sha256) if entry else []:
            digest.update(f"{role} {file_hash}\n".encode())
    return digest.hexdigest()


def _stored_hash(cohort, patient: str, timepoint: str) -> str | None:
    try:
        return cohort.scan_attrs(patient, timepoint).get("source_hash")
    except KeyError:
        return None


def _keyed_hash(key: bytes | str, value: str) -> str:
    """A UID replaced by a keyed hash: still equal for equal UIDs, unlinkable to the source without the key."""
    key_bytes = key.encode() if isinstance(key, str) else bytes(key)
    return "H" + hmac.new(key_bytes, value.encode(), hashlib.sha256).hexdigest()[:24]


class _Pseudonyms:
    def __init__(self, key):
        self._key, self._cache = key, {}

    def __call__(self, patient_id: str) -> str:
        if not patient_id.strip():
            return ""
        if patient_id not in self._cache:
            self._cache[patient_id] = pseudonymise_patient_id(patient_id, self._key)
        return self._cache[patient_id]


class _Redactor:
    """Replaces every identifying string (case-insensitive) in a message by ``[redacted]``."""

    def __init__(self, strings):
        ordered = sorted(strings, key=len, reverse=True)
        self._pattern = re.compile("|".join(re.escape(s) for s in ordered), re.IGNORECASE) if ordered else None

    def __call__(self, text: str) -> str:
        return self._pattern.sub("[redacted]", text) if self._pattern else text
