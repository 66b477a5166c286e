"""The store's machine-readable schema (``schema_v1.json``) and checks of single values against it."""
from __future__ import annotations

import json
import re
from datetime import datetime
from functools import cache
from importlib import resources
from typing import Any

SCHEMA_VERSION = 1


@cache
def store_schema() -> dict:
    """The schema of this package's store layout (``cohort_dosimetry/store/schema_v1.json``), parsed."""
    text = resources.files(__package__).joinpath(f"schema_v{SCHEMA_VERSION}.json").read_text()
    schema = json.loads(text)
    if schema["schema_version"] != SCHEMA_VERSION:
        raise RuntimeError(f"schema_v{SCHEMA_VERSION}.json declares version {schema['schema_version']}")
    return schema


IDENTIFIER_RE = re.compile(store_schema()["identifier_pattern"])


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
