"""Check a cohort directory against the store schema (metadata only: no array data is read)."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from ._cohort import DIMS, SLOT_RE, STORE_NAME, SUPERSEDED_DIR, _staging_owner, _timepoint_sort_key
from ._cycles import number_cycles
from ._locking import lock_file, lock_is_free
from ._schema import IDENTIFIER_RE, SCHEMA_VERSION, TIMEPOINT_RE, attr_problems, label_attrs_problems, store_schema

_VERSION_RE = re.compile(r"^v(\d{4})$")
_ARROW_TYPES = {
    "string": lambda t: pa.types.is_string(t) or pa.types.is_large_string(t),
    "float64": lambda t: t == pa.float64(),
    "int64": lambda t: t == pa.int64(),
    "datetime": lambda t: pa.types.is_timestamp(t) and t.tz in ("UTC", "+00:00"),
}


def validate_cohort(path: str | os.PathLike) -> list[str]:
    """Every way the cohort directory ``path`` departs from the store schema, as messages naming the place.

    Checks the root attrs; per scan version its attrs (required, types, version number), its arrays (known
    name, dims (z, y, x), dtype, units, chunking, one shape for all, the required ones present, each listed in
    the provenance and each listed one present, the label table); per patient the scans' identity (timepoint labels
    tp1, tp2, ...; every version of a label has one ``spect_series_key``, no two labels share one) and cycles (the
    latest versions' ``cycle`` numbers their injections in time order, see ``_cycles``); staging leftovers of dead
    writers; and the tables (readable Parquet, the schema's columns, Arrow types and units). An empty list means
    valid.
    Does not modify anything (``open_cohort`` is what cleans dead writers' staging).
    """
    root = Path(path)
    store = root / STORE_NAME
    meta = _json(store / "zarr.json")
    if meta is None:
        return [f"{root}: not a cohort directory ({STORE_NAME}/zarr.json is missing or unreadable)"]
    problems = _node_problems(meta, "group", STORE_NAME)
    for name, spec in store_schema()["root_attrs"].items():
        if name not in meta.get("attributes", {}):
            if spec.get("required", True):
                problems.append(f"{STORE_NAME}: root attribute {name!r} is missing")
        else:
            problems += [f"{STORE_NAME}: {p}" for p in attr_problems(name, meta["attributes"][name], spec)]
    version = meta.get("attributes", {}).get("schema_version")
    if version != SCHEMA_VERSION:
        problems.append(f"{STORE_NAME}: schema_version {version!r}, this validator checks version {SCHEMA_VERSION}")
    problems += _scans_problems(store)
    problems += _staging_problems(store)
    problems += _tables_problems(root / "tables")
    return problems


def _json(path: Path) -> dict | None:
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _node_problems(meta: dict, node_type: str, where: str) -> list[str]:
    if meta.get("zarr_format") != 3 or meta.get("node_type") != node_type:
        return [
            f"{where}: not a zarr v3 {node_type} (zarr_format={meta.get('zarr_format')!r}, "
            f"node_type={meta.get('node_type')!r})"
        ]
    return []


def _group_problems(path: Path, where: str) -> list[str]:
    meta = _json(path / "zarr.json")
    if meta is None:
        return [f"{where}: zarr.json is missing or unreadable"]
    return _node_problems(meta, "group", where)


def _scans_problems(store: Path) -> list[str]:
    scans = store / "scans"
    if not scans.is_dir():
        return [f"{STORE_NAME}/scans: missing"]
    problems = _group_problems(scans, f"{STORE_NAME}/scans")
    patients = _children(
        scans, f"{STORE_NAME}/scans", IDENTIFIER_RE, "patients are directories named by a safe pseudonym", problems
    )
    for patient_dir, where, _ in patients:
        problems += _group_problems(patient_dir, where)
        timepoints = _children(
            patient_dir, where, TIMEPOINT_RE, "timepoints are directories named tp1, tp2, ...", problems
        )
        versions_of: dict[str, list[tuple[int, dict]]] = {}
        for tp_dir, tp_where, _ in timepoints:
            problems += _group_problems(tp_dir, tp_where)
            versions_of[tp_dir.name] = []
            for vdir, vwhere, match in _children(
                tp_dir, tp_where, _VERSION_RE, "scan versions are v0001, v0002, ...", problems
            ):
                writer_active = not lock_is_free(lock_file(store, "scan", patient_dir.name, tp_dir.name))
                problems += _version_problems(vdir, vwhere, int(match.group(1)), writer_active)
                versions_of[tp_dir.name].append(
                    (int(match.group(1)), (_json(vdir / "zarr.json") or {}).get("attributes", {}))
                )
        problems += _patient_problems(where, versions_of)
    return problems


def _patient_problems(where: str, versions_of: dict[str, list[tuple[int, dict]]]) -> list[str]:
    """Identity and cycles of one patient's scans: {timepoint: [(version, attrs), ...]}."""
    problems = []
    latest = {}
    for timepoint in sorted(versions_of, key=_timepoint_sort_key):
        versions = sorted(versions_of[timepoint], key=lambda v: v[0])
        if not versions:
            continue
        keys = {attrs.get("spect_series_key") for _, attrs in versions}
        if len(keys) > 1:
            listing = ", ".join(f"v{number:04d} {attrs.get('spect_series_key')!r}" for number, attrs in versions)
            problems.append(
                f"{where}/{timepoint}: its versions are of different SPECT series ({listing}); "
                "every version of a label must be the same series"
            )
        latest[timepoint] = versions[-1][1]
    holders: dict[str, list[str]] = {}
    for timepoint, attrs in latest.items():
        key = attrs.get("spect_series_key")
        if isinstance(key, str) and key:
            holders.setdefault(key, []).append(timepoint)
    for key, timepoints in holders.items():
        if len(timepoints) > 1:
            problems.append(
                f"{where}: timepoints {', '.join(timepoints)} hold the same SPECT series {key!r}; "
                "one series has one label"
            )
    dated = {}
    for timepoint, attrs in latest.items():
        try:
            number_cycles([attrs["injection_datetime"]])
        except (KeyError, TypeError, ValueError):
            continue  # reported with the version's attrs
        dated[timepoint] = attrs
    expected = dict(zip(dated, number_cycles([attrs["injection_datetime"] for attrs in dated.values()])))
    wrong = [
        f"{timepoint} has cycle {attrs.get('cycle')!r}, its injection {attrs['injection_datetime']} makes it "
        f"cycle {expected[timepoint]}"
        for timepoint, attrs in dated.items()
        if attrs.get("cycle") != expected[timepoint]
    ]
    if wrong:
        problems.append(
            f"{where}: cycles do not number the injections in time order ({'; '.join(wrong)}); "
            "Cohort.renumber_cycles(patient) repairs them"
        )
    return problems


def _children(parent: Path, where: str, name_re: re.Pattern, expected: str, problems: list[str]):
    """Yield (directory, its place, name match) for the child directories of ``parent`` named by ``name_re``; every
    other entry but ``zarr.json`` is appended to ``problems`` as unexpected (``expected`` says what belongs)."""
    for child in sorted(parent.iterdir()):
        if child.name == "zarr.json":
            continue
        match = name_re.fullmatch(child.name)
        if not child.is_dir() or not match:
            problems.append(f"{where}/{child.name}: unexpected entry ({expected})")
            continue
        yield child, f"{where}/{child.name}", match


def _version_problems(vdir: Path, where: str, number: int, writer_active: bool) -> list[str]:
    """Problems of one scan version; arrays not yet declared are in flight, not a problem, while a writer is active."""
    meta = _json(vdir / "zarr.json")
    if meta is None:
        return [f"{where}: zarr.json is missing or unreadable"]
    problems = _node_problems(meta, "group", where)
    attrs = meta.get("attributes", {})
    for name, spec in store_schema()["scan_attrs"].items():
        if name not in attrs:
            if spec.get("required", True):
                problems.append(f"{where}: required attribute {name!r} is missing")
        else:
            problems += [f"{where}: {p}" for p in attr_problems(name, attrs[name], spec)]
    if attrs.get("version") != number:
        problems.append(f"{where}: attribute version={attrs.get('version')!r} does not match the directory name")
    provenance = attrs.get("provenance") if isinstance(attrs.get("provenance"), dict) else {}
    for name, record in provenance.items():
        if not isinstance(record, dict) or not record.get("method"):
            problems.append(f"{where}: provenance of {name!r} has no 'method'")

    schema_arrays = store_schema()["arrays"]
    shapes = {}
    for adir in sorted(p for p in vdir.iterdir() if p.is_dir() and p.name != SUPERSEDED_DIR):
        awhere = f"{where}/{adir.name}"
        array_problems, shape = _array_problems(adir, awhere)
        if shape is not None and adir.name not in provenance and not writer_active:
            problems.append(
                f"{awhere}: array is not listed in the scan's provenance "
                "(left by an interrupted write_arrays; invisible to readers)"
            )
        problems += array_problems
        if shape is not None:
            shapes[adir.name] = shape
    for name in provenance:
        if name not in shapes:
            problems.append(f"{where}: provenance lists {name!r} but the array is missing")
    for name, spec in schema_arrays.items():
        if spec["required"] and name not in shapes:
            problems.append(f"{where}: required array {name!r} is missing")
    if len(set(shapes.values())) > 1:
        problems.append(f"{where}: arrays differ in shape: {shapes}")
    if (vdir / SUPERSEDED_DIR).is_dir():
        scan_shape = shapes.get("ct_hu")
        problems += _superseded_problems(vdir / SUPERSEDED_DIR, f"{where}/{SUPERSEDED_DIR}", scan_shape, writer_active)
    return problems


def _superseded_problems(root: Path, where: str, scan_shape: tuple | None, writer_active: bool) -> list[str]:
    """Problems of a scan version's ``superseded`` group: slots s0001, s0002, ... each a group whose
    ``provenance`` attr lists the derived arrays it holds (a slot a live writer is filling may lack some)."""
    problems = _group_problems(root, where)
    derived = {n for n, spec in store_schema()["arrays"].items() if spec["written_by"] == "derived"}
    for slot in sorted(root.iterdir()):
        if slot.name == "zarr.json":
            continue
        swhere = f"{where}/{slot.name}"
        if not slot.is_dir() or not SLOT_RE.fullmatch(slot.name):
            problems.append(f"{swhere}: unexpected entry (superseded slots are s0001, s0002, ...)")
            continue
        meta = _json(slot / "zarr.json")
        if meta is None:
            problems.append(f"{swhere}: zarr.json is missing or unreadable")
            continue
        problems += _node_problems(meta, "group", swhere)
        provenance = meta.get("attributes", {}).get("provenance")
        if not isinstance(provenance, dict):
            problems.append(f"{swhere}: attribute 'provenance' is missing or not an object")
            provenance = {}
        for name, record in provenance.items():
            if not isinstance(record, dict) or not record.get("method"):
                problems.append(f"{swhere}: provenance of {name!r} has no 'method'")
            if not (slot / name).is_dir() and not writer_active:
                problems.append(f"{swhere}: provenance lists {name!r} but the array is missing")
        for adir in sorted(p for p in slot.iterdir() if p.is_dir()):
            awhere = f"{swhere}/{adir.name}"
            if adir.name not in derived:
                problems.append(f"{awhere}: only derived arrays are superseded ({sorted(derived)})")
                continue
            if adir.name not in provenance:
                problems.append(f"{awhere}: array is not listed in the slot's provenance")
            array_problems, shape = _array_problems(adir, awhere)
            problems += array_problems
            if shape is not None and scan_shape is not None and shape != scan_shape:
                problems.append(f"{awhere}: shape {shape} differs from the scan's {scan_shape}")
    return problems


def _array_problems(adir: Path, awhere: str) -> tuple[list[str], tuple | None]:
    """Problems of one array directory against the schema, and its shape (None when it is not a schema array)."""
    schema_arrays = store_schema()["arrays"]
    chunk_z = store_schema()["chunking"]["z"]
    problems = []
    ameta = _json(adir / "zarr.json")
    if ameta is None:
        return [f"{awhere}: zarr.json is missing or unreadable"], None
    problems += _node_problems(ameta, "array", awhere)
    spec = schema_arrays.get(adir.name)
    if spec is None:
        return problems + [f"{awhere}: array not in the store schema (known: {sorted(schema_arrays)})"], None
    dims = tuple(ameta.get("dimension_names") or ())
    if dims != DIMS:
        problems.append(f"{awhere}: dims {dims}, the schema needs {DIMS}")
    if ameta.get("data_type") != spec["dtype"]:
        problems.append(f"{awhere}: dtype {ameta.get('data_type')!r}, the schema needs {spec['dtype']!r}")
    aattrs = ameta.get("attributes", {})
    if aattrs.get("units") != spec["units"]:
        problems.append(f"{awhere}: units {aattrs.get('units')!r}, the schema needs {spec['units']!r}")
    shape = tuple(ameta.get("shape", ()))
    chunks = tuple(ameta.get("chunk_grid", {}).get("configuration", {}).get("chunk_shape", ()))
    if len(shape) == 3 and chunks != (min(chunk_z, shape[0]), shape[1], shape[2]):
        problems.append(f"{awhere}: chunks {chunks}, the schema needs ({chunk_z} slices, full y, full x)")
    if adir.name == "labels":
        problems += [f"{awhere}: {p}" for p in label_attrs_problems(aattrs)]
    return problems, shape


def _staging_problems(store: Path) -> list[str]:
    staging = store / ".staging"
    if not staging.is_dir():
        return []
    problems = []
    for entry in sorted(staging.iterdir()):
        owner = _staging_owner(entry.name)
        where = f"{STORE_NAME}/.staging/{entry.name}"
        if owner is None:
            problems.append(f"{where}: unexpected entry in the staging area")
        elif lock_is_free(lock_file(store, *owner)):
            problems.append(f"{where}: leftover of an interrupted write (its writer is gone; open_cohort removes it)")
    return problems


def _tables_problems(tables: Path) -> list[str]:
    if not tables.is_dir():
        return ["tables: missing"]
    problems = []
    schema_tables = store_schema()["tables"]
    for path in sorted(tables.iterdir()):
        where = f"tables/{path.name}"
        if path.suffix != ".parquet" or not IDENTIFIER_RE.fullmatch(path.stem):
            problems.append(f"{where}: unexpected file (tables are {{name}}.parquet)")
            continue
        try:
            arrow = pq.read_schema(path)
        except (OSError, pa.ArrowException) as exc:
            problems.append(f"{where}: not a readable Parquet file ({exc})")
            continue
        spec = schema_tables.get(path.stem)
        if spec is None:
            continue
        for col, cspec in spec["columns"].items():
            if col not in arrow.names:
                problems.append(f"{where}: column {col!r} is missing")
                continue
            field = arrow.field(col)
            if not _ARROW_TYPES[cspec["dtype"]](field.type):
                problems.append(f"{where}: column {col!r} has type {field.type}, the schema needs {cspec['dtype']}")
            units = (field.metadata or {}).get(b"units", b"").decode() or None
            if cspec.get("units") and units != cspec["units"]:
                problems.append(
                    f"{where}: column {col!r} has units {units!r} in its metadata, the schema needs {cspec['units']!r}"
                )
    return problems
