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
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np
import pandas as pd
import xarray as xr
from tqdm import tqdm

from cohort_dosimetry.constants import DEFAULT_DOSE_GRID
from cohort_dosimetry.io._contours import LabelMap, read_rtstruct, read_seg
from cohort_dosimetry.io._ct import read_ct_series
from cohort_dosimetry.io._discovery import ScanSources, discover_studies
from cohort_dosimetry.io._errors import IngestError
from cohort_dosimetry.io._nm import CountsCalibration, read_nm
from cohort_dosimetry.io._resample import dose_grid, resample_to_grid
from cohort_dosimetry.io._rtdose import read_rtdose
from cohort_dosimetry.physics import hu_to_density
from cohort_dosimetry.store import LockTimeout, open_cohort, pseudonymise_patient_id, timepoint_number

log = logging.getLogger("cohort_dosimetry.io")

#: Bump when ingest would build different arrays from the same files: it enters every source_hash, so the next
#: ingest writes new versions instead of keeping scans built the old way.
INGEST_VERSION = "2"
#: CT coverage of the SPECT. A SPECT/CT's CT is planned over the SPECT's field of view, so nearly all activity lies in
#: the CT's extent (the dose grid); activity outside it gets no density and no contours, and is not dosed. Up to
#: OUTSIDE_ACTIVITY_WARNING_FRACTION is the reconstruction's background in air beyond the CT's transaxial field of
#: view, within the few per cent that quantitative SPECT activity is uncertain anyway (EANM uncertainty guidance,
#: Gear et al., EJNMMI 45:2456, 2018): accepted silently. Above it the CT's range is short of the SPECT (an organ
#: or the bladder cut off): ingested with a warning. Above OUTSIDE_ACTIVITY_REFUSAL_FRACTION the CT does not cover the
#: SPECT (a shortened CT range, another bed position, the wrong CT paired): the scan is refused, since its dose maps
#: would miss a tenth or more of the activity and the VOIs it reaches would be cut at the CT's edge.
OUTSIDE_ACTIVITY_WARNING_FRACTION = 0.02
OUTSIDE_ACTIVITY_REFUSAL_FRACTION = 0.10
REPORT_TABLE = "ingest_report"


@dataclass(frozen=True)
class _Job:
    sources: ScanSources
    grid: str | tuple[float, float, float]
    counts_calibration: CountsCalibration | None
    #: nuclide stated by the user for SPECT whose header names none (e.g. "Lu177"); None = not stated
    nuclide: str | None = None
    #: the user's ROI-name mapping {ROI name as written: vocabulary name}, extending the built-in synonyms
    roi_names: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class _Built:
    dataset: xr.Dataset
    attrs: dict
    notes: list[str]  # warnings for the report
    info: list[str] = field(default_factory=list)  # what the report says at information level (ROI naming)


def ingest(
    dicom_dir: str | os.PathLike,
    cohort_dir: str | os.PathLike,
    grid: str | Sequence[float] = DEFAULT_DOSE_GRID,
    key: bytes | str | None = None,
    workers: int = 1,
    counts_calibration: CountsCalibration | None = None,
    progress: bool = False,
    nuclide: str | None = None,
    roi_names: Mapping[str, str] | None = None,
) -> pd.DataFrame:
    """Ingest every SPECT/CT scan found under ``dicom_dir`` into the cohort at ``cohort_dir`` (created if needed).

    Parameters
    ----------
    grid : the dose grid: ``"ct"``, ``"compact"`` (3.0 x 3.91 x 3.91 mm) or a spacing (z, y, x) in mm.
    key : pseudonym key; None takes the configured one (``cohort_dosimetry.store.pseudonym_key``). The store records
        its fingerprint at the first ingest; another key is refused (``PseudonymKeyMismatch``) before anything is
        written.
    workers : processes that read and resample scans in parallel (1 = in this process). They are spawned, so a
        script calling this with ``workers > 1`` needs the usual ``if __name__ == "__main__":`` guard.
    counts_calibration : needed only for SPECT stored in counts (Units CNTS).
    progress : show a progress bar (stderr).
    nuclide : the nuclide of SPECT whose header names none (only ``"Lu177"`` is dosed); None = such SPECT are
        ingested as Lu-177 with a warning.
    roi_names : {ROI name as written: vocabulary name}, extending the built-in clinical synonyms
        (see :mod:`cohort_dosimetry.vocabulary`).

    Returns
    -------
    The report of this run (also appended to ``tables/ingest_report.parquet``): one row per scan with status
    written / new_version / unchanged / rejected, plus rows for warnings and for files or series that were rejected
    or ignored. Columns: source, patient (pseudonym or ""), timepoint, status, message, severity, run_utc.
    """
    grid = grid if isinstance(grid, str) else tuple(float(s) for s in grid)
    _check_grid_argument(grid)
    with _pydicom_silenced():
        return _ingest(
            dicom_dir,
            cohort_dir,
            grid,
            key,
            workers,
            counts_calibration,
            progress,
            nuclide,
            tuple(sorted((roi_names or {}).items())),
        )


