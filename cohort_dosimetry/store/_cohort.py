"""A cohort directory: the Zarr v3 scan store read through xarray, and the Parquet tables.

Layout (``storage_schema/README.md`` explains every decision)::

    COHORT_DIR/
      store.zarr/                                  zarr v3 root group; attrs schema_version, created, software_versions
        scans/{patient}/{timepoint}/v0001/         one group per scan version; arrays (z, y, x) + attrs
        scans/{patient}/{timepoint}/v0002/         written when the source files changed; v0001 stays readable
          superseded/s0001/                        derived arrays replaced by a recomputation, with their provenance
        cycles/{patient}/c{cycle}/                 per therapy cycle: absorbed-dose maps on the reference scan's
                                                   grid, rule maps, registration fields; replaced as a whole
        .staging/                                  writers build here, then publish by one rename
        .locks/                                    one flock file per scan, per patient and per table; one per
                                                   scan and dose method held while a run computes that map
      tables/{name}.parquet
      reports/
      .secrets/pseudonym.key                       only when no key is configured
"""

from __future__ import annotations

import json
import math
import os
import platform
import re
import secrets
import shutil
from collections.abc import Callable, Iterable
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, cast

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import xarray as xr
import zarr
from zarr.codecs import BloscCodec

from cohort_dosimetry import __version__
from cohort_dosimetry.grid import Grid

from ._cycles import number_cycles
from ._locking import LockTimeout, exclusive_lock, lock_file, reentrant_lock, try_lock
from ._pseudonym import (
    FINGERPRINT_ATTR,
    PseudonymKeyMismatch,
    key_fingerprint,
    key_is_configured,
    key_mismatch_message,
    pseudonym_key,
    pseudonymise_patient_id,
)
from ._schema import (
    SCHEMA_VERSION,
    TIMEPOINT_RE,
    attr_problems,
    check_identifier,
    check_timepoint,
    label_attrs_problems,
    store_schema,
    timepoint_number,
)

STORE_NAME = "store.zarr"
DIMS = ("z", "y", "x")
VERSION_DIR = "v{:04d}"
#: Subgroup of a scan version that keeps the derived arrays a newer write replaced: ``superseded/s0001``, ...
SUPERSEDED_DIR = "superseded"
SLOT_DIR = "s{:04d}"
SLOT_RE = re.compile(r"^s(\d{4})$")
#: Per-cycle result groups: ``cycles/{patient}/c1``, ``c2``, ...
CYCLE_RE = re.compile(r"^c[1-9][0-9]*$")
_GROUP_JSON = {"zarr_format": 3, "node_type": "group", "attributes": {}}
_STORE_SET_ATTRS = ("status", "version", "written_utc")
_GEOMETRY_ATTRS = ("spacing_mm", "origin_mm", "direction")

WriteOutcome = Literal["written", "new_version", "unchanged"]


class MapLockTimeout(LockTimeout):
    """Another run held the lock of computing one map of a scan for longer than the wait allowed
    (:meth:`Cohort.compute_lock`); ``scan`` ("scan P1/tp2") and ``method`` name the map."""

    def __init__(self, path: Path, waited_s: float, scan: str, method: str):
        self.path, self.waited_s, self.owner, self.scan, self.method = Path(path), float(waited_s), scan, scan, method
        TimeoutError.__init__(
            self,
            f"{scan}: waited {self.waited_s:g} s for its {method} map, which another run is computing (it holds "
            f"{self.path.parent.name}/{self.path.name}); raise the wait or rerun when that run is done",
        )

    def __reduce__(self):  # the error crosses processes (Dask workers): rebuild it from its own arguments
        return type(self), (self.path, self.waited_s, self.scan, self.method)


def open_cohort(path: str | os.PathLike, create: bool = False) -> Cohort:
    """Open the cohort directory ``path``; with ``create=True`` make it (or its missing parts) first.

    Opening removes the staging leftovers of writers that died (their scan lock is free); it never touches
    published scans. Raises ``FileNotFoundError`` naming ``path`` if it is not a cohort and ``create`` is False.
    """
    root = Path(path)
    store = root / STORE_NAME
    if create:
        root.mkdir(parents=True, exist_ok=True)
        if not (store / "zarr.json").exists():
            # Built aside and renamed into place: of two processes creating one cohort at once, one store wins whole.
            staged = root / f".{STORE_NAME}.{secrets.token_hex(6)}"
            group = zarr.open_group(staged, mode="w-", zarr_format=3)
            group.attrs.update(
                {"schema_version": SCHEMA_VERSION, "created": _utc_now(), "software_versions": software_versions()}
            )
            group.create_group("scans")
            try:
                os.rename(staged, store)
            except OSError:
                if not (store / "zarr.json").is_file():
                    raise
                shutil.rmtree(staged)
        for sub in ("tables", "reports"):
            (root / sub).mkdir(exist_ok=True)
    elif not (store / "zarr.json").is_file():
        raise FileNotFoundError(
            f"{root} is not a cohort directory: {store}/zarr.json is missing "
            "(create one with open_cohort(path, create=True) or `cohort-dosimetry ingest`)"
        )
    cohort = Cohort(root)
    version = cohort.attrs.get("schema_version")
    if version == 1:
        raise ValueError(
            f"{store} has schema_version 1; this software reads version {SCHEMA_VERSION}. A version-1 store numbered "
            "time points by their position in the folder being ingested, so its labels may not follow the scans' "
            "SPECT series (a later ingest could file another acquisition under an existing label) and it records no "
            "therapy cycle. Re-ingest its DICOM into a new cohort directory "
            "(`cohort-dosimetry ingest DICOM_DIR NEW_COHORT_DIR`)."
        )
    if version != SCHEMA_VERSION:
        raise ValueError(f"{store} has schema_version {version!r}; this software reads version {SCHEMA_VERSION}")
    cohort._clean_dead_staging()
    return cohort


def _table_reader(name: str, doc: str) -> Callable[[Cohort], pd.DataFrame]:
    """A Cohort method that reads the table ``name`` (:meth:`Cohort.read_table`)."""

    def read(self: Cohort) -> pd.DataFrame:
        return self.read_table(name)

    read.__name__ = read.__qualname__ = name
    read.__doc__ = doc
    return read


