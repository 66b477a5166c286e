"""The validator catches each kind of departure from the schema; the CLI prints them and exits non-zero."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cohort_dosimetry.cli import main
from cohort_dosimetry.store import validate_cohort

from ._factory import make_dose_rate, make_scan

SCAN = Path("store.zarr/scans/P1/tp1/v0001")


@pytest.fixture
def valid_cohort(cohort):
    ds, attrs = make_scan(seed=1)
    cohort.write_scan("P1", "tp1", ds, attrs)
    cohort.write_arrays("P1", "tp1", make_dose_rate(seed=2), {"method": "dvk"})
    cohort.write_table(
        "concordance",
        pd.DataFrame(
            {
                "patient": ["P1"],
                "timepoint": ["tp1"],
                "voi": ["liver"],
                "method_a": ["cnn"],
                "method_b": ["mc"],
                "n_voxels": [120],
                "pearson_r2": [0.95],
                "ccc": [0.97],
                "slope": [1.01],
                "intercept": [1e-8],
            }
        ),
    )
    assert validate_cohort(cohort.path) == []
    return cohort


def _edit_json(path: Path, edit) -> None:
    meta = json.loads(path.read_text())
    edit(meta)
    path.write_text(json.dumps(meta))


def _drop_array(root: Path, name: str) -> None:
    shutil.rmtree(root / SCAN / name)
    _edit_json(root / SCAN / "zarr.json", lambda m: m["attributes"]["provenance"].pop(name))


def _copy_array_as(root: Path, source: str, target: str) -> None:
    shutil.copytree(root / SCAN / source, root / SCAN / target)
    _edit_json(root / SCAN / "zarr.json", lambda m: m["attributes"]["provenance"].update({target: {"method": "x"}}))


def _rewrite_table(root: Path, edit) -> None:
    path = root / "tables" / "concordance.parquet"
    pq.write_table(edit(pq.read_table(path)), path)


CORRUPTIONS = {
    "missing required array": (lambda r: _drop_array(r, "density"), "v0001: required array 'density' is missing"),
    "missing required attribute": (
        lambda r: _edit_json(r / SCAN / "zarr.json", lambda m: m["attributes"].pop("hours_post_injection")),
        "v0001: required attribute 'hours_post_injection' is missing",
    ),
    "attribute of the wrong type": (
        lambda r: _edit_json(r / SCAN / "zarr.json", lambda m: m["attributes"].update(spacing_mm="3x4x4")),
        "attribute 'spacing_mm' = '3x4x4' is not a valid list[number]",
    ),
    "version number mismatch": (
        lambda r: (r / SCAN).rename(r / SCAN.parent / "v0002"),
        "version=1 does not match the directory name",
    ),
    "wrong dims": (
        lambda r: _edit_json(r / SCAN / "activity" / "zarr.json", lambda m: m.update(dimension_names=["x", "y", "z"])),
        "v0001/activity: dims ('x', 'y', 'z'), the schema needs ('z', 'y', 'x')",
    ),
    "wrong dtype": (
        lambda r: _edit_json(r / SCAN / "labels" / "zarr.json", lambda m: m.update(data_type="float32")),
        "v0001/labels: dtype 'float32', the schema needs 'int16'",
    ),
    "wrong units": (
        lambda r: _edit_json(r / SCAN / "activity" / "zarr.json", lambda m: m["attributes"].update(units="MBq")),
        "v0001/activity: units 'MBq', the schema needs 'Bq/mL'",
    ),
    "shape mismatch between arrays": (
        lambda r: _edit_json(r / SCAN / "dose_rate_dvk" / "zarr.json", lambda m: m.update(shape=[21, 6, 5])),
        "v0001: arrays differ in shape",
    ),
    "array outside the schema": (
        lambda r: _copy_array_as(r, "activity", "spect_counts"),
        "v0001/spect_counts: array not in the store schema",
    ),
    "array not declared in provenance": (
        lambda r: _edit_json(r / SCAN / "zarr.json", lambda m: m["attributes"]["provenance"].pop("dose_rate_dvk")),
        "v0001/dose_rate_dvk: array is not listed in the scan's provenance",
    ),
    "declared array missing": (
        lambda r: shutil.rmtree(r / SCAN / "dose_rate_dvk"),
        "provenance lists 'dose_rate_dvk' but the array is missing",
    ),
    "label table missing": (
        lambda r: _edit_json(r / SCAN / "labels" / "zarr.json", lambda m: m["attributes"].pop("names")),
        "v0001/labels: labels attribute 'names' must be a non-empty",
    ),
    "wrong chunks": (
        lambda r: _edit_json(
            r / SCAN / "ct_hu" / "zarr.json", lambda m: m["chunk_grid"]["configuration"].update(chunk_shape=[20, 6, 5])
        ),
        "v0001/ct_hu: chunks (20, 6, 5), the schema needs (16 slices, full y, full x)",
    ),
    "unsafe directory name": (
        lambda r: shutil.copytree(r / SCAN.parent.parent, r / SCAN.parent.parent.parent / "Doe Jane"),
        "scans/Doe Jane: unexpected entry",
    ),
    "staging leftover": (
        lambda r: shutil.copytree(r / SCAN, r / "store.zarr/.staging/scan.P1.tp2.0123456789ab"),
        ".staging/scan.P1.tp2.0123456789ab: leftover of an interrupted write",
    ),
    "table column missing": (
        lambda r: _rewrite_table(r, lambda t: t.drop_columns(["ccc"])),
        "tables/concordance.parquet: column 'ccc' is missing",
    ),
    "table column of the wrong type": (
        lambda r: _rewrite_table(
            r, lambda t: t.set_column(t.schema.get_field_index("n_voxels"), "n_voxels", pa.array(["120"]))
        ),
        "column 'n_voxels' has type string, the schema needs int64",
    ),
    "table units missing": (
        lambda r: _rewrite_table(r, lambda t: t.cast(pa.schema([f.remove_metadata() for f in t.schema]))),
        "column 'intercept' has units None in its metadata, the schema needs 'Gy/s'",
    ),
    "table not Parquet": (
        lambda r: (r / "tables" / "voi_stats.parquet").write_text("voi,mean\nliver,1\n"),
        "tables/voi_stats.parquet: not a readable Parquet file",
    ),
    "root attribute missing": (
        lambda r: _edit_json(r / "store.zarr" / "zarr.json", lambda m: m["attributes"].pop("created")),
        "store.zarr: root attribute 'created' is missing",
    ),
}


@pytest.mark.parametrize("kind", list(CORRUPTIONS))
def test_validator_reports_each_kind_of_problem(valid_cohort, kind):
    corrupt, expected = CORRUPTIONS[kind]
    corrupt(valid_cohort.path)
    problems = validate_cohort(valid_cohort.path)
    assert any(expected in p for p in problems), problems


def _set_attr(root: Path, scan: str, name: str, value) -> None:
    _edit_json(root / "store.zarr/scans/P1" / scan / "zarr.json", lambda m: m["attributes"].update({name: value}))


IDENTITY_CORRUPTIONS = {
    "series key missing": (
        lambda r: _edit_json(r / SCAN / "zarr.json", lambda m: m["attributes"].pop("spect_series_key")),
        "v0001: required attribute 'spect_series_key' is missing",
    ),
    "two labels of one series": (
        lambda r: _set_attr(r, "tp2/v0001", "spect_series_key", "Hseries000000000000000001"),
        "P1: timepoints tp1, tp2 hold the same SPECT series 'Hseries000000000000000001'",
    ),
    "versions of different series": (
        lambda r: _set_attr(r, "tp1/v0001", "spect_series_key", "Hseries-other"),
        "P1/tp1: its versions are of different SPECT series (v0001 'Hseries-other', v0002 'Hseries000000000000000001')",
    ),
    "cycle out of order": (
        lambda r: _set_attr(r, "tp2/v0001", "cycle", 2),
        "tp2 has cycle 2, its injection 2026-03-02T06:00:00 makes it cycle 1",
    ),
    "second injection in the same cycle": (
        lambda r: _set_attr(r, "tp2/v0001", "injection_datetime", "2026-04-27T06:00:00"),
        "tp2 has cycle 1, its injection 2026-04-27T06:00:00 makes it cycle 2",
    ),
    "cycle not a positive integer": (
        lambda r: _set_attr(r, "tp2/v0001", "cycle", 0),
        "attribute 'cycle' = 0 must be positive",
    ),
    "label not tp<n>": (
        lambda r: shutil.copytree(r / SCAN.parent, r / SCAN.parent.parent / "tp01"),
        "scans/P1/tp01: unexpected entry (timepoints are directories named tp1, tp2, ...)",
    ),
}


@pytest.mark.parametrize("kind", list(IDENTITY_CORRUPTIONS))
def test_validator_checks_scan_identity_and_cycles(valid_cohort, kind):
    ds, attrs = make_scan(seed=3, spect_series_key="Hseries000000000000000001")
    valid_cohort.write_scan("P1", "tp1", ds, attrs)  # v0002 of the same series
    ds, attrs = make_scan(seed=4)
    valid_cohort.write_scan("P1", "tp2", ds, attrs)
    assert validate_cohort(valid_cohort.path) == []
    corrupt, expected = IDENTITY_CORRUPTIONS[kind]
    corrupt(valid_cohort.path)
    problems = validate_cohort(valid_cohort.path)
    assert any(expected in p for p in problems), problems


def test_validator_on_a_directory_that_is_not_a_cohort(tmp_path):
    assert validate_cohort(tmp_path) == [
        f"{tmp_path}: not a cohort directory (store.zarr/zarr.json is missing or unreadable)"
    ]


def test_cli_validate_prints_problems_and_exits_non_zero(valid_cohort, capsys):
    assert main(["validate", str(valid_cohort.path)]) == 0
    assert "valid" in capsys.readouterr().out
    CORRUPTIONS["wrong units"][0](valid_cohort.path)
    CORRUPTIONS["missing required array"][0](valid_cohort.path)
    assert main(["validate", str(valid_cohort.path)]) == 1
    out = capsys.readouterr().out
    assert "units 'MBq'" in out and "required array 'density' is missing" in out and "2 problem(s)" in out


def test_schema_folder_holds_the_packaged_schema_and_documents_all_of_it():
    from cohort_dosimetry.store import store_schema

    repo = Path(__file__).resolve().parents[2]
    assert json.loads((repo / "storage_schema" / "schema_v2.json").read_text()) == store_schema()
    doc = (repo / "storage_schema" / "README.md").read_text()
    schema = store_schema()
    names = [*schema["arrays"], *schema["scan_attrs"], *schema["tables"]]
    names += [c for t in schema["tables"].values() for c in t["columns"]]
    undocumented = [n for n in names if f"`{n}`" not in doc and n not in doc]
    assert undocumented == []