def _ingest(
    dicom_dir, cohort_dir, grid, key, workers, counts_calibration, progress, nuclide, roi_names
) -> pd.DataFrame:
    # A new series gets the patient's next free label when it is written (planned labels off), so that of one
    # delivery's series, written here in acquisition order, a rejected one leaves no gap.
    plan = _plan(dicom_dir, cohort_dir, grid, key, counts_calibration, nuclide, roi_names, plan_labels=False)
    cohort = open_cohort(cohort_dir)
    rows = list(plan.rows)
    bar = tqdm(total=len(plan.scans), desc="ingest", unit="scan", disable=not progress)
    for scan, outcome in zip(plan.scans, _run(plan.scans, workers)):
        rows += _publish(cohort, scan, outcome)
        bar.update()
    bar.close()
    return _finish(cohort, rows)


#: Columns of an ingest report row (``tables/ingest_report.parquet`` adds ``run_utc``).
REPORT_COLUMNS = ("source", "patient", "timepoint", "status", "message", "severity")


@dataclass(frozen=True)
class PlannedScan:
    """One scan that ingest will build and publish, as planned from the DICOM headers (picklable: a Dask task or
    another process can take it). It holds what building and writing the scan need and no pseudonym key: the
    patient's pseudonym and the keyed hashes are computed at planning.

    ``subject``: the SPECT series as the report names it (redacted); ``timepoint``: the label the series holds in
    the store ("" for a new series); ``planned_timepoint``: the label planned for a new series ("" when it takes the
    next free label at writing).
    """

    job: _Job
    source_hash: str
    patient: str
    subject: str
    series_key: str
    frame_of_reference_key: str
    timepoint: str
    planned_timepoint: str = ""
    #: identifying strings found in the headers, for redacting the messages of this scan's report rows
    redact: frozenset[str] = field(default=frozenset(), repr=False)

    def row(self, severity: str, source: str, timepoint: str, status: str, message: str) -> dict:
        """A report row about this scan (source and message redacted), also logged."""
        redact = _Redactor(self.redact)
        return _logged_row(redact(source), self.patient, timepoint, status, redact(message), severity)

    def failed(self, message: str) -> dict:
        """The report row of this scan when building or writing it failed outside ingest's own checks (its process
        died, a task timed out): status "rejected", naming the SPECT series (and its label, if it holds one)."""
        return self.row("error", self.subject, self.timepoint, "rejected", message)


@dataclass(frozen=True)
class IngestPlan:
    """What :func:`plan_ingest` found: ``scans`` to build and publish (one :func:`ingest_scan` each, in any order and
    any process), and ``rows``: the report rows decided from the headers alone (files and series not used, scans
    refused before reading, scans whose files are unchanged)."""

    cohort_dir: str
    scans: tuple[PlannedScan, ...]
    rows: tuple[dict, ...]


