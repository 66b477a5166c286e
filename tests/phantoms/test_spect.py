"""The two SPECT models: recovery, count level, noise, conservation, determinism (synthetic phantoms)."""

from __future__ import annotations

import json
from importlib import resources

import numpy as np
import pytest
import xarray as xr
from scipy import ndimage

from cohort_dosimetry.grid import Grid
from cohort_dosimetry.phantoms import Acquisition, make_anatomy, make_virtual_patient, simulate_spect, sphere_phantom
from cohort_dosimetry.phantoms._calibration import (
    BACKGROUND_BQ_ML,
    CALIBRATION_GRID,
    SPHERE_TO_BACKGROUND,
    SPHERE_VOLUMES_ML,
    _neighbour_correlation,
)
from cohort_dosimetry.vocabulary import label_of

SMALL = Grid((65, 64, 64), (6.0, 7.82, 7.82))
STORED = json.loads(resources.files("cohort_dosimetry.phantoms").joinpath("fast_spect_calibration.json").read_text())


def _phantom_anatomy(phantom: dict, grid: Grid, seed: int = 11) -> xr.Dataset:
    return xr.Dataset(
        {"density": (("z", "y", "x"), phantom["density"])}, attrs={"spacing_mm": list(grid.spacing_mm), "seed": seed}
    )


def _recoveries(image: np.ndarray, phantom: dict) -> dict[float, float]:
    truth = SPHERE_TO_BACKGROUND * BACKGROUND_BQ_ML
    return {v: float(image[m].mean() / truth) for v, m in phantom["spheres"].items()}


@pytest.fixture(scope="module")
def calibration_phantom():
    phantom = sphere_phantom(CALIBRATION_GRID)
    return phantom, _phantom_anatomy(phantom, CALIBRATION_GRID)


def test_fast_recovery_matches_pytomography_within_10_points(calibration_phantom):
    """Against the PyTomography recoveries measured at the same count level (stored with the calibration)."""
    phantom, anatomy = calibration_phantom
    counts = STORED["settings"]["counts"]
    spect = simulate_spect(phantom["activity_bq_ml"][None], anatomy, [4.0], counts=counts, realisations=2)
    recovered = _recoveries(spect.values.mean(axis=0)[0], phantom)
    for volume in SPHERE_VOLUMES_ML:
        assert abs(recovered[volume] - STORED["pytomography"]["recovery"][str(volume)]) <= 0.10, volume
    # partial-volume behaviour: the 4 mL sphere far below truth, recovery rising with size
    assert recovered[4.0] < 0.5 and recovered[4.0] < recovered[16.0] < recovered[65.0]


def test_fast_noise_is_correlated_like_pytomography_and_scales_with_counts(calibration_phantom):
    phantom, anatomy = calibration_phantom
    counts = STORED["settings"]["counts"]
    noise_std = {}
    for factor in (1.0, 4.0):
        spect = simulate_spect(
            phantom["activity_bq_ml"][None], anatomy, [4.0], counts=counts * factor, realisations=2
        ).values[:, 0]
        noise = (spect[0] - spect[1]) / np.sqrt(2)
        noise_std[factor] = noise[phantom["background"]].std()
        if factor == 1.0:
            correlation = _neighbour_correlation(noise, phantom["background"])
            reference = STORED["pytomography"]["neighbour_correlation_zyx"]
            for axis in range(3):
                assert correlation[axis] > 0.5, "noise must be spatially correlated, not white"
                assert correlation[axis] == pytest.approx(reference[axis], abs=0.05)
            relative = noise_std[1.0] / spect.mean(axis=0)[phantom["background"]].mean()
            assert relative == pytest.approx(STORED["pytomography"]["relative_noise_background"], rel=0.25)
    # four times the counts, half the noise (Poisson statistics)
    assert noise_std[4.0] / noise_std[1.0] == pytest.approx(0.5, rel=0.1)


