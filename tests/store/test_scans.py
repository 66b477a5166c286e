"""Writing and reading scans: round trip, laziness, versions, derived arrays, input errors."""

from __future__ import annotations

import os

import dask.array as da
import numpy as np
import pytest
import xarray as xr
import zarr.storage

from cohort_dosimetry.store import open_cohort, validate_cohort

from ._factory import LABEL_NAMES, SHAPE, make_dose_rate, make_scan


def assert_lazy(ds: xr.Dataset) -> None:
    """Every data variable is dask-backed: nothing was loaded by opening."""
    for name, var in ds.data_vars.items():
        assert isinstance(var.data, da.Array), f"{name} is loaded ({type(var.data).__name__}), not lazy"


@pytest.fixture
def chunk_reads(monkeypatch) -> list[str]:
    """Records the key of every object the local zarr store reads (metadata and chunks)."""
    keys: list[str] = []
    original = zarr.storage.LocalStore.get

    async def recording_get(self, key, *args, **kwargs):
        keys.append(key)
        return await original(self, key, *args, **kwargs)

    monkeypatch.setattr(zarr.storage.LocalStore, "get", recording_get)
    return keys


def test_round_trip_keeps_values_dtypes_units_and_attrs(cohort):
    ds, attrs = make_scan(seed=1)
    assert cohort.write_scan("P000000000001", "tp1", ds, attrs) == "written"

    assert cohort.scans() == [("P000000000001", "tp1")]
    back = cohort.scan("P000000000001", "tp1")
    assert_lazy(back)
    assert set(back.data_vars) == {"ct_hu", "density", "activity", "labels"}
    for name in ds.data_vars:
        assert back[name].dims == ("z", "y", "x")
        assert back[name].dtype == ds[name].dtype
        np.testing.assert_array_equal(back[name].values, ds[name].values)
        assert back[name].attrs["units"] == ds[name].attrs["units"]
    assert back["labels"].attrs["names"] == LABEL_NAMES
    for key in ("spacing_mm", "origin_mm", "direction"):
        assert back.attrs[key] == attrs[key]
    for key in ("source_hash", "hours_post_injection", "administered_activity_bq", "injection_datetime"):
        assert back.attrs[key] == attrs[key]
    assert back.attrs["status"] == "complete" and back.attrs["version"] == 1
    assert set(back.attrs["provenance"]) == set(ds.data_vars)
    assert back.attrs["patient"] == "P000000000001" and back.attrs["timepoint"] == "tp1"  # named in messages
    assert cohort.scan_attrs("P000000000001", "tp1") == back.attrs
    assert validate_cohort(cohort.path) == []


def test_scans_are_sorted_and_reopened_cohort_sees_them(cohort):
    for i, (patient, tp) in enumerate([("Pb", "tp2"), ("Pa", "tp1"), ("Pb", "tp1")]):
        ds, attrs = make_scan(seed=i)
        cohort.write_scan(patient, tp, ds, attrs)
    assert open_cohort(cohort.path).scans() == [("Pa", "tp1"), ("Pb", "tp1"), ("Pb", "tp2")]


def test_float64_and_dask_input_is_stored_as_float32_in_schema_chunks(cohort):
    ds, attrs = make_scan(seed=2, shape=(40, 6, 5))
    ds["activity"] = ds["activity"].astype(np.float64).chunk({"z": 7})
    cohort.write_scan("P1", "tp1", ds, attrs)
    back = cohort.scan("P1", "tp1")
    assert back["activity"].dtype == np.float32
    assert back["activity"].data.chunks == ((16, 16, 8), (6,), (5,))
    np.testing.assert_array_equal(back["activity"].values, ds["activity"].values.astype(np.float32))


