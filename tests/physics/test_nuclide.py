"""Nuclide data against ICRP-107 numbers quoted in docs/physics.md (ICRP Publication 107, 2008)."""

import numpy as np
import pytest

from cohort_dosimetry.physics import Nuclide, nuclide


@pytest.fixture(scope="module")
def lu177() -> Nuclide:
    return nuclide("Lu177")


def test_lu177_half_life(lu177):
    assert lu177.half_life_s == pytest.approx(6.647 * 86400.0, rel=1e-9)
    assert lu177.decay_constant_per_s == pytest.approx(np.log(2) / (6.647 * 86400.0), rel=1e-9)


@pytest.mark.parametrize("kind, kev", [("beta", 133.3), ("ic", 13.5), ("auger", 1.1), ("electron", 147.9)])
def test_lu177_electron_energy_per_decay(lu177, kind, kev):
    # ICRP-107 values are quoted to 0.1 keV: allow half of the last digit.
    assert lu177.energy_per_decay_mev(kind) * 1e3 == pytest.approx(kev, abs=0.05)


def test_lu177_main_gammas_use_icrp107_yields(lu177):
    for energy_kev, yield_ in ((208.37, 0.110), (112.95, 0.064)):
        i = np.argmin(np.abs(lu177.photon_energy_mev * 1e3 - energy_kev))
        assert lu177.photon_energy_mev[i] * 1e3 == pytest.approx(energy_kev, abs=0.01)
        assert lu177.photon_yield[i] == pytest.approx(yield_, abs=5e-4)


def test_lu177_hf_k_xrays_about_five_percent(lu177):
    k = (lu177.photon_energy_mev > 0.0540) & (lu177.photon_energy_mev < 0.0640)
    assert lu177.photon_yield[k].sum() == pytest.approx(0.05, abs=0.01)


def test_total_is_sum_of_parts(lu177):
    total = lu177.energy_per_decay_mev("electron") + lu177.energy_per_decay_mev("photon")
    assert lu177.energy_per_decay_mev("total") == pytest.approx(total, rel=1e-12)
    assert lu177.energy_per_decay_mev("photon") == pytest.approx(
        float(np.dot(lu177.photon_energy_mev, lu177.photon_yield)), rel=1e-12
    )


def test_beta_spectrum_normalised_with_498_kev_endpoint(lu177):
    e, p = lu177.beta_energy_mev, lu177.beta_pdf_per_mev
    assert lu177.beta_endpoint_mev == pytest.approx(0.498, abs=0.001)
    assert p[-1] == 0.0 and np.all(p >= 0)
    assert np.trapezoid(p, e) == pytest.approx(lu177.beta_yield, rel=1e-9)
    assert lu177.beta_yield == pytest.approx(1.0, abs=1e-6)  # Lu-177 is a pure beta- emitter


def test_beta_sampling_table_keeps_icrp_mean_energy(lu177):
    # The piecewise-linear sampling density must reproduce the ICRP-107 mean beta energy (133.3 keV) to 0.1 %.
    e, p, cdf = lu177.beta_sampling_table()
    assert cdf[0] == 0.0 and cdf[-1] == pytest.approx(1.0) and np.all(np.diff(cdf) >= 0)
    mean = np.trapezoid(p * e, e) / np.trapezoid(p, e)
    assert mean * lu177.beta_yield == pytest.approx(lu177.energy_per_decay_mev("beta"), rel=1e-3)


@pytest.mark.parametrize("name", ["Lu-177", "lu177", "Lu177", " LU-177 "])
def test_name_spellings(name):
    assert nuclide(name).name == "Lu-177"


def test_other_nuclides_load():
    y90 = nuclide("Y90")
    assert y90.half_life_s == pytest.approx(64.1 * 3600, rel=1e-9)
    assert y90.beta_endpoint_mev > 2.2
    f18 = nuclide("F-18")  # positron emitter: annihilation photons counted as photons
    assert f18.energy_per_decay_mev("photon") == pytest.approx(0.511 * 1.93, rel=0.01)
    assert nuclide("Ac-225").alpha_energy_mev > 5.0


def test_unknown_nuclide_names_close_matches():
    with pytest.raises(ValueError, match="Lu-177") as err:
        nuclide("Lu-177x")
    assert "not in the ICRP-107 database" in str(err.value)


def test_unknown_kind():
    with pytest.raises(ValueError, match="alpha"):
        nuclide("Lu177").energy_per_decay_mev("alpha")