class Cohort:
    """One cohort directory. Create with :func:`open_cohort`.

    Scans are addressed by (patient, timepoint): a pseudonym such as ``"P3fa9c2d41b07"`` and a label ``"tp1"``,
    ``"tp2"``, ... A label belongs to one SPECT series (scan attr ``spect_series_key``) for good: every version of it
    is that series, and a series new to the patient gets the next free label (:meth:`timepoint_of`,
    :meth:`next_timepoint`). Every array is (z, y, x) with a ``units`` attribute; geometry attrs are in mm,
    (z, y, x) order.
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        self.store_path = self.path / STORE_NAME

    # ----------------------------------------------------------------------------------------------- layout
    @property
    def tables_dir(self) -> Path:
        """``COHORT_DIR/tables``: one Parquet file per table."""
        return self.path / "tables"

    @property
    def reports_dir(self) -> Path:
        """``COHORT_DIR/reports``: figures and HTML reports."""
        return self.path / "reports"

    @property
    def attrs(self) -> dict:
        """Root attrs of the store: schema_version, created (ISO 8601 UTC), software_versions, and
        pseudonym_key_fingerprint once a writer bound the store to its key (:meth:`bind_pseudonym_key`)."""
        return _read_json(self.store_path / "zarr.json").get("attributes", {})

    def _scan_dir(self, patient: str, timepoint: str) -> Path:
        check_identifier(patient, "patient")
        check_identifier(timepoint, "timepoint")
        return self.store_path / "scans" / patient / timepoint

    def _lock_path(self, *owner: str) -> Path:
        return lock_file(self.store_path, *owner)

    def _staging_path(self, kind: str, *names: str) -> Path:
        return self.store_path / ".staging" / ".".join((kind, *names, secrets.token_hex(6)))

    # ------------------------------------------------------------------------------------------- read scans
    def scans(self) -> list[tuple[str, str]]:
        """(patient, timepoint) pairs of every published (hence complete) scan, sorted by patient, then by the
        timepoint's number (tp2 before tp10)."""
        found = []
        scans_dir = self.store_path / "scans"
        for patient_dir in sorted(p for p in scans_dir.iterdir() if p.is_dir()) if scans_dir.is_dir() else []:
            found += [(patient_dir.name, timepoint) for timepoint in self._timepoints_in(patient_dir)]
        return found

    def timepoints(self, patient: str) -> list[str]:
        """The published timepoint labels of one patient, in number order (empty if the patient has none)."""
        return self._timepoints_in(self.store_path / "scans" / check_identifier(patient, "patient"))

    @staticmethod
    def _timepoints_in(patient_dir: Path) -> list[str]:
        if not patient_dir.is_dir():
            return []
        labels = [p.name for p in patient_dir.iterdir() if p.is_dir() and _version_numbers(p)]
        return sorted(labels, key=_timepoint_sort_key)

    # ------------------------------------------------------------------------------- timepoints and cycles
    def patient_lock(self, patient: str):
        """Context manager holding the patient's lock (``.locks/patient.{patient}.lock``): taken by
        :meth:`write_scan` and :meth:`renumber_cycles`; hold it around :meth:`timepoint_of` / :meth:`next_timepoint`
        and the :meth:`write_scan` that uses their answer, so that no other writer gives the label away in between.
        Re-entrant within a thread; other threads and processes wait."""
        return reentrant_lock(self._lock_path("patient", check_identifier(patient, "patient")))

    def timepoint_of(self, patient: str, spect_series_key: str) -> str | None:
        """The label of the patient's scan whose ``spect_series_key`` is this one, or None if the series is new."""
        for timepoint in self.timepoints(patient):
            if self._latest_stored_attrs(patient, timepoint).get("spect_series_key") == spect_series_key:
                return timepoint
        return None

    def next_timepoint(self, patient: str) -> str:
        """The next free label of the patient: ``tp<n + 1>`` with ``n`` the highest label number in use (``tp1`` for a
        new patient). Labels are never reused or renumbered, so a label keeps naming the same scan."""
        numbers = [timepoint_number(t) for t in self.timepoints(patient) if TIMEPOINT_RE.fullmatch(t)]
        return f"tp{max(numbers, default=0) + 1}"

    def cycle_for(self, patient: str, timepoint: str, injection_datetime: str | datetime) -> int:
        """The therapy cycle (1, 2, ...) a scan at ``timepoint`` injected at ``injection_datetime`` gets among the
        patient's other scans (their latest versions' ``injection_datetime``): see :mod:`._cycles`.
        Call it under :meth:`patient_lock`, next to the :meth:`write_scan` that records it."""
        others = [
            self._latest_stored_attrs(patient, t)["injection_datetime"]
            for t in self.timepoints(patient)
            if t != timepoint
        ]
        return number_cycles([*others, injection_datetime])[-1]

    def renumber_cycles(self, patient: str) -> dict[str, tuple[int, int]]:
        """Make the ``cycle`` attrs of the patient's scans (latest versions) follow their injections again.

        Needed when a scan of an earlier cycle arrives after later ones (the later cycles move up by one). Each
        changed scan's attrs are rewritten in place (one atomic rewrite of its ``zarr.json`` under the scan's lock;
        its arrays are untouched) and the change is appended to its ``cycle_changes`` attr
        ([{"from", "to", "utc"}]). Returns {timepoint: (old cycle, new cycle)} of the scans changed.
        """
        changed = {}
        with self.patient_lock(patient):
            timepoints = self.timepoints(patient)
            stored = [self._latest_stored_attrs(patient, t) for t in timepoints]
            cycles = number_cycles([attrs["injection_datetime"] for attrs in stored])
            for timepoint, attrs, cycle in zip(timepoints, stored, cycles):
                if attrs.get("cycle") == cycle:
                    continue
                with exclusive_lock(self._lock_path("scan", patient, timepoint)):
                    vdir = self._version_dir(patient, timepoint, None)
                    meta = _read_json(vdir / "zarr.json")
                    old = meta["attributes"].get("cycle")
                    meta["attributes"]["cycle"] = cycle
                    meta["attributes"]["cycle_changes"] = [
                        *meta["attributes"].get("cycle_changes", []),
                        {"from": old, "to": cycle, "utc": _utc_now()},
                    ]
                    staging = self._staging_path("scan", patient, timepoint)
                    staging.mkdir(parents=True)
                    _write_json_atomic(vdir / "zarr.json", meta, staging)
                    shutil.rmtree(staging)
                changed[timepoint] = (old, cycle)
        return changed

    def _latest_stored_attrs(self, patient: str, timepoint: str) -> dict:
        return _read_json(self._version_dir(patient, timepoint, None) / "zarr.json")["attributes"]

    def scan_versions(self, patient: str, timepoint: str) -> list[int]:
        """Published versions of one scan, oldest first (empty if the scan does not exist)."""
        return _version_numbers(self._scan_dir(patient, timepoint))

    def _version_dir(self, patient: str, timepoint: str, version: int | None) -> Path:
        scan_dir = self._scan_dir(patient, timepoint)
        versions = _version_numbers(scan_dir)
        if not versions:
            raise KeyError(f"scan {patient}/{timepoint} is not in the cohort {self.path}")
        if version is None:
            version = versions[-1]
        elif version not in versions:
            raise KeyError(f"scan {patient}/{timepoint} has no version {version} (versions: {versions})")
        return scan_dir / VERSION_DIR.format(version)

    def scan_attrs(self, patient: str, timepoint: str, version: int | None = None) -> dict:
        """Attrs of one scan (latest version unless ``version`` is given), decoded as :meth:`scan` gives them."""
        stored = _read_json(self._version_dir(patient, timepoint, version) / "zarr.json")["attributes"]
        return _decode_scan_attrs(stored, patient, timepoint)

    def scan(self, patient: str, timepoint: str, version: int | None = None) -> xr.Dataset:
        """One scan as a lazy Dataset: dask-backed (z, y, x) variables chunked as stored, each with ``units``.

        Holds exactly the arrays listed in the scan's provenance, i.e. those whose write completed.
        Attrs: see ``storage_schema/README.md``; ``spacing_mm``/``origin_mm``/``direction`` are tuples of float,
        ``labels.attrs["names"]`` is {int label: VOI name}, and ``patient`` and ``timepoint`` (from the path, not
        stored) name the scan in the messages of functions that take it. Reading a slab of slices reads only its
        chunks.
        """
        vdir = self._version_dir(patient, timepoint, version)
        ds = xr.open_zarr(vdir, zarr_format=3, consolidated=False, chunks={}, mask_and_scale=False)
        declared = list(ds.attrs.get("provenance", {}))
        missing = [name for name in declared if name not in ds.data_vars]
        if missing:
            raise RuntimeError(f"scan {patient}/{timepoint}: declared arrays {missing} are missing from {vdir}")
        ds = ds[declared]
        ds.attrs = _decode_scan_attrs(ds.attrs, patient, timepoint)
        for name in ds.data_vars:
            ds[name].attrs.pop("_FillValue", None)
        if "labels" in ds:
            ds["labels"].attrs["names"] = _decode_label_names(ds["labels"].attrs["names"])
        return _with_patient_coords(ds)

    def has_arrays(self, patient: str, timepoint: str, names: Iterable[str]) -> bool:
        """True if the latest version of the scan exists and holds every array in ``names``."""
        try:
            vdir = self._version_dir(patient, timepoint, None)
        except KeyError:
            return False
        declared = _read_json(vdir / "zarr.json")["attributes"].get("provenance", {})
        return all(name in declared for name in names)

    # -------------------------------------------------------------------------------- superseded derived arrays
    def superseded_maps(self, patient: str, timepoint: str, version: int | None = None) -> list[dict]:
        """The derived arrays of a scan version that a later :meth:`write_arrays` replaced, oldest first.

        One entry per replacing write: ``{"slot": "s0001", "superseded_utc": ISO 8601, "provenance": {array:
        record}}``, the records as they stood when the arrays were current. Read the arrays with
        :meth:`superseded_dataset`. Empty if nothing was replaced (latest version unless ``version`` is given).
        """
        root = self._version_dir(patient, timepoint, version) / SUPERSEDED_DIR
        found = []
        for slot_dir in sorted(root.iterdir()) if root.is_dir() else []:
            if not SLOT_RE.fullmatch(slot_dir.name) or not (slot_dir / "zarr.json").is_file():
                continue
            attrs = _read_json(slot_dir / "zarr.json").get("attributes", {})
            present = {
                name: record
                for name, record in attrs.get("provenance", {}).items()
                if (slot_dir / name / "zarr.json").is_file()
            }
            if present:  # a slot being filled or rolled back by a writer holds none of its arrays yet
                found.append(
                    {"slot": slot_dir.name, "superseded_utc": attrs.get("superseded_utc"), "provenance": present}
                )
        return found

    def superseded_dataset(self, patient: str, timepoint: str, slot: str, version: int | None = None) -> xr.Dataset:
        """The arrays of one superseded slot (:meth:`superseded_maps`) as a lazy Dataset of (z, y, x) variables with
        ``units``; attrs ``provenance`` (their records), ``superseded_utc``, ``slot``, ``patient``, ``timepoint``."""
        if not isinstance(slot, str) or not SLOT_RE.fullmatch(slot):
            raise ValueError(f"scan {patient}/{timepoint}: {slot!r} is not a superseded slot (s0001, s0002, ...)")
        entries = {e["slot"]: e for e in self.superseded_maps(patient, timepoint, version)}
        if slot not in entries:
            raise KeyError(f"scan {patient}/{timepoint} has no superseded slot {slot} (slots: {sorted(entries)})")
        path = self._version_dir(patient, timepoint, version) / SUPERSEDED_DIR / slot
        ds = xr.open_zarr(path, zarr_format=3, consolidated=False, chunks={}, mask_and_scale=False)
        ds = ds[list(entries[slot]["provenance"])]
        for name in ds.data_vars:
            ds[name].attrs.pop("_FillValue", None)
        ds.attrs = {
            "provenance": entries[slot]["provenance"],
            "superseded_utc": entries[slot]["superseded_utc"],
            "slot": slot,
            "patient": patient,
            "timepoint": timepoint,
        }
        return ds

    # ------------------------------------------------------------------------------------ computing a map
    @contextmanager
    def compute_lock(self, patient: str, timepoint: str, method: str, timeout_s: float | None = None):
        """Hold the lock of computing the ``method`` map ("dvk", "cnn", "mc") of one scan
        (``.locks/compute.{patient}.{timepoint}.{method}.lock``) for the ``with`` block.

        A run takes it before it computes that map and holds it until the map is stored, then the next holder
        re-reads the scan's provenance and finds the map there: two runs on one cohort never compute one map twice.
        It is held for as long as a computation takes (minutes for a Monte Carlo map), so it has its own wait:
        ``timeout_s`` seconds (None: as long as the holder computes; a holder that dies releases the lock at once),
        then :class:`MapLockTimeout` (a :class:`LockTimeout`) naming the scan and the map.
        Taken before the scan's lock (inside :meth:`write_arrays`), never while holding it.
        """
        check_identifier(method, "dose method")
        self._scan_dir(patient, timepoint)  # checks both identifiers
        path = self._lock_path("compute", patient, timepoint, method)
        with ExitStack() as stack:
            try:
                stack.enter_context(exclusive_lock(path, timeout=math.inf if timeout_s is None else timeout_s))
            except LockTimeout as exc:
                raise MapLockTimeout(path, exc.waited_s, f"scan {patient}/{timepoint}", method) from None
            yield

    # ------------------------------------------------------------------------------------------ write scans
    def write_scan(self, patient: str, timepoint: str, ds: xr.Dataset, attrs: dict) -> WriteOutcome:
        """Publish one complete scan; readers see all of it or nothing.

        ``ds``: (z, y, x) variables named as in the schema; at least ct_hu, density, activity, labels (with
        ``labels.attrs["names"]`` = {int: VOI name}); floats are stored as float32, labels as int16; a missing
        ``units`` attr is taken from the schema, a different one is an error. Coordinates are dropped
        (geometry lives in the attrs). ``attrs``: the schema's scan attrs, plus optional
        ``provenance`` = {array name: {...}}; status, version and written_utc are set by the store.
        ``timepoint`` is a label ``tp1``, ``tp2``, ...; it belongs to the SPECT series ``attrs["spect_series_key"]``:
        a ValueError naming both keys refuses a version of another series than the label's, and one naming both
        labels refuses a series that another label of the patient already holds.

        Returns "unchanged" if the latest version has the same ``source_hash`` (nothing is written),
        "written" for a new scan, "new_version" when the hash differs (the old version stays readable).
        The scan is built in ``store.zarr/.staging`` and published by one atomic directory rename while the
        patient's and the scan's locks are held, so a crash leaves only an invisible staging directory.
        """
        where = f"scan {patient}/{timepoint}"
        check_timepoint(timepoint)
        scan_dir = self._scan_dir(patient, timepoint)
        variables = _checked_variables(ds, where, require_ingest_arrays=True)
        attrs = dict(attrs)
        given_provenance = attrs.pop("provenance", {}) or {}
        _check_scan_attrs(attrs, where)
        unknown = set(given_provenance) - set(variables)
        if unknown:
            raise ValueError(f"{where}: provenance given for arrays not in the dataset: {sorted(unknown)}")
        now = _utc_now()
        provenance = {
            name: {
                "method": "ingest",
                **given_provenance.get(name, {}),
                "software_version": __version__,
                "written_utc": now,
            }
            for name in variables
        }
        key = attrs["spect_series_key"]
        with self.patient_lock(patient), exclusive_lock(self._lock_path("scan", patient, timepoint)):
            self._clean_dead_staging(patient, timepoint, lock_held=True)
            versions = _version_numbers(scan_dir)
            if versions:
                latest = _read_json(scan_dir / VERSION_DIR.format(versions[-1]) / "zarr.json")["attributes"]
                if latest.get("spect_series_key") != key:
                    raise ValueError(
                        f"{where} holds SPECT series {latest.get('spect_series_key')!r}; refusing to write a version "
                        f"of series {key!r} under its label (a label belongs to one series)"
                    )
            holder = self.timepoint_of(patient, key)
            if holder not in (None, timepoint):
                raise ValueError(
                    f"{where}: SPECT series {key!r} is already scan {patient}/{holder}; one series has one label"
                )
            if versions and latest.get("source_hash") == attrs["source_hash"]:
                return "unchanged"
            version = versions[-1] + 1 if versions else 1
            group_attrs = _jsonable(
                {**attrs, "status": "complete", "version": version, "written_utc": now, "provenance": provenance}, where
            )
            staging = self._staging_path("scan", patient, timepoint)
            _write_group(staging, variables, group_attrs)
            _ensure_group(scan_dir.parent)
            _ensure_group(scan_dir)
            os.rename(staging, scan_dir / VERSION_DIR.format(version))
            _fsync_dir(scan_dir)
        return "new_version" if versions else "written"

    def write_arrays(
        self, patient: str, timepoint: str, ds: xr.Dataset, provenance: dict, version: int | None = None
    ) -> dict:
        """Add derived arrays (dose_rate_*) to a scan version; readers see all of them or none.

        ``version``: the scan version the arrays were computed from (``scan.attrs["version"]``); None = the latest.
        Pass it when a re-ingest may publish a new version while the arrays are being computed: they then land
        in the version they belong to, never in a newer one built from other source files.
        ``ds``: (z, y, x) variables with the scan's shape, named as derived arrays in the schema.
        ``provenance``: one dict recorded for every array of this call; needs ``method`` and should give
        software version, weights/kernel hash, device and wall time (software_version and written_utc are filled in).
        Returns the record stored for the arrays.

        An array of the same name is superseded, not destroyed: the arrays it replaces move, with their records,
        into the slot ``superseded/s{n:04d}`` of the scan version (one slot per replacing write; read them with
        :meth:`superseded_maps` and :meth:`superseded_dataset`), and the new record's ``supersedes`` names that slot.
        Under the scan's lock: the arrays are built in staging (with a journal of the plan), the slot is created,
        the replaced arrays are delisted from ``provenance`` (one atomic rewrite of the group's attrs) and moved into
        the slot, the new arrays are moved into the scan group, then one atomic rewrite lists them in
        ``provenance``. Readers only see arrays listed there, so in between they see the scan as before (a replaced
        array is delisted first: in between it is absent, never half old, half new). A writer that dies part-way is
        rolled back by the next writer or :func:`open_cohort`: its new arrays are removed and the replaced ones return
        to the scan with their records.
        A Dataset opened lazily before a replacement must be reopened: chunks of the replaced array that it had
        not read yet would come back as NaN (the fill value), since the old array's files moved.
        """
        where = f"scan {patient}/{timepoint}"
        if not isinstance(provenance, dict) or not provenance.get("method"):
            raise ValueError(f"{where}: provenance must be a dict with at least 'method'")
        variables = _checked_variables(ds, where, require_ingest_arrays=False)
        ingest_names = [n for n in variables if store_schema()["arrays"][n]["written_by"] != "derived"]
        if ingest_names:
            raise ValueError(f"{where}: {ingest_names} come from ingest; write them with write_scan (a new version)")
        _jsonable(provenance, f"{where} provenance")  # refuse what cannot be stored before taking the lock
        with exclusive_lock(self._lock_path("scan", patient, timepoint)):
            self._clean_dead_staging(patient, timepoint, lock_held=True)
            vdir = self._version_dir(patient, timepoint, version)
            shape = tuple(_read_json(vdir / "ct_hu" / "zarr.json")["shape"])
            wrong = {n: v.shape for n, v in variables.items() if v.shape != shape}
            if wrong:
                raise ValueError(f"{where}: arrays {wrong} do not match the scan's shape {shape} (z, y, x)")
            now = _utc_now()
            declared = _read_json(vdir / "zarr.json")["attributes"].get("provenance", {})
            superseded = sorted(n for n in variables if n in declared)
            stray = [n for n in variables if n not in declared and (vdir / n).exists()]  # never published
            slot = _next_slot(vdir) if superseded else None
            record = {
                **provenance,
                "software_version": provenance.get("software_version", __version__),
                "written_utc": now,
            }
            if slot:
                record["supersedes"] = f"{SUPERSEDED_DIR}/{slot}"
            record = _jsonable(record, f"{where} provenance")
            staging = self._staging_path("scan", patient, timepoint)
            _write_group(staging, variables, {})
            # Journal for the roll-back of a writer that dies part-way (_discard_staging).
            plan = {
                "version_dir": vdir.name,
                "arrays": sorted(variables),
                "written_utc": now,
                "superseded": {"slot": slot, "arrays": superseded} if slot else None,
            }
            _write_json_atomic(staging / "publishing.json", plan, staging)
            if slot:
                slot_dir = vdir / SUPERSEDED_DIR / slot
                _write_group_json(
                    staging / "slot", {"superseded_utc": now, "provenance": {n: declared[n] for n in superseded}}
                )
                _ensure_group(vdir / SUPERSEDED_DIR)
                os.rename(staging / "slot", slot_dir)
                self._update_provenance(vdir, remove=superseded, staging=staging)
                for name in superseded:
                    os.rename(vdir / name, slot_dir / name)
            if stray:
                (staging / "replaced").mkdir()
                for name in stray:
                    os.rename(vdir / name, staging / "replaced" / name)
            for name in variables:
                os.rename(staging / name, vdir / name)
            self._update_provenance(vdir, add={name: record for name in variables}, staging=staging)
            shutil.rmtree(staging)
        return record

    def _update_provenance(
        self, vdir: Path, staging: Path, add: dict | None = None, remove: Iterable[str] = ()
    ) -> None:
        meta = _read_json(vdir / "zarr.json")
        prov = meta["attributes"].setdefault("provenance", {})
        for name in remove:
            prov.pop(name, None)
        prov.update(add or {})
        _write_json_atomic(vdir / "zarr.json", meta, staging)

    # ----------------------------------------------------------------------------------------- clean staging
    def _clean_dead_staging(
        self, patient: str | None = None, timepoint: str | None = None, lock_held: bool = False
    ) -> None:
        """Remove staging entries whose writer is gone (its lock is free). With a scan given, only that scan's."""
        staging_root = self.store_path / ".staging"
        if not staging_root.is_dir():
            return
        by_lock: dict[Path, list[Path]] = {}
        for entry in staging_root.iterdir():
            owner = _staging_owner(entry.name)
            if owner is None:
                continue
            if patient is not None and owner != ("scan", patient, timepoint):
                continue
            by_lock.setdefault(self._lock_path(*owner), []).append(entry)
        for lock, entries in by_lock.items():
            if lock_held:
                for entry in entries:
                    self._discard_staging(entry)
                continue
            with try_lock(lock) as taken:
                if taken:
                    for entry in entries:
                        self._discard_staging(entry)

    def _discard_staging(self, entry: Path) -> None:
        """Remove a dead writer's staging entry; roll back a :meth:`write_arrays` it left part-way (its journal
        ``publishing.json``): new arrays not yet listed are removed, the arrays it was superseding return to the
        scan with their records, and the slot it created is removed."""
        journal = entry / "publishing.json"
        if journal.is_file():
            kind, patient, timepoint = cast("tuple[str, str, str]", _staging_owner(entry.name))  # journals: scans only
            plan = _read_json(journal)
            vdir = self._scan_dir(patient, timepoint) / plan["version_dir"]
            declared = _read_json(vdir / "zarr.json")["attributes"].get("provenance", {})
            published = "written_utc" in plan and all(
                declared.get(name, {}).get("written_utc") == plan["written_utc"] for name in plan["arrays"]
            )
            moving = plan.get("superseded") or {"slot": None, "arrays": []}
            slot_dir = vdir / SUPERSEDED_DIR / moving["slot"] if moving["slot"] else None
            if not published:
                for name in plan["arrays"]:
                    if name in declared or not (vdir / name).is_dir():
                        continue
                    # an array being superseded comes with its slot: slot_dir is set
                    if name in moving["arrays"] and cast(Path, slot_dir).is_dir() and not (slot_dir / name).exists():
                        continue  # delisted but not moved yet: still the array being superseded
                    shutil.rmtree(vdir / name)
                if slot_dir is not None and slot_dir.is_dir():
                    for name in moving["arrays"]:
                        if (slot_dir / name).is_dir() and not (vdir / name).exists():
                            os.rename(slot_dir / name, vdir / name)
                    kept = _read_json(slot_dir / "zarr.json")["attributes"]["provenance"]
                    restore = {n: kept[n] for n in moving["arrays"] if n not in declared and (vdir / n).is_dir()}
                    if restore:
                        self._update_provenance(vdir, add=restore, staging=entry)
                    shutil.rmtree(slot_dir)
        try:
            if entry.is_dir():
                shutil.rmtree(entry)
            else:
                entry.unlink()
        except FileNotFoundError:  # its writer finished and removed it after the cleaner listed the staging folder
            pass

    # ------------------------------------------------------------------------------------ per-cycle results
    def _cycle_dir(self, patient: str, cycle: int) -> Path:
        check_identifier(patient, "patient")
        if not isinstance(cycle, int) or isinstance(cycle, bool) or cycle < 1:
            raise ValueError(f"patient {patient}: therapy cycle {cycle!r} is not an integer >= 1")
        return self.store_path / "cycles" / patient / f"c{cycle}"

    def cycle_results(self) -> list[tuple[str, int]]:
        """(patient, cycle) of every published per-cycle result group (absorbed-dose maps), sorted."""
        root = self.store_path / "cycles"
        found = []
        for patient_dir in sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []:
            for cycle_dir in patient_dir.iterdir():
                if CYCLE_RE.fullmatch(cycle_dir.name) and (cycle_dir / "zarr.json").is_file():
                    found.append((patient_dir.name, int(cycle_dir.name[1:])))
        return sorted(found)

    def cycle_attrs(self, patient: str, cycle: int) -> dict | None:
        """Attrs of a patient's per-cycle results, None when the cycle has none."""
        path = self._cycle_dir(patient, cycle) / "zarr.json"
        return _read_json(path)["attributes"] if path.is_file() else None

    def cycle(self, patient: str, cycle: int) -> xr.Dataset:
        """One cycle's results as a lazy Dataset on the grid of its reference scan (``reference_timepoint``):
        ``absorbed_dose_<method>`` (z, y, x) Gy, ``integration_rule_<method>`` (z, y, x) rule codes, and
        ``displacement_mm`` (timepoint, component, z, y, x) mm, the registration of each time point (fixed =
        reference points to moving points, zero for the reference); attrs as written (schema ``cycle_attrs``), with
        the geometry as tuples of float; z, y, x coordinates in patient mm as :meth:`scan` gives them."""
        path = self._cycle_dir(patient, cycle)
        if not (path / "zarr.json").is_file():
            raise KeyError(f"patient {patient} cycle {cycle}: no per-cycle results in the store")
        ds = xr.open_zarr(path, zarr_format=3, consolidated=False, chunks={}, mask_and_scale=False)
        for name in ds.data_vars:
            ds[name].attrs.pop("_FillValue", None)
        ds.attrs = {k: tuple(v) if k in _GEOMETRY_ATTRS else v for k, v in ds.attrs.items()}
        if "displacement_mm" in ds:
            ds = ds.assign_coords(timepoint=list(ds.attrs["timepoints"]), component=list(DIMS))
        return _with_patient_coords(ds)

    def remove_cycle(self, patient: str, cycle: int) -> None:
        """Remove a cycle's results (no-op if it has none): derived data that no longer holds, e.g. after the cycle's
        scans changed so that it has one scan left."""
        final = self._cycle_dir(patient, cycle)
        with exclusive_lock(self._lock_path("cycle", patient, final.name)):
            if final.exists():
                staging = self._staging_path("cycle", patient, final.name)
                staging.mkdir(parents=True)
                os.rename(final, staging / "old")
                shutil.rmtree(staging)

    def write_cycle(self, patient: str, cycle: int, ds: xr.Dataset, attrs: dict) -> None:
        """Publish one therapy cycle's results, replacing the previous ones as a whole.

        ``ds``: variables named as in the schema's ``cycle_arrays`` with their dims, (z, y, x) on the reference
        scan's grid; ``attrs`` (JSON types) must hold ``reference_timepoint`` and the reference grid's geometry
        (``spacing_mm``, ``origin_mm``, ``direction``). Built in staging, then moved in under the cycle's lock: the
        old group is moved out and the new one in (two renames). A reader in between finds no results for the
        cycle, never a mix; a writer that dies in between leaves none, and the next run computes them again (they
        are derived data: the scans they come from are untouched).
        """
        where = f"patient {patient} cycle {cycle}"
        final = self._cycle_dir(patient, cycle)
        specs = store_schema()["cycle_arrays"]
        variables = {}
        for name, var in ds.data_vars.items():
            spec = specs.get(_cycle_array_kind(str(name)))
            if spec is None:
                raise ValueError(f"{where}: {name!r} is not a per-cycle array of the schema ({sorted(specs)})")
            if tuple(var.dims) != tuple(spec["dims"]):
                raise ValueError(f"{where}: {name} has dims {var.dims}, the schema needs {tuple(spec['dims'])}")
            values = np.asarray(var.values)
            if values.dtype != np.dtype(spec["dtype"]):
                raise ValueError(f"{where}: {name} is {values.dtype}, the schema needs {spec['dtype']}")
            variables[str(name)] = xr.Variable(var.dims, values, {**var.attrs, "units": spec["units"]})
        missing = [k for k in ("reference_timepoint", *_GEOMETRY_ATTRS) if k not in attrs]
        if missing:
            raise ValueError(f"{where}: attrs {missing} are missing")
        record = _jsonable({**attrs, "patient": patient, "cycle": cycle, "written_utc": _utc_now()}, where)
        with exclusive_lock(self._lock_path("cycle", patient, final.name)):
            staging = self._staging_path("cycle", patient, final.name)
            _write_group(staging / "new", variables, record)
            final.parent.mkdir(parents=True, exist_ok=True)
            if final.exists():
                os.rename(final, staging / "old")
            os.rename(staging / "new", final)
            shutil.rmtree(staging)

    # ---------------------------------------------------------------------------------------------- tables
    def _table_path(self, name: str) -> Path:
        return self.tables_dir / f"{check_identifier(name, 'table name')}.parquet"

    def write_table(self, name: str, df: pd.DataFrame, units: dict[str, str] | None = None) -> Path:
        """Write ``tables/{name}.parquet`` atomically (write aside, then rename over the old file).

        A table named in the schema must have the schema's columns (extra columns are kept after them);
        values are converted to the schema's dtypes. Units go into each Arrow field's metadata (``units``):
        the schema's for its columns, ``units`` for extra columns (contradicting the schema is an error).
        """
        with exclusive_lock(self._lock_path("table", check_identifier(name, "table name"))):
            return self._write_table_unlocked(name, df, units)

    def append_table(self, name: str, df: pd.DataFrame, units: dict[str, str] | None = None) -> Path:
        """Append rows to ``tables/{name}.parquet`` (e.g. runs, ingest_report); atomic and safe between processes."""
        with exclusive_lock(self._lock_path("table", check_identifier(name, "table name"))):
            path = self._table_path(name)
            if path.exists():
                old_units = self.table_units(name)
                old = pd.read_parquet(path)
                df = pd.concat([old, _conform_table(name, df)], ignore_index=True) if len(old) else df
                units = {**old_units, **(units or {})}
            return self._write_table_unlocked(name, df, units)

    def _write_table_unlocked(self, name: str, df: pd.DataFrame, units: dict[str, str] | None) -> Path:
        path = self._table_path(name)
        df = _conform_table(name, df)
        column_units = _table_column_units(name, df.columns, units or {})
        table = pa.Table.from_pandas(df, preserve_index=False)
        fields = [
            f.with_metadata({b"units": column_units[f.name].encode()}) if f.name in column_units else f
            for f in table.schema
        ]
        meta = dict(table.schema.metadata or {})
        meta[b"cohort_dosimetry.table"] = name.encode()
        meta[b"cohort_dosimetry.schema_version"] = str(SCHEMA_VERSION).encode()
        table = table.cast(pa.schema(fields, metadata=meta))
        tmp = self._staging_path("table", name)
        tmp.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, tmp)
        self.tables_dir.mkdir(exist_ok=True)
        os.replace(tmp, path)
        return path

    def read_table(self, name: str) -> pd.DataFrame:
        """``tables/{name}.parquet`` as a DataFrame; a schema table not yet written is empty with its columns."""
        path = self._table_path(name)
        if path.exists():
            return pd.read_parquet(path)
        if name in store_schema()["tables"]:
            return _empty_table(name)
        raise FileNotFoundError(f"table {name!r} does not exist in {self.tables_dir}")

    def table_units(self, name: str) -> dict[str, str]:
        """{column: units} from the Arrow field metadata of ``tables/{name}.parquet``."""
        schema = pq.read_schema(self._table_path(name))
        return {f.name: f.metadata[b"units"].decode() for f in schema if f.metadata and b"units" in f.metadata}

    # The tables, each read whole as a DataFrame (columns and units: storage_schema/README.md).
    voi_stats = _table_reader(
        "voi_stats", "Per scan, VOI and method: volume and dose-rate statistics (``tables/voi_stats.parquet``)."
    )
    concordance = _table_reader(
        "concordance", "Per scan, VOI and method pair: voxel-wise agreement (``tables/concordance.parquet``)."
    )
    absorbed_dose = _table_reader(
        "absorbed_dose",
        "Per patient, cycle, VOI and method: absorbed dose of the cycle in Gy (``tables/absorbed_dose.parquet``).",
    )
    absorbed_dose_total = _table_reader(
        "absorbed_dose_total",
        "Per patient, VOI and method: absorbed dose summed over the patient's cycles in Gy "
        "(``tables/absorbed_dose_total.parquet``).",
    )
    runs = _table_reader("runs", "One row per flow run (``tables/runs.parquet``).")
    run_maps = _table_reader(
        "run_maps",
        "One row per run and dose-rate map: computed, reused or failed, and why (``tables/run_maps.parquet``).",
    )
    ingest_report = _table_reader(
        "ingest_report", "One row per ingested or rejected scan/file (``tables/ingest_report.parquet``)."
    )

    # ------------------------------------------------------------------------------------------ pseudonyms
    def pseudonymise_patient_id(self, patient_id: str) -> str:
        """The pseudonym of ``patient_id`` under this cohort's configured key (see :func:`pseudonym_key`).

        Raises :class:`PseudonymKeyMismatch` if the store was written with another key (its pseudonyms would not
        match).
        """
        return pseudonymise_patient_id(patient_id, self._checked_pseudonym_key(None, record=False))

    def bind_pseudonym_key(self, key: bytes | str | None = None) -> bytes | str:
        """The pseudonym key to write this cohort with: ``key``, else the configured one (:func:`pseudonym_key`),
        checked against the store.

        The first call records the key's fingerprint (:func:`key_fingerprint`, never the key) in the root attr
        ``pseudonym_key_fingerprint``: root ``zarr.json`` rewritten atomically under the store's root lock
        (``.locks/root.lock``). A later call with another key raises :class:`PseudonymKeyMismatch` (a ValueError)
        saying how to configure the original key, and writes nothing; with no key configured it does not create the
        cohort's own key file then either.
        """
        return self._checked_pseudonym_key(key, record=True)

    def _checked_pseudonym_key(self, key: bytes | str | None, record: bool) -> bytes | str:
        recorded = self.attrs.get(FINGERPRINT_ATTR)
        found: bytes | str
        if key is None:
            if recorded is not None and not key_is_configured(self.path):
                raise PseudonymKeyMismatch(key_mismatch_message(self.path))
            found = pseudonym_key(self.path)
        else:
            found = key
        fingerprint = key_fingerprint(found)
        if recorded is None and record:
            with exclusive_lock(self._lock_path("root")):
                meta = _read_json(self.store_path / "zarr.json")
                attributes = meta.setdefault("attributes", {})
                recorded = attributes.get(FINGERPRINT_ATTR)  # another writer may have bound it meanwhile
                if recorded is None:
                    attributes[FINGERPRINT_ATTR] = recorded = fingerprint
                    _write_json_atomic(self.store_path / "zarr.json", meta, self.store_path)
                    _fsync_dir(self.store_path)
        if recorded is not None and recorded != fingerprint:
            raise PseudonymKeyMismatch(key_mismatch_message(self.path, key_given=key is not None))
        return found


