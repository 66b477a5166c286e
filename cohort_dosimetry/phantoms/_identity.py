"""Fake but realistic patient identity (PHI) for virtual patients.

Virtual patients stand in for patient data, and their DICOM must look like a scanner's export, identifying data
included: the ingest pseudonymises it, and its tests need real-looking names, IDs and birth dates to find and remove.
Every identity is derived from the patient's seed alone, so re-exporting a patient gives the same identity.
The family names are deliberately fake-sounding so that nobody mistakes a virtual patient for a real one.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np

_FAMILY_NAMES = (
    "Fakename",
    "Mockridge",
    "Samplesen",
    "Testwood",
    "Dummler",
    "Proxmire",
    "Fictorius",
    "Phantomsky",
    "Simulatti",
    "Placeholt",
    "Surrogato",
    "Voxelberg",
)
_GIVEN_NAMES = {
    "F": ("Anna", "Maria", "Elena", "Sofia", "Ingrid", "Claire", "Hanna", "Lucia", "Greta", "Nora"),
    "M": ("Jan", "Peter", "Marco", "Lukas", "Henrik", "Paul", "Tomas", "Felix", "Anton", "Erik"),
}
# Ages at therapy of patients with neuroendocrine tumours treated with Lu-177 DOTATATE cluster in the 50s to 70s
# (NETTER-1 trial: median 63-64 years, Strosberg et al., N Engl J Med 376:125, 2017); birth years span that range
# around the cohort's synthetic scan dates (2024-2025).
_BIRTH_YEARS = (1945, 1975)
_SEX_ALIASES = {"F": "F", "FEMALE": "F", "M": "M", "MALE": "M"}


@dataclass(frozen=True)
class SyntheticIdentity:
    """The identifying data of one virtual patient, in DICOM form.

    Attributes:
        patient_name: DICOM PN, ``Family^Given`` (e.g. ``"Fakename^Anna"``).
        patient_id: a hospital-style record number (e.g. ``"H40718263"``); also names the patient's ground truth.
        birth_date: date of birth.
        sex: ``"F"`` or ``"M"`` (DICOM PatientSex).
        weight_kg: body weight in kg (DICOM PatientWeight).
    """

    patient_name: str
    patient_id: str
    birth_date: dt.date
    sex: str
    weight_kg: float

    def age_at(self, when: dt.date) -> int:
        """Age in whole years on the date ``when``."""
        before_birthday = (when.month, when.day) < (self.birth_date.month, self.birth_date.day)
        return when.year - self.birth_date.year - int(before_birthday)


def synthetic_identity(seed: int, sex: str | None = None) -> SyntheticIdentity:
    """A fake identity for the virtual patient generated from ``seed``.

    Args:
        seed: the virtual patient's seed (``patient_ds.attrs["seed"]``); the same seed gives the same identity.
        sex: the phantom's sex where its anatomy has one (``"F"``/``"M"``, ``"female"``/``"male"``, any case);
            None draws it from the seed.

    Returns:
        A :class:`SyntheticIdentity`.
    """
    rng = np.random.default_rng([int(seed), 0x1D])  # own stream: independent of the anatomy drawn from the same seed
    drawn_sex = "F" if rng.random() < 0.5 else "M"
    if sex is None:
        sex = drawn_sex
    else:
        try:
            sex = _SEX_ALIASES[str(sex).strip().upper()]
        except KeyError:
            raise ValueError(f"virtual patient seed {seed}: sex {sex!r} is not one of F, M, female, male") from None
    family = _FAMILY_NAMES[rng.integers(len(_FAMILY_NAMES))]
    given = _GIVEN_NAMES[sex][rng.integers(len(_GIVEN_NAMES[sex]))]
    patient_id = f"H{rng.integers(10_000_000, 100_000_000)}"
    year = int(rng.integers(_BIRTH_YEARS[0], _BIRTH_YEARS[1] + 1))
    birth_date = dt.date(year, 1, 1) + dt.timedelta(days=int(rng.integers(365)))
    # Adult body weights: F 50-85 kg, M 60-105 kg (a plausible spread, not a population statistic).
    low, high = (50.0, 85.0) if sex == "F" else (60.0, 105.0)
    weight_kg = round(float(rng.uniform(low, high)), 1)
    return SyntheticIdentity(f"{family}^{given}", patient_id, birth_date, sex, weight_kg)
