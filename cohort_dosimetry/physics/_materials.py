"""Transport materials: elemental compositions, photon cross sections and electron stopping powers.

The Monte Carlo engine knows four materials and picks one per voxel from its mass density; the voxel's own density
scales every macroscopic quantity (mass coefficients x rho). Thresholds (g/cm3, lower bound inclusive):

    air          rho < 0.1
    lung         0.1 <= rho < 0.8
    soft tissue  0.8 <= rho < 1.2
    bone         rho >= 1.2

Compositions (mass fractions) and nominal densities are those of ICRU Report 44 (1989) as tabulated by NIST
(Hubbell & Seltzer, X-Ray Mass Attenuation Coefficients, NISTIR 5632, Table 2): "Air, Dry (near sea level)",
"Lung Tissue (ICRU-44)", "Tissue, Soft (ICRU-44)", "Bone, Cortical (ICRU-44)"; these are also the ICRP-110 media
families. Water is included for validation against NIST.

Photon cross sections per process (photoelectric, incoherent) come from the Elam tables in ``xraydb``, combined by
mass fraction. Electron collision stopping power is the Bethe formula for electrons (ICRU Report 37, 1984, eq. 2.19)
with the Sternheimer-Peierls general density-effect correction (Phys Rev B 3:3681, 1971); radiative losses are
neglected (below 1 % of the total stopping power in tissue under 1 MeV, ICRU-37), so the CSDA range is the integral
of 1/S_col.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import numpy as np
import xraydb

# CODATA 2018: electron rest energy (MeV), classical electron radius (cm), Avogadro constant (1/mol).
ELECTRON_MASS_MEV = 0.51099895
CLASSICAL_ELECTRON_RADIUS_CM = 2.8179403262e-13
AVOGADRO_PER_MOL = 6.02214076e23

# Upper bounds (g/cm3) of air, lung and soft tissue; bone above. Anything below 0.1 g/cm3 is air.
DENSITY_THRESHOLDS_G_CM3 = (0.1, 0.8, 1.2)

# Mean excitation energies (eV) of atoms bound in compounds, for Bragg additivity: ICRU Report 37 (1984),
# section 4.3 / Seltzer & Berger, Int J Appl Radiat Isot 33:1189 (1982): H 19.2, C 81, N 82, O 106, Cl 180;
# the other elements take 1.13 x their elemental I-value (ICRU-37 Table 4.3: Na 149, Mg 156, P 173, S 180,
# K 190, Ca 191).
_I_IN_COMPOUND_EV = {
    "H": 19.2,
    "C": 81.0,
    "N": 82.0,
    "O": 106.0,
    "Cl": 180.0,
    "Na": 1.13 * 149.0,
    "Mg": 1.13 * 156.0,
    "P": 1.13 * 173.0,
    "S": 1.13 * 180.0,
    "K": 1.13 * 190.0,
    "Ca": 1.13 * 191.0,
}


@dataclass(frozen=True)
class Material:
    """A transport medium: mass fractions by element symbol, nominal density (g/cm3), mean excitation energy (eV).

    ``mean_excitation_ev`` None means Bragg additivity over ``_I_IN_COMPOUND_EV`` (ICRU-37).
    ``gas`` selects the gas branch of the Sternheimer-Peierls density-effect parameters.
    """

    name: str
    mass_fractions: dict[str, float] = field(hash=False)
    nominal_density_g_cm3: float
    mean_excitation_ev: float | None = None
    gas: bool = False

    def __hash__(self) -> int:
        return hash(self.name)

    @property
    def z_over_a(self) -> float:
        """Electrons per nucleon mass, <Z/A> (mol/g)."""
        return sum(w * xraydb.atomic_number(el) / xraydb.atomic_mass(el) for el, w in self.mass_fractions.items())

    @property
    def i_value_ev(self) -> float:
        """Mean excitation energy I in eV (given, or Bragg additivity, ICRU-37 eq. 4.9)."""
        if self.mean_excitation_ev is not None:
            return self.mean_excitation_ev
        num = sum(
            w * xraydb.atomic_number(el) / xraydb.atomic_mass(el) * np.log(_I_IN_COMPOUND_EV[el])
            for el, w in self.mass_fractions.items()
        )
        return float(np.exp(num / self.z_over_a))


# NIST/ICRU-44 compositions (mass fractions). Air and water carry the NIST ESTAR I-values (85.7 eV, 75.0 eV).
AIR = Material(
    "air", {"C": 0.000124, "N": 0.755268, "O": 0.231781, "Ar": 0.012827}, 0.001205, mean_excitation_ev=85.7, gas=True
)
LUNG = Material(
    "lung",
    {"H": 0.103, "C": 0.105, "N": 0.031, "O": 0.749, "Na": 0.002, "P": 0.002, "S": 0.003, "Cl": 0.003, "K": 0.002},
    1.05,
)
SOFT_TISSUE = Material(
    "soft_tissue",
    {"H": 0.102, "C": 0.143, "N": 0.034, "O": 0.708, "Na": 0.002, "P": 0.003, "S": 0.003, "Cl": 0.002, "K": 0.003},
    1.06,
)
BONE = Material(
    "bone",
    {"H": 0.034, "C": 0.155, "N": 0.042, "O": 0.435, "Na": 0.001, "Mg": 0.002, "P": 0.103, "S": 0.003, "Ca": 0.225},
    1.92,
)
WATER = Material("water", {"H": 0.111894, "O": 0.888106}, 1.0, mean_excitation_ev=75.0)

#: The engine's materials, in material-index order (see :func:`material_index`).
TRANSPORT_MATERIALS = (AIR, LUNG, SOFT_TISSUE, BONE)

# ICRU-37 notes Ar's elemental I-value 188 eV; air has its own I above, so Ar needs no compound value.


def material_index(density_g_cm3) -> np.ndarray:
    """Index into :data:`TRANSPORT_MATERIALS` per voxel from mass density (g/cm3), any shape -> uint8."""
    thresholds = np.asarray(DENSITY_THRESHOLDS_G_CM3)
    return np.searchsorted(thresholds, np.asarray(density_g_cm3), side="right").astype(np.uint8)


# --- photons ------------------------------------------------------------------------------------------------------

# The Elam tables stop at 800 keV (xraydb warns above and repeats the 800 keV value); above it the binding
# corrections of incoherent scattering are negligible and Klein-Nishina per free electron is used instead.
_ELAM_MAX_MEV = 0.8


def klein_nishina_cross_section_cm2(energy_mev) -> np.ndarray:
    """Klein-Nishina total cross section per free electron (cm2); energy in MeV (Klein & Nishina 1929)."""
    k = np.asarray(energy_mev, dtype=np.float64) / ELECTRON_MASS_MEV
    a = 1.0 + 2.0 * k
    sigma = (
        2.0
        * np.pi
        * CLASSICAL_ELECTRON_RADIUS_CM**2
        * ((1.0 + k) / k**2 * (2.0 * (1.0 + k) / a - np.log(a) / k) + np.log(a) / (2.0 * k) - (1.0 + 3.0 * k) / a**2)
    )
    return sigma


def photon_mass_coefficients(material: Material, energy_mev) -> dict[str, np.ndarray]:
    """Mass interaction coefficients (cm2/g) by process at ``energy_mev`` (any shape, MeV, 1 keV to 3 MeV).

    Keys "photoelectric", "incoherent", "coherent". Pair production (above 1.022 MeV) is not included.
    """
    e = np.atleast_1d(np.asarray(energy_mev, dtype=np.float64))
    if e.min() < 1e-3 or e.max() > 3.0:
        raise ValueError(f"photon energies must lie in 1 keV .. 3 MeV, got {e.min():g} .. {e.max():g} MeV")
    e_elam = np.minimum(e, _ELAM_MAX_MEV) * 1e6
    out: dict[str, Any] = {}  # sum() of arrays: typed "ndarray | Literal[0]"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for kind, key in (("photo", "photoelectric"), ("incoh", "incoherent"), ("coh", "coherent")):
            out[key] = sum(
                w * np.asarray(xraydb.mu_elam(el, e_elam, kind=kind), dtype=np.float64)
                for el, w in material.mass_fractions.items()
            )
    high = e > _ELAM_MAX_MEV
    if high.any():
        electrons_per_g = AVOGADRO_PER_MOL * material.z_over_a
        out["incoherent"][high] = electrons_per_g * klein_nishina_cross_section_cm2(e[high])
        # photoelectric and coherent fall steeply (about E^-3 and E^-2): extrapolate from 800 keV.
        out["photoelectric"][high] *= (e[high] / _ELAM_MAX_MEV) ** -3
        out["coherent"][high] *= (e[high] / _ELAM_MAX_MEV) ** -2
    return {k: v.reshape(np.shape(energy_mev)) for k, v in out.items()}


# --- electrons ----------------------------------------------------------------------------------------------------


def _density_effect(material: Material, energy_mev: np.ndarray) -> np.ndarray:
    """Sternheimer-Peierls general formula for the density-effect correction delta (Phys Rev B 3:3681, 1971)."""
    plasma_ev = 28.816 * np.sqrt(material.nominal_density_g_cm3 * material.z_over_a)
    c_bar = 2.0 * np.log(material.i_value_ev / plasma_ev) + 1.0
    if material.gas:
        table = (
            (10.0, 1.6, 4.0),
            (10.5, 1.7, 4.0),
            (11.0, 1.8, 4.0),
            (11.5, 1.9, 4.0),
            (12.25, 2.0, 4.0),
            (13.804, 2.0, 5.0),
        )
        x0, x1 = 0.326 * c_bar - 2.5, 5.0
        for c_max, t0, t1 in table:
            if c_bar < c_max:
                x0, x1 = t0, t1
                break
    elif material.i_value_ev < 100.0:
        x1 = 2.0
        x0 = 0.2 if c_bar < 3.681 else 0.326 * c_bar - 1.0
    else:
        x1 = 3.0
        x0 = 0.2 if c_bar < 5.215 else 0.326 * c_bar - 1.5
    m = 3.0
    a = (c_bar - 4.606 * x0) / (x1 - x0) ** m
    tau = energy_mev / ELECTRON_MASS_MEV
    x = np.log10(np.sqrt(tau * (tau + 2.0)))  # log10(beta gamma) = log10(p / m c)
    return np.where(x >= x1, 4.606 * x - c_bar, np.where(x >= x0, 4.606 * x - c_bar + a * (x1 - x) ** m, 0.0))


def collision_stopping_power(material: Material, energy_mev) -> np.ndarray:
    """Electron mass collision stopping power (MeV cm2/g) at kinetic energy ``energy_mev`` (MeV).

    Bethe formula for electrons, ICRU Report 37 (1984) eq. 2.19, with the density effect (Sternheimer-Peierls).
    Valid from a few keV upward.
    """
    t = np.asarray(energy_mev, dtype=np.float64)
    tau = t / ELECTRON_MASS_MEV
    beta2 = tau * (tau + 2.0) / (tau + 1.0) ** 2
    i_rel = material.i_value_ev * 1e-6 / ELECTRON_MASS_MEV
    f_minus = 1.0 - beta2 + (tau**2 / 8.0 - (2.0 * tau + 1.0) * np.log(2.0)) / (tau + 1.0) ** 2
    bracket = np.log(tau**2 * (tau + 2.0) / (2.0 * i_rel**2)) + f_minus - _density_effect(material, t)
    k = 2.0 * np.pi * CLASSICAL_ELECTRON_RADIUS_CM**2 * ELECTRON_MASS_MEV * AVOGADRO_PER_MOL * material.z_over_a
    return k / beta2 * bracket


# Range tables start at 1 keV; below it S ~ 1/E is assumed, so R(1 keV) = E / (2 S(E)).
_RANGE_TABLE_MIN_MEV = 1e-3


@cache
def _range_table(material: Material, max_mev: float = 3.0, n: int = 4000) -> tuple[np.ndarray, np.ndarray]:
    e = np.geomspace(_RANGE_TABLE_MIN_MEV, max_mev, n)
    inv_s = 1.0 / collision_stopping_power(material, e)
    # integrate dE/S in ln E (dE = E dlnE), trapezoid on the fine log grid
    f = e * inv_s
    r = np.concatenate([[0.0], np.cumsum(0.5 * (f[1:] + f[:-1]) * np.diff(np.log(e)))])
    r += 0.5 * e[0] * inv_s[0]
    return e, r


def csda_range(material: Material, energy_mev) -> np.ndarray:
    """CSDA range (g/cm2): integral of dE / S_col(E) from 0 to ``energy_mev`` (1 keV .. 3 MeV)."""
    e, r = _range_table(material)
    t = np.asarray(energy_mev, dtype=np.float64)
    if np.any(t < e[0]) or np.any(t > e[-1]):
        raise ValueError(f"electron energies must lie in {e[0]:g} .. {e[-1]:g} MeV")
    return np.exp(np.interp(np.log(t), np.log(e), np.log(r)))


def radiation_length_g_cm2(material: Material) -> float:
    """Radiation length X0 (g/cm2): 1/X0 = sum_i w_i / X0_i with X0_i = 716.4 A / (Z (Z+1) ln(287/sqrt Z))
    (Dahl's fit, Particle Data Group, Review of Particle Physics, "Passage of particles through matter")."""
    inv = 0.0
    for el, w in material.mass_fractions.items():
        z, a = xraydb.atomic_number(el), xraydb.atomic_mass(el)
        inv += w * z * (z + 1.0) * np.log(287.0 / np.sqrt(z)) / (716.4 * a)
    return 1.0 / inv