# ------------------------------------------------------------------------------------------------- helpers
def _utc_now() -> str:
    return datetime.now(UTC).isoformat()


def software_versions() -> dict[str, str]:
    """Versions of the packages that decide how the store is written and read (root attrs, run records)."""
    import dask

    return {
        "cohort_dosimetry": __version__,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "xarray": xr.__version__,
        "zarr": zarr.__version__,
        "dask": dask.__version__,
        "pyarrow": pa.__version__,
    }


def _read_json(path: Path) -> dict:
    with open(path) as f:
        return json.load(f)


def _write_json_atomic(path: Path, obj: dict, staging: Path) -> None:
    """Write JSON to a temporary file in ``staging`` (same filesystem), fsync, then rename over ``path``."""
    tmp = staging / f".json-{secrets.token_hex(6)}"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _write_group_json(path: Path, attrs: dict) -> None:
    """Make ``path`` (which must not exist) a zarr v3 group with ``attrs``."""
    path.mkdir(parents=True)
    (path / "zarr.json").write_text(json.dumps({**_GROUP_JSON, "attributes": attrs}, indent=2))


def _next_slot(vdir: Path) -> str:
    """The next free superseded slot of a scan version: ``s0001`` when it has none."""
    root = vdir / SUPERSEDED_DIR
    numbers = [int(m.group(1)) for p in root.iterdir() if (m := SLOT_RE.fullmatch(p.name))] if root.is_dir() else []
    return SLOT_DIR.format(max(numbers, default=0) + 1)


