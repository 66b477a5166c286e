"""The VOI vocabulary of the whole project: VOI names and classes, clinical ROI-name synonyms, the label numbering and
how a label map with overlapping VOIs is described.

Used alike by the virtual patients (``phantoms``), ingest (``io``: contours), the store's label checks and the
statistics (``stats``). Pure Python: no numpy, so every layer can import it.

VOI names and classes
---------------------

    =========================  ==========  ==========================================================
    VOI name                   VOI class   meaning
    =========================  ==========  ==========================================================
    body                       body        every body voxel not in another VOI (the remainder)
    external                   body        the whole body outline (clinical External / BODY / Skin)
    lung_left, lung_right      lung
    lungs                      lung        both lungs in one contour
    liver                      liver       virtual patients: healthy liver (lesions carry their own
                                           labels); clinical contours: the whole liver contour
    liver_healthy              liver       liver minus every lesion (derived, see below)
    kidney_left, kidney_right  kidney      cortex and medulla
    kidneys                    kidney      both kidneys in one contour
    spleen                     spleen
    vertebra_<X>               vertebra    X one of C1-C7, T1-T12, L1-L5, S1
    lesion_<k>                 lesion      k = 1, 2, ...
    any other name             other       kept as written; gets every statistic
    =========================  ==========  ==========================================================

Left/right are the patient's (DICOM LPS: +x is patient left). :func:`voi_type` gives the class of any name.

ROI names of clinical contours
------------------------------

:func:`map_roi_names` turns the ROI (RTSTRUCT) or segment (SEG) names of one contour object into VOI names, looking
at each name in this order:

1. the user's mapping (:func:`read_roi_names`: ``"ROI name as written" = "vocabulary name"``), first as written,
   then compared as in 3;
2. a VOI name of the vocabulary exactly as written (``lung_left``, ``lesion_3``; so ``body`` is our remainder);
3. the built-in synonyms, compared case-insensitively and ignoring the separators space, ``_``, ``-`` and ``.``
   (so ``Kidney_L``, ``kidney-l``, ``KIDNEY L`` and ``KidneyL`` are one name). The table follows AAPM TG-263
   (Mayo et al., "American Association of Physicists in Medicine Task Group 263: Standardizing Nomenclatures in
   Radiation Oncology", Int J Radiat Oncol Biol Phys 100:1057, 2018: ``Kidney_L``, ``Lung_R``, ``Lungs``,
   ``External``, ``Liver-GTV``...) and common local habits:

   ====================  ===================================================================================
   VOI name              names recognised (before separators are removed and case is folded)
   ====================  ===================================================================================
   external              External, Ext, BODY, Body, Outline, Skin, Body_Outline, Body_Contour, Patient_Outline
   lungs                 Lungs, Lung, Lung_Total, Lungs_Total, Lung_Both, Lungs_Both, Both_Lungs, Lungs_Bilat
   lung_left/_right      Lung_L, Lung_Lt, Lung_Left, L_Lung, Lt_Lung, Left_Lung, LungL (R: r, rt, right)
   liver                 Liver, Liver_Whole, Whole_Liver, Liver_Total
   liver_healthy         Liver-GTV, Liver_minus_GTV, Liver_Healthy, Healthy_Liver, Liver_Normal, Normal_Liver
   kidneys               Kidneys, Kidney, Kidneys_Both, Both_Kidneys, Kidneys_Bilat, Kidneys_Total
   kidney_left/_right    Kidney_L, Kidney_Lt, Kidney_Left, L_Kidney, Lt_Kidney, Left_Kidney (R as for lungs)
   spleen                Spleen
   vertebra_<X>          L2, Vertebra_L2, Vertebra L2, L2_Vertebra, Bone_Vertebra_L2, VB_L2, Vert_L2, Th12;
                         any level C1-C7, T1-T12 (also Th1-Th12), L1-L5, S1; leading zeros allowed (L02)
   lesion_<k>            GTV, GTVp, GTVn, GTV1, GTV_1, GTVp_2, Lesion, Lesion 3, Les_4, Tumor, Tumour, Met,
                         Mets, Met_2, Metastasis, Metastases, each numbered or not
   ====================  ===================================================================================

4. anything else keeps its own name (surrounding white space removed) with class ``other``.

Lesions are numbered: a lesion name that carries a number keeps it when no earlier lesion of the object took it;
the others (unnumbered, or their number taken) get the smallest free number, in ROI order. A user mapping to
``"lesion"`` numbers the ROI by the digits its name ends with, if any (``"Herd 1"`` -> ``lesion_1``). When two ROIs
map onto one VOI name (``Liver`` and ``LIVER``), the first takes it and the later keeps its own name (class
``other``; ``" (2)"`` appended if that name is taken too).

Label numbering
---------------

One integer label map per scan, 0 = no VOI:

    ===========  ===================================================================================
    label        VOI
    ===========  ===================================================================================
    1-11         body 1, lung_left 2, lung_right 3, liver 4, kidney_left 5, kidney_right 6, spleen 7,
                 vertebra_L2-L5 8-11
    100 + k      lesion_k (k < 900)
    1000 +       VOIs without a fixed label (external, lungs, vertebra_T12, other names...), in ROI order
    10000 +      regions shared by several VOIs (overlapping contours), see below
    ===========  ===================================================================================

Overlapping VOIs: regions
-------------------------

Clinical contours overlap (the liver holds its lesions, External holds everything), and each VOI's statistics are
taken over its own contour. The label map then holds *regions*: every distinct combination of VOIs a voxel lies in
is one region. A region in one VOI only has that VOI's label; a region in several VOIs gets a value from
:data:`OVERLAP_REGION_START` upwards. The ``labels`` attrs say what the values mean:

- ``names`` {region value: name}: the VOI's name for a region of one VOI; for a region of several VOIs their names
  joined by ``+`` (``"external+liver+lesion_1"``).
- ``vois`` {VOI name: [region values]}, present only when some region belongs to more than one VOI (or a VOI has
  several regions): a VOI's voxels are the union of its regions. Without ``vois``, every name in ``names`` is a VOI
  whose voxels are exactly its label's voxels: virtual patients and stores without overlapping contours.
- ``source_names`` {VOI name: ROI name as written} (ingest), ``derived`` {VOI name: how it was derived}.

:func:`voi_regions` reads either form. Derived VOI: where lesion-class VOIs overlap ``liver``, ``liver_healthy`` (class
liver) is liver minus every lesion (:func:`derive_vois`); it has no region of its own, only the liver's regions that
hold no lesion. Virtual patients' liver is already healthy liver and nothing overlaps, so nothing is derived there.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import cast

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

#: Most lesions a virtual patient carries (1 to 6).
MAX_LESIONS = 6

#: VOIs without a fixed label (see the module's label table) are numbered from here, in ROI order.
UNKNOWN_LABEL_START = 1000

#: Regions shared by several VOIs are numbered from here (see the module's section on regions).
OVERLAP_REGION_START = 10000

#: Every name the virtual-patient generator can produce; readers accept any ``lesion_<k>`` with k >= 1.
VOI_NAMES: tuple[str, ...] = tuple(ORGAN_LABELS) + tuple(f"lesion_{k}" for k in range(1, MAX_LESIONS + 1))

#: VOI classes used in reports; ``other`` is every name outside the vocabulary.
VOI_TYPES: tuple[str, ...] = ("body", "lung", "liver", "kidney", "spleen", "vertebra", "lesion", "other")

#: Vertebral levels with a VOI name ``vertebra_<level>``.
VERTEBRA_LEVELS: tuple[str, ...] = (
    *(f"C{k}" for k in range(1, 8)),
    *(f"T{k}" for k in range(1, 13)),
    *(f"L{k}" for k in range(1, 6)),
    "S1",
)

#: VOI names of the vocabulary beyond the virtual patients' (clinical contours, derived VOIs) and their classes.
CLINICAL_TYPES: dict[str, str] = {"external": "body", "lungs": "lung", "kidneys": "kidney", "liver_healthy": "liver"}

_LESION = re.compile(r"lesion_([1-9][0-9]*)")
_VERTEBRA = re.compile(r"vertebra_(" + "|".join(VERTEBRA_LEVELS) + ")")
_TYPES = {**{name: name.split("_")[0] for name in ORGAN_LABELS}, **CLINICAL_TYPES}


def voi_type(name: str) -> str:
    """VOI class of a VOI name: ``"kidney_left"`` -> ``"kidney"``, ``"lesion_3"`` -> ``"lesion"``,
    ``"external"`` -> ``"body"``; ``"other"`` for a name outside the vocabulary (compared exactly as written)."""
    if _LESION.fullmatch(name):
        return "lesion"
    if _VERTEBRA.fullmatch(name):
        return "vertebra"
    return _TYPES.get(name, "other")


def is_vocabulary_name(name: str) -> bool:
    """True for a VOI name of the vocabulary (exactly as written): every name whose class is not ``other``."""
    return voi_type(name) != "other"


def label_of(name: str) -> int:
    """Fixed integer label of a VOI name (see the module's label table): organs 1-11, ``lesion_k`` 100 + k.
    Names without a fixed label (``external``, ``vertebra_T12``, other names) raise ``ValueError``."""
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


# ------------------------------------------------------------------------------------------------ ROI names
_SEPARATORS = re.compile(r"[\s_.\-]+")


def normalise_roi_name(name: str) -> str:
    """A ROI name as the synonym table compares it: lower case, without spaces, ``_``, ``-`` and ``.``."""
    return _SEPARATORS.sub("", str(name)).lower()


def _synonyms() -> dict[str, str]:
    table: dict[str, str] = {}

    def add(target: str, *spellings: str) -> None:
        for spelling in spellings:
            key = normalise_roi_name(spelling)
            if table.get(key, target) != target:  # pragma: no cover - the table itself is wrong
                raise RuntimeError(f"ROI synonym {spelling!r} maps to both {table[key]!r} and {target!r}")
            table[key] = target

    add(
        "external",
        "External",
        "Ext",
        "Body",
        "Outline",
        "Skin",
        "Body_Outline",
        "Body_Contour",
        "External_Contour",
        "Patient_Outline",
        "Outline_Body",
        "Whole_Body",
    )
    add(
        "lungs",
        "Lungs",
        "Lung",
        "Lung_Total",
        "Lungs_Total",
        "Total_Lung",
        "Total_Lungs",
        "Lung_Both",
        "Lungs_Both",
        "Both_Lungs",
        "Lung_Bilat",
        "Lungs_Bilat",
        "Lung_Bilateral",
        "Lungs_Bilateral",
        "Bilateral_Lungs",
        "Lung_LR",
        "Lungs_LR",
    )
    add(
        "kidneys",
        "Kidneys",
        "Kidney",
        "Kidney_Total",
        "Kidneys_Total",
        "Kidney_Both",
        "Kidneys_Both",
        "Both_Kidneys",
        "Kidney_Bilat",
        "Kidneys_Bilat",
        "Kidney_Bilateral",
        "Kidneys_Bilateral",
        "Bilateral_Kidneys",
        "Kidney_LR",
        "Kidneys_LR",
    )
    add("liver", "Liver", "Liver_Whole", "Whole_Liver", "Liver_Total", "Total_Liver")
    add(
        "liver_healthy",
        "Liver-GTV",
        "Liver_minus_GTV",
        "Liver_Healthy",
        "Healthy_Liver",
        "Liver_Normal",
        "Normal_Liver",
        "Liver-GTVs",
        "Liver_minus_Lesions",
        "Liver-Lesions",
    )
    add("spleen", "Spleen")
    sides = {"left": ("L", "Lt", "Lft", "Left"), "right": ("R", "Rt", "Rgt", "Right")}
    for organ in ("lung", "kidney"):
        for side, words in sides.items():
            for word in words:
                add(f"{organ}_{side}", f"{organ}_{word}", f"{word}_{organ}")
    for name in (*ORGAN_LABELS, *CLINICAL_TYPES):
        if name != "body":  # "body" as written is ours (the remainder); Body, BODY: the outline, as TG-263
            add(name, name)
    return table


#: Built-in synonyms {normalised ROI name: VOI name} (see the module docstring; vertebrae and lesions by pattern).
ROI_SYNONYMS: dict[str, str] = _synonyms()

_VERTEBRA_ROI = re.compile(
    r"(?:bone)?(?:vertebrae|vertebra|vertebral|vert|vb)?(?:body)?"
    r"(c|th|t|l|s)0*([1-9][0-9]?)(?:vertebrae|vertebra|vert|vb)?"
)
_LESION_ROI = re.compile(r"(?:gtv[pnt]?|lesions?|les|tumou?rs?|mets?|metastas[ie]s|metastase)0*([1-9][0-9]*)?")
_USER_LESION = re.compile(r"(?:.*\D)?0*([1-9][0-9]*)\s*")


def _vertebra(normalised: str) -> str | None:
    match = _VERTEBRA_ROI.fullmatch(normalised)
    if not match:
        return None
    level = f"{'T' if match.group(1) == 'th' else match.group(1).upper()}{int(match.group(2))}"
    return f"vertebra_{level}" if level in VERTEBRA_LEVELS else None


def match_roi_name(name: str, user: Mapping[str, str] | None = None) -> str | None:
    """The vocabulary name of one ROI name, or None when it is not recognised (then it keeps its own name).

    Lesions come back as ``"lesion_<k>"`` when the name carries a number and as ``"lesion"`` when not;
    :func:`map_roi_names` numbers them. ``user``: {ROI name as written: vocabulary name}, consulted first.
    """
    written = str(name).strip()
    normalised = normalise_roi_name(written)
    for key, target in (user or {}).items():
        if key.strip() == written:
            return _user_target(written, target)
    for key, target in (user or {}).items():
        if normalise_roi_name(key) == normalised:
            return _user_target(written, target)
    if is_vocabulary_name(written):
        return written
    if normalised in ROI_SYNONYMS:
        return ROI_SYNONYMS[normalised]
    vertebra = _vertebra(normalised)
    if vertebra:
        return vertebra
    lesion = _LESION_ROI.fullmatch(normalised)
    if lesion:
        return f"lesion_{int(lesion.group(1))}" if lesion.group(1) else "lesion"
    return None


def _user_target(written: str, target: str) -> str:
    if target != "lesion":
        return target
    number = _USER_LESION.fullmatch(written)
    return f"lesion_{int(number.group(1))}" if number else "lesion"


@dataclass(frozen=True)
class RoiMatch:
    """How one ROI was named: ``roi`` as written (stripped), ``name`` its VOI name, ``note`` why a recognised ROI kept
    its own name (empty otherwise)."""

    roi: str
    name: str
    note: str = ""

    @property
    def renamed(self) -> bool:
        return self.name != self.roi

    @property
    def recognised(self) -> bool:
        return voi_type(self.name) != "other"


def map_roi_names(names: Sequence[str], user: Mapping[str, str] | None = None) -> list[RoiMatch]:
    """VOI names of the ROIs of one contour object, in ROI order (rules and lesion numbering: module docstring).

    Every result is unique: a name is never given to two ROIs.
    """
    written = [str(n).strip() for n in names]
    wanted = [match_roi_name(n, user) for n in written]
    final: list[str | None] = [None] * len(written)
    notes = [""] * len(written)
    taken: set[str] = set()
    lesions: set[int] = set()
    for i, want in enumerate(wanted):  # first pass: fixed names, and lesions keeping their own numbers
        if want is None or want == "lesion":
            continue
        number = _LESION.fullmatch(want)
        if number:
            if int(number.group(1)) in lesions:
                continue
            lesions.add(int(number.group(1)))
        elif want in taken:
            first = wanted.index(want)
            notes[i] = f"also matches {want!r}, which ROI {written[first]!r} took"
            continue
        final[i] = want
        taken.add(want)
    for i, want in enumerate(wanted):  # second pass, in ROI order: the other lesions, then the own names
        if final[i] is not None:
            continue
        if want is not None and (want == "lesion" or _LESION.fullmatch(want)):
            k = 1
            while k in lesions:
                k += 1
            lesions.add(k)
            final[i] = f"lesion_{k}"
        else:
            name, n = written[i] or "unnamed ROI", 2
            while name in taken or is_vocabulary_name(name):
                name, n = f"{written[i] or 'unnamed ROI'} ({n})", n + 1
            final[i] = name
            if name != written[i]:
                reason = notes[i] or ("its name is taken" if written[i] else "it has no name")
                notes[i] = f"{reason}; named {name!r}"
        taken.add(cast(str, final[i]))  # both branches above set it
    named = cast("list[str]", final)  # both passes gave every ROI a name
    return [RoiMatch(roi, name, note) for roi, name, note in zip(written, named, notes)]


def read_roi_names(path: str | Path) -> dict[str, str]:
    """A user's ROI-name mapping from a TOML file: ``{ROI name as written: vocabulary name}``.

    The file holds one table ``[roi_names]`` of ``"ROI name as written" = "vocabulary name"`` entries, e.g.::

        [roi_names]
        "Niere links" = "kidney_left"
        "Leber" = "liver"
        "Herd 1" = "lesion"      # lesion_<k>, numbered as lesions are (module docstring)

    A target must be a VOI name of the vocabulary (``voi_type`` not ``other``) or ``"lesion"``. A file that cannot be
    read, is not TOML, lacks the table, or has a bad entry raises ``ValueError`` naming the file and the entry.
    """
    where = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"ROI-name mapping {where}: cannot be read ({type(exc).__name__}: {exc})") from None
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"ROI-name mapping {where}: not valid TOML ({exc})") from None
    table = document.get("roi_names")
    if not isinstance(table, dict):
        raise ValueError(f'ROI-name mapping {where}: needs a table [roi_names] of "ROI name" = "vocabulary name"')
    mapping: dict[str, str] = {}
    seen: dict[str, tuple[str, str]] = {}
    for key, target in table.items():
        entry = f"entry {key!r} = {target!r}"
        if not isinstance(target, str):
            raise ValueError(f"ROI-name mapping {where}: {entry}: the vocabulary name must be a string")
        if not key.strip():
            raise ValueError(f"ROI-name mapping {where}: {entry}: the ROI name is empty")
        if target != "lesion" and not is_vocabulary_name(target):
            raise ValueError(
                f"ROI-name mapping {where}: {entry}: {target!r} is not a vocabulary name (use one of "
                f"{', '.join(sorted(n for n in {*ORGAN_LABELS, *CLINICAL_TYPES} if voi_type(n) != 'vertebra'))}, "
                "vertebra_<C1..S1>, lesion or lesion_<k>)"
            )
        other = seen.get(normalise_roi_name(key))
        if other is not None and other[1] != target:
            raise ValueError(
                f"ROI-name mapping {where}: {entry} contradicts entry {other[0]!r} = {other[1]!r} "
                "(names are also compared ignoring case and separators)"
            )
        seen[normalise_roi_name(key)] = (key, target)
        mapping[key] = target
    return mapping


# --------------------------------------------------------------------------------------------------- regions
def region_name(vois: Sequence[str]) -> str:
    """Name of a region lying in ``vois`` (in VOI order): ``"external+liver+lesion_1"``."""
    return "+".join(vois)


def label_table(names: Mapping, unique_names: bool = True) -> dict[int, str]:
    """``{label value: name}`` with int keys in label order, from a table whose keys may be ints or the strings that
    JSON and zarr attributes make of them. Raises ``ValueError`` for a key that is not a positive integer (0 is
    background) and, with ``unique_names``, for a name given to two labels (region names of overlapping VOIs may
    repeat)."""
    out: dict[int, str] = {}
    for key, name in names.items():
        try:
            value = int(key)
        except (TypeError, ValueError):
            raise ValueError(f"label value {key!r} of {name!r} is not an integer") from None
        if value <= 0:
            raise ValueError(f"VOI {name!r} has label {value}; labels of VOIs must be positive (0 is background)")
        out[value] = str(name)
    if unique_names and len(set(out.values())) != len(out):
        raise ValueError(f"VOI names are not unique: {sorted(out.values())}")
    return dict(sorted(out.items()))


def voi_regions(names: Mapping, vois: Mapping | None = None) -> dict[str, tuple[int, ...]]:
    """{VOI name: region values} of a label map's attrs in either form (module docstring, section regions).

    ``names`` {region value: name} (keys may be the strings JSON makes of them); ``vois`` {VOI name: [region values]}
    or None (then every name is a VOI of one region). Raises ``ValueError`` for a region value that is not a positive
    integer, a VOI listing a region ``names`` lacks, or (with ``vois``) a region that belongs to no VOI.
    """
    regions = label_table(names, unique_names=False)
    if vois is None:
        return {name: (value,) for value, name in sorted(regions.items())}
    out: dict[str, tuple[int, ...]] = {}
    for name, values in vois.items():
        try:
            listed = tuple(sorted({int(v) for v in values}))
        except (TypeError, ValueError):
            raise ValueError(f"VOI {name!r}: region values {values!r} are not integers") from None
        unknown = [v for v in listed if v not in regions]
        if unknown:
            raise ValueError(f"VOI {name!r} lists regions {unknown} that the label table 'names' lacks")
        out[str(name)] = listed
    orphans = sorted(set(regions) - {v for values in out.values() for v in values})
    if orphans:
        raise ValueError(f"regions {orphans} belong to no VOI of the 'vois' table")
    return out


def derive_vois(vois: Mapping[str, Sequence[int]]) -> tuple[dict[str, tuple[int, ...]], dict[str, str]]:
    """VOIs derived from a region table {VOI name: region values}: ``liver_healthy`` = ``liver`` minus every
    lesion-class VOI, when some lesion overlaps the liver, some liver is left and no ``liver_healthy`` is given.

    Returns ({derived VOI name: its region values}, {derived VOI name: how it was derived}).
    """
    if "liver" not in vois or "liver_healthy" in vois:
        return {}, {}
    liver = set(vois["liver"])
    lesions = {name: set(values) for name, values in vois.items() if voi_type(name) == "lesion"}
    inside = [name for name, values in lesions.items() if values & liver]
    if not inside:
        return {}, {}
    healthy = tuple(sorted(liver - set().union(*lesions.values())))
    if not healthy:
        return {}, {}
    return {"liver_healthy": healthy}, {"liver_healthy": f"liver minus {', '.join(inside)}"}


def labels_attrs(
    vois: Mapping[str, Sequence[int]],
    names: Mapping[int, str],
    source_names: Mapping[str, str] | None = None,
    derived: Mapping[str, str] | None = None,
) -> dict:
    """The attrs of a ``labels`` array for a region table: ``names`` always, ``vois`` only when some VOI is not
    exactly one region of its own name (module docstring), ``source_names`` and ``derived`` when given."""
    names = {int(k): str(v) for k, v in names.items()}
    plain = (
        not derived
        and len(vois) == len(names)
        and all(len(values) == 1 and names.get(values[0]) == name for name, values in vois.items())
    )
    attrs: dict = {"names": dict(sorted(names.items()))}
    if not plain:
        attrs["vois"] = {name: [int(v) for v in values] for name, values in vois.items()}
    if source_names:
        attrs["source_names"] = dict(source_names)
    if derived:
        attrs["derived"] = dict(derived)
    return attrs


# ---------------------------------------------------------------------------------------------------------------
# DICOM SEG codes


def segment_description(number: int, name: str, algorithm):
    """A highdicom SEG segment description of VOI ``name``: SNOMED CT category and type (and laterality modifier)
    codes of :func:`snomed_codes`, made by ``algorithm`` (an AlgorithmIdentificationSequence)."""
    import highdicom as hd

    category, property_type, modifier = snomed_codes(name)
    description = hd.seg.SegmentDescription(
        segment_number=number,
        segment_label=name,
        segmented_property_category=category,
        segmented_property_type=property_type,
        algorithm_type="AUTOMATIC",
        algorithm_identification=algorithm,
    )
    if modifier is not None:
        description.SegmentedPropertyTypeCodeSequence[0].SegmentedPropertyTypeModifierCodeSequence = [
            hd.sr.CodedConcept.from_code(modifier)
        ]
    return description


def snomed_codes(name: str):
    """(category, type, laterality modifier or None) of a VOI name, SNOMED CT codes as pydicom ships them (DICOM
    SEG segmented property codes)."""
    from pydicom.sr.codedict import codes

    anatomy = codes.SCT.AnatomicalStructure
    organs = {
        "body": (codes.SCT.EntireBody, None),
        "external": (codes.SCT.EntireBody, None),
        "lung_left": (codes.SCT.Lung, codes.SCT.Left),
        "lung_right": (codes.SCT.Lung, codes.SCT.Right),
        "lungs": (codes.SCT.Lung, codes.SCT.Bilateral),
        "liver": (codes.SCT.Liver, None),
        "liver_healthy": (codes.SCT.Liver, None),
        "kidney_left": (codes.SCT.Kidney, codes.SCT.Left),
        "kidney_right": (codes.SCT.Kidney, codes.SCT.Right),
        "kidneys": (codes.SCT.Kidney, codes.SCT.Bilateral),
        "spleen": (codes.SCT.Spleen, None),
    }
    kind = voi_type(name)
    if kind == "lesion":
        return codes.SCT.MorphologicallyAbnormalStructure, codes.SCT.Lesion, None
    if kind == "vertebra":  # vertebra_L2 -> SCT "L2 vertebra"; pydicom has no S1 vertebra: the vertebral column
        level = name.split("_", 1)[1]
        vertebra = getattr(codes.SCT, f"{level}Vertebra", None)
        return anatomy, vertebra if vertebra is not None else codes.SCT.StructureOfVertebralColumn, None
    if name in organs:
        return anatomy, *organs[name]
    return codes.SCT.SpatialAndRelationalConcept, codes.DCM.RegionInSpace, None
