"""Virtual-patient anatomy, label vocabulary and kinetics (synthetic patients on small grids)."""

from __future__ import annotations

import numpy as np
import pytest

from cohort_dosimetry.grid import GRIDS, Grid
from cohort_dosimetry.phantoms import activity_true, compartment_activity_bq, cumulated_activity_bq_s, make_anatomy
from cohort_dosimetry.physics import nuclide
from cohort_dosimetry.vocabulary import LESION_LABEL_OFFSET, VOI_NAMES, label_of, name_of, voi_type

# same 390 x 500 x 500 mm field of view as the compact grid, half the voxels per axis
SMALL = Grid((65, 64, 64), (6.0, 7.82, 7.82))


@pytest.fixture(scope="module")
def anatomies():
    return {seed: make_anatomy(seed, SMALL) for seed in (3, 4, 5)}


def test_vocabulary_classes_and_labels_round_trip():
    expected = {
        "body": "body",
        "lung_left": "lung",
        "lung_right": "lung",
        "liver": "liver",
        "kidney_left": "kidney",
        "kidney_right": "kidney",
        "spleen": "spleen",
        "vertebra_L2": "vertebra",
        "vertebra_L5": "vertebra",
        "lesion_1": "lesion",
        "lesion_12": "lesion",
    }
    for name, cls in expected.items():
        assert voi_type(name) == cls
        assert name_of(label_of(name)) == name
    labels = [label_of(n) for n in VOI_NAMES]
    assert len(set(labels)) == len(labels) and 0 not in labels
    assert label_of("lesion_3") == LESION_LABEL_OFFSET + 3
    for other in ("kidney", "lesion_0", "Liver", "vertebra_L6", "Bowel_Bag"):
        assert voi_type(other) == "other"  # outside the vocabulary (exactly as written): a VOI of class other
    assert (voi_type("external"), voi_type("vertebra_L1"), voi_type("liver_healthy")) == ("body", "vertebra", "liver")
    for unlabelled in ("kidney", "lesion_0", "Liver", "vertebra_L1", "external"):  # no fixed label of a phantom
        with pytest.raises(ValueError, match=unlabelled):
            label_of(unlabelled)


def test_grids_and_bad_grid_name():
    assert GRIDS["compact"] == Grid((130, 128, 128), (3.0, 3.91, 3.91))
    assert GRIDS["paper"] == Grid((130, 512, 512), (3.0, 0.98, 0.98))
    with pytest.raises(ValueError, match="seed 0: unknown grid 'huge'"):
        make_anatomy(0, "huge")


def test_labels_use_the_vocabulary_and_cover_every_organ(anatomies):
    for seed, anatomy in anatomies.items():
        labels = anatomy["labels"].values
        names = anatomy["labels"].attrs["names"]
        assert set(np.unique(labels)) - {0} == set(names)
        for label, name in names.items():
            assert label_of(name) == label
        organs = {
            "body",
            "lung_left",
            "lung_right",
            "liver",
            "kidney_left",
            "kidney_right",
            "spleen",
            "vertebra_L2",
            "vertebra_L3",
            "vertebra_L4",
            "vertebra_L5",
        }
        assert organs <= set(names.values()), f"seed {seed} misses {organs - set(names.values())}"
        lesions = [n for n in names.values() if voi_type(n) == "lesion"]
        assert 1 <= len(lesions) <= 6


def test_ct_numbers_of_tissues(anatomies):
    for anatomy in anatomies.values():
        hu = anatomy["ct_hu"].values.astype(float)
        labels = anatomy["labels"].values
        names = {v: k for k, v in anatomy["labels"].attrs["names"].items()}
        lung = np.isin(labels, [names["lung_left"], names["lung_right"]])
        assert -850 <= np.median(hu[lung]) <= -700
        bone = np.isin(labels, [names[f"vertebra_L{k}"] for k in range(2, 6)])
        assert 250 <= np.median(hu[bone]) <= 750
        assert abs(np.median(hu[labels == names["liver"]]) - 60) < 25
        assert (hu[labels == 0] < -900).mean() > 0.99  # air outside the body
        # density follows the CT through the Li et al. curve
        assert np.allclose(
            anatomy["density"].values[labels == names["liver"]].mean(),
            0.00069 * hu[labels == names["liver"]].mean() + 1.03107,
            atol=0.01,
        )