def _ensure_group(path: Path) -> None:
    """Make ``path`` a zarr v3 group without attributes if it is not one yet (idempotent, atomic)."""
    if (path / "zarr.json").exists():
        return
    path.mkdir(parents=True, exist_ok=True)
    tmp = path / f".zarr.json-{secrets.token_hex(6)}"
    tmp.write_text(json.dumps(_GROUP_JSON))
    os.replace(tmp, path / "zarr.json")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _version_numbers(scan_dir: Path) -> list[int]:
    if not scan_dir.is_dir():
        return []
    return sorted(
        int(p.name[1:])
        for p in scan_dir.iterdir()
        if len(p.name) == 5 and p.name[0] == "v" and p.name[1:].isdigit() and (p / "zarr.json").is_file()
    )


def _timepoint_sort_key(label: str) -> tuple:
    """Labels in number order (tp2 before tp10); other names after them, by name."""
    return (0, timepoint_number(label), "") if TIMEPOINT_RE.fullmatch(label) else (1, 0, label)


def _staging_owner(entry_name: str) -> tuple[str, ...] | None:
    """('scan', patient, timepoint), ('table', name) or ('cycle', patient, 'c<n>') for a staging entry name, None
    if not ours."""
    parts = entry_name.split(".")
    if parts[0] == "scan" and len(parts) == 4:
        return tuple(parts[:3])
    if parts[0] == "table" and len(parts) == 3:
        return tuple(parts[:2])
    if parts[0] == "cycle" and len(parts) == 4:
        return tuple(parts[:3])
    return None


