"""From nothing to weights + model card: virtual-patient data, normalisation, fitting, validation metrics.

Synthetic virtual patients stand in for patient data throughout; the model card says so.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path

import numpy as np
import torch

from cohort_dosimetry.model import ModelCard, save_model
from cohort_dosimetry.physics import ENGINE_VERSION, resolve_device
from cohort_dosimetry.training._dataset import DataSpec, PatientScan, make_patient_data, patient_scans
from cohort_dosimetry.training._fit import FitConfig, fit, normalisation_constants, training_volume

CARD_NAME = "dblurdosenet_compact.json"


@dataclasses.dataclass(frozen=True)
class FineTuning:
    """Stage 2 of training: fine-tune the stage-1 model on a mix of its training scans and scans of the same
    patients made with the ``spect`` model (PyTomography for the shipped weights), with ``config``'s loss.

    ``train_scans`` / ``validation_scans``: (seed, hours post injection) of those scans, one realisation each; their
    seeds must be training / validation patients. Their MC maps are reused from the stage-1 data. The few scans are
    repeated so that they carry the fraction ``share`` of the loss (0.5: both SPECT models weigh equally).
    """

    train_scans: tuple[tuple[int, float], ...]
    validation_scans: tuple[tuple[int, float], ...]
    config: FitConfig
    spect: str = "pytomography"
    share: float = 0.5

    def __post_init__(self):
        if not 0.0 < self.share < 1.0:
            raise ValueError(f"fine-tuning share must lie strictly between 0 and 1, got {self.share}")


#: The shipped weights' fine-tuning (``cohort-dosimetry train`` defaults): 17 PyTomography scans (about 3-9 min of CPU
#: each) of the 12 training patients, spread over the four time points, and one of the validation patient; each SPECT
#: model half the loss, 40 epochs at a quarter of stage 1's learning rate, VOI-balanced loss. On held-out virtual
#: patients this recipe met more accuracy checks than the same one with only the first 8 scans; its cost, held-out
#: accuracy and the alternatives measured against it: docs/model.md.
FINE_TUNING = FineTuning(
    train_scans=(
        (1, 4.0),
        (2, 24.0),
        (3, 96.0),
        (4, 168.0),
        (5, 24.0),
        (6, 168.0),
        (7, 4.0),
        (10, 96.0),
        (11, 4.0),
        (12, 24.0),
        (13, 96.0),
        (14, 168.0),
        (1, 96.0),
        (2, 168.0),
        (3, 4.0),
        (4, 24.0),
        (5, 168.0),
    ),
    validation_scans=((18, 96.0),),
    config=FitConfig(epochs=40, learning_rate=2.5e-4, voi_balance=True),
)


def train_model(
    out_dir: str | Path,
    train_seeds,
    validation_seeds,
    test_seeds,
    spec: DataSpec,
    config: FitConfig,
    fine_tuning: FineTuning | None = None,
    device=None,
    note: str = "",
    mc_from: str | Path | None = None,
    log=print,
) -> Path:
    """Simulate the patients (reusing prepared ones), fit (resuming a checkpoint), optionally fine-tune, write
    weights + card.

    ``out_dir`` receives ``data/`` (per-patient arrays), ``checkpoints/``, with ``fine_tuning``
    ``data_fine_tuning/`` and ``checkpoints_fine_tuning/``, the card ``dblurdosenet_compact.json`` with its
    ``.safetensors`` and ``training_report.json`` (seconds per stage of this invocation; the card's
    ``training["compute_seconds"]`` gives the whole run's, resumed invocations included). ``test_seeds`` are only
    recorded on the card as held out for ``cohort-dosimetry evaluate``. ``mc_from``: a data folder whose
    per-compartment MC maps of these patients are reused (:func:`make_patient_data`); the card records it. Returns
    the card's path.
    """
    out_dir = Path(out_dir)
    overlap = (
        set(train_seeds) & set(validation_seeds)
        | set(train_seeds) & set(test_seeds)
        | set(validation_seeds) & set(test_seeds)
    )
    if overlap:
        raise ValueError(f"patients {sorted(overlap)} appear in more than one of train/validation/test")
    if fine_tuning is not None:
        strays = {s for s, _ in fine_tuning.train_scans} - set(train_seeds) | {
            s for s, _ in fine_tuning.validation_scans
        } - set(validation_seeds)
        if strays:
            raise ValueError(f"fine-tuning scans of patients {sorted(strays)} outside their training/validation split")
    data_dir = out_dir / "data"
    seconds = {}
    tic = time.perf_counter()
    metas = [
        make_patient_data(data_dir, s, spec, device=device, log=log, mc_from=mc_from)
        for s in [*train_seeds, *validation_seeds]
    ]
    seconds["data"] = time.perf_counter() - tic
    stage_seconds = {k: float(sum(m["seconds"][k] for m in metas)) for k in metas[0]["seconds"]}

    train_scans = patient_scans(data_dir, train_seeds, spec)
    validation_scans = patient_scans(data_dir, validation_seeds, spec)
    spect_scale, dose_rate_scale = normalisation_constants(train_scans)
    log(f"normalisation: spect_scale {spect_scale:g}, dose_rate_scale {dose_rate_scale:g} Bq s/Gy")
    volumes = lambda scans, fit_config: [  # noqa: E731
        training_volume(s, spect_scale, dose_rate_scale, fit_config.voi_balance, fit_config.lesion_balance)
        for s in scans
    ]

    tic = time.perf_counter()
    model, history = fit(
        volumes(train_scans, config),
        volumes(validation_scans, config),
        config,
        out_dir / "checkpoints",
        log=log,
        device=device,
    )
    seconds["fit"] = time.perf_counter() - tic

    uncertainties = [u for m in metas for u in m["label_median_relative_uncertainty_in_organs"]]
    training = {
        **dataclasses.asdict(config),
        "optimiser": "Adam",
        "scheduler": "ReduceLROnPlateau(validation loss)",
        "loss": _loss_text(config),
        "device": str(resolve_device(device)),
        "epochs_run": len(history),
        "note": note,
    }
    training_data = {
        "description": "synthetic virtual patients (cohort_dosimetry.phantoms.make_virtual_patient); no patient data",
        "train_seeds": list(train_seeds),
        "validation_seeds": list(validation_seeds),
        "held_out_test_seeds": list(test_seeds),
        "split": "by patient",
        "grid": spec.grid,
        "hours_post_injection": list(spec.hours),
        "noise_realisations": spec.realisations,
        "spect_model": spec.spect,
        "inputs": "reconstructed SPECT (Bq per voxel) and density (g/cm3) on the dose grid; prior: DVK of the SPECT",
        "label": "MC dose-rate of the TRUE activity (cohort_dosimetry.physics.dose_rate_mc), run once per kinetic "
        "compartment and combined linearly per time point",
        "spect_model_constants": metas[0].get("spect_constants"),
        "mc_engine_version": ENGINE_VERSION,
        "mc_spec": {k: v for k, v in dataclasses.asdict(spec).items() if k.startswith("mc_")},
        "mc_decays_per_compartment": {str(m["seed"]): m["mc_decays"] for m in metas},
        "mc_maps_reused_from": None if mc_from is None else str(mc_from),
        "label_median_relative_uncertainty_in_organ_voxels": {
            "max": float(max(uncertainties)),
            "median": float(np.median(uncertainties)),
            "target": spec.mc_label_uncertainty_target,
            "time_points_above_target": sum(u > spec.mc_label_uncertainty_target for u in uncertainties),
        },
        "n_training_scans": len(train_scans),
        "n_validation_scans": len(validation_scans),
    }
    validation_metrics = {"validation_loss_best": float(min(h["validation_loss"] for h in history)), "history": history}
    compute = {"data": _made_in(metas), "fit": _epochs_took(history)}
    untimed = {"fit": _untimed(history)}
    tune_validation: list[PatientScan] = []
    if fine_tuning is not None:
        tune_dir = out_dir / "data_fine_tuning"
        tic = time.perf_counter()
        tune_train, train_metas = _single_scans(
            tune_dir, data_dir, fine_tuning.train_scans, fine_tuning.spect, spec, device, log
        )
        tune_validation, validation_metas = _single_scans(
            tune_dir, data_dir, fine_tuning.validation_scans, fine_tuning.spect, spec, device, log
        )
        seconds["data_fine_tuning"] = time.perf_counter() - tic
        compute["data_fine_tuning"] = _made_in(train_metas + validation_metas)
        tune = fine_tuning.config
        tic = time.perf_counter()
        model, tune_history = fit(
            _balanced_mix(volumes(train_scans, tune), volumes(tune_train, tune), fine_tuning.share),
            _balanced_mix(volumes(validation_scans, tune), volumes(tune_validation, tune), fine_tuning.share),
            tune,
            out_dir / "checkpoints_fine_tuning",
            log=log,
            initial_state=model.state_dict(),
            device=device,
        )
        seconds["fine_tuning"] = time.perf_counter() - tic
        compute["fine_tuning"] = _epochs_took(tune_history)
        untimed["fine_tuning"] = _untimed(tune_history)
        training["fine_tuning"] = {
            **dataclasses.asdict(tune),
            "loss": _loss_text(tune),
            "epochs_run": len(tune_history),
            "starts_from": "the best stage-1 model (above)",
            "data": f"the stage-1 training scans plus the scans below, repeated so that they carry a fraction "
            f"{fine_tuning.share:g} of the loss; validation likewise",
        }
        training_data["fine_tuning_scans"] = {
            "spect_model": fine_tuning.spect,
            "realisations": 1,
            "train": [list(s) for s in fine_tuning.train_scans],
            "validation": [list(s) for s in fine_tuning.validation_scans],
            "label": "the same per-compartment MC maps as the patient's fast-SPECT data",
        }
        validation_metrics["fine_tuning"] = {
            "validation_loss_best": float(min(h["validation_loss"] for h in tune_history)),
            "history": tune_history,
        }

    card = ModelCard(
        spacing_mm=tuple(metas[0]["spacing_mm"]),
        spect_scale=spect_scale,
        dose_rate_scale=dose_rate_scale,
        training_data=training_data,
        training=training,
        validation_metrics=validation_metrics,
    )
    card_path = save_model(model, card, out_dir / CARD_NAME)
    tic = time.perf_counter()
    metrics = {
        "per_voi_class": validation_voi_errors(
            card_path, [s for s in validation_scans if s.realisation == 0], device=device
        )
    }
    if tune_validation:
        assert fine_tuning is not None  # tune_validation comes from it
        metrics[f"per_voi_class_{fine_tuning.spect}"] = validation_voi_errors(card_path, tune_validation, device=device)
    seconds["validation_metrics"] = time.perf_counter() - tic
    compute["validation_metrics"] = round(seconds["validation_metrics"], 1)
    untimed = {stage: epochs for stage, epochs in untimed.items() if epochs}
    training["compute_seconds"] = {
        **compute,
        "total": round(sum(compute.values()), 1),
        "note": f"wall-clock seconds on the device above ({_cpu_text()}), as each step took when it ran, summed over "
        "resumed runs: data from each patient's and scan's patient.json (MC maps reused from another folder "
        "count 0), fitting from each epoch's entry in the histories, validation metrics from the last run. "
        "The speed of shared cores varies between days (bench/train.py measures it)",
    }
    if untimed:  # epochs from a checkpoint written before epochs were timed: said, not guessed
        training["compute_seconds"]["untimed_epochs"] = untimed
        log(
            f"WARNING: epochs {untimed} carry no seconds (checkpoints from before epochs were timed); the card's "
            "compute_seconds leave them out and say so"
        )
    card = dataclasses.replace(card, training=training, validation_metrics={**card.validation_metrics, **metrics})
    card_path = save_model(model, card, card_path)
    report = {"seconds": {**seconds, "data_stages": stage_seconds}, "card": str(card_path)}
    (out_dir / "training_report.json").write_text(json.dumps(report, indent=2) + "\n")
    log(json.dumps(report))
    return card_path


def _loss_text(config: FitConfig) -> str:
    text = "body-weighted MSE (0.7 inside the body, 0.3 outside)"
    if config.voi_balance:
        text += (
            "; VOI-balanced: the weight of each liver/lesion/kidney/spleen/vertebra VOI whose mean squared label "
            "is below the body's is multiplied by their ratio"
        )
    if config.lesion_balance:
        text += (
            "; lesion-balanced: the weight of each lesion smaller than the scan's mean lesion volume is "
            "multiplied by the ratio of the two"
        )
    return text


def _made_in(metas: list[dict]) -> float:
    """Seconds that the patients' data took to make (``make_patient_data``'s record, also for reused folders)."""
    return round(sum(sum(m["seconds"].values()) for m in metas), 1)


def _epochs_took(history: list[dict]) -> float:
    """Seconds of a fit's timed epochs (see :func:`_untimed` for the others)."""
    return round(sum(h.get("seconds", 0.0) for h in history), 1)