def test_fast_model_conserves_activity_in_a_large_uniform_region(rng, device):
    grid = Grid((40, 48, 48), (6.0, 7.82, 7.82))
    z, y, x = grid.axes_mm()
    zz, yy, xx = np.meshgrid(z, y, x, indexing="ij")
    body = ((yy / 140.0) ** 2 + (xx / 160.0) ** 2 <= 1.0) & (np.abs(zz) <= 100.0)
    level = rng.uniform(5e4, 2e5)
    activity = np.where(body, level, 0.0).astype(np.float32)[None]
    anatomy = xr.Dataset(
        {"density": (("z", "y", "x"), np.where(body, 1.0, 0.0012).astype(np.float32))},
        attrs={"spacing_mm": list(grid.spacing_mm), "seed": 1},
    )
    spect = simulate_spect(activity, anatomy, [24.0], counts=5e6, device=device).values[0]
    voxel_ml = grid.voxel_volume_ml
    assert spect.sum() * voxel_ml == pytest.approx(activity.sum() * voxel_ml, rel=0.01)
    inner = ((yy / 90.0) ** 2 + (xx / 110.0) ** 2 <= 1.0) & (np.abs(zz) <= 50.0)
    assert spect[inner].mean() == pytest.approx(level, rel=0.02)


def test_virtual_patient_small_lesion_blurred_large_organ_recovered():
    # a patient without liver lesions (whose spill-in would raise the healthy liver's mean), found from the seed
    seed = next(s for s in range(100) if "liver" not in make_anatomy(s, SMALL).attrs["lesion_sites"].values())
    patient = make_virtual_patient(seed, grid=SMALL, hours=(24.0,))
    liver = patient["labels"].values == label_of("liver")
    core = ndimage.binary_erosion(liver, iterations=2)  # 12-16 mm inside the surface, as clinical VOIs are drawn
    ratio = patient["activity"].values[0][core].mean() / patient["activity_true"].values[0][core].mean()
    assert ratio == pytest.approx(1.0, abs=0.1)
    # 4 mL sphere in the calibration phantom on the same grid: far below truth
    phantom = sphere_phantom(SMALL)
    spect = simulate_spect(
        phantom["activity_bq_ml"][None], _phantom_anatomy(phantom, SMALL), [24.0], counts=STORED["settings"]["counts"]
    ).values[0]
    assert _recoveries(spect, phantom)[4.0] < 0.5


def test_virtual_patient_contract_determinism_and_realisations():
    hours = (4.0, 24.0, 96.0)
    patient = make_virtual_patient(8, grid=SMALL, hours=hours)
    assert patient["activity"].dims == ("timepoint", "z", "y", "x")
    assert patient["activity_true"].dims == ("timepoint", "z", "y", "x")
    assert list(patient["timepoint"].values) == ["tp1", "tp2", "tp3"]
    np.testing.assert_array_equal(patient["hours_post_injection"].values, hours)
    for name in ("ct_hu", "density", "labels", "activity", "activity_true"):
        assert "units" in patient[name].attrs, name
    assert patient.attrs["synthetic"] is True and patient.attrs["nuclide"] == "Lu177"
    assert patient.attrs["administered_activity_bq"] == 7.4e9
    assert len(patient.attrs["origin_mm"]) == 3 and len(patient.attrs["spacing_mm"]) == 3
    counts = patient.attrs["counts"]
    assert counts[0] > counts[1] > counts[2] > 0  # count level falls with time
    again = make_virtual_patient(8, grid=SMALL, hours=hours)
    np.testing.assert_array_equal(again["activity"].values, patient["activity"].values)
    other = make_virtual_patient(9, grid=SMALL, hours=hours)
    assert not np.array_equal(other["activity"].values, patient["activity"].values)
    several = make_virtual_patient(8, grid=SMALL, hours=hours, realisations=2)
    assert several["activity"].dims == ("realisation", "timepoint", "z", "y", "x")
    np.testing.assert_array_equal(several["activity"].values[0], patient["activity"].values)
    assert not np.array_equal(several["activity"].values[0], several["activity"].values[1])


def test_bad_inputs_name_the_patient_and_the_problem():
    phantom = sphere_phantom(SMALL)
    anatomy = _phantom_anatomy(phantom, SMALL, seed=42)
    with pytest.raises(ValueError, match="seed 42.*unknown SPECT model 'monte'"):
        simulate_spect(phantom["activity_bq_ml"][None], anatomy, [4.0], model="monte")
    with pytest.raises(ValueError, match="seed 42.*must be \\(timepoint"):
        simulate_spect(phantom["activity_bq_ml"], anatomy, [4.0])
    with pytest.raises(ValueError, match="seed 42.*finite and >= 0"):
        simulate_spect(-phantom["activity_bq_ml"][None], anatomy, [4.0])
    with pytest.raises(ValueError, match="seed 5.*increasing"):
        make_virtual_patient(5, grid=SMALL, hours=(24.0, 4.0))


