"""Label maps of overlapping VOIs (regions with a ``vois`` table) in the store: written, read back, validated."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from cohort_dosimetry.store import validate_cohort

from ._factory import make_scan

LABELS_JSON = Path("store.zarr/scans/P1/tp1/v0001/labels/zarr.json")
#: External around everything, the liver in it, a lesion in the liver: three regions (synthetic).
NAMES = {1000: "external", 10000: "external+liver", 10001: "external+liver+lesion_1"}
VOIS = {"external": [1000, 10000, 10001], "liver": [10000, 10001], "lesion_1": [10001], "liver_healthy": [10000]}


def _region_scan():
    ds, attrs = make_scan(seed=4)
    rng = np.random.default_rng(4)
    ds["labels"].values[:] = rng.choice([0, 1000, 10000, 10001], size=ds["labels"].shape).astype(np.int16)
    ds["labels"].attrs.update(
        names=dict(NAMES),
        vois={k: list(v) for k, v in VOIS.items()},
        source_names={"external": "BODY", "liver": "Liver", "lesion_1": "GTV_1"},
        derived={"liver_healthy": "liver minus lesion_1"},
    )
    return ds, attrs


def test_a_region_label_map_round_trips_and_validates(cohort):
    ds, attrs = _region_scan()
    cohort.write_scan("P1", "tp1", ds, attrs)
    back = cohort.scan("P1", "tp1")["labels"]
    assert back.dtype == np.int16 and back.dims == ("z", "y", "x")
    np.testing.assert_array_equal(back.values, ds["labels"].values)
    assert back.attrs["names"] == NAMES
    assert back.attrs["vois"] == VOIS
    assert back.attrs["source_names"]["external"] == "BODY"
    assert validate_cohort(cohort.path) == []


@pytest.mark.parametrize(
    ("vois", "message"),
    [
        ({**VOIS, "spleen": [7]}, r"'vois' entry 'spleen' lists values \[7\] that 'names' lacks"),
        ({"liver": [10000, 10001]}, r"'names' values \[1000\] belong to no VOI of 'vois'"),
        ({**VOIS, "kidneys": []}, r"'vois' entry 'kidneys': \[\] is not a VOI name -> \[label values\]"),
        ({}, r"attribute 'vois' must be a non-empty"),
    ],
    ids=["unknown-region", "orphan-region", "empty-voi", "empty-table"],
)
def test_a_bad_voi_table_is_refused_on_write_and_found_by_validate(cohort, vois, message):
    ds, attrs = _region_scan()
    ds["labels"].attrs["vois"] = vois
    with pytest.raises(ValueError, match=message):
        cohort.write_scan("P1", "tp1", ds, attrs)
    good, attrs = _region_scan()
    cohort.write_scan("P1", "tp1", good, attrs)
    path = cohort.path / LABELS_JSON
    meta = json.loads(path.read_text())
    meta["attributes"]["vois"] = vois
    path.write_text(json.dumps(meta))
    problems = validate_cohort(cohort.path)
    assert any(re.search(message, p) for p in problems), problems