def plan_ingest(
    dicom_dir: str | os.PathLike,
    cohort_dir: str | os.PathLike,
    grid: str | Sequence[float] = DEFAULT_DOSE_GRID,
    key: bytes | str | None = None,
    counts_calibration: CountsCalibration | None = None,
    nuclide: str | None = None,
    roi_names: Mapping[str, str] | None = None,
    plan_labels: bool = True,
) -> IngestPlan:
    """Discover the studies under ``dicom_dir`` (headers only) and plan their ingest into ``cohort_dir`` (created if
    needed), for :func:`ingest_scan` to build and publish each scan wherever it runs and :func:`finish_ingest` to
    write the report. :func:`ingest` is these three in one process.

    Parameters as :func:`ingest`; ``plan_labels``: give each new SPECT series of a patient its label now, the
    patient's next free labels in acquisition order, so that scans published in any order are labelled in time order
    (a series whose ingest fails leaves its label unused). At writing, under the patient's lock, a series keeps the
    label it holds, takes its planned label if no other series took it meanwhile, else the next free one. False: a
    new series gets the next free label when it is written.
    """
    grid = grid if isinstance(grid, str) else tuple(float(s) for s in grid)
    _check_grid_argument(grid)
    with _pydicom_silenced():
        return _plan(
            dicom_dir,
            cohort_dir,
            grid,
            key,
            counts_calibration,
            nuclide,
            tuple(sorted((roi_names or {}).items())),
            plan_labels,
        )


def ingest_scan(cohort_dir: str | os.PathLike, scan: PlannedScan) -> list[dict]:
    """Build one planned scan (read, check, resample) in this process and publish it in the store; returns its report
    rows (dicts of :data:`REPORT_COLUMNS`: status written / new_version / unchanged / rejected, and warnings).

    Bad input is a "rejected" row, never an exception. A store lock that stays held longer than the lock timeout
    (:func:`cohort_dosimetry.store.lock_timeout`) is a "rejected" row naming the scan and the lock.
    """
    return _publish(open_cohort(cohort_dir), scan, _build_or_error(scan.job))


def finish_ingest(cohort_dir: str | os.PathLike, rows: Sequence[dict]) -> pd.DataFrame:
    """After the scans of a plan are published: renumber the cycles of the patients that got scans (with warning
    rows), and append the report (``rows``: the plan's rows, then the scans', failures included) to
    ``tables/ingest_report.parquet``. Returns the report as :func:`ingest` does."""
    return _finish(open_cohort(cohort_dir), list(rows))


def _logged_row(source: str, patient: str, timepoint: str, status: str, message: str, severity: str) -> dict:
    row = dict(source=source, patient=patient, timepoint=timepoint, status=status, message=message, severity=severity)
    level = {"error": logging.ERROR, "warning": logging.WARNING}.get(severity, logging.INFO)
    log.log(level, "%s %s %s: %s: %s", patient or "-", timepoint or "-", status, source, message)
    return row