def test_reading_one_slab_reads_only_its_chunks(cohort, chunk_reads):
    ds, attrs = make_scan(seed=3, shape=(40, 6, 5))  # z-chunks: slices 0-15, 16-31, 32-39
    cohort.write_scan("P1", "tp1", ds, attrs)
    scan = cohort.scan("P1", "tp1")
    assert_lazy(scan)
    assert not [k for k in chunk_reads if "/c/" in k], "opening the scan read array chunks"

    slab = scan["activity"].isel(z=slice(18, 29)).values  # an 11-slice pack inside the second chunk
    np.testing.assert_array_equal(slab, ds["activity"].values[18:29])
    chunk_keys = {k.split("/v0001/")[-1] for k in chunk_reads if "/c/" in k}
    assert chunk_keys == {"activity/c/1/0/0"}


def test_same_source_hash_is_a_no_op(cohort):
    ds, attrs = make_scan(seed=4)
    cohort.write_scan("P1", "tp1", ds, attrs)
    before = sorted((p, os.stat(p).st_mtime_ns) for p in cohort.store_path.rglob("*") if ".locks" not in p.parts)
    changed_values = ds.copy(deep=True)
    changed_values["activity"] += 1.0
    assert cohort.write_scan("P1", "tp1", changed_values, attrs) == "unchanged"
    after = sorted((p, os.stat(p).st_mtime_ns) for p in cohort.store_path.rglob("*") if ".locks" not in p.parts)
    assert after == before
    np.testing.assert_array_equal(cohort.scan("P1", "tp1")["activity"].values, ds["activity"].values)


def test_changed_source_hash_makes_a_new_version_and_keeps_the_old(cohort):
    ds1, attrs1 = make_scan(seed=5)
    ds2, attrs2 = make_scan(seed=6, spect_series_key=attrs1["spect_series_key"])  # the same series, new files
    assert attrs1["source_hash"] != attrs2["source_hash"]
    cohort.write_scan("P1", "tp1", ds1, attrs1)
    cohort.write_arrays("P1", "tp1", make_dose_rate(seed=7), {"method": "dvk"})
    assert cohort.write_scan("P1", "tp1", ds2, attrs2) == "new_version"

    assert cohort.scans() == [("P1", "tp1")]
    assert cohort.scan_versions("P1", "tp1") == [1, 2]
    latest = cohort.scan("P1", "tp1")
    assert latest.attrs["version"] == 2 and latest.attrs["source_hash"] == attrs2["source_hash"]
    np.testing.assert_array_equal(latest["activity"].values, ds2["activity"].values)
    assert "dose_rate_dvk" not in latest  # derived from the old inputs: not carried over
    assert not cohort.has_arrays("P1", "tp1", ["dose_rate_dvk"])
    old = cohort.scan("P1", "tp1", version=1)
    np.testing.assert_array_equal(old["activity"].values, ds1["activity"].values)
    assert "dose_rate_dvk" in old
    assert validate_cohort(cohort.path) == []


def test_write_arrays_adds_derived_maps_with_provenance(cohort):
    ds, attrs = make_scan(seed=8)
    cohort.write_scan("P1", "tp1", ds, attrs)
    assert not cohort.has_arrays("P1", "tp1", ["dose_rate_mc", "dose_rate_mc_uncertainty"])
    rng = np.random.default_rng(9)
    mc = xr.Dataset(
        {
            "dose_rate_mc": (("z", "y", "x"), rng.random(SHAPE).astype(np.float32) * 1e-5, {"units": "Gy/s"}),
            "dose_rate_mc_uncertainty": (("z", "y", "x"), rng.random(SHAPE).astype(np.float32)),
        }
    )
    prov = {"method": "mc", "device": "cpu", "wall_time_s": 1.5, "n_decays": 1_000_000}
    cohort.write_arrays("P1", "tp1", mc, prov)
    assert cohort.has_arrays("P1", "tp1", ["dose_rate_mc", "dose_rate_mc_uncertainty", "activity"])
    back = cohort.scan("P1", "tp1")
    np.testing.assert_array_equal(back["dose_rate_mc"].values, mc["dose_rate_mc"].values)
    assert back["dose_rate_mc"].attrs["units"] == "Gy/s"
    assert back["dose_rate_mc_uncertainty"].attrs["units"] == "1"
    recorded = back.attrs["provenance"]["dose_rate_mc_uncertainty"]
    assert {k: recorded[k] for k in prov} == prov
    assert recorded["software_version"] and recorded["written_utc"]

    replacement = make_dose_rate(seed=10, name="dose_rate_mc")
    cohort.write_arrays("P1", "tp1", replacement, {"method": "mc", "device": "cpu"})
    np.testing.assert_array_equal(cohort.scan("P1", "tp1")["dose_rate_mc"].values, replacement["dose_rate_mc"].values)
    assert validate_cohort(cohort.path) == []
    assert not any((cohort.store_path / ".staging").iterdir())


