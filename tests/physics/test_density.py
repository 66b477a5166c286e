import numpy as np
import pytest

from cohort_dosimetry.physics import AIR_DENSITY_G_CM3, LI_2022, DensityCurve, hu_to_density


def test_li_curve_published_points():
    # Points computed by hand from the published lines (Li et al. 2022).
    hu = np.array([-500.0, 0.0, 1.0, 1000.0])
    expected = np.array([0.00108 * -500 + 1.02351, 1.02351, 0.00069 + 1.03107, 0.69 + 1.03107])
    np.testing.assert_allclose(hu_to_density(hu), expected, rtol=1e-6)


def test_air_is_clamped_positive():
    # The lower line crosses zero at -1.02351/0.00108 = -947.7 HU; air (-1000 HU) and below must stay positive.
    rho = hu_to_density(np.array([-1024.0, -1000.0, -948.0, -940.0]))
    assert np.all(rho >= np.float32(AIR_DENSITY_G_CM3))
    assert rho[0] == pytest.approx(AIR_DENSITY_G_CM3)
    assert rho[3] == pytest.approx(0.00108 * -940 + 1.02351, rel=1e-4)


def test_curve_is_configurable_and_keeps_shape():
    water_only = DensityCurve(breaks_hu=(), slopes=(0.001,), intercepts=(1.0,), source="test")
    hu = np.zeros((2, 3, 4), dtype=np.int16)
    rho = hu_to_density(hu, curve=water_only)
    assert rho.shape == (2, 3, 4) and rho.dtype == np.float32
    np.testing.assert_allclose(rho, 1.0)


def test_nan_propagates():
    assert np.isnan(hu_to_density(np.array([np.nan]))[0])


def test_curve_validation():
    with pytest.raises(ValueError):
        DensityCurve(breaks_hu=(0.0,), slopes=(1.0,), intercepts=(1.0,))
    assert LI_2022.source
