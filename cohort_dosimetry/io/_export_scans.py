"""DICOM out for a whole cohort: each stored scan's maps written beside the original CT it was ingested with.

The store holds pseudonyms and keyed hashes only, never a file path, a UID or a name (paths and UIDs can carry
identity), so the export is given the original DICOM folder again and finds each scan's reference CT in it the way
ingest paired it, then proves it is the same CT with what the store recorded at ingest:

1. discovery of ``dicom_dir`` (headers and file hashes, as ingest does) gives every SPECT series with its CT;
2. the patient's pseudonym under the cohort's key, and the keyed hash of the SPECT Series Instance UID, name the
   stored scan (``Cohort.timepoint_of(patient, spect_series_key)``): the scan attr ``spect_series_key``;
3. the keyed hash of the CT's Frame of Reference UID must equal the scan attr ``frame_of_reference_uid``, and the
   SHA-256 of every CT file must be among the scan attr ``source_file_hashes`` (the hashes of every file the scan
   was built from): the CT found now is, byte for byte, the CT ingested. A scan whose CT changed or is missing is
   reported and not exported; its maps would be placed on another CT.

Identity (patient, study) is copied from the CT's headers into the new objects; it never enters the store, and
report rows name scans by pseudonym and redacted series labels only.

Per scan the export writes ``OUT_DIR/{patient}/{timepoint}/``: ``SEG.dcm`` (the VOIs, :func:`write_seg`) and one
``PM_{method}.dcm`` per stored dose-rate map ``dose_rate_{method}`` (Gy/s, :func:`write_dose_rate_map`).

Per patient exported and stored therapy cycle (``Cohort.cycle_results``) it writes ``OUT_DIR/{patient}/cycle_{c}/``:
one ``RTDOSE_{method}.dcm`` per absorbed-dose map ``absorbed_dose_{method}`` of the cycle (Gy, the dose-rate maps of
its scans registered onto its reference scan and integrated voxel by voxel; :func:`write_rt_dose`, Dose Summation
Type ``CYCLE``), on the reference CT of the cycle's ``reference_timepoint``, the grid the maps are on. A cycle's RT
Doses are refused, with the reason, when that scan's CT was refused or not found, when the maps were computed from
another version of one of the cycle's scans than the store now holds (re-ingested since: for the reference scan,
the maps lie on another grid), or when the cycle's scans are no longer the ones integrated (a scan added, cycles
renumbered). Recomputing the cycle (``cohort-dosimetry run``) brings the maps up to date.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from pydicom.uid import generate_uid

from cohort_dosimetry.grid import Grid
from cohort_dosimetry.io._discovery import discover_studies
from cohort_dosimetry.io._export import reference_series, write_dose_rate_map, write_rt_dose, write_seg
from cohort_dosimetry.io._ingest import _keyed_hash, _pydicom_silenced, _Redactor
from cohort_dosimetry.store import Cohort, open_cohort, pseudonymise_patient_id

#: Columns of the rows :func:`export_scans` returns.
EXPORT_COLUMNS = ("patient", "timepoint", "object", "file", "status", "message")

#: Series Number of the SEG; dose-rate maps take the numbers after :data:`_PM_SERIES_NUMBER`, one per method.
_SEG_SERIES_NUMBER = 903
_PM_SERIES_NUMBER = 910
#: Series Number of a cycle's first RT Dose; the others follow, one per method.
_RT_DOSE_SERIES_NUMBER = 920


@dataclass(frozen=True)
class ReferenceCT:
    """The reference CT of one stored scan: its files in the DICOM folder and its redacted series label."""

    patient: str
    timepoint: str
    files: tuple[Path, ...]
    label: str


def find_reference_cts(
    dicom_dir: str | os.PathLike,
    cohort_dir: str | os.PathLike,
    patients: Iterable[str] | None = None,
    key: bytes | str | None = None,
) -> tuple[list[ReferenceCT], list[dict]]:
    """The reference CT of every stored scan found in ``dicom_dir`` (module docstring, steps 1-3).

    Args:
        dicom_dir: the DICOM folder the cohort was ingested from (any layout).
        cohort_dir: the cohort.
        patients: pseudonyms to export; None: every patient found.
        key: the pseudonym key; None: the cohort's configured key (as ``ingest``), checked against the store.

    Returns:
        (reference CTs in discovery order, report rows of :data:`EXPORT_COLUMNS` for scans not exported).
    """
    cohort = open_cohort(cohort_dir)
    key = cohort.bind_pseudonym_key(key)  # PseudonymKeyMismatch (ValueError) if not the cohort's key
    wanted = None if patients is None else set(patients)
    with _pydicom_silenced():
        discovery = discover_studies(dicom_dir)
    redact = _Redactor(discovery.identifying_strings)
    found, rows = [], []
    for sources in discovery.scans:
        patient = pseudonymise_patient_id(sources.patient_id, key) if sources.patient_id.strip() else ""
        if not patient or (wanted is not None and patient not in wanted):
            continue
        timepoint = cohort.timepoint_of(patient, _keyed_hash(key, sources.spect.series_uid))
        if timepoint is None:
            continue  # a SPECT series the cohort does not hold (not ingested, or refused at ingest)
        attrs = cohort.scan_attrs(patient, timepoint)
        problem = None
        if sources.ct is None:
            problem = f"no CT found for the SPECT series {sources.spect.label} ({sources.ct_pairing})"
        elif _keyed_hash(key, sources.ct.frame_of_reference_uid) != attrs.get("frame_of_reference_uid"):
            problem = f"the CT {sources.ct.label} is not in the frame of reference the scan was ingested in"
        elif not set(sources.ct.file_sha256) <= set(attrs.get("source_file_hashes", [])):
            problem = (
                f"the CT {sources.ct.label} differs from the CT the scan was ingested with (file hashes): "
                "re-ingest before exporting"
            )
        if problem is not None:
            rows.append(_row(patient, timepoint, "", "", "refused", redact(problem)))
            continue
        assert sources.ct is not None
        found.append(ReferenceCT(patient, timepoint, tuple(sources.ct.files), redact(sources.ct.label)))
    if wanted is not None:
        for patient in sorted(wanted - {ref.patient for ref in found} - {row["patient"] for row in rows}):
            rows.append(_row(patient, "", "", "", "refused", "no scan of this patient found in the DICOM folder"))
    return found, rows


def export_scans(
    cohort_dir: str | os.PathLike,
    dicom_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    patients: Iterable[str] | None = None,
    key: bytes | str | None = None,
) -> pd.DataFrame:
    """Write every stored scan's VOIs (SEG) and dose-rate maps (Parametric Maps, Gy/s) on its reference CT, and
    every stored cycle's absorbed-dose maps (RT Dose, Gy) on the reference CT of the cycle's reference scan.

    Files go to ``out_dir/{patient}/{timepoint}/`` and ``out_dir/{patient}/cycle_{c}/`` (module docstring). UIDs
    are derived from the scan, its store version, each map's provenance (a cycle's: its ``written_utc``) and the
    reference CT series, so exporting the same maps again gives the same objects (a PACS receiving them twice keeps
    one copy) and a recomputation gives new ones.

    Returns:
        One row per object written or refused, or scan refused: :data:`EXPORT_COLUMNS` (``file`` relative to
        ``out_dir``; status ``written`` or ``refused``; a cycle's rows have the reference scan's timepoint and
        object ``RTDOSE absorbed_dose_<method> cycle <c>``).
    """
    out_dir = Path(out_dir)
    references, rows = find_reference_cts(dicom_dir, cohort_dir, patients, key)
    refused = {(row["patient"], row["timepoint"]): row["message"] for row in rows if row["timepoint"]}
    cts: dict[tuple[str, str], tuple[ReferenceCT, list]] = {}
    cohort = open_cohort(cohort_dir)
    for ref in references:
        scan = cohort.scan(ref.patient, ref.timepoint)
        attrs = cohort.scan_attrs(ref.patient, ref.timepoint)
        grid = Grid.from_attrs(scan["labels"].shape, attrs)
        with _pydicom_silenced():
            ct = reference_series(ref.files)
        cts[ref.patient, ref.timepoint] = (ref, ct)
        folder = out_dir / ref.patient / ref.timepoint
        seed = (ct[0].SeriesInstanceUID, ref.patient, ref.timepoint, str(scan.attrs.get("version")))
        labels = scan["labels"]
        path = write_seg(
            labels.values,
            labels.attrs["names"],
            grid,
            ct,
            folder / "SEG.dcm",
            vois=labels.attrs.get("vois"),
            series_number=_SEG_SERIES_NUMBER,
            **_uids(seed, "labels"),
        )
        rows.append(
            _row(
                ref.patient,
                ref.timepoint,
                "SEG",
                path.relative_to(out_dir).as_posix(),
                "written",
                f"VOIs on the reference CT {ref.label}",
            )
        )
        maps = sorted(
            str(n) for n in scan.data_vars if str(n).startswith("dose_rate_") and not str(n).endswith("_uncertainty")
        )
        provenance = scan.attrs.get("provenance", {})
        for k, name in enumerate(maps):
            method = name.removeprefix("dose_rate_")
            written = str(provenance.get(name, {}).get("written_utc", ""))
            description = f"absorbed dose rate, {method}, {float(attrs['hours_post_injection']):g} h p.i."
            if attrs.get("synthetic"):  # a virtual patient's scan: the file says it is not patient data
                description += ", synthetic"
            path = write_dose_rate_map(
                scan[name].values,
                grid,
                ct,
                folder / f"PM_{method}.dcm",
                description,
                series_number=_PM_SERIES_NUMBER + k,
                **_uids(seed, name, written),
            )
            rows.append(
                _row(
                    ref.patient,
                    ref.timepoint,
                    f"PM {name}",
                    path.relative_to(out_dir).as_posix(),
                    "written",
                    description,
                )
            )
    exported = {patient for patient, _ in [*cts, *refused]}  # patients whose scans were found in the DICOM folder
    for patient, cycle in cohort.cycle_results():
        if patient in exported:
            rows += _export_cycle(cohort, patient, cycle, cts, refused, out_dir)
    return pd.DataFrame(rows, columns=list(EXPORT_COLUMNS))


def _export_cycle(
    cohort: Cohort,
    patient: str,
    cycle: int,
    cts: dict[tuple[str, str], tuple[ReferenceCT, list]],
    refused: dict[tuple[str, str], str],
    out_dir: Path,
) -> list[dict]:
    """One RT Dose per absorbed-dose map of a stored cycle on its reference scan's CT, or a refused row per map
    (module docstring); ``cts``: (patient, timepoint) -> (reference CT, its header Datasets) of the scans exported,
    ``refused``: (patient, timepoint) -> why a scan found in the DICOM folder was not."""
    ds = cohort.cycle(patient, cycle)
    attrs = ds.attrs
    reference = str(attrs["reference_timepoint"])
    names = sorted(str(n) for n in ds.data_vars if str(n).startswith("absorbed_dose_"))

    def objects(status: str, message: str) -> list[dict]:
        return [_row(patient, reference, f"RTDOSE {n} cycle {cycle}", "", status, message) for n in names]

    if (patient, reference) not in cts:
        why = refused.get((patient, reference), "the scan was not found in the DICOM folder")
        return objects("refused", f"cycle {cycle}: reference scan {reference} not exported: {why}")
    problem = _stale_cycle(cohort, patient, cycle, attrs)
    if problem is not None:
        return objects("refused", f"cycle {cycle}: {problem}; recompute it (cohort-dosimetry run) before exporting")
    ref, ct = cts[patient, reference]
    version = int(attrs["scan_versions"][reference])
    synthetic = bool(cohort.scan_attrs(patient, reference, version=version).get("synthetic"))
    seed = (ct[0].SeriesInstanceUID, patient, f"cycle_{cycle}", str(version))
    folder = out_dir / patient / f"cycle_{cycle}"
    rows = []
    for k, name in enumerate(names):
        method = name.removeprefix("absorbed_dose_")
        dose = ds[name].values
        grid = Grid.from_attrs(dose.shape, attrs)
        # "integrated" is implied: an absorbed dose over a cycle; at most 64 characters (Series Description, LO)
        description = f"absorbed dose, {method}, cycle {cycle}, voxel-level, registered"
        if synthetic:  # a virtual patient's scans: the file says it is not patient data
            description += ", synthetic"
        obj = f"RTDOSE {name} cycle {cycle}"
        uids = _uids(seed, name, str(attrs.get("written_utc", "")))  # a recomputation (new written_utc): new UIDs
        try:
            path = write_rt_dose(
                dose,
                grid,
                ct,
                folder / f"RTDOSE_{method}.dcm",
                "CYCLE",
                description,
                series_number=_RT_DOSE_SERIES_NUMBER + k,
                series_instance_uid=uids["series_instance_uid"],
                sop_instance_uid=uids["sop_instance_uid"],
            )
        except ValueError as err:  # a map that is not a dose (negative, not finite) or off the CT's field of view
            rows.append(_row(patient, reference, obj, "", "refused", f"cycle {cycle}: {err}"))
            continue
        message = f"{description}; on the reference CT {ref.label} (scan {reference})"
        rows.append(_row(patient, reference, obj, path.relative_to(out_dir).as_posix(), "written", message))
    return rows


def _stale_cycle(cohort: Cohort, patient: str, cycle: int, attrs: dict) -> str | None:
    """Why a cycle's stored maps no longer follow from the store's scans (None when they do): a scan re-ingested
    since (for the reference scan, the maps lie on the grid of another version), a scan added to the cycle or
    cycles renumbered."""
    reference = str(attrs["reference_timepoint"])
    versions = {str(tp): int(v) for tp, v in attrs.get("scan_versions", {}).items()}
    if reference not in versions:
        return f"the maps do not record the version of their reference scan {reference}"
    for tp, version in sorted(versions.items(), key=lambda item: item[0] != reference):
        held = cohort.scan_versions(patient, tp)
        if not held:
            return f"its scan {tp} is no longer in the store"
        if held[-1] != version:
            if tp == reference:
                return (
                    f"the maps are on the grid of version {version} of the reference scan {reference}, the store's "
                    f"latest version is {held[-1]} (re-ingested since): the maps belong to another version"
                )
            return (
                f"the maps were integrated from version {version} of scan {tp}, the store now holds version {held[-1]}"
            )
    now = sorted(tp for tp in cohort.timepoints(patient) if int(cohort.scan_attrs(patient, tp)["cycle"]) == cycle)
    if now != sorted(versions):
        return (
            f"the maps were integrated from the scans {', '.join(sorted(versions))}, the cycle now holds "
            f"{', '.join(now) or 'none'} (a scan added or cycles renumbered since)"
        )
    return None


def _uids(seed: tuple[str, ...], *parts: str) -> dict[str, str]:
    """Series and SOP Instance UIDs determined by ``seed`` (reference CT series, scan, store version) and ``parts``
    (the object): the same maps exported again get the same UIDs."""
    return {
        "series_instance_uid": generate_uid(entropy_srcs=[*seed, *parts, "series"]),
        "sop_instance_uid": generate_uid(entropy_srcs=[*seed, *parts, "instance"]),
    }


def _row(patient: str, timepoint: str, obj: str, file: str, status: str, message: str) -> dict:
    return dict(patient=patient, timepoint=timepoint, object=obj, file=file, status=status, message=message)
