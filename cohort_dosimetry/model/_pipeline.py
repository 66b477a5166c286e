"""From nothing to weights + model card: virtual-patient data, normalisation, fitting, validation metrics.

Synthetic virtual patients stand in for patient data throughout; the model card says so.
"""
from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import numpy as np

from cohort_dosimetry.model._card import ModelCard, save_model
from cohort_dosimetry.model._dataset import DataSpec, make_patient_data, patient_scans
from cohort_dosimetry.model._training import FitConfig, fit, normalisation_constants, training_volume
from cohort_dosimetry.physics import ENGINE_VERSION

CARD_NAME = "dblurdosenet_compact.json"


def train_model(
    out_dir: str | Path,
    train_seeds,
    validation_seeds,
    test_seeds,
    spec: DataSpec,
    config: FitConfig,
    device=None,
    note: str = "",
    log=print,
) -> Path:
    """Simulate the patients (reusing prepared ones), fit (resuming a checkpoint), write weights + card.

    ``out_dir`` receives ``data/`` (per-patient arrays), ``checkpoints/``, the card ``dblurdosenet_compact.json``
    with its ``.safetensors`` and ``training_report.json`` (seconds per stage). ``test_seeds`` are only recorded on
    the card as held out for ``cohort-dosimetry evaluate``. Returns the card's path.
    """
    out_dir = Path(out_dir)
    overlap = set(train_seeds) & set(validation_seeds) | set(train_seeds) & set(test_seeds) \
        | set(validation_seeds) & set(test_seeds)
    if overlap:
        raise ValueError(f"patients {sorted(overlap)} appear in more than one of train/validation/test")
    data_dir = out_dir / "data"
    seconds = {}
    tic = time.perf_counter()
    metas = [make_patient_data(data_dir, s, spec, device=device, log=log) for s in [*train_seeds, *validation_seeds]]
    seconds["data"] = time.perf_counter() - tic
    stage_seconds = {k: float(sum(m["seconds"][k] for m in metas)) for k in metas[0]["seconds"]}

    train_scans = patient_scans(data_dir, train_seeds, spec)
    validation_scans = patient_scans(data_dir, validation_seeds, spec)
    spect_scale, dose_rate_scale = normalisation_constants(train_scans)
    log(f"normalisation: spect_scale {spect_scale:g}, dose_rate_scale {dose_rate_scale:g} Bq s/Gy")
    train = [training_volume(s, spect_scale, dose_rate_scale) for s in train_scans]
    validation = [training_volume(s, spect_scale, dose_rate_scale) for s in validation_scans]

    tic = time.perf_counter()
    model, history = fit(train, validation, config, out_dir / "checkpoints", log=log)
    seconds["fit"] = time.perf_counter() - tic
    del train, validation

    uncertainties = [u for m in metas for u in m["label_median_relative_uncertainty_in_organs"]]
    card = ModelCard(
        spacing_mm=tuple(metas[0]["spacing_mm"]),
        spect_scale=spect_scale,
        dose_rate_scale=dose_rate_scale,
        training_data={
            "description": "synthetic virtual patients (cohort_dosimetry.phantoms.make_virtual_patient); "
                           "no patient data",
            "train_seeds": list(train_seeds), "validation_seeds": list(validation_seeds),
            "held_out_test_seeds": list(test_seeds), "split": "by patient",
            "grid": spec.grid, "hours_post_injection": list(spec.hours), "noise_realisations": spec.realisations,
            "spect_model": spec.spect,
            "inputs": "reconstructed SPECT (Bq per voxel) and density (g/cm3) on the dose grid; prior: DVK of the SPECT",
            "label": "MC dose-rate of the TRUE activity (cohort_dosimetry.physics.dose_rate_mc), run once per kinetic "
                     "compartment and combined linearly per time point",
            "mc_engine_version": ENGINE_VERSION,
            "mc_spec": {k: v for k, v in dataclasses.asdict(spec).items() if k.startswith("mc_")},
            "mc_decays_per_compartment": {str(m["seed"]): m["mc_decays"] for m in metas},
            "label_median_relative_uncertainty_in_organ_voxels": {
                "max": float(max(uncertainties)), "median": float(np.median(uncertainties))},
            "n_training_scans": len(train_scans), "n_validation_scans": len(validation_scans),
        },
        training={**dataclasses.asdict(config), "optimiser": "Adam", "scheduler": "ReduceLROnPlateau(validation loss)",
                  "loss": "body-weighted MSE (0.7 inside the body, 0.3 outside)", "device": str(device or "auto"),
                  "epochs_run": len(history), "note": note},
        validation_metrics={"validation_loss_best": float(min(h["validation_loss"] for h in history)),
                            "history": history},
    )
    card_path = save_model(model, card, out_dir / CARD_NAME)
    tic = time.perf_counter()
    metrics = validation_voi_errors(card_path, data_dir, validation_seeds, spec, device=device)
    seconds["validation_metrics"] = time.perf_counter() - tic
    card = dataclasses.replace(card, validation_metrics={**card.validation_metrics, "per_voi_class": metrics})
    card_path = save_model(model, card, card_path)
    report = {"seconds": {**seconds, "data_stages": stage_seconds}, "card": str(card_path)}
    (out_dir / "training_report.json").write_text(json.dumps(report, indent=2) + "\n")
    log(json.dumps(report))
    return card_path


def validation_voi_errors(card_path, data_dir, seeds, spec: DataSpec, device=None) -> dict:
    """Mean over the validation scans of noise realisation 0 of the per-VOI-class mean dose-rate error and NRMSE (vs
    the MC label) of DVK and CNN; computed through ``dose_rates`` with the written card."""
    from cohort_dosimetry.model._evaluation import scan_errors

    rows = []
    for scan in patient_scans(data_dir, seeds, spec):
        if scan.realisation == 0:
            rows += scan_errors(scan, card_path, methods=("dvk", "cnn"), device=device)
    table = {}
    for row in rows:
        table.setdefault((row["method"], row["voi_class"]), []).append(row)
    return {f"{method}/{voi_class}": {"mean_error": float(np.mean([r["mean_error"] for r in group])),
                                      "nrmse": float(np.mean([r["nrmse"] for r in group]))}
            for (method, voi_class), group in sorted(table.items())}