def _plan(dicom_dir, cohort_dir, grid, key, counts_calibration, nuclide, roi_names, plan_labels) -> IngestPlan:
    try:  # a store written with another pseudonym key is refused first: before discovery, before any write
        key = open_cohort(cohort_dir).bind_pseudonym_key(key)
    except FileNotFoundError:
        pass  # a new cohort (or a key file that is missing: said below), created once discovery found the DICOM folder
    discovery = discover_studies(dicom_dir)
    cohort = open_cohort(cohort_dir, create=True)
    key = cohort.bind_pseudonym_key(key)
    redact = _Redactor(discovery.identifying_strings)
    pseudonym = _Pseudonyms(key)
    rows: list[dict] = []

    def add(severity: str, source: str, patient_id: str, timepoint: str, status: str, message: str) -> None:
        rows.append(_logged_row(redact(source), pseudonym(patient_id), timepoint, status, redact(message), severity))

    for problem in discovery.problems:
        status = "rejected" if problem.severity == "error" else "ignored"
        add(problem.severity, problem.subject, problem.patient_id, "", status, problem.problem)

    # A scan's identity is its SPECT series: a series already in the store keeps its label (the report names it
    # from here on); a new one gets a planned label or the patient's next free one when it is written, under the
    # patient's lock. Discovery gives the scans per patient in acquisition order.
    scans = []
    next_free: dict[str, int] = {}
    for sources in discovery.scans:
        patient = pseudonym(sources.patient_id)
        subject = sources.spect.label
        series_key = _keyed_hash(key, sources.spect.series_uid)
        known = cohort.timepoint_of(patient, series_key) if patient else None
        timepoint, planned = known or "", ""
        if sources.ct is None:
            why = (
                "no CT series of this patient shares its frame of reference or its study"
                if sources.ct_pairing == "no CT"
                else sources.ct_pairing
            )
            add("error", subject, sources.patient_id, timepoint, "rejected", f"SPECT without CT: {why}")
            continue
        if sources.contours is None:
            add(
                "error",
                subject,
                sources.patient_id,
                timepoint,
                "rejected",
                f"no contours (RTSTRUCT or SEG) reference the CT ({sources.ct.label}) or share its frame of reference",
            )
            continue
        source_hash = _source_hash(sources, grid, counts_calibration, nuclide, roi_names)
        if known and _stored_hash(cohort, patient, known) == source_hash:
            add("info", subject, sources.patient_id, known, "unchanged", "source files unchanged; not read")
            continue
        if not known and plan_labels and patient:
            if patient not in next_free:
                next_free[patient] = timepoint_number(cohort.next_timepoint(patient))
            planned, next_free[patient] = f"tp{next_free[patient]}", next_free[patient] + 1
        scans.append(
            PlannedScan(
                _Job(sources, grid, counts_calibration, nuclide, roi_names),
                source_hash,
                patient,
                redact(subject),
                series_key,
                _keyed_hash(key, sources.ct.frame_of_reference_uid),
                timepoint,
                planned,
                discovery.identifying_strings,
            )
        )
    return IngestPlan(str(cohort_dir), tuple(scans), tuple(rows))


def _label_for(cohort, scan: PlannedScan) -> str:
    """The label the scan's series is written under; call under the patient's lock."""
    held = cohort.timepoint_of(scan.patient, scan.series_key)
    if held:
        return held
    if scan.planned_timepoint and scan.planned_timepoint not in cohort.timepoints(scan.patient):
        return scan.planned_timepoint
    return cohort.next_timepoint(scan.patient)


def _publish(cohort, scan: PlannedScan, outcome: _Built | IngestError) -> list[dict]:
    """Write one built scan under its label (or report why not); returns its report rows."""
    sources = scan.job.sources
    assert sources.ct is not None and sources.contours is not None  # _plan makes jobs only of scans with both
    if isinstance(outcome, IngestError):
        timepoint = cohort.timepoint_of(scan.patient, scan.series_key) if scan.patient else None
        return [scan.row("error", outcome.subject, timepoint or "", "rejected", outcome.problem)]
    attrs = {
        **outcome.attrs,
        "source_hash": scan.source_hash,
        "source_file_hashes": sources.source_file_hashes,
        "frame_of_reference_uid": scan.frame_of_reference_key,
        "spect_series_key": scan.series_key,
    }
    timepoint = ""
    try:
        with cohort.patient_lock(scan.patient):
            timepoint = _label_for(cohort, scan)
            attrs["cycle"] = cohort.cycle_for(scan.patient, timepoint, attrs["injection_datetime"])
            status = cohort.write_scan(scan.patient, timepoint, outcome.dataset, attrs)
    except LockTimeout as exc:
        return [
            scan.row(
                "error",
                sources.spect.label,
                scan.timepoint,
                "rejected",
                f"ingest of this scan waited too long to write it: {exc}",
            )
        ]
    except (ValueError, TypeError) as exc:
        return [scan.row("error", sources.spect.label, timepoint, "rejected", f"the store refused the scan: {exc}")]
    rows = [
        scan.row(
            "info",
            sources.spect.label,
            timepoint,
            status,
            f"paired with {sources.ct.label} by {sources.ct_pairing}; contours from {sources.contours.label}; "
            f"therapy cycle {attrs['cycle']}",
        )
    ]
    rows += [scan.row("info", sources.spect.label, timepoint, status, note) for note in outcome.info]
    rows += [scan.row("warning", sources.spect.label, timepoint, status, note) for note in outcome.notes]
    return rows