def _jsonable(value: Any, where: str) -> Any:
    """``value`` with numpy scalars/arrays, tuples and datetimes turned into plain JSON types."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v, where) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_jsonable(v, where) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, datetime):
        return value.isoformat()
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    raise TypeError(f"{where}: attribute value {value!r} of type {type(value).__name__} cannot be stored as JSON")


def _check_scan_attrs(attrs: dict, where: str) -> None:
    problems = []
    given_store_set = [k for k in _STORE_SET_ATTRS if k in attrs]
    if given_store_set:
        problems.append(f"attrs {given_store_set} are set by the store, do not pass them")
    for name, spec in store_schema()["scan_attrs"].items():
        if spec.get("set_by_store"):
            continue
        if name not in attrs:
            if spec.get("required", True):
                problems.append(f"required attribute {name!r} is missing")
        else:
            problems += attr_problems(name, _jsonable(attrs[name], where), spec)
    if problems:
        raise ValueError(f"{where}: " + "; ".join(problems))


def _checked_variables(ds: xr.Dataset, where: str, require_ingest_arrays: bool) -> dict[str, xr.Variable]:
    """The data variables of ``ds`` as fresh (z, y, x) Variables in the schema's dtype and units."""
    if not isinstance(ds, xr.Dataset):
        raise TypeError(f"{where}: expected an xarray.Dataset, got {type(ds).__name__}")
    schema_arrays = store_schema()["arrays"]
    problems = []
    unknown = [n for n in ds.data_vars if n not in schema_arrays]
    if unknown:
        problems.append(f"arrays {unknown} are not in the store schema (known: {sorted(schema_arrays)})")
    if require_ingest_arrays:
        missing = [n for n, s in schema_arrays.items() if s["required"] and n not in ds.data_vars]
        if missing:
            problems.append(f"required arrays {missing} are missing")
    if not ds.data_vars:
        problems.append("the dataset has no data variables")
    variables: dict[str, xr.Variable] = {}
    for name, var in ds.data_vars.items():
        if name not in schema_arrays:
            continue
        assert isinstance(name, str)  # the schema names arrays by str
        spec = schema_arrays[name]
        if var.dims != DIMS:
            problems.append(f"{name}: dims {var.dims}, the schema needs {DIMS}")
            continue
        units = var.attrs.get("units", spec["units"])
        if units != spec["units"]:
            problems.append(f"{name}: units {units!r}, the schema needs {spec['units']!r}")
        attrs = {**var.attrs, "units": spec["units"]}
        attrs.pop("_FillValue", None)
        data = var.data
        dtype = np.dtype(spec["dtype"])
        if dtype.kind == "f":
            if var.dtype.kind not in "fiu":
                problems.append(f"{name}: dtype {var.dtype} is not numeric")
                continue
        else:  # labels: integers that fit the schema's integer type
            if var.dtype.kind not in "iu":
                problems.append(f"{name}: dtype {var.dtype}, the schema needs integers ({dtype})")
                continue
            lo, hi = int(var.min()), int(var.max())
            info = np.iinfo(dtype)
            if lo < 0 or hi > info.max:
                problems.append(f"{name}: values {lo}..{hi} do not fit 0..{info.max} ({dtype})")
        if name == "labels":
            problems += [f"labels: {p}" for p in label_attrs_problems(dict(var.attrs))]
            attrs["names"] = _jsonable({int(k): v for k, v in var.attrs.get("names", {}).items()}, where)
        variables[name] = xr.Variable(DIMS, data.astype(dtype, copy=False), _jsonable(attrs, f"{where} {name}"))
    if problems:
        raise ValueError(f"{where}: " + "; ".join(problems))
    return variables