def _untimed(history: list[dict]) -> list[int]:
    """Epochs of a history without seconds: resumed from a checkpoint written before epochs were timed."""
    return [h["epoch"] for h in history if "seconds" not in h]


def _cpu_text() -> str:
    return f"{os.cpu_count()} CPUs visible, torch {torch.get_num_threads()} threads"


def _single_scans(
    out_dir: Path, mc_dir: Path, scans, spect: str, spec: DataSpec, device, log
) -> tuple[list[PatientScan], list[dict]]:
    """Prepare (or reuse) one-realisation ``spect`` scans (seed, hours), MC maps from ``mc_dir``; returns the scans
    and their folders' ``patient.json`` content.

    Each scan has its own folder, ``out_dir/h<hours>/patient_<seed>``, prepared as a one-time-point patient: its
    content depends on (seed, hours) alone, so recipes that share a scan share its folder (a PyTomography scan costs
    minutes of CPU), and one patient may have scans at several times.
    """
    prepared, metas = [], []
    for seed, hours in scans:
        scan_spec = dataclasses.replace(spec, hours=(float(hours),), realisations=1, spect=spect)
        folder = out_dir / f"h{float(hours):g}"
        metas.append(make_patient_data(folder, int(seed), scan_spec, device=device, log=log, mc_from=mc_dir))
        prepared += patient_scans(folder, [int(seed)], scan_spec)
    return prepared, metas


def _balanced_mix(stage1: list, extra: list, share: float) -> list:
    """``stage1`` plus ``extra`` repeated (the same objects) so that ``extra`` makes about the fraction ``share`` of
    the volumes (at least one copy)."""
    return stage1 + extra * max(1, round(share / (1.0 - share) * len(stage1) / len(extra)))


def validation_voi_errors(card_path, scans: list[PatientScan], device=None) -> dict:
    """Mean over ``scans`` of the per-VOI-class mean dose-rate error and NRMSE (vs the MC label) of DVK and CNN;
    computed through ``dose_rates`` with the written card."""
    from cohort_dosimetry.training._evaluation import scan_errors

    rows = [row for scan in scans for row in scan_errors(scan, card_path, methods=("dvk", "cnn"), device=device)]
    table: dict[tuple[str, str], list[dict]] = {}
    for row in rows:
        table.setdefault((row["method"], row["voi_class"]), []).append(row)
    return {
        f"{method}/{voi_class}": {
            "mean_error": float(np.mean([r["mean_error"] for r in group])),
            "nrmse": float(np.mean([r["nrmse"] for r in group])),
        }
        for (method, voi_class), group in sorted(table.items())
    }