def _finish(cohort, rows: list[dict]) -> pd.DataFrame:
    """Cycle notes of the patients that got scans, then the report, appended to its table."""
    written: dict[str, dict[str, tuple[str, str]]] = {}  # pseudonym -> {timepoint: (SPECT label, status)}
    for row in rows:
        if row["severity"] == "info" and row["status"] in ("written", "new_version") and row["timepoint"]:
            written.setdefault(row["patient"], {}).setdefault(row["timepoint"], (row["source"], row["status"]))
    for patient, scans in written.items():
        notes, renumbered = _cycle_notes(cohort, patient, scans)
        for row in rows:  # the scan rows of this ingest say the cycle each scan has now
            if row["patient"] == patient and row["timepoint"] in renumbered and row["severity"] == "info":
                old, new = renumbered[row["timepoint"]]
                if row["message"].endswith(f"; therapy cycle {old}"):
                    row["message"] = row["message"][: -len(str(old))] + str(new)
        for severity, source, timepoint, status, message in notes:
            rows.append(_logged_row(source, patient, timepoint, status, message, severity))
    report = pd.DataFrame(rows, columns=list(REPORT_COLUMNS))
    report["run_utc"] = datetime.now(UTC).isoformat()
    if len(report):
        cohort.append_table(REPORT_TABLE, report)
    return report


def _check_grid_argument(grid) -> None:
    """Reject a bad ``grid`` argument before any file is touched."""
    if isinstance(grid, str) and grid not in ("ct", "compact"):
        raise ValueError(f"unknown dose grid {grid!r}: use 'ct', 'compact' or a spacing (z, y, x) in mm")
    if not isinstance(grid, str) and (len(grid) != 3 or min(grid) <= 0):
        raise ValueError(f"a dose grid spacing needs three positive numbers (z, y, x) in mm, got {grid!r}")