def test_pytomography_tiny_run_counts_and_recovery_ordering(device):
    """PyTomography with attenuation and collimator response, few views and iterations, on a coarse grid; on the CPU
    and, where present, on CUDA (PyTomography's module-level device follows the call's)."""
    grid = Grid((16, 40, 40), (6.0, 7.82, 7.82))
    phantom = sphere_phantom(grid)
    anatomy = _phantom_anatomy(phantom, grid)
    counts = 2.0e6
    spect = simulate_spect(
        phantom["activity_bq_ml"][None],
        anatomy,
        [4.0],
        model="pytomography",
        counts=counts,
        acquisition=Acquisition(n_views=12, osem_iterations=3, osem_subsets=3, voxel_mm=9.6),
        device=device,
    )
    measured = spect.attrs["measured_counts"][0][0]
    assert spect.attrs["counts"][0] == pytest.approx(counts, rel=1e-5)
    assert abs(measured - counts) < 5 * np.sqrt(counts)  # Poisson total of the requested level
    recovered = _recoveries(spect.values[0], phantom)
    assert recovered[4.0] < recovered[16.0] < recovered[65.0] < 1.2
    assert recovered[4.0] < 0.6
    background = spect.values[0][phantom["background"]].mean() / BACKGROUND_BQ_ML
    assert background == pytest.approx(1.0, abs=0.2)  # calibrated to Bq/mL through the sensitivity


def test_banded_psf_convolution_equals_torch_depthwise_conv1d():
    """PyTomography's per-plane PSF blur runs as banded products; each must equal torch's grouped conv1d."""
    import torch

    from cohort_dosimetry.phantoms._spect_pytomography import BandedConv1d

    torch.manual_seed(5)
    for channels, width, length in ((7, 5, 16), (12, 27, 40), (3, 9, 4)):  # the last: kernel wider than the line
        conv = torch.nn.Conv1d(channels, channels, width, groups=channels, padding="same", bias=False)
        x = torch.rand(6, length, channels).permute(0, 2, 1)  # non-contiguous, as PyTomography passes it
        with torch.no_grad():
            expected = conv(x)
            banded = BandedConv1d(conv)
            got = banded(x)
            assert torch.equal(banded.as_conv1d().weight, conv.weight)
        assert got.shape == expected.shape
        assert torch.allclose(got, expected, rtol=1e-6, atol=1e-6 * float(expected.abs().max()))
    with pytest.raises(ValueError, match="depthwise"):
        BandedConv1d(torch.nn.Conv1d(4, 4, 3, groups=2, padding="same", bias=False))


def test_pytomography_projection_with_banded_psf_equals_the_stock_projector():
    """The system matrix with banded PSF blurs projects as PyTomography's own Conv1d layers do."""
    import torch

    from cohort_dosimetry.phantoms._spect_pytomography import BandedConv1d, _pytomography_on, _system_matrix

    acquisition = Acquisition(n_views=8, voxel_mm=9.6)
    rng = np.random.default_rng(2)
    mu = torch.from_numpy(rng.uniform(0.0, 0.2, (20, 20, 12)).astype(np.float32))
    activity = torch.from_numpy(rng.gamma(2.0, 1.0, (20, 20, 12)).astype(np.float32))
    with _pytomography_on(torch.device("cpu")) as pytomography, torch.no_grad():
        system = _system_matrix(pytomography, mu, acquisition)
        psf = system.obj2obj_transforms[1]
        blurs = list(psf.layers.values())
        assert blurs and all(isinstance(b.layer_r, BandedConv1d) and isinstance(b.layer_z, BandedConv1d) for b in blurs)
        banded = system.forward(activity)
        back_banded = system.backward(banded)
        for blur in blurs:  # put PyTomography's own layers back, with the same kernels
            blur.layer_r, blur.layer_z = blur.layer_r.as_conv1d(), blur.layer_z.as_conv1d()
        stock = system.forward(activity)
        back_stock = system.backward(stock)
    assert float(stock.sum()) > 0
    assert torch.allclose(banded, stock, rtol=1e-5, atol=1e-6 * float(stock.max()))
    assert torch.allclose(back_banded, back_stock, rtol=1e-5, atol=1e-6 * float(back_stock.max()))
