"""Which radionuclide a SPECT holds, read from its Radiopharmaceutical Information Sequence (DICOM PS3.3 C.8.4.10,
NM Isotope Module; the PET Isotope Module C.8.9.2 has the same items).

Up to four sources in the sequence's first item name the nuclide:

- the Radionuclide Code Sequence (0054,0300): a SNOMED CT code of DICOM PS3.16 CID 18 "Isotopes in
  Radiopharmaceuticals" / CID 4020 "PET Radionuclide" (the legacy SNOMED-RT "SRT" codes of older files are known
  too), else its Code Meaning;
- the Radiopharmaceutical (0018,0031), free text such as "Lu-177 DOTATATE", "177Lu-PSMA-617" or "Tc99m MDP";
- the Radiopharmaceutical Code Sequence (0054,0304), by its Code Meaning ("Lutetium^177^ DOTATATE");
- the Radionuclide Half Life (0018,1075, s), compared with the ICRP-107 half-lives (2 % tolerance).

Only Lu-177 is dosed. A header naming any other nuclide, or whose sources disagree, is refused naming what it said and
where; a header naming none is taken as Lu-177 with a warning, unless the user stated the nuclide.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from pydicom.dataset import Dataset

from cohort_dosimetry.io._errors import IngestError

#: The one nuclide the dose methods are built for (kernels, network, Monte Carlo emission data).
DOSED_NUCLIDE = "Lu177"
#: A header half-life within 2 % of a nuclide's ICRP-107 half-life names that nuclide. Vendors still write older
#: Lu-177 values (6.71-6.73 d, 1.0-1.3 % above ICRP-107's 6.647 d); 2 % keeps the closest pair of candidates apart
#: (Y-90 64.05 h and In-111 67.31 h, 5 % apart) and I-131 (8.02 d) far from Lu-177.
HALF_LIFE_TOLERANCE = 0.02

#: SNOMED CT codes (scheme SCT) of DICOM PS3.16 CID 18 / CID 4020, with the legacy SNOMED-RT codes (scheme SRT) that
#: PS3.16 maps them to, as pydicom's ``codes.SCT`` and its SCT<->SRT table give them.
RADIONUCLIDE_CODES: dict[str, str] = {
    "447553000": "Lu177",
    "C-101ED": "Lu177",
    "72454006": "Tc99m",
    "C-163A8": "Tc99m",
    "1368003": "I131",
    "C-114B1": "I131",
    "21572004": "I123",
    "C-114A4": "I123",
    "40937006": "I124",
    "C-114A5": "I124",
    "56609000": "In111",
    "C-145A4": "In111",
    "14691008": "Y90",
    "C-162A7": "Y90",
    "35337001": "Ga68",
    "C-131A3": "Ga68",
    "2008008": "Ga67",
    "C-131A2": "Ga67",
    "77004003": "F18",
    "C-111A1": "F18",
    "60057003": "Tl201",
    "C-138A9": "Tl201",
    "3932008": "Cu64",
    "C-127A2": "Cu64",
    "63360001": "Zr89",
    "C-168A4": "Zr89",
    "423578007": "Re188",
    "C-1018D": "Re188",
    "419804008": "Sm153",
    "C-B1134": "Sm153",
    "24853006": "Ra223",
    "C-136A2": "Ra223",
}
#: Nuclides a header half-life is compared with to say which one it is (the clinical ones above, and Lu-177m).
_HALF_LIFE_CANDIDATES = tuple(dict.fromkeys([*RADIONUCLIDE_CODES.values(), "Lu177m"]))

_ELEMENT_NAMES = {
    "lutetium": "Lu",
    "technetium": "Tc",
    "iodine": "I",
    "indium": "In",
    "yttrium": "Y",
    "gallium": "Ga",
    "fluorine": "F",
    "copper": "Cu",
    "zirconium": "Zr",
    "thallium": "Tl",
    "rhenium": "Re",
    "samarium": "Sm",
    "radium": "Ra",
    "strontium": "Sr",
    "holmium": "Ho",
    "actinium": "Ac",
    "lead": "Pb",
    "terbium": "Tb",
    "xenon": "Xe",
    "krypton": "Kr",
    "rubidium": "Rb",
    "carbon": "C",
    "nitrogen": "N",
    "oxygen": "O",
    "cobalt": "Co",
    "chromium": "Cr",
    "selenium": "Se",
    "bismuth": "Bi",
    "astatine": "At",
    "scandium": "Sc",
    "erbium": "Er",
}
_SYMBOLS = sorted(set(_ELEMENT_NAMES.values()), key=len, reverse=True)
_ELEMENT = "|".join([*_ELEMENT_NAMES, *_SYMBOLS])
_SEPARATOR = r"[\s_^\-\[\]()]{0,2}"
# "Lu-177", "Tc99m", "Technetium Tc^99m^", "LU177"; and "177Lu", "99mTc", "^177^Lutetium", "[68Ga]"
_ELEMENT_FIRST = re.compile(
    rf"(?<![a-z0-9])(?P<el>{_ELEMENT}){_SEPARATOR}(?P<mass>\d{{1,3}})(?!\d)(?P<m>m(?![a-z]))?", re.IGNORECASE
)
_MASS_FIRST = re.compile(
    rf"(?<![a-z0-9.])(?P<mass>\d{{1,3}})(?P<m>m)?{_SEPARATOR}(?P<el>{_ELEMENT})(?![a-z])", re.IGNORECASE
)
#: Product names that name their nuclide only implicitly.
_PRODUCTS = {"lutathera": "Lu177", "pluvicto": "Lu177", "octreoscan": "In111", "fludeoxyglucose": "F18", "fdg": "F18"}


@dataclass(frozen=True)
class NuclideReading:
    """The nuclide of a SPECT (``"Lu177"``), what it was read from, and notes for the ingest report."""

    nuclide: str
    source: str
    notes: tuple[str, ...] = ()


def display_name(nuclide: str) -> str:
    """'Lu177' -> 'Lu-177', 'Tc99m' -> 'Tc-99m'."""
    match = re.fullmatch(r"([A-Z][a-z]?)(\d+)(m?)", nuclide)
    return f"{match.group(1)}-{match.group(2)}{match.group(3)}" if match else nuclide


def half_life_s(nuclide: str) -> float:
    """Physical half-life in s from ICRP-107 (:func:`cohort_dosimetry.physics.nuclide`)."""
    from cohort_dosimetry.physics import nuclide as icrp107

    return float(icrp107(nuclide).half_life_s)


@lru_cache(maxsize=1)
def _known_nuclides() -> frozenset[str]:
    from cohort_dosimetry.physics import available_nuclides

    return frozenset(name.replace("-", "") for name in available_nuclides())


def nuclides_in_text(text: str) -> set[str]:
    """Every nuclide named in free text ("Lu-177 DOTATATE", "[177Lu]Lu-PSMA-617", "^99m^Technetium", "FDG"), as
    'Lu177', 'Tc99m', ...; only names of nuclides in the ICRP-107 database count."""
    found = set()
    for pattern in (_ELEMENT_FIRST, _MASS_FIRST):
        for match in pattern.finditer(text):
            element = match.group("el").lower()
            symbol = _ELEMENT_NAMES.get(element) or next(s for s in _SYMBOLS if s.lower() == element)
            name = f"{symbol}{int(match.group('mass'))}{'m' if match.group('m') else ''}"
            if name in _known_nuclides():
                found.add(name)
    for word in re.findall(r"[a-z]+", text.lower()):
        if word in _PRODUCTS:
            found.add(_PRODUCTS[word])
    return found


def read_nuclide(item: Dataset | None, subject: str, stated: str | None = None) -> NuclideReading:
    """The nuclide of a SPECT from the first Radiopharmaceutical Information Sequence item ``item``.

    ``stated``: the nuclide the user stated for SPECT whose header names none ("Lu177", "Lu-177"). Raises IngestError
    naming ``subject`` for a nuclide other than Lu-177 (read or stated), for sources that disagree, and for a
    radionuclide code that names no known nuclide.
    """
    stated_name = _stated(stated, subject) if stated is not None else None
    said, unrecognised = _sources(item if item is not None else Dataset())
    named = {name for source in said for name in source.names}
    where = "; ".join(source.says for source in said)
    if len(named) > 1:
        raise IngestError(
            subject,
            f"the radionuclide sources disagree: {where}; refused, since the activity and its "
            "decay cannot both be right",
        )
    if named and named != {DOSED_NUCLIDE}:
        (found,) = named
        found = "an unknown nuclide" if found == _UNKNOWN else display_name(found)
        raise IngestError(subject, f"the radionuclide is {found} ({where}), not Lu-177: only Lu-177 is dosed")
    if stated_name is not None and stated_name != DOSED_NUCLIDE:
        raise IngestError(subject, f"the stated nuclide {display_name(stated_name)} is not dosed: only Lu-177 is")
    if named:
        notes = (
            (f"{unrecognised} names no known radionuclide; Lu-177 from the other sources ({where})",)
            if unrecognised
            else ()
        )
        return NuclideReading(DOSED_NUCLIDE, ", ".join(source.keyword for source in said), notes)
    if unrecognised:
        raise IngestError(
            subject,
            f"the radionuclide is not recognised: {unrecognised} names no known nuclide, and "
            "no other source (Radiopharmaceutical, Radionuclide Half Life) names one",
        )
    if stated_name is not None:
        return NuclideReading(DOSED_NUCLIDE, "stated by the user (the header names no radionuclide)")
    return NuclideReading(
        DOSED_NUCLIDE,
        "assumed (the header names no radionuclide)",
        (
            "the header names no radionuclide (no Radionuclide Code Sequence, Radiopharmaceutical or Radionuclide Half "
            "Life): ingested as Lu-177; state the nuclide (ingest nuclide=..., --nuclide) to confirm",
        ),
    )


def radionuclide_problem(ds: Dataset) -> str | None:
    """Why the SPECT of header ``ds`` is refused for its radionuclide (a foreign nuclide, disagreeing or unrecognised
    sources), or None: the check discovery makes before numbering time points."""
    sequence = ds.get("RadiopharmaceuticalInformationSequence")
    if not sequence:
        return None
    try:
        read_nuclide(sequence[0], "")
    except IngestError as exc:
        return exc.problem
    except Exception:  # a malformed header: the reader reports it with its own message
        return None
    return None


def _stated(stated: str, subject: str) -> str:
    from cohort_dosimetry.physics import nuclide as icrp107

    try:
        return icrp107(stated).name.replace("-", "")
    except (ValueError, TypeError) as exc:
        raise IngestError(
            subject, f"the stated nuclide {stated!r} is not a nuclide name such as Lu177 ({exc})"
        ) from None


_UNKNOWN = "?"


@dataclass(frozen=True)
class _Source:
    keyword: str  # the attribute, for the stored attrs (no free text: a person typed it)
    says: str  # for messages: the attribute, what it holds and the nuclide(s) it names
    names: frozenset[str]


def _sources(item: Dataset) -> tuple[list[_Source], str]:
    """The sources that name a nuclide, and a description of a radionuclide code that names none ("" if none)."""
    said: list[_Source] = []
    unrecognised = ""

    def add(keyword: str, holds: str, names: set[str]) -> None:
        listed = " or ".join(display_name(n) for n in sorted(names))
        said.append(_Source(keyword, f"{holds} says {listed}", frozenset(names)))

    for code in (item.get("RadionuclideCodeSequence") or [])[:1]:
        value = str(code.get("CodeValue", "") or code.get("LongCodeValue", "") or "").strip()
        scheme = str(code.get("CodingSchemeDesignator", "") or "").strip()
        meaning = str(code.get("CodeMeaning", "") or "").strip()
        holds = f"Radionuclide Code Sequence ({scheme or '?'} {value or '?'} {meaning!r})"
        names = {RADIONUCLIDE_CODES[value]} if value in RADIONUCLIDE_CODES else nuclides_in_text(meaning)
        if not names and scheme not in ("SCT", "SRT", "SNM3"):
            names = nuclides_in_text(value)  # a private scheme whose code is the name, e.g. "LU177"
        if names:
            add(f"RadionuclideCodeSequence ({scheme} {value})", holds, names)
        elif value or meaning:
            unrecognised = holds
    name = str(item.get("Radiopharmaceutical", "") or "").strip()
    if name and (names := nuclides_in_text(name)):
        add("Radiopharmaceutical", f"Radiopharmaceutical {name!r}", names)
    for code in (item.get("RadiopharmaceuticalCodeSequence") or [])[:1]:
        meaning = str(code.get("CodeMeaning", "") or "").strip()
        if meaning and (names := nuclides_in_text(meaning)):
            add("RadiopharmaceuticalCodeSequence", f"Radiopharmaceutical Code Sequence ({meaning!r})", names)
    try:
        seconds = float(item.get("RadionuclideHalfLife"))
    except (TypeError, ValueError):
        seconds = float("nan")
    if 0 < seconds < float("inf"):
        holds = f"Radionuclide Half Life {seconds:g} s ({_duration(seconds)})"
        matches = {n for n in _HALF_LIFE_CANDIDATES if abs(seconds / half_life_s(n) - 1) <= HALF_LIFE_TOLERANCE}
        if matches:
            add("RadionuclideHalfLife", holds, matches)
        else:
            lu = half_life_s(DOSED_NUCLIDE)
            said.append(
                _Source(
                    "RadionuclideHalfLife",
                    f"{holds} matches no known nuclide within "
                    f"{100 * HALF_LIFE_TOLERANCE:g} % (Lu-177: {_duration(lu)}, ICRP-107)",
                    frozenset({_UNKNOWN}),
                )
            )
    return said, unrecognised


def _duration(seconds: float) -> str:
    if seconds >= 86400 * 2:
        return f"{seconds / 86400:.3f} d"
    if seconds >= 3600:
        return f"{seconds / 3600:.2f} h"
    return f"{seconds / 60:.1f} min"