def _write_group(path: Path, variables: dict[str, xr.Variable], attrs: dict) -> None:
    """Write variables as a zarr v3 group at ``path`` (which must not exist), chunked per the schema: the last three
    dims (z, y, x) in slabs of ``chunking.z`` slices, any leading dims (a cycle's time points) one by one."""
    chunking = store_schema()["chunking"]
    codec = BloscCodec(
        cname=chunking["codec"]["cname"], clevel=chunking["codec"]["clevel"], shuffle=chunking["codec"]["shuffle"]
    )
    encoding = {}
    for name, var in variables.items():
        nz, ny, nx = var.shape[-3:]
        chunks = (*(1,) * (var.ndim - 3), min(chunking["z"], nz), ny, nx)
        if var.chunks is not None:  # dask-backed input: align its chunks with the zarr chunks
            variables[name] = var.chunk(dict(zip(var.dims, chunks)))
        encoding[name] = {"chunks": chunks, "compressors": (codec,)}
    path.parent.mkdir(parents=True, exist_ok=True)
    xr.Dataset(variables, attrs=attrs).to_zarr(path, mode="w-", zarr_format=3, consolidated=False, encoding=encoding)


def _cycle_array_kind(name: str) -> str:
    """The schema entry of a per-cycle array: ``absorbed_dose_dvk`` -> ``absorbed_dose_{method}``."""
    for prefix in ("absorbed_dose_", "integration_rule_"):
        if name.startswith(prefix):
            return prefix + "{method}"
    return name


