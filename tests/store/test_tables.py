"""Parquet tables: schema columns and dtypes, units in the Arrow metadata, atomic replace and append."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from cohort_dosimetry.store import store_schema, validate_cohort


def _absorbed_dose_rows(rng: np.random.Generator, n: int) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "patient": [f"P{i:012x}" for i in range(n)],
            "cycle": rng.integers(1, 4, n),
            "voi": rng.choice(["liver", "kidney_left", "lesion_1"], n),
            "method": rng.choice(["dvk", "cnn", "mc"], n),
            "model": "biexponential",
            "absorbed_dose_gy": rng.uniform(0.5, 20.0, n),
            "uncertainty_gy": rng.uniform(0.01, 1.0, n),
            "uncertainty_fit_gy": rng.uniform(0.01, 1.0, n),
            "uncertainty_counts_gy": rng.uniform(0.01, 1.0, n),
            "uncertainty_calibration_gy": np.nan,  # not given
            "n_timepoints": rng.integers(1, 5, n),  # numpy int64 -> int64
            "note": "synthetic virtual patients",
        }
    )


def _run_row(run_id: str, n_done: int) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "run_id": [run_id],
            "started_utc": [pd.Timestamp("2026-11-21T23:00:00Z")],
            "software_version": ["0.1.0"],
            "weights_hash": ["sha256:aa"],
            "kernel_hash": ["sha256:bb"],
            "n_scans_done": [n_done],
            "n_scans_skipped": [0],
            "n_scans_failed": [1],
            "wall_time_s": [12],  # an int: stored as float64 per the schema
        }
    )


@pytest.mark.parametrize(
    "name", ["voi_stats", "concordance", "absorbed_dose", "absorbed_dose_total", "runs", "ingest_report"]
)
def test_tables_not_yet_written_are_empty_with_the_schema_columns(cohort, name):
    df = getattr(cohort, name)()
    assert list(df.columns) == list(store_schema()["tables"][name]["columns"])
    assert len(df) == 0


def test_table_round_trip_keeps_values_and_records_units(cohort, rng):
    df = _absorbed_dose_rows(rng, 7)
    path = cohort.write_table("absorbed_dose", df, units={"note": "1"})
    assert path == cohort.tables_dir / "absorbed_dose.parquet"
    back = cohort.absorbed_dose()
    pd.testing.assert_frame_equal(back, df, check_dtype=False)
    assert back["n_timepoints"].dtype == np.int64 and back["absorbed_dose_gy"].dtype == np.float64
    # units read back independently through pyarrow, not through the store
    fields = {f.name: f.metadata for f in pq.read_schema(path)}
    assert fields["absorbed_dose_gy"][b"units"] == b"Gy"
    assert fields["uncertainty_gy"][b"units"] == b"Gy"
    assert fields["note"][b"units"] == b"1"
    assert fields["patient"] is None or b"units" not in fields["patient"]
    assert cohort.table_units("absorbed_dose") == {
        "cycle": "1",
        "absorbed_dose_gy": "Gy",
        "uncertainty_gy": "Gy",
        "uncertainty_fit_gy": "Gy",
        "uncertainty_counts_gy": "Gy",
        "uncertainty_calibration_gy": "Gy",
        "n_timepoints": "1",
        "note": "1",
    }
    assert validate_cohort(cohort.path) == []


def test_write_table_replaces_atomically_and_leaves_no_temporary_files(cohort, rng):
    cohort.write_table("absorbed_dose", _absorbed_dose_rows(rng, 3))
    second = _absorbed_dose_rows(rng, 5)
    cohort.write_table("absorbed_dose", second)
    pd.testing.assert_frame_equal(cohort.read_table("absorbed_dose"), second, check_dtype=False)
    assert sorted(p.name for p in cohort.tables_dir.iterdir()) == ["absorbed_dose.parquet"]
    assert not any((cohort.store_path / ".staging").iterdir())


def test_append_table_accumulates_runs(cohort):
    cohort.append_table("runs", _run_row("run-a", 40))
    cohort.append_table("runs", _run_row("run-b", 2))
    runs = cohort.runs()
    assert list(runs["run_id"]) == ["run-a", "run-b"]
    assert list(runs["n_scans_done"]) == [40, 2]
    assert runs["wall_time_s"].dtype == np.float64
    assert str(runs["started_utc"].dt.tz) == "UTC"
    assert cohort.table_units("runs")["wall_time_s"] == "s"
    assert validate_cohort(cohort.path) == []


def test_bad_tables_are_rejected_with_the_table_and_column_named(cohort, rng):
    df = _absorbed_dose_rows(rng, 3)
    with pytest.raises(ValueError, match=r"table absorbed_dose: required columns \['uncertainty_gy'\] are missing"):
        cohort.write_table("absorbed_dose", df.drop(columns="uncertainty_gy"))
    with pytest.raises(ValueError, match=r"column 'absorbed_dose_gy' is in 'Gy' per the schema, not 'mGy'"):
        cohort.write_table("absorbed_dose", df, units={"absorbed_dose_gy": "mGy"})
    with pytest.raises(ValueError, match=r"column 'n_timepoints' cannot be stored as int64"):
        cohort.write_table("absorbed_dose", df.assign(n_timepoints=[1, 2.5, 3]))
    with pytest.raises(ValueError, match=r"column 'absorbed_dose_gy' cannot be stored as float64"):
        cohort.write_table("absorbed_dose", df.assign(absorbed_dose_gy=["a", "b", "c"]))
    with pytest.raises(ValueError, match="not a safe store identifier"):
        cohort.write_table("../absorbed_dose", df)
    with pytest.raises(FileNotFoundError, match="table 'my_notes' does not exist"):
        cohort.read_table("my_notes")
    assert list(cohort.tables_dir.iterdir()) == []