def _run(scans: Sequence[PlannedScan], workers: int):
    """Outcomes (_Built or IngestError) of the planned scans, in order; scans are built in ``workers`` processes."""
    if workers <= 1 or len(scans) <= 1:
        for scan in scans:
            yield _build_or_error(scan.job)
        return
    # spawn, not fork: the caller may be a multi-threaded flow runner, and a forked child can inherit held locks
    with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        yield from pool.map(_build_or_error, [scan.job for scan in scans])


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
    assert sources.ct is not None and sources.contours is not None  # _plan makes jobs only of scans with both
    notes: list[str] = []
    ct_label = sources.ct.label
    ct = read_ct_series(sources.ct.files, ct_label)
    spect = read_nm(sources.spect.files, job.counts_calibration, sources.spect.label, nuclide=job.nuclide)
    notes += list(spect.notes)  # nuclide assumed, decay correction undone, negative voxels clamped, ...
    contour_file = sources.contours.files[0]
    if len(sources.contours.files) > 1:
        notes.append(
            f"{sources.contours.label}: {len(sources.contours.files)} objects in one series; the first is used"
        )
    reader = read_seg if sources.contours.modality == "SEG" else read_rtstruct
    label_map: LabelMap = reader(contour_file, ct.grid, sources.contours.label, roi_names=dict(job.roi_names))
    notes += label_map.notes
    if not label_map.names:
        raise IngestError(sources.contours.label, "no contour of it covers any CT voxel")
    grid = dose_grid(ct.grid, job.grid)
    tilt = _degrees_off_axes(grid.direction)
    if tilt > 0:
        notes.append(
            f"{ct_label}: oblique CT, its axes up to {tilt:.2f} degrees off the patient axes: the dose grid "
            "keeps the CT's orientation instead of the standard axial one the dose network was trained on"
        )
    activity = resample_to_grid(spect.activity, grid, "activity")
    if activity.array.size and float(activity.array.min()) < 0:  # read_nm clamps; linear resampling keeps signs
        raise IngestError(sources.spect.label, "negative activity on the dose grid after resampling (a defect)")
    ct_hu = resample_to_grid(ct, grid, "ct_hu")
    labels = label_map.resampled(grid)  # VOIs (regions where contours overlap) on the dose grid
    notes += [f"{sources.contours.label}: {note}" for note in labels.notes]
    total_bq = activity.attrs["activity_in_grid_bq"] + activity.attrs["activity_outside_grid_bq"]
    if total_bq > 0 and activity.attrs["activity_in_grid_bq"] <= 0:
        raise IngestError(sources.spect.label, f"the SPECT does not overlap its CT ({ct_label})")
    outside = activity.attrs["activity_outside_grid_bq"] / total_bq if total_bq > 0 else 0.0
    if outside > OUTSIDE_ACTIVITY_REFUSAL_FRACTION:
        raise IngestError(
            sources.spect.label,
            f"its CT ({ct_label}) does not cover the SPECT: {100 * outside:.1f} % of the SPECT's activity lies outside "
            f"the CT's extent (at most {100 * OUTSIDE_ACTIVITY_REFUSAL_FRACTION:g} % is accepted)",
        )
    if outside > OUTSIDE_ACTIVITY_WARNING_FRACTION:
        notes.append(
            f"{100 * outside:.1f} % of the SPECT's activity lies outside the CT's extent ({ct_label}) and is "
            "not ingested"
        )
    if sources.ct_pairing != "same frame of reference":
        notes.append(
            f"CT paired by {sources.ct_pairing}: the frames of reference differ, so SPECT and CT are assumed "
            "to share patient coordinates (no registration is done)"
        )
    if not labels.names:
        raise IngestError(sources.contours.label, "no VOI keeps a voxel on the dose grid")
    dims = ("z", "y", "x")
    dataset = xr.Dataset(
        {
            "ct_hu": (dims, ct_hu.array.astype(np.float32), {"units": "HU"}),
            "density": (dims, hu_to_density(ct_hu.array), {"units": "g/cm3"}),
            "activity": (dims, activity.array.astype(np.float32), {"units": "Bq/mL"}),
            "labels": (dims, labels.labels.array.astype(np.int16), {"units": "1", **labels.attrs()}),
        }
    )
    attrs = {
        **grid.as_attrs(),
        # how the CT was stored: the arrays above are reordered into the dose grid's orientation (see dose_grid)
        "ct_patient_position": ct.attrs.get("patient_position", ""),
        "ct_direction": [float(v) for row in ct.grid.direction for v in row],
        "hours_post_injection": spect.hours_post_injection,
        "acquisition_datetime": spect.acquisition_datetime.isoformat(),
        "injection_datetime": spect.injection_datetime.isoformat(),
        "administered_activity_bq": spect.administered_activity_bq,
        "nuclide": spect.nuclide,
        "synthetic": spect.synthetic,
        "half_life_s_from_header": spect.half_life_s if np.isfinite(spect.half_life_s) else None,
        "spect_units_in_file": spect.units_in_file,
        # how the file was read: nuclide_source, spect_modality, spect_value_mapping, activity_reference_datetime,
        # decay_correction_in_file / _reference_datetime / _applied, decay_factor_in_file, decay_frame_duration_s,
        # negative_voxels_clamped, negative_activity_removed_bq; acquisition_duration_s where the NM header gives it
        **spect.reading_attrs(),
        "dose_grid": job.grid if isinstance(job.grid, str) else list(job.grid),
        "ct_pairing": sources.ct_pairing,
        "contours_from": sources.contours.modality,
        "activity_conservation_factor": activity.attrs["activity_conservation_factor"],
        "activity_outside_grid_bq": activity.attrs["activity_outside_grid_bq"],
        "labels_kept_by_guard": list(labels.kept_by_guard),
        "ingest_version": INGEST_VERSION,
    }
    if sources.external_dose is not None:
        dose = read_rtdose(sources.external_dose.files[0], sources.external_dose.label)
        attrs["external_dose"] = {
            "dose_units": dose.dose.units,
            "dose_type": dose.dose_type,
            "summation_type": dose.summation_type,
            "max": float(dose.dose.array.max()),
        }
        notes.append(
            f"{sources.external_dose.label}: external dose found ({dose.dose.units}, {dose.dose_type}, "
            f"{dose.summation_type}); recorded in attrs, the store has no array for it yet"
        )
    return _Built(dataset, attrs, notes, [label_map.naming] if label_map.naming else [])