def _with_patient_coords(ds: xr.Dataset) -> xr.Dataset:
    """The scan with coordinates ``z``, ``y``, ``x``: voxel centres in patient space (LPS, mm; S, P, L components),
    from its geometry attrs, so that ``.sel(z=..., method="nearest")`` and plots work in millimetres. Computed on
    reading, never stored. An oblique grid (direction not the identity) has no per-axis coordinates and gets none."""
    if not ds.data_vars or "spacing_mm" not in ds.attrs or "origin_mm" not in ds.attrs:
        return ds
    grid = Grid.from_attrs(tuple(ds.sizes[d] for d in DIMS), ds.attrs)
    if not grid.is_axial:
        return ds
    names = {"z": "superior (LPS z)", "y": "posterior (LPS y)", "x": "left (LPS x)"}
    return ds.assign_coords(
        {
            d: (d, axis, {"units": "mm", "long_name": f"patient position, {names[d]}"})
            for d, axis in zip(DIMS, grid.axes_mm())
        }
    )


def _decode_scan_attrs(attrs: dict, patient: str, timepoint: str) -> dict:
    """Stored scan attrs with the geometry as tuples of float, plus ``patient`` and ``timepoint`` (from the path)."""
    attrs = {**attrs, "patient": patient, "timepoint": timepoint}
    for key in _GEOMETRY_ATTRS:
        if key in attrs:
            attrs[key] = tuple(float(v) for v in attrs[key])
    return attrs


