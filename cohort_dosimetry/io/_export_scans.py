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
``PM_{method}.dcm`` per stored dose-rate map ``dose_rate_{method}`` (Gy/s, :func:`write_dose_rate_map`). The store
holds no voxel map of absorbed dose (absorbed doses are per VOI, in ``tables/absorbed_dose``), so no RT Dose is
written here; :func:`write_rt_dose` writes one from such a map.
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
from cohort_dosimetry.io._export import reference_series, write_dose_rate_map, write_seg
from cohort_dosimetry.io._ingest import _keyed_hash, _pydicom_silenced, _Redactor
from cohort_dosimetry.store import open_cohort, pseudonymise_patient_id

#: Columns of the rows :func:`export_scans` returns.
EXPORT_COLUMNS = ("patient", "timepoint", "object", "file", "status", "message")

#: Series Number of the SEG; dose-rate maps take the numbers after :data:`_PM_SERIES_NUMBER`, one per method.
_SEG_SERIES_NUMBER = 903
_PM_SERIES_NUMBER = 910


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
    """Write every stored scan's VOIs (SEG) and dose-rate maps (Parametric Maps, Gy/s) on its reference CT.

    Files go to ``out_dir/{patient}/{timepoint}/`` (module docstring). UIDs are derived from the scan, its store
    version, each map's provenance and the reference CT series, so exporting the same maps again gives the same
    objects (a PACS receiving them twice keeps one copy).

    Returns:
        One row per object written or scan refused: :data:`EXPORT_COLUMNS` (``file`` relative to ``out_dir``;
        status ``written`` or ``refused``).
    """
    out_dir = Path(out_dir)
    references, rows = find_reference_cts(dicom_dir, cohort_dir, patients, key)
    cohort = open_cohort(cohort_dir)
    for ref in references:
        scan = cohort.scan(ref.patient, ref.timepoint)
        attrs = cohort.scan_attrs(ref.patient, ref.timepoint)
        grid = Grid.from_attrs(scan["labels"].shape, attrs)
        with _pydicom_silenced():
            ct = reference_series(ref.files)
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
    return pd.DataFrame(rows, columns=list(EXPORT_COLUMNS))


def _uids(seed: tuple[str, ...], *parts: str) -> dict[str, str]:
    """Series and SOP Instance UIDs determined by ``seed`` (reference CT series, scan, store version) and ``parts``
    (the object): the same maps exported again get the same UIDs."""
    return {
        "series_instance_uid": generate_uid(entropy_srcs=[*seed, *parts, "series"]),
        "sop_instance_uid": generate_uid(entropy_srcs=[*seed, *parts, "instance"]),
    }


def _row(patient: str, timepoint: str, obj: str, file: str, status: str, message: str) -> dict:
    return dict(patient=patient, timepoint=timepoint, object=obj, file=file, status=status, message=message)
