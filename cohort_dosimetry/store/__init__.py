"""The cohort store: scans in a versioned Zarr v3 store read through xarray, results in Parquet tables.

Public API::

    cohort = open_cohort(path, create=False)
    cohort.scans() -> [(patient, timepoint), ...]            complete scans only, sorted (tp2 before tp10)
    cohort.timepoints(patient) -> ["tp1", ...]
    cohort.timepoint_of(patient, spect_series_key) -> "tp3" | None    the label a SPECT series holds
    cohort.next_timepoint(patient) -> "tp5"                  the next free label (labels are never reused)
    cohort.patient_lock(patient)                             context manager around label lookup + write_scan
    cohort.cycle_for(patient, timepoint, injection_datetime) -> int    therapy cycle among the patient's scans
    cohort.renumber_cycles(patient) -> {timepoint: (old, new)}
    cohort.scan(patient, timepoint) -> xr.Dataset            lazy (dask), (z, y, x) arrays with `units`
    cohort.scan_attrs(patient, timepoint) -> dict
    cohort.scan_versions(patient, timepoint) -> [1, 2, ...]
    cohort.has_arrays(patient, timepoint, names) -> bool
    cohort.write_scan(patient, timepoint, ds, attrs) -> "written" | "new_version" | "unchanged"
    cohort.write_arrays(patient, timepoint, ds, provenance, version=None) -> record   a replaced map is superseded
    cohort.superseded_maps(patient, timepoint) -> [{"slot", "superseded_utc", "provenance"}, ...]
    cohort.superseded_dataset(patient, timepoint, slot) -> xr.Dataset   a superseded map, lazy
    cohort.compute_lock(patient, timepoint, method, timeout_s=None)   held while one run computes that map
    cohort.write_table / append_table / read_table / table_units, voi_stats(), concordance(), absorbed_dose(),
    absorbed_dose_total(), runs(), run_maps(), ingest_report(); cohort.tables_dir, cohort.reports_dir
    cohort.pseudonymise_patient_id(patient_id)               with the cohort's configured key
    cohort.bind_pseudonym_key(key=None) -> key               records the key's fingerprint / refuses another key

    validate_cohort(path) -> [problem, ...]
    pseudonymise_patient_id(patient_id, key), pseudonym_key(cohort_dir)
    key_fingerprint(key) -> str; PseudonymKeyMismatch (ValueError): the key is not the one the store was written with
    store_schema() -> dict                                   the parsed schema_v2.json
    number_cycles(injection_datetimes) -> [1, 1, 2, ...]     therapy cycles of injections (2 days apart or more)
    lock_timeout(seconds)                                    context manager: how long writers here wait for a lock
    LockTimeout (TimeoutError): a lock stayed held longer; .owner ("scan P1/tp2", ...), .path, .waited_s
    MapLockTimeout (LockTimeout): another run computed a map for longer than compute_lock's timeout_s

The layout and every decision behind it are documented in ``storage_schema/README.md``.
"""

from ._cohort import Cohort, MapLockTimeout, open_cohort, software_versions
from ._cycles import CYCLE_SEPARATION, number_cycles
from ._locking import LOCK_TIMEOUT_ENV, LockTimeout, lock_timeout
from ._pseudonym import PseudonymKeyMismatch, key_fingerprint, pseudonym_key, pseudonymise_patient_id
from ._schema import SCHEMA_VERSION, check_identifier, store_schema, timepoint_number
from ._validate import validate_cohort

__all__ = [
    "timepoint_number",
    "CYCLE_SEPARATION",
    "LOCK_TIMEOUT_ENV",
    "SCHEMA_VERSION",
    "Cohort",
    "LockTimeout",
    "MapLockTimeout",
    "PseudonymKeyMismatch",
    "check_identifier",
    "key_fingerprint",
    "lock_timeout",
    "number_cycles",
    "open_cohort",
    "pseudonym_key",
    "pseudonymise_patient_id",
    "software_versions",
    "store_schema",
    "validate_cohort",
]
