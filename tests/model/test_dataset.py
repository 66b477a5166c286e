"""Training data of one compact virtual patient (synthetic) at tiny Monte Carlo statistics: labels are the kinetic
combination of the per-compartment MC maps, decays follow the allocation rule, a prepared patient is reused."""
import dataclasses
import json

import numpy as np
import pytest

from cohort_dosimetry.model._dataset import DataSpec, make_patient_data, organ_mask, patient_dir
from cohort_dosimetry.phantoms import compartment_activity_bq, make_anatomy

SPEC = DataSpec(hours=(4.0, 96.0), realisations=1, mc_decays_per_voxel=2.0, mc_decays_per_activity_share=2e6,
                mc_min_decays=20_000, mc_max_decays=400_000, mc_photon_fraction=0.5)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    data = tmp_path_factory.mktemp("data")
    return data, make_patient_data(data, 3, SPEC, device="cpu", log=lambda s: None)


def test_labels_are_the_kinetic_combination_of_compartment_maps(prepared):
    data, meta = prepared
    out = patient_dir(data, 3)
    anatomy = make_anatomy(3, "compact")
    activity = compartment_activity_bq(anatomy, list(SPEC.hours)).values  # (timepoint, compartment) Bq
    mc = np.load(out / "mc_per_bq.npy")
    assert mc.shape[0] == len(meta["compartments"]) == activity.shape[1]
    for t in range(len(SPEC.hours)):
        label = np.load(out / f"label_t{t}.npy")
        expected = np.einsum("c,czyx->zyx", activity[t].astype(np.float64), mc.astype(np.float64))
        np.testing.assert_allclose(label, expected, rtol=1e-5, atol=1e-6 * expected.max())
    organ = organ_mask(np.load(out / "labels.npy"), anatomy["labels"].attrs["names"])
    u = np.load(out / "label_uncertainty_t0.npy")
    assert meta["label_median_relative_uncertainty_in_organs"][0] == pytest.approx(float(np.median(u[organ])))


def test_decays_follow_the_allocation_rule(prepared):
    _, meta = prepared
    anatomy = make_anatomy(3, "compact")
    activity = compartment_activity_bq(anatomy, list(SPEC.hours)).values
    share = (activity / activity.sum(axis=1, keepdims=True)).max(axis=0)
    support = np.count_nonzero(anatomy["compartments"].values.reshape(len(share), -1), axis=1)
    for c, decays in enumerate(meta["mc_decays"]):
        wanted = max(SPEC.mc_decays_per_voxel * support[c], SPEC.mc_decays_per_activity_share * share[c])
        assert decays["electron"] == int(np.clip(wanted, SPEC.mc_min_decays, SPEC.mc_max_decays))
        assert decays["photon"] == max(int(decays["electron"] * SPEC.mc_photon_fraction), SPEC.mc_min_decays)
    # the hot lesion of this patient gets decays for its activity share, not for its few voxels
    lesion = meta["compartments"].index("lesion_1")
    assert meta["mc_decays"][lesion]["electron"] > SPEC.mc_decays_per_voxel * support[lesion]


def test_prepared_patient_is_reused_and_a_changed_spec_refused(prepared):
    data, meta = prepared
    mtime = (patient_dir(data, 3) / "label_t0.npy").stat().st_mtime_ns
    assert make_patient_data(data, 3, SPEC, device="cpu", log=lambda s: None) == meta
    assert (patient_dir(data, 3) / "label_t0.npy").stat().st_mtime_ns == mtime
    with pytest.raises(ValueError, match="another specification"):
        make_patient_data(data, 3, DataSpec(hours=(4.0,)), device="cpu")
    assert json.loads((patient_dir(data, 3) / "patient.json").read_text())["synthetic"] is True


def test_data_of_another_fast_model_calibration_are_refused(prepared, tmp_path):
    """A recalibrated fast SPECT model changes the scans without changing the DataSpec: old data must not be reused."""
    import shutil

    data, meta = prepared
    copy = tmp_path / "data"
    shutil.copytree(patient_dir(data, 3), patient_dir(copy, 3))
    constants = meta["spect_constants"]
    stale = {**meta, "spect_constants": {**constants, "resolution_fwhm_mm": constants["resolution_fwhm_mm"] + 1.0}}
    (patient_dir(copy, 3) / "patient.json").write_text(json.dumps(stale))
    with pytest.raises(ValueError, match="SPECT model constants"):
        make_patient_data(copy, 3, SPEC, device="cpu", log=lambda s: None)
    del stale["spect_constants"]  # fast-model data from before the constants were recorded
    (patient_dir(copy, 3) / "patient.json").write_text(json.dumps(stale))
    with pytest.raises(ValueError, match="SPECT model constants"):
        make_patient_data(copy, 3, SPEC, device="cpu", log=lambda s: None)


def test_mc_maps_are_reused_only_from_the_same_mc_settings(prepared, tmp_path):
    data, _ = prepared
    other = dataclasses.replace(SPEC, hours=(24.0,), mc_decays_per_voxel=3.0)
    with pytest.raises(ValueError, match="other MC settings.*mc_decays_per_voxel"):
        make_patient_data(tmp_path, 3, other, device="cpu", log=lambda s: None, mc_from=data)
    with pytest.raises(ValueError, match="no prepared patient"):
        make_patient_data(tmp_path, 4, SPEC, device="cpu", log=lambda s: None, mc_from=data)