def _degrees_off_axes(direction) -> float:
    """The largest angle in degrees between an array axis of ``direction`` (3x3, rows = axes) and the patient axis
    nearest to it; 0 for the standard axial orientation."""
    cosine = np.abs(np.asarray(direction, dtype=float)).max(axis=1).min()
    return 0.0 if cosine >= 1.0 else float(np.degrees(np.arccos(cosine)))


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


def _source_hash(sources: ScanSources, grid, counts_calibration, nuclide, roi_names) -> str:
    """Everything a scan is built from: the settings that change its arrays or attrs, and its files' hashes."""
    digest = hashlib.sha256()
    digest.update(
        f"ingest {INGEST_VERSION}; grid {grid!r}; counts {counts_calibration!r}; nuclide {nuclide!r}; "
        f"roi names {roi_names!r}\n".encode()
    )
    for role, entry in (
        ("spect", sources.spect),
        ("ct", sources.ct),
        ("contours", sources.contours),
        ("external_dose", sources.external_dose),
    ):
        for file_hash in sorted(entry.file_sha256) if entry else []:
            digest.update(f"{role} {file_hash}\n".encode())
    return digest.hexdigest()


def _cycle_notes(
    cohort, patient: str, written: dict[str, tuple[str, str]]
) -> tuple[list[tuple[str, str, str, str, str]], dict[str, tuple[int, int]]]:
    """After writing the scans ``written`` ({timepoint: (SPECT series label, write status)}) of one patient: renumber
    the patient's cycles if an earlier injection arrived after later ones (status ``cycle_renumbered``), and name the
    scans of a cycle whose headers give different injections. Returns the rows (severity, source, timepoint, status,
    message) and {timepoint: (old, new)} of the scans of ``written`` renumbered: written in parallel, before a scan
    of an earlier injection of the same ingest (an information, not a warning: nothing earlier had arrived late)."""
    notes, renumbered = [], {}
    with cohort.patient_lock(patient):
        for timepoint, (old, new) in cohort.renumber_cycles(patient).items():
            if timepoint in written:
                renumbered[timepoint] = (old, new)
                notes.append(
                    (
                        "info",
                        written[timepoint][0],
                        timepoint,
                        "cycle_renumbered",
                        f"therapy cycle {old} -> {new}: written before a scan of an earlier injection of this "
                        "ingest (its scans are written in parallel)",
                    )
                )
                continue
            notes.append(
                (
                    "warning",
                    f"scan {patient}/{timepoint}",
                    timepoint,
                    "cycle_renumbered",
                    f"therapy cycle renumbered from {old} to {new}: an earlier injection arrived with this "
                    "ingest (cycles number the patient's injections in time order)",
                )
            )
        scans = {t: cohort.scan_attrs(patient, t) for t in cohort.timepoints(patient)}
    by_cycle: dict[int, list[str]] = {}
    for timepoint, attrs in scans.items():
        by_cycle.setdefault(attrs["cycle"], []).append(timepoint)
    for cycle, timepoints in sorted(by_cycle.items()):
        new = [t for t in timepoints if t in written]
        given = {(scans[t]["injection_datetime"], scans[t]["administered_activity_bq"]) for t in timepoints}
        if not new or len(given) < 2:
            continue
        listing = "; ".join(
            f"{t}: injected {scans[t]['injection_datetime']}, {scans[t]['administered_activity_bq'] / 1e9:.4g} GBq"
            for t in timepoints
        )
        notes.append(
            (
                "warning",
                written[new[0]][0],
                new[0],
                written[new[0]][1],
                f"the scans of therapy cycle {cycle} name different injections ({listing}); they are taken as "
                "one cycle (less than 2 days apart) and each scan's hours post injection count from its own",
            )
        )
    return notes, renumbered


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
