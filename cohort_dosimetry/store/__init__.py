"""The cohort store: scans in a versioned Zarr v3 store read through xarray, results in Parquet tables.

Public API::

    cohort = open_cohort(path, create=False)
    cohort.scans() -> [(patient, timepoint), ...]            complete scans only, sorted
    cohort.scan(patient, timepoint) -> xr.Dataset            lazy (dask), (z, y, x) arrays with `units`
    cohort.scan_attrs(patient, timepoint) -> dict
    cohort.scan_versions(patient, timepoint) -> [1, 2, ...]
    cohort.has_arrays(patient, timepoint, names) -> bool
    cohort.write_scan(patient, timepoint, ds, attrs) -> "written" | "new_version" | "unchanged"
    cohort.write_arrays(patient, timepoint, ds, provenance, version=None)
    cohort.write_table / append_table / read_table / table_units, voi_stats(), concordance(), absorbed_dose(),
    runs(), ingest_report(); cohort.tables_dir, cohort.reports_dir
    cohort.pseudonymise_patient_id(patient_id)               with the cohort's configured key

    validate_cohort(path) -> [problem, ...]
    pseudonymise_patient_id(patient_id, key), pseudonym_key(cohort_dir)
    store_schema() -> dict                                   the parsed schema_v1.json

The layout and every decision behind it are documented in ``storage_schema/README.md``.
"""
from ._cohort import Cohort, open_cohort, software_versions
from ._pseudonym import pseudonym_key, pseudonymise_patient_id
from ._schema import SCHEMA_VERSION, check_identifier, store_schema
from ._validate import validate_cohort

__all__ = [
    "SCHEMA_VERSION",
    "Cohort",
    "check_identifier",
    "open_cohort",
    "pseudonym_key",
    "pseudonymise_patient_id",
    "software_versions",
    "store_schema",
    "validate_cohort",
]