@pytest.mark.parametrize(
    "corrupt, message",
    [
        (lambda ds, a: ds.drop_vars("labels"), "required arrays ['labels'] are missing"),
        (lambda ds, a: ds.assign(activity=ds.activity.transpose("x", "y", "z")), "dims ('x', 'y', 'z')"),
        (lambda ds, a: ds.assign(activity=ds.activity.assign_attrs(units="kBq/mL")), "units 'kBq/mL'"),
        (lambda ds, a: ds.assign(spect_counts=ds.activity), "not in the store schema"),
        (lambda ds, a: ds.assign(labels=ds.labels.astype(np.float32)), "the schema needs integers"),
        (lambda ds, a: ds.assign(labels=ds.labels.assign_attrs(names={})), "labels attribute 'names'"),
        (lambda ds, a: a.pop("injection_datetime"), "'injection_datetime' is missing"),
        (lambda ds, a: a.update(spacing_mm=(3.0, 3.9)), "has 2 values"),
        (lambda ds, a: a.update(spacing_mm=(3.0, -3.9, 3.9)), "must be positive"),
        (lambda ds, a: a.update(acquisition_datetime="2nd of March"), "not a valid datetime"),
        (lambda ds, a: a.update(status="complete"), "set by the store"),
    ],
)
def test_write_scan_rejects_bad_input_naming_the_scan(cohort, corrupt, message):
    ds, attrs = make_scan(seed=11)
    result = corrupt(ds, attrs)
    ds = result if isinstance(result, xr.Dataset) else ds
    with pytest.raises(ValueError, match="scan P1/tp2") as excinfo:
        cohort.write_scan("P1", "tp2", ds, attrs)
    assert message in str(excinfo.value)
    assert cohort.scans() == []


def test_arrays_computed_from_an_old_version_land_in_that_version(cohort):
    ds1, attrs1 = make_scan(seed=15)
    cohort.write_scan("P1", "tp1", ds1, attrs1)
    computed_from = cohort.scan("P1", "tp1").attrs["version"]
    ds2, attrs2 = make_scan(seed=16, spect_series_key=attrs1["spect_series_key"])
    cohort.write_scan("P1", "tp1", ds2, attrs2)  # a re-ingest publishes v2 while the dose map is computed
    cohort.write_arrays("P1", "tp1", make_dose_rate(seed=17), {"method": "dvk"}, version=computed_from)
    assert cohort.has_arrays("P1", "tp1", ["activity"]) and not cohort.has_arrays("P1", "tp1", ["dose_rate_dvk"])
    assert "dose_rate_dvk" in cohort.scan("P1", "tp1", version=1)
    assert validate_cohort(cohort.path) == []


def test_write_arrays_rejects_shape_mismatch_and_ingest_arrays(cohort):
    ds, attrs = make_scan(seed=12)
    cohort.write_scan("P1", "tp1", ds, attrs)
    with pytest.raises(ValueError, match=r"scan P1/tp1: arrays .* do not match the scan's shape"):
        cohort.write_arrays("P1", "tp1", make_dose_rate(seed=1, shape=(19, 6, 5)), {"method": "dvk"})
    with pytest.raises(ValueError, match="write them with write_scan"):
        cohort.write_arrays("P1", "tp1", ds[["activity"]], {"method": "dvk"})
    with pytest.raises(ValueError, match="provenance must be a dict with at least 'method'"):
        cohort.write_arrays("P1", "tp1", make_dose_rate(seed=1), {"device": "cpu"})
    with pytest.raises(KeyError, match="scan P1/tp9 is not in the cohort"):
        cohort.write_arrays("P1", "tp9", make_dose_rate(seed=1), {"method": "dvk"})
    assert set(cohort.scan("P1", "tp1").data_vars) == {"ct_hu", "density", "activity", "labels"}