def _decode_label_names(names: dict) -> dict[int, str]:
    return {int(k): v for k, v in names.items()}


# ---------------------------------------------------------------------------------------- table helpers
_PANDAS_DTYPES = {"string": "str", "float64": "float64", "int64": "int64", "datetime": "datetime64[us, UTC]"}


def _empty_table(name: str) -> pd.DataFrame:
    columns = store_schema()["tables"][name]["columns"]
    return pd.DataFrame({c: pd.Series([], dtype=_PANDAS_DTYPES[s["dtype"]]) for c, s in columns.items()})


def _conform_table(name: str, df: pd.DataFrame) -> pd.DataFrame:
    """``df`` with a schema table's columns first, in their dtypes; other tables unchanged."""
    check_identifier(name, "table name")
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"table {name}: expected a pandas DataFrame, got {type(df).__name__}")
    spec = store_schema()["tables"].get(name)
    if spec is None:
        return df.reset_index(drop=True)
    missing = [c for c in spec["columns"] if c not in df.columns]
    if missing:
        raise ValueError(f"table {name}: required columns {missing} are missing (has {list(df.columns)})")
    out = {}
    for col, cspec in spec["columns"].items():
        values = df[col].reset_index(drop=True)
        kind = cspec["dtype"]
        try:
            if kind == "string":
                if not values.map(lambda v: isinstance(v, str) or v is None or v is pd.NA).all():
                    raise TypeError("values must be strings")
                values = values.astype("str")
            elif kind == "float64":
                values = pd.to_numeric(values).astype("float64")
            elif kind == "int64":
                numeric = pd.to_numeric(values)
                if numeric.isna().any() or (numeric != np.round(numeric)).any():
                    raise TypeError("values must be whole numbers without gaps")
                values = numeric.astype("int64")
            else:
                values = pd.to_datetime(values, utc=True)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"table {name}: column {col!r} cannot be stored as {kind}: {exc}") from None
        out[col] = values
    extra = [c for c in df.columns if c not in spec["columns"]]
    for col in extra:
        out[col] = df[col].reset_index(drop=True)
    return pd.DataFrame(out)


def _table_column_units(name: str, columns: Iterable[str], units: dict[str, str]) -> dict[str, str]:
    spec = store_schema()["tables"].get(name, {"columns": {}})["columns"]
    result: dict[str, Any] = {}  # the schema's units (JSON) or the given ones
    for col in columns:
        schema_units = spec.get(col, {}).get("units")
        given = units.get(col)
        if schema_units and given and given != schema_units:
            raise ValueError(f"table {name}: column {col!r} is in {schema_units!r} per the schema, not {given!r}")
        if schema_units or given:
            result[col] = schema_units or given
    unknown = set(units) - set(columns)
    if unknown:
        raise ValueError(f"table {name}: units given for columns not in the table: {sorted(unknown)}")
    return result
