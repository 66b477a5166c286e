"""VOI metrics, DRVHs and agreement measures against independent computations and hand-worked cases."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pandas as pd
import pytest
import scipy.stats
import xarray as xr

from cohort_dosimetry.stats import (
    DR_PERCENTS,
    NonFiniteDoseRateWarning,
    concordance,
    drvh,
    ensemble_noise,
    joint_histogram,
    lins_ccc,
    mean_error,
    nrmse,
    pearson_r2,
    voi_concordance,
    voi_metrics,
)

SPACING = (3.0, 0.98, 0.98)


def random_scan(rng, shape=(12, 20, 18), n_vois=6):
    """A seeded label map (0 = outside, 1..n_vois, with one label left unused) and a skewed dose-rate map."""
    labels = rng.integers(0, n_vois + 1, size=shape).astype(np.int16)
    labels[labels == 4] = 0  # label 4 is named but has no voxel
    labels.flat[rng.integers(labels.size)] = 9  # a one-voxel VOI
    names = {str(k): f"voi_{k}" for k in (*range(1, n_vois + 1), 9)}  # string keys, as zarr attributes return them
    dose_rate = rng.gamma(2.0, 1e-6, size=shape).astype(np.float32)
    return dose_rate, labels, names


def drx_by_definition(values: np.ndarray, x: int) -> float:
    """Largest D such that at least x % of the voxels have a value >= D, by brute force over candidate values."""
    candidates = np.unique(values)
    fractions = np.array([(values >= d).mean() for d in candidates])
    return float(candidates[fractions >= x / 100].max())


def test_voi_metrics_match_a_slow_per_mask_loop(rng):
    dose_rate, labels, names = random_scan(rng)
    table = voi_metrics(dose_rate, labels, names, SPACING)
    assert list(table.columns) == ["voi", "volume_ml", "mean", "median", "max", "dr10", "dr30", "dr70", "dr90"]
    assert list(table.voi) == [f"voi_{k}" for k in (1, 2, 3, 4, 5, 6, 9)]
    voxel_ml = np.prod(SPACING) / 1000
    for row in table.itertuples():
        label = int(row.voi.split("_")[1])
        values = dose_rate[labels == label].astype(np.float64)
        assert row.volume_ml == pytest.approx(values.size * voxel_ml)
        if values.size == 0:
            assert np.isnan([row.mean, row.median, row.max, row.dr10, row.dr90]).all()
            continue
        assert row.mean == pytest.approx(values.mean(), rel=1e-12)
        assert row.median == np.median(values)
        assert row.max == values.max()
        for x in DR_PERCENTS:
            numpy_quantile = -np.quantile(-values, x / 100, method="inverted_cdf")
            assert getattr(row, f"dr{x}") == numpy_quantile == drx_by_definition(values, x)


def test_drx_is_ordered_and_hand_worked():
    # Ten voxels 1..10: the hottest 10 % is {10}, 30 % {8,9,10}, 70 % {4..10}, 90 % {2..10}.
    dose_rate = np.arange(1, 11, dtype=np.float64).reshape(1, 2, 5)
    labels = np.ones(dose_rate.shape, dtype=np.int32)
    row = voi_metrics(dose_rate, labels, {1: "kidney_left"}, (1, 1, 1)).iloc[0]
    assert (row.dr10, row.dr30, row.dr70, row.dr90) == (10, 8, 4, 2)
    assert tuple(row[["median", "mean", "max"]]) == (5.5, 5.5, 10)
    assert row["volume_ml"] == pytest.approx(0.01)
    # Seven voxels: ceil(0.1*7)=1 -> 7, ceil(2.1)=3 -> 5, ceil(4.9)=5 -> 3, ceil(6.3)=7 -> 1.
    seven = np.arange(1, 8, dtype=np.float64).reshape(1, 1, 7)
    row = voi_metrics(seven, np.ones(seven.shape, dtype=np.int8), {1: "spleen"}, (1, 1, 1)).iloc[0]
    assert (row.dr10, row.dr30, row.dr70, row.dr90) == (7, 5, 3, 1)


def test_one_voxel_and_empty_vois():
    dose_rate = np.array([[[2.5, 7.0, 7.0]]])
    labels = np.array([[[1, 0, 0]]], dtype=np.uint8)
    table = voi_metrics(dose_rate, labels, {1: "lesion_1", 2: "lesion_2"}, (2, 2, 2)).set_index("voi")
    one = table.loc["lesion_1"]
    assert one.volume_ml == pytest.approx(0.008)
    assert (one[["mean", "median", "max", "dr10", "dr30", "dr70", "dr90"]] == 2.5).all()
    empty = table.loc["lesion_2"]
    assert empty.volume_ml == 0 and empty.drop("volume_ml").iloc[1:].isna().all()


def test_nan_inside_a_voi_gives_a_nan_row_and_a_warning_naming_it():
    dose_rate = np.array([[[1.0, np.nan, 3.0, 4.0, 5.0]]])
    labels = np.array([[[1, 1, 2, 2, 0]]])
    with pytest.warns(NonFiniteDoseRateWarning, match=r"liver \(1 voxels\)"):
        table = voi_metrics(dose_rate, labels, {1: "liver", 2: "spleen"}, (1, 1, 1)).set_index("voi")
    assert table.loc["liver", "volume_ml"] == pytest.approx(0.002)
    assert table.loc["liver"].drop("volume_ml").isna().all()
    assert table.loc["spleen", "mean"] == 3.5 and table.loc["spleen", "dr90"] == 3.0


def test_nan_outside_every_voi_is_ignored():
    dose_rate = np.array([[[np.nan, 2.0, 4.0]]])
    labels = np.array([[[0, 1, 1]]])
    table = voi_metrics(dose_rate, labels, {1: "liver"}, (1, 1, 1))
    assert table.loc[0, "mean"] == 3.0


@pytest.mark.parametrize(
    ("labels", "names", "message"),
    [
        (np.array([[[1, 3]]]), {1: "liver"}, r"labels \[3\] occur in the label map but have no VOI name"),
        (np.array([[[1.0, 0.0]]]), {1: "liver"}, "integer map"),
        (np.array([[[1, -1]]]), {1: "liver"}, "negative"),
        (np.array([[[1, 0]]]), {"x": "liver"}, "label value .x. of .liver. is not an integer"),
        (np.array([[[1, 0, 0]]]), {1: "liver"}, r"shape \(1, 1, 2\) but the label map has shape \(1, 1, 3\)"),
    ],
)
def test_bad_labels_are_clear_errors(labels, names, message):
    with pytest.raises(ValueError, match=message):
        voi_metrics(np.ones((1, 1, 2)), labels, names, (1, 1, 1))


def test_lazy_inputs_give_the_same_table(rng):
    dose_rate, labels, names = random_scan(rng)
    eager = voi_metrics(dose_rate, labels, names, SPACING)
    lazy = voi_metrics(
        xr.DataArray(da.from_array(dose_rate, chunks=(4, 10, 9)), dims=("z", "y", "x")),
        da.from_array(labels, chunks=(6, 20, 18)),
        names,
        SPACING,
    )
    pd.testing.assert_frame_equal(eager, lazy)


def test_drvh_agrees_with_counting_and_with_drx(rng):
    dose_rate, labels, names = random_scan(rng)
    curves = drvh(dose_rate, labels, names)
    levels = curves.dose_rate.values
    table = voi_metrics(dose_rate, labels, names, SPACING).set_index("voi")
    for voi in ("voi_1", "voi_6", "voi_9"):
        values = dose_rate[labels == int(voi.split("_")[1])]
        expected = np.array([(values >= level).mean() for level in levels])
        np.testing.assert_allclose(curves.sel(voi=voi).values, expected, rtol=0, atol=1e-15)
        # At the DRx level itself at least x % of the volume receives it; at the next voxel value above, less.
        for x in DR_PERCENTS:
            at_drx = drvh(dose_rate, labels, names, [table.loc[voi, f"dr{x}"]]).sel(voi=voi).item()
            assert at_drx >= x / 100
            above = np.sort(values[values > table.loc[voi, f"dr{x}"]])
            if above.size:
                assert drvh(dose_rate, labels, names, [above[0]]).sel(voi=voi).item() < x / 100
    assert np.isnan(curves.sel(voi="voi_4")).all()  # empty VOI


def test_voi_concordance_matches_scipy_and_the_scalar_functions(rng):
    reference, labels, names = random_scan(rng)
    estimate = (0.9 * reference + rng.normal(0, 2e-7, reference.shape)).astype(np.float32)
    table = voi_concordance(estimate, reference, labels, names).set_index("voi")
    for voi in ("voi_1", "voi_2", "voi_6"):
        mask = labels == int(voi.split("_")[1])
        a, b = estimate[mask].astype(np.float64), reference[mask].astype(np.float64)
        row = table.loc[voi]
        assert row.n_voxels == mask.sum()
        assert row.pearson_r2 == pytest.approx(scipy.stats.pearsonr(a, b).statistic ** 2, rel=1e-9)
        assert row.ccc == pytest.approx(lins_ccc(a, b), rel=1e-9)
        fit = scipy.stats.linregress(b, a)
        assert row.slope == pytest.approx(fit.slope, rel=1e-9)
        assert row.intercept == pytest.approx(fit.intercept, rel=1e-6, abs=1e-15)
        assert row.nrmse == pytest.approx(nrmse(estimate, reference, mask), rel=1e-9)
        assert row.mean_error == pytest.approx(mean_error(estimate, reference, mask), rel=1e-9)
    # One voxel: no variance, so R^2 and slope are undefined (NaN); the empty VOI is NaN throughout.
    assert np.isnan(table.loc["voi_9", "pearson_r2"]) and np.isnan(table.loc["voi_9", "slope"])
    assert table.loc["voi_4", "n_voxels"] == 0 and table.loc["voi_4"].iloc[1:].isna().all()


def test_lins_ccc_is_the_textbook_formula_and_its_limits(rng):
    a = rng.normal(5, 2, 500)
    b = 0.8 * a + rng.normal(1, 0.5, 500)
    # Lin (1989), eq. (3) with sample moments in 1/n form.
    s_ab = np.sum((a - a.mean()) * (b - b.mean())) / a.size
    textbook = 2 * s_ab / (a.var() + b.var() + (a.mean() - b.mean()) ** 2)
    assert lins_ccc(a, b) == pytest.approx(textbook, rel=1e-12)
    assert lins_ccc(a, a) == pytest.approx(1.0)
    assert lins_ccc(a, -a + 2 * a.mean()) == pytest.approx(-1.0)  # perfect anti-concordance about the same mean
    assert lins_ccc(a, a + 1) < pearson_r2(a, a + 1) ** 0.5  # a location shift lowers CCC, not Pearson's r


def test_pearson_r2_matches_scipy_and_hand_cases(rng):
    a, b = rng.normal(size=200), rng.normal(size=200)
    assert pearson_r2(a, b) == pytest.approx(scipy.stats.pearsonr(a, b).statistic ** 2, rel=1e-12)
    assert pearson_r2([1, 2, 3], [2, 4, 6]) == pytest.approx(1.0)
    assert pearson_r2([1, 2, 3], [1, 3, 2]) == pytest.approx(0.25)  # r = 0.5 by hand
    assert np.isnan(pearson_r2([1, 2, 3], [4, 4, 4]))
    with pytest.raises(ValueError, match="at least 2"):
        pearson_r2([1.0], [2.0])


def test_concordance_slope_and_intercept_recover_a_line(rng):
    b = rng.uniform(0, 1, 100)
    result = concordance(3.0 * b + 0.5, b)
    assert result["slope"] == pytest.approx(3.0) and result["intercept"] == pytest.approx(0.5)
    assert result["pearson_r2"] == pytest.approx(1.0) and result["n"] == 100


def test_nrmse_and_mean_error_hand_worked():
    ref = np.array([1.0, 2.0, 3.0, 4.0])
    est = np.array([2.0, 2.0, 3.0, 3.0])
    mask = np.array([True, True, True, False])
    # Over the first three: squared errors 1, 0, 0 -> sqrt(1/3) / sqrt(14/3) = 1/sqrt(14).
    assert nrmse(est, ref, mask) == pytest.approx(1 / np.sqrt(14))
    # Means 7/3 vs 2: |7/3 - 2| / 2 = 1/6.
    assert mean_error(est, ref, mask) == pytest.approx(1 / 6)
    assert nrmse(ref, ref) == 0 and mean_error(ref, ref) == 0
    with pytest.raises(ValueError, match="selects no voxels"):
        nrmse(est, ref, np.zeros(4, bool))
    assert np.isnan(nrmse(np.array([np.nan, 1.0]), np.array([1.0, 1.0])))


def test_ensemble_noise_hand_worked_and_against_known_noise(rng):
    # Two realisations of two voxels: var (ddof=1) per voxel 2 and 0 -> sqrt(1) / mean 2.5 = 40 %.
    realisations = np.array([[1.0, 3.0], [3.0, 3.0]])
    assert ensemble_noise(realisations) == pytest.approx(40.0)
    # 400 realisations of Gaussian noise with 5 % relative sd around 10: the estimate lands near 5 %.
    mean_map = np.full((4, 5, 6), 10.0)
    noisy = mean_map + rng.normal(0, 0.5, size=(400, 4, 5, 6))
    mask = np.zeros((4, 5, 6), bool)
    mask[1:3] = True
    assert ensemble_noise(noisy, mask) == pytest.approx(5.0, rel=0.03)
    with pytest.raises(ValueError, match="at least 2 realisations"):
        ensemble_noise(noisy[:1])


def test_joint_histogram_counts_every_masked_pair(rng):
    a, b = rng.uniform(0, 1, (3, 4, 5)), rng.uniform(0, 1, (3, 4, 5))
    mask = a > 0.3
    counts, edges_a, edges_b = joint_histogram(a, b, mask, bins=4, range=[[0, 1], [0, 1]])
    assert counts.sum() == mask.sum()
    i = np.minimum((a[mask] * 4).astype(int), 3)
    j = np.minimum((b[mask] * 4).astype(int), 3)
    expected = np.zeros((4, 4), int)
    np.add.at(expected, (i, j), 1)
    np.testing.assert_array_equal(counts, expected)
    np.testing.assert_allclose(edges_a, np.linspace(0, 1, 5))


def test_overlapping_vois_are_each_measured_over_all_their_voxels(rng):
    """Three seeded random VOIs that overlap anywhere, stored as regions (one value per combination of VOIs)."""
    from cohort_dosimetry.stats import VoiIndex

    shape = (10, 14, 12)
    masks = {"external": rng.random(shape) < 0.8, "liver": rng.random(shape) < 0.3, "lesion_1": rng.random(shape) < 0.1}
    bits = sum((mask.astype(np.int16) << k) for k, mask in enumerate(masks.values()))  # 0..7, 0 = no VOI
    regions = [v for v in range(1, 8) if (bits == v).any()]
    vois = {name: [v for v in regions if v >> k & 1] for k, name in enumerate(masks)}
    vois["liver_healthy"] = [v for v in vois["liver"] if not v >> 2 & 1]  # liver minus the lesion: a derived VOI
    masks["liver_healthy"] = masks["liver"] & ~masks["lesion_1"]
    names = {str(v): f"region {v}" for v in regions}  # zarr attributes give string keys
    dose_rate = rng.gamma(2.0, 1e-6, size=shape).astype(np.float32)
    index = VoiIndex(bits, names, vois)
    assert index.names == list(vois) and index.labels is None
    table = voi_metrics(dose_rate, None, {}, SPACING, index=index).set_index("voi")
    voxel_ml = np.prod(SPACING) / 1000
    for name, mask in masks.items():
        values = dose_rate[mask].astype(np.float64)
        row = table.loc[name]
        assert row["volume_ml"] == pytest.approx(values.size * voxel_ml)
        assert row["mean"] == pytest.approx(values.mean(), rel=1e-12)
        assert row["median"] == np.median(values)
        assert row["max"] == values.max()
        for x in DR_PERCENTS:
            assert row[f"dr{x}"] == drx_by_definition(values, x)
        np.testing.assert_array_equal(index.mask([name]), mask)
    np.testing.assert_array_equal(index.mask(["liver", "lesion_1"]), masks["liver"] | masks["lesion_1"])
    estimate = dose_rate * rng.uniform(0.8, 1.2, shape).astype(np.float32)
    agreement = voi_concordance(estimate, dose_rate, None, {}, index=index).set_index("voi")
    for name, mask in masks.items():
        assert agreement.loc[name, "n_voxels"] == mask.sum()
        assert agreement.loc[name, "pearson_r2"] == pytest.approx(pearson_r2(estimate[mask], dose_rate[mask]))
    curves = drvh(dose_rate, None, {}, np.array([0.0, 2e-6, 4e-6]), index=index)
    for name, mask in masks.items():
        expected = [(dose_rate[mask] >= level).mean() for level in (0.0, 2e-6, 4e-6)]
        np.testing.assert_allclose(curves.sel(voi=name).values, expected)
    with pytest.raises(ValueError, match=r"regions \[1\] belong to no VOI"):
        VoiIndex(bits, names, {name: [v for v in values if v != 1] for name, values in vois.items()})
