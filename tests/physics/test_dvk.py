"""DVK dose-rate: exact convolution, linearity, density scaling, input checks, and agreement with the Monte Carlo.

All phantoms here are synthetic (no patient data).
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.signal

from cohort_dosimetry.physics import _dvk, _kernels, dose_rate_dvk, run_monte_carlo

GY_PER_BQ_S = 1e-9  # 1 mGy/(MBq s) = 1e-9 Gy/(Bq s)


def direct_sum(activity, kernel):
    """Slow exact reference: D[t] = sum_s A[s] K[t - s + c] over all source/target voxel pairs, float64."""
    out = np.zeros(activity.shape)
    c = [k // 2 for k in kernel.shape]
    for s in np.argwhere(activity != 0):
        for t in np.ndindex(activity.shape):
            d = [t[a] - s[a] + c[a] for a in range(3)]
            if all(0 <= d[a] < kernel.shape[a] for a in range(3)):
                out[t] += activity[tuple(s)] * kernel[tuple(d)]
    return out


def test_matches_direct_sum_with_asymmetric_kernel(rng, device):
    # An asymmetric kernel distinguishes convolution from correlation and checks every axis separately.
    activity = rng.uniform(0, 1e6, (6, 7, 5)).astype(np.float32)
    activity[activity < 3e5] = 0
    kernel = rng.uniform(0, 1, (5, 3, 7)).astype(np.float32)
    rho = np.full(activity.shape, 1.04, np.float32)
    dose = dose_rate_dvk(activity, rho, (2.0, 1.0, 1.5), kernel=kernel, device=device)
    expected = direct_sum(activity.astype(np.float64), kernel.astype(np.float64)) * GY_PER_BQ_S
    assert dose.dtype == np.float32 and dose.shape == activity.shape
    np.testing.assert_allclose(dose, expected, rtol=2e-5, atol=2e-6 * expected.max())


def test_kernel_larger_than_volume_is_cropped_exactly(rng, device):
    # A kernel wider than 2n-1 along an axis: only offsets that connect two voxels of the volume can matter.
    activity = rng.uniform(0, 1e5, (4, 3, 5)).astype(np.float32)
    kernel = rng.uniform(0, 1, (11, 9, 3)).astype(np.float32)
    dose = dose_rate_dvk(activity, np.full(activity.shape, 1.04, np.float32), (1, 1, 1), kernel=kernel, device=device)
    expected = direct_sum(activity.astype(np.float64), kernel.astype(np.float64)) * GY_PER_BQ_S
    np.testing.assert_allclose(dose, expected, rtol=2e-5, atol=2e-6 * expected.max())


def test_linearity_and_zero(rng, device):
    kernel = rng.uniform(0, 1, (5, 5, 5)).astype(np.float32)
    rho = np.full((8, 9, 10), 1.04, np.float32)
    a = rng.uniform(0, 1e5, rho.shape).astype(np.float32)
    b = rng.uniform(0, 1e5, rho.shape).astype(np.float32)
    da = dose_rate_dvk(a, rho, (3, 3, 3), kernel=kernel, device=device)
    db = dose_rate_dvk(b, rho, (3, 3, 3), kernel=kernel, device=device)
    dab = dose_rate_dvk(2.5 * a + b, rho, (3, 3, 3), kernel=kernel, device=device)
    np.testing.assert_allclose(dab, 2.5 * da + db, rtol=1e-5, atol=1e-6 * dab.max())
    zero = dose_rate_dvk(np.zeros_like(a), rho, (3, 3, 3), kernel=kernel, device=device)
    assert np.array_equal(zero, np.zeros_like(zero))


def test_shift_invariance_in_homogeneous_tissue(rng, device):
    kernel = rng.uniform(0, 1, (5, 5, 5)).astype(np.float32)
    rho = np.full((12, 12, 12), 1.04, np.float32)
    a = np.zeros(rho.shape, np.float32)
    a[3:6, 4:6, 3:5] = rng.uniform(1e4, 1e5, (3, 2, 2))
    shifted = np.roll(a, (3, 2, 4), axis=(0, 1, 2))
    d = dose_rate_dvk(a, rho, (2, 2, 2), kernel=kernel, device=device)
    ds = dose_rate_dvk(shifted, rho, (2, 2, 2), kernel=kernel, device=device)
    # Both dose clouds lie wholly inside the volume, so the shifted source gives the shifted dose exactly.
    np.testing.assert_allclose(ds, np.roll(d, (3, 2, 4), axis=(0, 1, 2)), rtol=1e-5, atol=1e-6 * d.max())
    # and nothing wraps around: the corner beyond the kernel's reach gets no dose (up to FFT round-off)
    assert np.abs(d[9:, 9:, 9:]).max() <= 1e-6 * d.max()


def test_density_scaling_and_air_cut(rng, device):
    kernel = rng.uniform(0, 1, (3, 3, 3)).astype(np.float32)
    activity = rng.uniform(1e4, 1e5, (4, 5, 6)).astype(np.float32)
    tissue = np.full(activity.shape, 1.04, np.float32)
    rho = rng.choice(np.array([0.0012, 0.05, 0.0999, 0.1, 0.3, 1.04, 1.92], np.float32), size=activity.shape)
    reference = dose_rate_dvk(activity, tissue, (4, 4, 4), kernel=kernel, device=device)
    dose = dose_rate_dvk(activity, rho, (4, 4, 4), kernel=kernel, device=device)
    expected = np.where(rho < 0.1, 0.0, reference * 1.04 / rho)
    np.testing.assert_allclose(dose, expected, rtol=1e-5)
    assert np.all(dose[rho < 0.1] == 0) and np.all(dose[rho >= 0.1] > 0)


def test_spectrum_is_cached_per_volume_shape_and_kernel(rng):
    _dvk._spectrum_cache.clear()
    kernel = rng.uniform(0, 1, (3, 3, 3)).astype(np.float32)
    rho = np.full((5, 6, 7), 1.04, np.float32)
    dose_rate_dvk(rng.uniform(0, 1, rho.shape), rho, (1, 1, 1), kernel=kernel, device="cpu")
    dose_rate_dvk(rng.uniform(0, 1, rho.shape), rho, (1, 1, 1), kernel=kernel, device="cpu")
    assert len(_dvk._spectrum_cache) == 1
    dose_rate_dvk(rng.uniform(0, 1, (5, 6, 9)), np.ones((5, 6, 9)), (1, 1, 1), kernel=kernel, device="cpu")
    dose_rate_dvk(rng.uniform(0, 1, rho.shape), rho, (1, 1, 1), kernel=kernel * 2, device="cpu")
    assert len(_dvk._spectrum_cache) == _dvk._SPECTRUM_CACHE_SIZE


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda a, r, k: (a[:-1], r, k), "shape"),
        (lambda a, r, k: (np.where(a > 0.5, np.nan, a), r, k), "activity_bq has .* non-finite"),
        (lambda a, r, k: (a - 0.5, r, k), "activity_bq has .* negative"),
        (lambda a, r, k: (a, np.where(r > 0, np.nan, r), k), "density has .* non-finite"),
        (lambda a, r, k: (a, -r, k), "density has .* negative"),
        (lambda a, r, k: (a, r, k[:-1]), "odd"),
        (lambda a, r, k: (a[0], r[0], k), "3-D"),
    ],
)
def test_bad_input_is_refused_with_a_clear_error(rng, change, message):
    a = rng.uniform(0, 1, (4, 4, 4))
    r = np.full(a.shape, 1.04)
    k = np.ones((3, 3, 3))
    a, r, k = change(a, r, k)
    with pytest.raises(ValueError, match=message):
        dose_rate_dvk(a, r, (1, 1, 1), kernel=k, device="cpu")


def test_bad_spacing_is_refused():
    with pytest.raises(ValueError, match="spacing_mm"):
        dose_rate_dvk(np.ones((3, 3, 3)), np.ones((3, 3, 3)), (1, 0, 1), kernel=np.ones((1, 1, 1)))


def test_default_kernel_uses_the_shipped_compact_grid_kernel(monkeypatch, tmp_path):
    """kernel=None at the demo's grid spacing must take the shipped kernel, without running the Monte Carlo."""
    monkeypatch.setenv("COHORT_DOSIMETRY_CACHE", str(tmp_path))
    from cohort_dosimetry.physics import _montecarlo

    def no_mc(*args, **kwargs):
        raise AssertionError("the Monte Carlo engine ran although a shipped kernel matches")

    monkeypatch.setattr(_montecarlo, "run_monte_carlo", no_mc)
    spacing = (3.0, 3.91, 3.91)
    activity = np.zeros((9, 9, 9), np.float32)
    activity[4, 4, 4] = 1e6
    dose = dose_rate_dvk(activity, np.full(activity.shape, 1.04, np.float32), spacing, device="cpu")
    kernel = _kernels.voxel_kernel("Lu177", spacing, _kernels.default_kernel_shape(spacing))
    c = [s // 2 for s in kernel.shape]
    np.testing.assert_allclose(
        dose,
        kernel[c[0] - 4 : c[0] + 5, c[1] - 4 : c[1] + 5, c[2] - 4 : c[2] + 5] * 1e6 * 1e-9,
        rtol=1e-4,
        atol=1e-7 * dose.max(),
    )


def test_dvk_equals_monte_carlo_in_homogeneous_tissue(rng, tmp_path, monkeypatch):
    """DVK of an activity map = MC of the same map in homogeneous soft tissue, within the statistical uncertainty.

    In homogeneous tissue the DVK is exact superposition of the MC's own point-source response, so the only
    differences are statistical: the MC noise of the map run and the MC noise of the kernel (propagated through the
    convolution: var_DVK = sum_s A_s^2 sigma_K^2(t - s)), plus photons that scatter back from the part of the kernel's
    larger grid (2n - 1 voxels) that the map's grid (n voxels) lacks (a small excess of the DVK). Coarse 6 mm voxels
    keep the MC cheap.
    """
    monkeypatch.setenv("COHORT_DOSIMETRY_CACHE", str(tmp_path))
    spacing, shape = (6.0, 6.0, 6.0), (9, 9, 9)
    activity = np.zeros(shape, np.float32)
    z, y, x = np.indices(shape)
    activity[((z - 3) ** 2 + (y - 4) ** 2 + (x - 5) ** 2) <= 4] = 2e6  # "organ"
    activity[6, 2, 2] = 2e7  # "lesion"
    activity += rng.uniform(0, 1e5, shape).astype(np.float32)  # background
    rho = np.full(shape, 1.04, np.float32)
    kshape = tuple(2 * n - 1 for n in shape)
    kernels, sigmas = [], []
    for kind in ("beta", "photon"):
        k, s, _ = _kernels._run_kernel("Lu177", spacing, kshape, kind, 1_000_000, "cpu")
        kernels.append(k)
        sigmas.append(s)
    kernel = kernels[0] + kernels[1]
    sigma_k2 = (sigmas[0] ** 2 + sigmas[1] ** 2).astype(np.float32)
    dvk = dose_rate_dvk(activity, rho, spacing, kernel=kernel, device="cpu").astype(np.float64)
    var_dvk = scipy.signal.fftconvolve(activity.astype(np.float64) ** 2, sigma_k2, mode="same") * GY_PER_BQ_S**2
    # 50 batches: the MC's own variance estimate then has 49 degrees of freedom, so z is close to normal
    # (with 10 batches it would be Student-t with 9, E[z^2] = 9/7).
    mc = run_monte_carlo(activity, rho, spacing, n_decays=1_000_000, seed=3, device="cpu", n_batches=50)
    mc_dose = mc.dose_rate_gy_s.astype(np.float64)
    var_mc = (mc_dose * mc.relative_uncertainty) ** 2
    var = var_mc + np.clip(var_dvk, 0, None)
    z_score = (dvk - mc_dose) / np.sqrt(var)
    # Voxel by voxel where the MC resolves the dose (relative uncertainty < 10 %): there the batch means are normal.
    # Far from the sources the dose comes from a few photon interactions per batch, the batch distribution is
    # skewed and its variance estimate unreliable: those voxels are compared in sum (many events: normal again).
    # In those far voxels the DVK may exceed the MC a little: its kernel was scored in a grid that reaches up to 8
    # voxels beyond the map's, where photons scatter back from.
    resolved = mc.relative_uncertainty < 0.10
    sparse_ratio = dvk[~resolved].sum() / mc_dose[~resolved].sum()
    z_sparse = (dvk[~resolved].sum() - mc_dose[~resolved].sum()) / np.sqrt(var[~resolved].sum())
    print(
        f"DVK vs MC: {resolved.sum()} resolved voxels: mean z^2 {np.mean(z_score[resolved] ** 2):.3f}, "
        f"max |z| {np.abs(z_score[resolved]).max():.2f}, mean z {z_score[resolved].mean():+.3f}; "
        f"{(~resolved).sum()} sparse voxels in sum: DVK/MC {sparse_ratio:.4f}, z {z_sparse:+.2f}; "
        f"whole map: sum DVK / sum MC {dvk.sum() / mc_dose.sum():.4f}"
    )
    assert resolved.sum() > 0.5 * resolved.size
    assert np.mean(z_score[resolved] ** 2) < 1.4
    assert np.abs(z_score[resolved]).max() < 5.0
    assert z_sparse > -4.0 and sparse_ratio < 1.05
    assert abs(dvk.sum() / mc_dose.sum() - 1) < 0.01


def test_slab_interfaces_differ_from_monte_carlo_with_the_expected_sign(tmp_path, monkeypatch):
    """Tissue | lung 0.3 | tissue | bone 1.9 | tissue slabs, the same activity per voxel everywhere (electrons only).

    What the DVK assumes: it spreads every voxel's energy with the soft-tissue kernel and divides by the local mass
    (x 1.04/rho). With the same activity in every voxel its convolution is flat, so it predicts the equilibrium dose
    A E / (rho V) on each side of a density step right up to the step.

    What really happens: split the activity per unit mass into a part uniform in mass (Fano's theorem: the dose from
    it is uniform across any density step) plus the excess. Lung holds more activity per gram than tissue
    (A / 0.3 vs A / 1.04), so its excess is a positive source confined to the lung: near the step it loses energy into
    the tissue, so MC < DVK in lung near the step and MC > DVK in the tissue next to it. Bone holds less activity per
    gram (A / 1.9): its "excess" is negative, so bone near the step gains energy from the tissue (MC > DVK in bone,
    MC < DVK in the tissue next to it). Deep inside every slab both must agree: the energy emitted there is absorbed
    there (conservation of energy), whatever the stopping power. Each slab is one 200 mm x 200 mm voxel wide, so
    that every simulated decay counts; electrons escaping sideways (a fraction perimeter x r / (4 area), about
    0.5 % in lung where r ~ 1 mm, 0.15 % in tissue) bound how well the interiors can agree: 2 %.
    """
    monkeypatch.setenv("COHORT_DOSIMETRY_CACHE", str(tmp_path))
    tissue, lung, bone = 1.04, 0.3, 1.9
    # (g/cm3, voxels of 0.25 mm): 2 mm tissue, 12 mm lung, then 4 x (3 mm tissue, 2 mm bone), 2 mm tissue
    slabs = [(tissue, 8), (lung, 48)] + [(tissue, 12), (bone, 8)] * 4 + [(tissue, 8)]
    rho_z = np.concatenate([np.full(n, r) for r, n in slabs]).astype(np.float32)
    first = np.concatenate([[0], np.cumsum([n for _, n in slabs])])  # first voxel of every slab (and the end)
    spacing = (0.25, 200.0, 200.0)
    shape = (rho_z.size, 1, 1)
    rho = np.broadcast_to(rho_z[:, None, None], shape).copy()
    activity = np.full(shape, 1e5, np.float32)
    # Few decays suffice: with the same activity everywhere the DVK's interior value is the kernel's sum, i.e. the
    # electron energy per decay (none leaves the kernel's +-2 mm), whatever the kernel's noise.
    kernel = _kernels.voxel_kernel("Lu177", spacing, (17, 1, 1), kind="beta", n_decays=20_000)
    dvk = dose_rate_dvk(activity, rho, spacing, kernel=kernel, device="cpu")[:, 0, 0]
    mc = run_monte_carlo(activity, rho, spacing, n_decays=400_000, seed=5, device="cpu", emissions=("electron",))
    ratio, rel = mc.dose_rate_gy_s[:, 0, 0] / dvk, mc.relative_uncertainty[:, 0, 0]

    def zone(voxels):
        """Mean MC/DVK - 1 over the given voxels and its 1-sigma statistical uncertainty."""
        voxels = np.asarray(list(voxels))
        return ratio[voxels].mean() - 1, np.sqrt(np.sum((ratio[voxels] * rel[voxels]) ** 2)) / voxels.size

    bone_slabs = [i for i, (r, _) in enumerate(slabs) if r == bone]
    bone_edge = [v for i in bone_slabs for v in (first[i], first[i + 1] - 1)]  # first/last 0.25 mm of bone
    tissue_edge = [v for i in bone_slabs for v in (first[i] - 1, first[i + 1])]  # the tissue voxel facing it
    checks = {
        "lung next to tissue (2 mm)": (zone(range(first[1], first[1] + 8)), -1),
        "tissue next to lung (1 mm)": (zone(range(first[1] - 4, first[1])), +1),
        "tissue next to lung (1 mm), far side": (zone(range(first[2], first[2] + 4)), +1),
        "bone next to tissue (0.25 mm, 8 steps)": (zone(bone_edge), +1),
        "tissue next to bone (0.25 mm, 8 steps)": (zone(tissue_edge), -1),
    }
    for name, ((diff, err), sign) in checks.items():
        print(f"{name}: MC/DVK - 1 = {diff:+.3f} +- {err:.3f}")
        assert sign * diff > 4 * err, f"{name}: MC/DVK - 1 = {diff:+.3f} +- {err:.3f}, expected sign {sign:+d}"
    interior = {  # away from the steps by several mean electron displacements (~1 mm lung, 0.3 tissue, 0.15 bone)
        "lung interior": zone(range(first[1] + 16, first[2] - 16)),
        "tissue interior": zone(v for i in bone_slabs[1:] for v in range(first[i] - 8, first[i] - 4)),
        "bone interior": zone(v for i in bone_slabs for v in range(first[i] + 2, first[i + 1] - 2)),
    }
    for name, (diff, err) in interior.items():
        print(f"{name}: MC/DVK - 1 = {diff:+.4f} +- {err:.4f}")
        assert abs(diff) < max(4 * err, 0.02), f"{name}: MC/DVK - 1 = {diff:+.4f} +- {err:.4f}"


def test_concurrent_calls_share_the_workspace_safely(rng):
    """Threads (as in a threaded Dask worker) convolving different maps of one shape get their own results."""
    from concurrent.futures import ThreadPoolExecutor

    kernel = rng.uniform(0, 1, (5, 5, 5)).astype(np.float32)
    rho = np.full((12, 14, 16), 1.04, np.float32)
    maps = [rng.uniform(0, 1e5, rho.shape).astype(np.float32) for _ in range(6)]
    serial = [dose_rate_dvk(a, rho, (2, 2, 2), kernel=kernel, device="cpu") for a in maps]
    with ThreadPoolExecutor(4) as pool:
        threaded = list(pool.map(lambda a: dose_rate_dvk(a, rho, (2, 2, 2), kernel=kernel, device="cpu"), maps * 3))
    for i, dose in enumerate(threaded):
        np.testing.assert_array_equal(dose, serial[i % len(maps)])
