"""The regenerating validation (cohort_dosimetry.validation): the kernel, homogeneous-limit and motion sections at
the smallest size, written to a folder and read back from it."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cohort_dosimetry.cli import build_parser
from cohort_dosimetry.phantoms import make_virtual_patient, move_patient
from cohort_dosimetry.registration import contour_dice
from cohort_dosimetry.validation import (
    LANCONELLI_2012_LU177_SOFT,
    MOTION_LESION_MIN_ML,
    MOTION_METHODS,
    SIZES,
    _true_motion,
    validate_science,
)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    out = tmp_path_factory.mktemp("validation")
    results = validate_science(out, size="tiny", sections=("kernels", "homogeneous"), device="cpu", log=lambda s: None)
    return out, results


def test_writes_readme_tables_and_figures(tiny):
    out, results = tiny
    for name in (
        "README.md",
        "sections/kernels.md",
        "sections/homogeneous.md",
        "kernels_s_values.csv",
        "kernels_electron_energy.csv",
        "homogeneous_limit.csv",
        "kernels_s_value_ratios.png",
    ):
        assert (out / name).stat().st_size > 0, name
    assert (out / "kernels_s_value_ratios.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    readme = (out / "README.md").read_text()
    assert "synthetic virtual" in readme and "Which emissions the kernels and the Monte Carlo include" in readme
    # every table says what was compared, size, seeds, device, date, software and wall time
    for field in (
        "*Compared:*",
        "*Size:* `tiny`",
        "*Seeds:*",
        "*Device:* cpu",
        "*Date:*",
        "*Software:* cohort-dosimetry",
        "*Wall time (section):*",
    ):
        assert readme.count(field) == 3, field
    assert set(results) == {"kernels", "homogeneous"} and all(r.wall_s > 0 for r in results.values())


def test_homogeneous_limit_is_met_within_its_statistical_tolerance(tiny):
    out, _ = tiny
    table = pd.read_csv(out / "homogeneous_limit.csv")
    mc = table[table["method"] == "MC"]
    assert set(mc["emissions"]) == {"electron", "beta"}
    assert (mc["sigma_ratio"] > 0).all() and (mc["sigma_ratio"] < 0.01).all()
    # allowed deviation = 3 standard errors + the stated systematic; the ratio is recomputed from the columns
    np.testing.assert_allclose(
        table["ratio"], table["measured_kev_per_decay"] / table["expected_kev_per_decay"], rtol=1e-5
    )
    assert ((table["ratio"] - 1).abs() <= table["allowed_deviation"]).all() and table["within"].all()
    dvk_total = table[(table["method"] == "DVK") & (table["emissions"] == "electron+photon")].iloc[0]
    # the DVK's truncated photon reach shows as a deficit against full equilibrium, not hidden
    assert 0.8 < dvk_total["ratio_to_equilibrium"] < 0.95


def test_like_with_like_s_value_ratio_comes_from_the_data(tiny):
    out, results = tiny
    table = pd.read_csv(out / "kernels_s_values.csv", dtype={"offset": str})
    centre = table[table["offset"] == "000"].iloc[0]
    assert centre["voxel_mm"] == 4.8 and centre["published"] == LANCONELLI_2012_LU177_SOFT[4.8][0] == 0.178
    like = centre["ours_beta_spectrum"] / centre["published"]
    assert centre["ratio_beta_spectrum"] == pytest.approx(like, rel=1e-5)
    assert results["kernels"].numbers["ratio_beta_spectrum_s000"][4.8] == pytest.approx(like, rel=1e-5)
    # the two sources differ by about the electron energy ratio 147.9 / 133.3 keV; the like-with-like one is closer
    full = centre["ratio_all_electrons"]
    assert full / like == pytest.approx(1.11, rel=0.02)
    assert abs(like - 1) < abs(full - 1)
    energy = pd.read_csv(out / "kernels_electron_energy.csv").iloc[0]
    assert energy["ours_beta_spectrum_kev"] == pytest.approx(energy["icrp107_beta_kev"], rel=0.01)
    assert energy["ours_all_electrons_kev"] == pytest.approx(energy["icrp107_all_electrons_kev"], rel=0.01)


def test_command_and_sizes():
    argv = ["validate-science", "--size", "quick", "--sections", "kernels"]
    args = build_parser(argv).parse_args(argv)
    assert args.size == "quick" and args.sections == ["kernels"] and args.out == "docs/validation"
    with pytest.raises(SystemExit):  # the smoke-test size is the library's, not the command's
        build_parser(["validate-science"]).parse_args(["validate-science", "--size", "tiny"])
    assert set(SIZES["full"].kernel_voxels_mm) == set(LANCONELLI_2012_LU177_SOFT)
    with pytest.raises(ValueError, match="sections"):
        validate_science("unused", size="tiny", sections=("bogus",))


def test_a_run_of_some_sections_keeps_the_others_evidence(tiny):
    out, _ = tiny
    validate_science(out, size="tiny", sections=("homogeneous",), device="cpu", log=lambda s: None)
    readme = (out / "README.md").read_text()
    assert "## 1. Kernels against published voxel S-values" in readme and "## 2. The homogeneous limit" in readme
    assert "latest run: sections homogeneous" in readme


# ------------------------------------------------------------------------------------------------ motion section
@pytest.fixture(scope="module")
def motion(tmp_path_factory):
    out = tmp_path_factory.mktemp("validation_motion")
    results = validate_science(out, size="tiny", sections=("motion",), device="cpu", log=lambda s: None)
    return out, results["motion"]


def test_motion_section_separates_registration_from_resampling(motion):
    """One moving virtual patient (seed 67) on a 40 x 48 x 64 grid of 6 x 6.5 x 6.5 mm, scans at 4, 24, 96 h.
    Measured: TRE 0.7-0.9 mm mean registered, 16 mm without; over the kidneys and lesions >= 15 mL the mean |error| of
    the VOI mean absorbed dose is 29 % without registration, 11 % registered (linear warp), 11 % with the true motion
    (linear) and 7 % with B-spline warps: on this coarse grid resampling, not registration, dominates."""
    out, result = motion
    for name in ("motion_acceptance.csv", "motion_summary.csv", "motion_registration.csv", "motion_per_voi.csv"):
        assert (out / name).stat().st_size > 0, name
    assert (out / "motion.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    readme = (out / "README.md").read_text()
    assert "## 5. Registration and voxel integration" in readme and "synthetic virtual" in readme
    per_voi = pd.read_csv(out / "motion_per_voi.csv")
    for method in MOTION_METHODS:  # every error is the ratio of its own columns (the CSV keeps 6 significant digits)
        np.testing.assert_allclose(
            per_voi[f"{method}_error"], per_voi[f"{method}_gy"] / per_voi["truth_gy"] - 1, rtol=1e-4, atol=2e-5
        )
    kidneys = per_voi["voi_class"] == "kidney"
    expected = kidneys | ((per_voi["voi_class"] == "lesion") & (per_voi["volume_ml"] >= MOTION_LESION_MIN_ML))
    assert (per_voi["acceptance"] == expected).all() and kidneys.sum() == 2 and expected.sum() > 2
    accepted = per_voi[expected]
    # registration recovers most of what no registration loses, and stays close to the true motion (the same Monte
    # Carlo runs are warped, so their noise cancels in that difference)
    assert accepted["registered_linear_error"].abs().mean() < 0.6 * accepted["none_error"].abs().mean()
    assert (accepted["registered_linear_error"] - accepted["true_motion_linear_error"]).abs().max() < 0.05
    # cubic B-spline interpolation spreads a hot organ less than linear interpolation
    kidney = per_voi[kidneys]
    assert (kidney["true_motion_bspline_error"].abs() < kidney["true_motion_linear_error"].abs()).all()
    assert (kidney["mc_rel_uncertainty_max"] < 0.03).all()
    registration = pd.read_csv(out / "motion_registration.csv")
    assert len(registration) == 2 and (registration["tre_mean_mm"] < registration["tre_none_mean_mm"] / 5).all()
    for organ in ("kidney_left", "kidney_right", "spleen"):
        assert (registration[f"dice_{organ}"] > registration[f"dice_none_{organ}"]).all(), organ
    assert result.numbers["registration_settings"] and set(result.numbers["passed"]) == set(MOTION_METHODS)


def test_true_motion_warp_brings_the_moved_labels_back():
    """The section's true-motion transform against move_patient's own truth: warping a moved time point's labels
    with it restores the reference organs, and its Jacobian determinant matches the drawn field's smallest one."""
    grid = SIZES["tiny"].motion_grid
    patient = make_virtual_patient(68, grid, hours=(4.0, 24.0), device="cpu")
    moved = move_patient(patient, seed=68)
    result = _true_motion(moved, 1, grid)
    back = contour_dice(patient["labels"].values, moved["labels"].values[1], result)
    before = contour_dice(patient["labels"].values, moved["labels"].values[1])
    for organ in ("liver", "kidney_left", "kidney_right", "spleen"):
        assert back[organ] > 0.93 and back[organ] > before[organ] + 0.05, (organ, back[organ], before[organ])
    assert float(result.jacobian.min()) == pytest.approx(float(moved["jacobian_min"].values[1]), abs=0.03)
