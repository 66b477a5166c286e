"""The store's machine-readable schema (``schema_v2.json``) and checks of single values against it."""

from __future__ import annotations

import json
import re
from datetime import datetime
from functools import cache
from importlib import resources
from typing import Any

SCHEMA_VERSION = 2


@cache
def store_schema() -> dict:
    """The schema of this package's store layout (``cohort_dosimetry/store/schema_v2.json``), parsed."""
    text = resources.files(__package__).joinpath(f"schema_v{SCHEMA_VERSION}.json").read_text()
    schema = json.loads(text)
    if schema["schema_version"] != SCHEMA_VERSION:
        raise RuntimeError(f"schema_v{SCHEMA_VERSION}.json declares version {schema['schema_version']}")
    return schema


IDENTIFIER_RE = re.compile(store_schema()["identifier_pattern"])
#: Timepoint labels: ``tp1``, ``tp2``, ... (one per SPECT series of a patient, numbered in the order they arrived).
TIMEPOINT_RE = re.compile(store_schema()["timepoint_pattern"])


def check_identifier(value: object, what: str) -> str:
    """Return ``value`` if it is safe as one path component of the store, else raise ``ValueError``.

    Safe means 1 to 64 characters from ``[A-Za-z0-9_-]``: no separators, no ``..``, no spaces.
    Identifiers are rejected rather than rewritten, so two different identifiers can never share a path.
    """
    if not isinstance(value, str) or not IDENTIFIER_RE.fullmatch(value):
        raise ValueError(
            f"{what} {value!r} is not a safe store identifier: use 1-64 characters from [A-Za-z0-9_-] "
            "(patients should be pseudonyms from pseudonymise_patient_id)"
        )
    return value


def check_timepoint(value: object) -> str:
    """Return ``value`` if it is a timepoint label ``tp1``, ``tp2``, ... (no leading zero), else raise
    ``ValueError``."""
    if not isinstance(value, str) or not TIMEPOINT_RE.fullmatch(value):
        raise ValueError(f"timepoint {value!r} is not a timepoint label: use tp1, tp2, ... (no leading zero)")
    return value


def timepoint_number(label: str) -> int:
    """The number of a timepoint label: ``"tp12"`` -> 12."""
    return int(check_timepoint(label)[2:])


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def attr_problems(name: str, value: Any, spec: dict) -> list[str]:
    """Problems of one attribute value against its schema entry (empty list = fine)."""
    kind = spec["type"]
    if kind == "string":
        ok = isinstance(value, str) and value != ""
    elif kind == "integer":
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif kind == "number":
        ok = _is_number(value) and value == value  # rejects NaN
    elif kind == "object":
        ok = isinstance(value, dict)
    elif kind == "list[string]":
        ok = isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value)
    elif kind == "list[number]":
        ok = isinstance(value, (list, tuple)) and all(_is_number(v) for v in value)
    elif kind == "datetime":
        ok = isinstance(value, str)
        if ok:
            try:
                datetime.fromisoformat(value)
            except ValueError:
                ok = False
    else:  # pragma: no cover - the schema file itself is wrong
        raise RuntimeError(f"unknown attribute type {kind!r} in the schema")
    if not ok:
        return [f"attribute {name!r} = {value!r} is not a valid {kind}"]
    problems = []
    if "length" in spec and len(value) != spec["length"]:
        problems.append(f"attribute {name!r} has {len(value)} values, the schema needs {spec['length']}")
    if spec.get("positive"):
        values = value if isinstance(value, (list, tuple)) else [value]
        if not all(v > 0 for v in values):
            problems.append(f"attribute {name!r} = {value!r} must be positive")
    if "enum" in spec and value not in spec["enum"]:
        problems.append(f"attribute {name!r} = {value!r} is not one of {spec['enum']}")
    if "pattern" in spec and not re.fullmatch(spec["pattern"], value):
        problems.append(f"attribute {name!r} = {value!r} does not match {spec['pattern']!r}")
    return problems


def label_names_problems(names: Any) -> list[str]:
    """Problems of a label table ``{label value: VOI name}`` (keys may be JSON strings of integers)."""
    if not isinstance(names, dict) or not names:
        return ["labels attribute 'names' must be a non-empty {label value: VOI name} mapping"]
    problems = []
    for key, name in names.items():
        try:
            ok = int(key) > 0
        except (TypeError, ValueError):
            ok = False
        if not ok or not isinstance(name, str) or not name:
            problems.append(f"labels 'names' entry {key!r}: {name!r} is not a positive integer -> name")
    return problems


def label_attrs_problems(attrs: Any) -> list[str]:
    """Problems of a ``labels`` array's attrs (storage_schema/README.md, "Labels"): the table ``names`` {label value:
    name}; where VOIs overlap, ``vois`` {VOI name: [label values]} whose values are all in ``names`` and that gives
    every value of ``names`` a VOI; ``source_names`` and ``derived`` {VOI name: text} when present."""
    attrs = attrs if isinstance(attrs, dict) else {}
    names = attrs.get("names")
    problems = label_names_problems(names)
    regions = set()
    for key in names if isinstance(names, dict) else ():
        try:
            regions.add(int(key))
        except (TypeError, ValueError):
            pass
    vois = attrs.get("vois")
    if vois is not None:
        if not isinstance(vois, dict) or not vois:
            problems.append("labels attribute 'vois' must be a non-empty {VOI name: [label values]} mapping")
            vois = {}
        used = set()
        for name, values in vois.items():
            if (
                not isinstance(name, str)
                or not name
                or not isinstance(values, (list, tuple))
                or not values
                or not all(isinstance(v, int) and not isinstance(v, bool) for v in values)
            ):
                problems.append(f"labels 'vois' entry {name!r}: {values!r} is not a VOI name -> [label values]")
                continue
            unknown = sorted(set(values) - regions)
            if unknown:
                problems.append(f"labels 'vois' entry {name!r} lists values {unknown} that 'names' lacks")
            used |= set(values)
        orphans = sorted(regions - used)
        if vois and orphans:
            problems.append(f"labels 'names' values {orphans} belong to no VOI of 'vois'")
    for key in ("source_names", "derived"):
        table = attrs.get(key)
        if table is not None and (
            not isinstance(table, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in table.items())
        ):
            problems.append(f"labels attribute {key!r} must be a {{VOI name: text}} mapping")
    return problems
