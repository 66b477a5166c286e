"""Dose voxel kernels: published S-value, energy conservation, voxel-size scaling, symmetry, cache, shipped data,
importers and the ``kernel`` command."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cohort_dosimetry.cli import main as cli_main
from cohort_dosimetry.physics import _kernels, load_kernel_npy_pair, load_kernel_octant_text, nuclide, voxel_kernel
from cohort_dosimetry.validation import LANCONELLI_2012_LU177_SOFT

MEV_TO_J = 1.602176634e-13  # CODATA 2018
TISSUE = 1.04  # g/cm3, the kernels' medium
#: Lanconelli et al., Phys Med Biol 57:517 (2012), Lu-177 soft tissue, 4.8 mm voxels: S(0, 0, 0), mGy/(MBq s).
LANCONELLI_S000_4P8MM = LANCONELLI_2012_LU177_SOFT[4.8][0]
DECAYS = 200_000


def voxel_mass_kg(spacing_mm):
    return float(np.prod(spacing_mm)) * 1e-3 * TISSUE * 1e-3


def mgy_per_mbq_s(energy_mev, spacing_mm):
    """Dose-rate per MBq in mGy/(MBq s) when ``energy_mev`` per decay is absorbed in one voxel."""
    return energy_mev * MEV_TO_J / voxel_mass_kg(spacing_mm) * 1e9


@pytest.fixture(scope="module")
def kernels_4p8():
    """Beta and photon kernels at 4.8 mm on a 5^3 grid (+-12 mm, far beyond the 1.8 mm maximum electron range)."""
    return {
        kind: _kernels.generate_kernel("Lu177", (4.8, 4.8, 4.8), 5, kind, DECAYS, "cpu") for kind in ("beta", "photon")
    }


def test_central_value_matches_lanconelli(kernels_4p8):
    """S(0,0,0) for 4.8 mm voxels against the published 0.178 mGy/(MBq s), like with like.

    What the published source is: the tables hold, in the 3x3x3 voxels around the source (where all the electron
    energy of a voxel source lands), 138 keV of electron energy per decay (published S-values x voxel mass, minus our
    photon kernel's share; cohort_dosimetry.validation, docs/validation): about the ICRP-107 beta spectrum's 133.3 keV,
    not all 147.9 keV of Lu-177's electrons (beta + conversion 13.5 + Auger 1.1 keV). So the comparison uses a source
    of the beta spectrum alone (kernel kind "beta_spectrum") plus the photon kernel: measured 0.1728, 2.9 % below the
    published value, and 2.2-2.9 % below at every published size from 2.21 to 9.28 mm (docs/validation). A transport
    error would change with voxel size; this offset does not. It is the medium: the same source in 1.00 g/cm3
    reproduces the published S(0,0,0) to +0.7-1.1 % and S(0,0,1) to -1.1 to -2.2 % at every size (docs/validation),
    so their tables fit a 1.00 g/cm3 medium where ours is 1.04 g/cm3; 5 % bounds that. The old comparison with all
    electrons (8.3 % above, asked within 10 %) mixed two sources and two media.

    With all electrons (what the DVK uses) S(0,0,0) exceeds the beta-spectrum value by the energy ratio
    147.9 / 133.3 = 1.110, or slightly more: conversion and Auger electrons are slower than the mean beta and leave
    the voxel less often. Self-absorbed fraction of the electrons: an escape f_esc = 1.5 r / L for a mean deposition
    distance r << L gives phi = 0.91-0.94 for r ~ 0.2-0.3 mm (energy-weighted CSDA range 0.46 mm, folded by multiple
    scattering). The photons (35 keV per decay) add well under 1 %: most of their energy leaves the voxel.
    """
    beta, photon = kernels_4p8["beta"][0], kernels_4p8["photon"][0]
    spectrum, _ = _kernels.generate_kernel("Lu177", (4.8, 4.8, 4.8), 5, "beta_spectrum", DECAYS, "cpu")
    like = spectrum[2, 2, 2] + photon[2, 2, 2]
    central = beta[2, 2, 2] + photon[2, 2, 2]
    print(
        f"S(0,0,0) 4.8 mm: beta spectrum {spectrum[2, 2, 2]:.4f} + photon {photon[2, 2, 2]:.5f} = {like:.4f} "
        f"({like / LANCONELLI_S000_4P8MM - 1:+.3f}); all electrons {central:.4f} mGy/(MBq s)"
    )
    assert like == pytest.approx(LANCONELLI_S000_4P8MM, rel=0.05)
    lu = nuclide("Lu177")
    energy_ratio = lu.energy_per_decay_mev("electron") / lu.energy_per_decay_mev("beta")
    assert 1.0 <= beta[2, 2, 2] / spectrum[2, 2, 2] / energy_ratio < 1.02
    phi = beta[2, 2, 2] / mgy_per_mbq_s(lu.energy_per_decay_mev("electron"), (4.8,) * 3)
    assert 0.80 < phi < 0.97
    assert photon[2, 2, 2] < 0.01 * central


def test_kernel_sum_is_the_energy_absorbed(kernels_4p8):
    """sum(K) x voxel mass = energy absorbed per decay in the kernel region.

    Beta: the 5^3 grid reaches 12 mm from the source, beyond the 1.8 mm maximum range, so all 147.9 keV of electron
    energy per decay must be in the kernel. Photon: what the kernel holds must equal what the engine says stayed in
    its grid, and be well below the 35.1 keV emitted (the mean free path of 208 keV photons, ~7 cm, exceeds the grid).
    """
    nuc = nuclide("Lu177")
    beta, info_b = kernels_4p8["beta"]
    absorbed_b = beta.sum(dtype=np.float64) * 1e-9 * voxel_mass_kg((4.8,) * 3) / MEV_TO_J
    assert absorbed_b == pytest.approx(nuc.energy_per_decay_mev("electron"), rel=0.01)
    photon, info_p = kernels_4p8["photon"]
    absorbed_p = photon.sum(dtype=np.float64) * 1e-9 * voxel_mass_kg((4.8,) * 3) / MEV_TO_J
    assert absorbed_p == pytest.approx(info_p["energy_per_decay_mev"]["deposited_in_grid"], rel=1e-5)
    assert 0.01 < absorbed_p / nuc.energy_per_decay_mev("photon") < 0.3


def test_neighbours_share_the_escaping_electron_energy(kernels_4p8):
    """Face, edge and corner neighbours of the source voxel.

    Electrons that leave the source voxel mostly cross a face; reaching an edge neighbour needs a start within about
    r of an edge (a fraction ~ r/L of the escaping ones), a corner neighbour within r of a corner (~ (r/L)^2). So
    face >> edge >> corner, and the 6 faces hold most of the escaping energy f_esc x E.
    """
    beta = kernels_4p8["beta"][0]
    full = mgy_per_mbq_s(nuclide("Lu177").energy_per_decay_mev("electron"), (4.8,) * 3)
    face, edge, corner = beta[2, 2, 3], beta[2, 3, 3], beta[3, 3, 3]
    escaped = 1 - beta[2, 2, 2] / full
    print(
        f"4.8 mm beta: face {face:.4g}, edge {edge:.4g}, corner {corner:.4g} mGy/(MBq s); escaped {escaped:.4f}, "
        f"6 faces hold {6 * face / full:.4f}, 12 edges {12 * edge / full:.4f}, 8 corners {8 * corner / full:.5f}"
    )
    assert face > 10 * edge > 0 and edge > 5 * corner
    assert 6 * face / full == pytest.approx(escaped, rel=0.15)
    # exact symmetry between the 6 faces (the kernel is symmetrised over the cube's 48 symmetries)
    faces = [beta[1, 2, 2], beta[3, 2, 2], beta[2, 1, 2], beta[2, 3, 2], beta[2, 2, 1], beta[2, 2, 3]]
    assert np.ptp(faces) == 0


def test_escape_fraction_scales_inversely_with_voxel_size(kernels_4p8):
    """Central value at 4.8 and 9.6 mm: S(0) m = E (1 - f_esc) with f_esc = 1.5 r / L (see the Lanconelli test).

    Doubling L halves f_esc (to within the edge correction, of order (r/L)^2) and multiplies the mass by 8, so
    S(0) falls to about 1/8 x (1 - f/2)/(1 - f). The escape fraction cannot exceed 1.5 x the energy-weighted CSDA
    range / L: the mean distance of deposition is shorter than the path length. CSDA range from the NIST ESTAR water
    values 0.01431 g/cm2 at 100 keV and 0.1766 g/cm2 at 500 keV, as a power law in energy, averaged over the ICRP-107
    electron spectrum with energy weights, divided by 1.04 g/cm3; 10 % margin for the power-law fit.
    """
    nuc = nuclide("Lu177")
    e_electron = nuc.energy_per_decay_mev("electron")
    big, _ = _kernels.generate_kernel("Lu177", (9.6, 9.6, 9.6), 3, "beta", DECAYS, "cpu")
    small = kernels_4p8["beta"][0]
    f_small = 1 - small[2, 2, 2] / mgy_per_mbq_s(e_electron, (4.8,) * 3)
    f_big = 1 - big[1, 1, 1] / mgy_per_mbq_s(e_electron, (9.6,) * 3)
    print(
        f"escape fraction 4.8 mm {f_small:.4f}, 9.6 mm {f_big:.4f}, ratio {f_small / f_big:.3f}; "
        f"S(0) 9.6/4.8 = {big[1, 1, 1] / small[2, 2, 2]:.4f}"
    )
    assert f_small / f_big == pytest.approx(2.0, rel=0.10)
    assert big[1, 1, 1] / small[2, 2, 2] == pytest.approx((1 - f_small / 2) / (1 - f_small) / 8, rel=0.02)

    power = np.log(0.1766 / 0.01431) / np.log(5.0)
    csda_mm = lambda e: 0.01431 * (e / 0.1) ** power / TISSUE * 10  # noqa: E731
    e, pdf = nuc.beta_energy_mev, nuc.beta_pdf_per_mev
    ic_e, ic_y = nuc.ic_energy_mev, nuc.ic_yield
    weighted = np.trapezoid(e * pdf * csda_mm(e), e) + np.sum(ic_e * ic_y * csda_mm(ic_e))
    energy = np.trapezoid(e * pdf, e) + np.sum(ic_e * ic_y)
    r_max = 1.1 * weighted / energy
    print(f"energy-weighted CSDA range {weighted / energy:.3f} mm; bound on f_esc(4.8 mm) {1.5 * r_max / 4.8:.3f}")
    assert f_small < 1.5 * r_max / 4.8


def test_symmetrise_uses_exactly_the_grid_symmetries(rng):
    raw = rng.uniform(0, 1, (5, 7, 7))
    sym = _kernels.symmetrise(raw, (3.0, 3.91, 3.91))
    for axis in range(3):
        np.testing.assert_allclose(sym, np.flip(sym, axis))
    np.testing.assert_allclose(sym, sym.transpose(0, 2, 1))  # y <-> x: same spacing and size
    assert sym.sum() == pytest.approx(raw.sum())  # averaging moves no energy
    cube = _kernels.symmetrise(rng.uniform(0, 1, (5, 5, 5)), (3.0, 3.91, 3.91))
    assert not np.allclose(cube, cube.transpose(1, 0, 2))  # z <-> y is not a symmetry: different spacing
    iso = _kernels.symmetrise(rng.uniform(0, 1, (5, 5, 5)), (2.0, 2.0, 2.0))
    np.testing.assert_allclose(iso, iso.transpose(1, 0, 2))


@pytest.mark.parametrize(
    "shape, spacing", [((5, 7, 7), (3.0, 3.9, 3.9)), ((5, 5, 5), (1.0, 1.0, 1.0)), ((3, 5, 7), (1.0, 1.0, 1.0))]
)
def test_orbit_sizes_match_brute_force(shape, spacing):
    """The number of distinct voxels averaged into each voxel, against enumerating the group."""
    perms = _kernels._grid_permutations(shape, spacing)
    c = np.array([s // 2 for s in shape])
    expected = np.zeros(shape)
    for v in np.ndindex(shape):
        off = np.array(v) - c
        images = {
            tuple(sign * off[list(p)])
            for p in perms
            for sign in (np.array(s) for s in np.ndindex(2, 2, 2))
            for sign in [1 - 2 * sign]
        }
        expected[v] = len(images)
    np.testing.assert_array_equal(_kernels._orbit_sizes(shape, spacing), expected)


def test_cache_round_trip_and_key(tmp_path, monkeypatch):
    monkeypatch.setenv("COHORT_DOSIMETRY_CACHE", str(tmp_path))
    first = voxel_kernel("Lu177", (6.0, 5.0, 5.0), (3, 5, 5), kind="beta", n_decays=20_000)
    files = sorted(p.name for p in tmp_path.iterdir())
    assert len(files) == 2 and not any(".tmp" in f for f in files)  # the .npy and its provenance, no leftovers
    info = json.loads(next(tmp_path.glob("*.json")).read_text())
    assert info["n_decays"] == 20_000 and info["kind"] == "beta" and info["shape"] == [3, 5, 5]

    from cohort_dosimetry.physics import _montecarlo

    def no_mc(*args, **kwargs):
        raise AssertionError("the kernel was regenerated although it is cached")

    monkeypatch.setattr(_montecarlo, "run_monte_carlo", no_mc)
    again = voxel_kernel("Lu-177", (6.0, 5.0, 5.0), (3, 5, 5), kind="beta", n_decays=20_000)
    np.testing.assert_array_equal(first, again)
    with pytest.raises(AssertionError, match="regenerated"):  # another n_decays is another key
        voxel_kernel("Lu177", (6.0, 5.0, 5.0), (3, 5, 5), kind="beta", n_decays=30_000)


def test_shipped_kernels_are_current_small_and_used(tmp_path, monkeypatch):
    """The shipped compact-grid kernels match their JSON, the current engine, the size limit and the physics."""
    from cohort_dosimetry.physics import ENGINE_VERSION, _montecarlo

    entries = _kernels.shipped_kernels()
    assert {e["kind"] for e in entries} == {"beta", "photon"}
    total_bytes = sum(p.stat().st_size for p in _kernels._DATA_DIR.iterdir())
    assert total_bytes < 2 * 2**20
    for e in entries:
        assert e["engine_version"] == ENGINE_VERSION, (
            "the engine changed since the kernels were shipped: run python -m cohort_dosimetry.physics._kernels"
        )
        octant = np.load(_kernels._DATA_DIR / e["file"])
        assert octant.shape == tuple((s + 1) // 2 for s in e["shape"])
        kernel = _kernels.expand_octant(octant)
        absorbed = kernel.sum(dtype=np.float64) * 1e-9 * voxel_mass_kg(e["spacing_mm"]) / MEV_TO_J
        assert absorbed == pytest.approx(e["energy_per_decay_mev"]["deposited_in_grid"], rel=1e-4)
    monkeypatch.setenv("COHORT_DOSIMETRY_CACHE", str(tmp_path))
    monkeypatch.setattr(
        _montecarlo, "run_monte_carlo", lambda *a, **k: (_ for _ in ()).throw(AssertionError("shipped kernel not used"))
    )
    spacing = (3.0, 3.91, 3.91)
    total = voxel_kernel("Lu177", spacing, _kernels.default_kernel_shape(spacing))
    assert total.shape == tuple(entries[0]["shape"]) and total.dtype == np.float32
    e_total = nuclide("Lu177").energy_per_decay_mev("electron")
    # a 3 x 3.91 x 3.91 mm voxel is smaller than 4.8 mm: a larger S(0) but below the all-absorbed limit
    assert 0.178 < total[34, 26, 26] < mgy_per_mbq_s(e_total, spacing) * 1.01


def test_octant_text_round_trip(tmp_path, rng):
    octant = rng.uniform(1e-5, 1e-3, (3, 3, 3))
    octant[0, 0, 0] = 0.178
    text = ["Lu-177 soft tissue, 4.80 mm voxels", "i j k S(mGy/MBq s)"]
    text += [f"{i} {j} {k} {octant[i, j, k]:.8e}" for k in range(3) for j in range(3) for i in range(3)]
    path = tmp_path / "vsv.txt"
    path.write_text("\n".join(text) + "\n")
    kernel = load_kernel_octant_text(path, (4.8, 4.8, 4.8))
    assert kernel.shape == (5, 5, 5) and kernel.dtype == np.float32
    np.testing.assert_allclose(kernel[2:, 2:, 2:], octant, rtol=1e-6)
    np.testing.assert_allclose(kernel, kernel[::-1, ::-1, ::-1])
    assert kernel[0, 3, 4] == pytest.approx(octant[2, 1, 2])
    # the same table in Gy/(Bq s) reads to the same kernel
    si = ["# units: Gy/(Bq s)"] + [f"{i} {j} {k} {octant[i, j, k] * 1e-9:.8e}" for i, j, k in np.ndindex(3, 3, 3)]
    path_si = tmp_path / "vsv_si.txt"
    path_si.write_text("\n".join(si) + "\n")
    np.testing.assert_allclose(load_kernel_octant_text(path_si, (4.8, 4.8, 4.8)), kernel, rtol=1e-6)


@pytest.mark.parametrize(
    "lines, message",
    [
        (["0 0 0 0.178", "0 0 1 0.003"], "declares no units"),
        (["# units: mGy/(MBq s)", "0 0 0 0.178", "0 1 0.003"], r"bad\.txt:3: expected 4 columns"),
        (["# units: mGy/(MBq s)", "0 0 0 0.178", "0 0 x 0.003"], r"bad\.txt:3: expected integers"),
        (["# units: mGy/(MBq s)", "0 0 0 0.178", "0 0 -1 0.003"], r"bad\.txt:3: offsets must be >= 0"),
        (["# units: mGy/(MBq s)", "0 0 0 0.178", "0 0 0 0.003"], r"bad\.txt:3: offset \(0, 0, 0\) appears twice"),
        (["# units: mGy/(MBq s)", "0 0 0 0.178", "1 1 1 0.003"], r"bad\.txt: the octant .* incomplete"),
        (["# units: mGy/(MBq s)", "0 0 0 nan"], r"bad\.txt:2: S-value must be finite"),
        (["# units: uGy/(Bq s)", "0 0 0 178"], r"bad\.txt: .* deposits .* more than"),
    ],
)
def test_octant_text_errors_name_file_and_line(tmp_path, lines, message):
    path = tmp_path / "bad.txt"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=message):
        load_kernel_octant_text(path, (4.8, 4.8, 4.8))


def test_npy_pair_round_trip_and_checks(tmp_path, rng):
    beta = rng.uniform(0, 1e-3, (3, 3, 3)).astype(np.float32)
    beta[1, 1, 1] = 0.18
    photon = rng.uniform(0, 1e-4, (5, 7, 5)).astype(np.float32)
    np.save(tmp_path / "beta.npy", beta)
    np.save(tmp_path / "photon.npy", photon)
    total = load_kernel_npy_pair(tmp_path / "beta.npy", tmp_path / "photon.npy", (4.8, 4.8, 4.8))
    expected = photon.astype(np.float64)
    expected[1:4, 2:5, 1:4] += beta
    assert total.shape == (5, 7, 5) and total.dtype == np.float32
    np.testing.assert_allclose(total, expected, rtol=1e-6)
    np.save(tmp_path / "even.npy", np.ones((4, 3, 3), np.float32) * 1e-4)
    with pytest.raises(ValueError, match=r"even\.npy: .* odd sizes"):
        load_kernel_npy_pair(tmp_path / "even.npy", tmp_path / "photon.npy", (4.8, 4.8, 4.8))
    np.save(tmp_path / "ugy.npy", beta * 1e3)  # uGy/(MBq s) mistaken for mGy/(MBq s)
    with pytest.raises(ValueError, match=r"ugy\.npy: .* more than the .* MeV Lu177 emits \(electron\)"):
        load_kernel_npy_pair(tmp_path / "ugy.npy", tmp_path / "photon.npy", (4.8, 4.8, 4.8))
    (tmp_path / "junk.npy").write_text("not an array")
    with pytest.raises(ValueError, match=r"junk\.npy: cannot read"):
        load_kernel_npy_pair(tmp_path / "junk.npy", tmp_path / "photon.npy", (4.8, 4.8, 4.8))


def test_bad_kernel_requests_are_refused():
    with pytest.raises(ValueError, match="odd"):
        voxel_kernel("Lu177", (4.8, 4.8, 4.8), 4)
    with pytest.raises(ValueError, match="kind"):
        voxel_kernel("Lu177", (4.8, 4.8, 4.8), 5, kind="alpha")
    with pytest.raises(ValueError, match="spacing_mm"):
        voxel_kernel("Lu177", (4.8, -1, 4.8), 5)


def test_kernel_command_writes_the_cached_kernel(tmp_path, monkeypatch):
    monkeypatch.setenv("COHORT_DOSIMETRY_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "k.npy"
    assert (
        cli_main(
            [
                "kernel",
                "Lu177",
                "--spacing",
                "6",
                "5",
                "5",
                "--shape",
                "3",
                "--kind",
                "beta",
                "--decays",
                "20000",
                "--device",
                "cpu",
                "-o",
                str(out),
            ]
        )
        == 0
    )
    written = np.load(out)
    assert written.shape == (3, 3, 3)
    np.testing.assert_array_equal(written, voxel_kernel("Lu177", (6, 5, 5), 3, kind="beta", n_decays=20_000))


def test_shipped_photon_kernel_exceeds_the_primary_dose_by_a_plausible_buildup():
    """Photon kernel along the axes against the uncollided (primary) dose of the two Lu-177 gammas.

    Primary dose per decay at distance r from a point source: sum_i y_i E_i (mu_en/rho)_i exp(-mu_i r) / (4 pi r^2),
    with the ICRP-107 yields (11.0 % at 208.37 keV, 6.4 % at 112.95 keV) and the NIST water coefficients
    mu/rho = 0.1350 / 0.1644 cm2/g, mu_en/rho = 0.02989 / 0.02609 cm2/g, at 1.04 g/cm3. Scattered photons and the
    Hf K x-rays only add to it, so kernel / primary (the energy-absorption buildup) must be >= 1 (a few % margin for
    the point-source approximation of a 3-4 mm voxel), must grow with distance as the scattered photons build up,
    and stays below ~8 within 1.5 mean free paths for 100-200 keV photons in water.
    """
    entry = next(e for e in _kernels.shipped_kernels() if e["kind"] == "photon")
    kernel = _kernels.expand_octant(np.load(_kernels._DATA_DIR / entry["file"]))
    spacing = np.array(entry["spacing_mm"])
    centre = np.array(kernel.shape) // 2

    def primary(r_cm):
        mev_per_g = sum(
            e * y * mu_en * np.exp(-mu * TISSUE * r_cm) / (4 * np.pi * r_cm**2)
            for e, y, mu, mu_en in ((0.20837, 0.110, 0.1350, 0.02989), (0.11295, 0.064, 0.1644, 0.02609))
        )
        return mev_per_g * MEV_TO_J * 1e3 * 1e9  # MeV/g per decay -> J/kg per decay -> mGy/(MBq s)

    buildup = {}
    for axis in range(3):
        for n in range(3, centre[axis] - 2):
            index = centre.copy()
            index[axis] += n
            r_mm = n * spacing[axis]
            buildup.setdefault(round(r_mm / 15), []).append(kernel[tuple(index)] / primary(r_mm / 10))
    shells = {15 * k: np.mean(v) for k, v in sorted(buildup.items())}  # mean over 15 mm wide distance bins
    print("photon kernel / primary dose by distance (mm):", {k: round(float(v), 2) for k, v in shells.items()})
    assert all(0.95 < b < 8 for v in buildup.values() for b in v)
    values = list(shells.values())
    assert values[-1] > 2 * values[0]