def test_anatomy_is_deterministic_and_varies_with_seed(anatomies):
    again = make_anatomy(3, SMALL)
    for name in ("ct_hu", "labels", "compartments", "fraction", "effective_half_life_h"):
        np.testing.assert_array_equal(again[name].values, anatomies[3][name].values)
    a, b = anatomies[3], anatomies[4]
    assert not np.array_equal(a["labels"].values, b["labels"].values)
    volumes = [(x["labels"].values == label_of("liver")).sum() for x in anatomies.values()]
    assert len(set(volumes)) == 3, "liver size must vary with the seed"


def test_compartments_are_unit_sum_textured_shapes(anatomies):
    anatomy = anatomies[4]
    shapes = anatomy["compartments"].values
    assert shapes.min() >= 0
    np.testing.assert_allclose(shapes.sum(axis=(1, 2, 3)), 1.0, rtol=1e-5)
    compartments = list(anatomy["compartment"].values)
    for required in ("blood", "remainder", "liver", "spleen", "kidney_cortex", "kidney_medulla", "red_marrow"):
        assert required in compartments
    liver = shapes[compartments.index("liver")]
    inside = liver[liver > 0]
    assert inside.std() / inside.mean() > 0.1, "organ uptake must be textured, not a flat fill"
    cortex = shapes[compartments.index("kidney_cortex")].sum(axis=0)
    medulla = shapes[compartments.index("kidney_medulla")].sum(axis=0)
    assert cortex.sum() > 0 and medulla.sum() > 0


def test_activity_true_conserves_compartment_activity(anatomies):
    anatomy = anatomies[5]
    hours = [1.0, 4.0, 24.0, 168.0]
    truth = activity_true(anatomy, hours)
    assert truth.dims == ("timepoint", "z", "y", "x") and truth.attrs["units"] == "Bq/mL"
    voxel_ml = np.prod(anatomy.attrs["spacing_mm"]) / 1000.0
    total = truth.values.sum(axis=(1, 2, 3), dtype=np.float64) * voxel_ml
    expected = compartment_activity_bq(anatomy, hours).values.sum(axis=1)
    np.testing.assert_allclose(total, expected, rtol=1e-4)
    assert total.max() < anatomy.attrs["administered_activity_bq"]


def test_kinetics_reproduce_configured_half_lives_per_voi(anatomies):
    """Fit the late washout of the activity in each kidney and lesion VOI; integrate it over time."""
    anatomy = anatomies[3]
    labels = anatomy["labels"].values
    hours = np.linspace(300.0, 900.0, 7)  # uptake phases (half-lives <= 48 h) and blood have died away
    truth = activity_true(anatomy, hours).values
    voxel_ml = np.prod(anatomy.attrs["spacing_mm"]) / 1000.0
    compartments = list(anatomy["compartment"].values)
    checked = 0
    for label, name in anatomy["labels"].attrs["names"].items():
        if voi_type(name) not in ("kidney", "lesion"):
            continue
        key = "kidney_cortex" if voi_type(name) == "kidney" else name
        configured = float(anatomy["effective_half_life_h"].values[compartments.index(key)])
        voi_bq = truth[:, labels == label].sum(axis=1, dtype=np.float64) * voxel_ml
        slope = np.polyfit(hours, np.log(voi_bq), 1)[0]
        assert np.log(2) / -slope == pytest.approx(configured, rel=0.01), name
        checked += 1
    assert checked >= 3
    # time integral of the whole-body activity: trapezoid over a fine time grid vs the analytic integral
    t = np.concatenate([np.linspace(0, 2, 401), np.linspace(2.01, 5000, 20000)])
    per_compartment = compartment_activity_bq(anatomy, t).values
    numeric = np.trapezoid(per_compartment, t * 3600.0, axis=0)
    np.testing.assert_allclose(numeric, cumulated_activity_bq_s(anatomy).values, rtol=2e-3)


def test_kinetics_follow_published_ranges_and_physical_decay(anatomies):
    physical_h = nuclide("Lu177").half_life_s / 3600.0
    for anatomy in anatomies.values():
        assert anatomy.attrs["physical_half_life_h"] == pytest.approx(physical_h)
        eff = dict(zip(anatomy["compartment"].values, anatomy["effective_half_life_h"].values))
        assert 40 <= eff["kidney_cortex"] <= 60
        for name, value in eff.items():
            assert value < physical_h
            if name.startswith("lesion_"):  # lesions and their necrotic cores share the lesion's washout
                assert 60 <= value <= 110
        # a compartment decays no slower than physical decay: A(t2)/A(t1) <= exp(-lambda_p (t2 - t1)) late
        late = compartment_activity_bq(anatomy, [200.0, 400.0]).values
        assert np.all(late[1] / late[0] <= np.exp(-np.log(2) / physical_h * 200.0) * (1 + 1e-9))
