"""The VOI vocabulary of the whole project: names, VOI classes and the label numbering rule.

One integer label map per scan, label 0 = outside the body. Fixed labels for the organs; lesions are numbered from 1
and carry the label ``LESION_LABEL_OFFSET + k``:

    ====  ==============  =========
    label name            VOI class
    ====  ==============  =========
    0     (outside body)  -
    1     body            body        (every body voxel not in another VOI)
    2     lung_left       lung
    3     lung_right      lung
    4     liver           liver       (healthy liver: liver lesions carry their own labels)
    5     kidney_left     kidney      (cortex and medulla)
    6     kidney_right    kidney
    7     spleen          spleen
    8-11  vertebra_L2-L5  vertebra
    100+k lesion_k        lesion      (k = 1, 2, ...)
    ====  ==============  =========

Left/right are the patient's (DICOM LPS: +x is patient left).
"""
from __future__ import annotations

import re

ORGAN_LABELS: dict[str, int] = {
    "body": 1,
    "lung_left": 2,
    "lung_right": 3,
    "liver": 4,
    "kidney_left": 5,
    "kidney_right": 6,
    "spleen": 7,
    "vertebra_L2": 8,
    "vertebra_L3": 9,
    "vertebra_L4": 10,
    "vertebra_L5": 11,
}

#: Label of lesion k is ``LESION_LABEL_OFFSET + k``.
LESION_LABEL_OFFSET = 100

#: Most lesions a virtual patient carries (issue 3: 1 to 6).
MAX_LESIONS = 6

#: Every name the virtual-patient generator can produce; readers accept any ``lesion_<k>`` with k >= 1.
VOI_NAMES: tuple[str, ...] = tuple(ORGAN_LABELS) + tuple(f"lesion_{k}" for k in range(1, MAX_LESIONS + 1))

#: VOI classes used in reports.
VOI_TYPES: tuple[str, ...] = ("body", "lung", "liver", "kidney", "spleen", "vertebra", "lesion")

_LESION = re.compile(r"lesion_([1-9][0-9]*)")


def voi_type(name: str) -> str:
    """VOI class of a VOI name: ``"kidney_left"`` -> ``"kidney"``, ``"lesion_3"`` -> ``"lesion"``."""
    if _LESION.fullmatch(name):
        return "lesion"
    if name not in ORGAN_LABELS:
        raise ValueError(f"{name!r} is not a VOI name of the vocabulary (organs {sorted(ORGAN_LABELS)}, lesion_<k>)")
    return name.split("_")[0]


def label_of(name: str) -> int:
    """Integer label of a VOI name (see the module table)."""
    match = _LESION.fullmatch(name)
    if match:
        return LESION_LABEL_OFFSET + int(match.group(1))
    if name not in ORGAN_LABELS:
        raise ValueError(f"{name!r} is not a VOI name of the vocabulary (organs {sorted(ORGAN_LABELS)}, lesion_<k>)")
    return ORGAN_LABELS[name]


def name_of(label: int) -> str:
    """VOI name of an integer label (inverse of :func:`label_of`); 0 (outside the body) has no name."""
    label = int(label)
    if label > LESION_LABEL_OFFSET:
        return f"lesion_{label - LESION_LABEL_OFFSET}"
    for name, value in ORGAN_LABELS.items():
        if value == label:
            return name
    raise ValueError(f"label {label} is not in the vocabulary (organs 1-11, lesions {LESION_LABEL_OFFSET + 1}+)")
