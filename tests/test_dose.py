"""dose_rates: the one entry point for a scan's dose-rate maps (units, the CNN's DVK prior, refusals)."""

import numpy as np
import pytest
import torch
import xarray as xr

from cohort_dosimetry.constants import J_PER_MEV
from cohort_dosimetry.dose import dose_rates
from cohort_dosimetry.model import DblurDoseNet, save_model
from cohort_dosimetry.phantoms import make_virtual_patient
from tests.conftest import requires_cuda
from tests.model.conftest import CARD_SPACING_MM, make_card

# Lu-177 electron energy per decay (beta + internal conversion + Auger), ICRP-107 (docs/physics.md)
ELECTRON_MEV_PER_DECAY = 0.1479


def _scan(activity_bq_ml, density=1.04):
    shape = activity_bq_ml.shape
    return xr.Dataset(
        {
            "activity": (("z", "y", "x"), activity_bq_ml.astype(np.float32), {"units": "Bq/mL"}),
            "density": (("z", "y", "x"), np.full(shape, density, np.float32), {"units": "g/cm3"}),
        },
        coords={"z": np.arange(shape[0]) * 3.0},
        attrs={"spacing_mm": list(CARD_SPACING_MM), "patient": "virtual-7", "timepoint": "tp2"},
    )


@pytest.fixture
def zero_residual_card(tmp_path):
    """A network whose residual is exactly zero: its CNN map must equal the DVK map."""
    net = DblurDoseNet()
    with torch.no_grad():
        net.unet.output.weight.zero_()
        net.unet.output.bias.zero_()
    return save_model(net, make_card(), tmp_path / "zero.json")


def test_uniform_activity_gives_the_electron_equilibrium_dose_rate_at_the_centre(zero_residual_card):
    # Energy conservation: deep inside a uniform source the electrons (range < 2 mm, voxels ~4 mm) deposit all their
    # energy: D = C * E_e / rho. Photons add their small absorbed part in a 2.4 x 6.3 x 6.3 cm block (< 10 %).
    concentration = 1.0e6  # Bq/mL
    maps = dose_rates(_scan(np.full((8, 16, 16), concentration)), weights=zero_residual_card, device="cpu")
    expected = concentration * ELECTRON_MEV_PER_DECAY * J_PER_MEV / (1.04e-3)  # Gy/s (1.04 g/mL = 1.04e-3 kg/mL)
    centre = maps["dose_rate_dvk"].values[4, 8, 8]
    assert 1.0 <= centre / expected < 1.10
    assert maps["dose_rate_dvk"].attrs["units"] == "Gy/s" and maps["dose_rate_dvk"].dims == ("z", "y", "x")
    np.testing.assert_array_equal(maps["z"].values, np.arange(8) * 3.0)
    np.testing.assert_allclose(maps["dose_rate_cnn"].values, maps["dose_rate_dvk"].values, rtol=1e-5)


def test_all_zero_activity_gives_all_zero_maps(zero_residual_card):
    maps = dose_rates(_scan(np.zeros((6, 16, 16))), weights=zero_residual_card, device="cpu")
    assert not maps["dose_rate_dvk"].values.any() and not maps["dose_rate_cnn"].values.any()


def test_monte_carlo_agrees_with_the_kernel_in_the_centre(rng):
    activity = np.zeros((8, 16, 16), np.float32)
    activity[2:6, 4:12, 4:12] = 1.0e6
    maps = dose_rates(_scan(activity), methods=("dvk", "mc"), device="cpu", mc_decays=40_000, seed=1)
    assert set(maps.data_vars) == {"dose_rate_dvk", "dose_rate_mc", "dose_rate_mc_uncertainty"}
    assert maps["dose_rate_mc"].attrs["units"] == "Gy/s" and maps["dose_rate_mc"].attrs["n_decays"] == 40_000
    inner = (slice(3, 5), slice(6, 10), slice(6, 10))
    mc, dvk = maps["dose_rate_mc"].values[inner].mean(), maps["dose_rate_dvk"].values[inner].mean()
    assert mc == pytest.approx(dvk, rel=0.1)
    assert np.nanmedian(maps["dose_rate_mc_uncertainty"].values[inner]) < 0.2


@pytest.mark.parametrize(
    "change, message",
    [
        ("nan_activity", r"scan virtual-7/tp2: 'activity' holds 1 NaN"),
        ("negative_density", r"scan virtual-7/tp2: 'density' holds 1 negative"),
        ("no_spacing", r"scan virtual-7/tp2: attrs\['spacing_mm'\]"),
        ("timepoints", r"scan virtual-7/tp2: 'activity' must be one \(z, y, x\) volume of one time point"),
        ("method", r"scan virtual-7/tp2: dose-rate methods must be"),
        (
            "cnn_grid",
            r"scan virtual-7/tp2: grid spacing \(2.0, 2.0, 2.0\) mm .* differs from the \(3.0, 3.91, 3.91\)"
            r" mm the CNN weights were trained on; ingest the scan on that grid \(`--grid compact`\)",
        ),
    ],
)
def test_bad_input_is_refused_naming_the_scan(change, message):
    scan = _scan(np.ones((4, 16, 16)))
    methods = ("dvk",)
    if change == "nan_activity":
        scan["activity"][1, 2, 3] = np.nan
    elif change == "negative_density":
        scan["density"][1, 2, 3] = -0.5
    elif change == "no_spacing":
        del scan.attrs["spacing_mm"]
    elif change == "timepoints":
        scan["activity"] = scan["activity"].expand_dims(timepoint=2)
    elif change == "cnn_grid":
        scan.attrs["spacing_mm"] = [2.0, 2.0, 2.0]
        methods = ("dvk", "cnn")
    else:
        methods = ("dvk", "voodoo")
    with pytest.raises(ValueError, match=message):
        dose_rates(scan, methods=methods, device="cpu")


@requires_cuda
def test_cuda_maps_of_a_virtual_patient_match_the_cpu_with_the_shipped_weights():
    """The whole entry point on CUDA against the CPU, on a compact-grid virtual patient with the shipped weights:
    DVK (float32 FFTs on both) voxel by voxel to 1e-4 of the maximum; the CNN, under float16 autocast on CUDA, to
    0.5 % of the maximum voxel by voxel and 0.5 % in every VOI's mean (float16 in CPU emulation: 0.02 % and 0.01 %;
    bfloat16 moved the left lung's mean by 1.2 % on an H200)."""
    patient = make_virtual_patient(47, hours=(24.0,))
    scan = patient.isel(timepoint=0)
    cpu, cuda = dose_rates(scan, device="cpu"), dose_rates(scan, device="cuda")
    labels, names = patient["labels"].values, patient["labels"].attrs["names"]
    for method, voxel_tol, voi_tol in (("dvk", 1e-4, 1e-4), ("cnn", 5e-3, 5e-3)):
        a, b = cpu[f"dose_rate_{method}"].values, cuda[f"dose_rate_{method}"].values
        np.testing.assert_allclose(b, a, rtol=0, atol=voxel_tol * a.max(), err_msg=method)
        for value in np.unique(labels[labels > 0]):
            voi = labels == value
            assert b[voi].mean() == pytest.approx(a[voi].mean(), rel=voi_tol), (method, names[int(value)])