@pytest.mark.parametrize("patient", ["../etc", "a/b", "", "P 1", "..", "x" * 65, "Pé"])
def test_unsafe_identifiers_never_become_paths(cohort, patient):
    ds, attrs = make_scan(seed=13)
    with pytest.raises(ValueError, match="not a safe store identifier"):
        cohort.write_scan(patient, "tp1", ds, attrs)
    assert sorted(p.name for p in cohort.path.parent.iterdir()) == ["cohort"]
    assert [p.name for p in (cohort.store_path / "scans").iterdir()] == ["zarr.json"]


def test_open_cohort_refuses_a_directory_that_is_not_a_cohort(tmp_path):
    (tmp_path / "dicom").mkdir()
    with pytest.raises(FileNotFoundError, match=r"dicom is not a cohort directory"):
        open_cohort(tmp_path / "dicom")
    cohort = open_cohort(tmp_path / "new", create=True)
    assert cohort.tables_dir.is_dir() and cohort.reports_dir.is_dir()
    assert cohort.attrs["schema_version"] == 2
    assert {"cohort_dosimetry", "zarr", "xarray"} <= set(cohort.attrs["software_versions"])
    assert open_cohort(tmp_path / "new", create=True).attrs["created"] == cohort.attrs["created"]


def test_missing_scans_and_foreign_schema_versions_are_named(cohort):
    assert not cohort.has_arrays("P1", "tp1", ["activity"])
    with pytest.raises(KeyError, match="scan P1/tp1 is not in the cohort"):
        cohort.scan("P1", "tp1")
    ds, attrs = make_scan(seed=14)
    cohort.write_scan("P1", "tp1", ds, attrs)
    with pytest.raises(KeyError, match=r"scan P1/tp1 has no version 2 \(versions: \[1\]\)"):
        cohort.scan("P1", "tp1", version=2)
    root = cohort.store_path / "zarr.json"
    root.write_text(root.read_text().replace('"schema_version": 2', '"schema_version": 3'))
    with pytest.raises(ValueError, match="has schema_version 3; this software reads version 2"):
        open_cohort(cohort.path)


def test_scans_carry_their_voxel_centres_in_patient_millimetres(cohort):
    """z, y, x coordinates are the voxel centres origin + index x spacing (LPS mm), so .sel works in patient space;
    they are computed on reading and are not arrays of the store."""
    ds, attrs = make_scan(seed=4)
    cohort.write_scan("P000000000001", "tp1", ds, attrs)
    scan = cohort.scan("P000000000001", "tp1")
    for axis, origin, spacing, n in zip(("z", "y", "x"), attrs["origin_mm"], attrs["spacing_mm"], SHAPE):
        assert scan[axis].attrs["units"] == "mm"
        np.testing.assert_allclose(scan[axis].values, origin + spacing * np.arange(n))
    # the slice through z = origin + 5 slices, found by position
    z = attrs["origin_mm"][0] + 5 * attrs["spacing_mm"][0] + 0.4
    np.testing.assert_array_equal(scan["activity"].sel(z=z, method="nearest").values, ds["activity"].isel(z=5).values)
    assert set(scan.data_vars) == set(ds.data_vars)  # coordinates are not stored as arrays


def test_an_oblique_scan_has_no_per_axis_coordinates(cohort):
    """A grid whose axes are not the patient axes has no product of three coordinate axes: none are invented."""
    ds, attrs = make_scan(seed=5)
    c, s = np.cos(0.3), np.sin(0.3)
    attrs["direction"] = (1.0, 0.0, 0.0, 0.0, c, s, 0.0, -s, c)
    cohort.write_scan("P000000000001", "tp1", ds, attrs)
    assert not {"z", "y", "x"} & set(cohort.scan("P000000000001", "tp1").coords)
