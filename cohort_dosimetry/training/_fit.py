"""Training DblurDoseNet on normalised slice packs: body-weighted MSE, Adam + ReduceLROnPlateau, seeded, resumable.

Li et al. (Med Phys 49:1216, 2022): Adam, lr 1e-3 with ReduceLROnPlateau, MSE loss weighting voxels in the body 0.7
and outside 0.3 (their public code), batch 32. The data (normalised volumes) come from
:mod:`cohort_dosimetry.training._dataset`; this module only fits.

VOI balancing (``FitConfig.voi_balance``, used by the fine-tuning stage of the shipped weights; our addition, not
the paper's): the absolute MSE is dominated by hot voxels. In the shipped training data the lumbar vertebrae, whose
dose-rate is 8-18 % of the kidneys', carried 0.0-0.2 % of the loss of the residual over DVK, and the network trained
with the paper's loss overestimated them more than DVK did, on its own training patients too (+36 % against +23 %
over seeds 1, 5, 11). With balancing, the voxels of every reported VOI (liver, lesion, kidney, spleen, vertebra)
whose mean squared label is below the body's get their body weight multiplied by the ratio of the two, so each such
VOI weighs per voxel as much as an average body voxel; hot VOIs keep the body weight. Parameter-free, per scan.
It trades: with it (and PyTomography scans) the fine-tuned shipped weights bring the vertebrae's NRMSE below DVK's
but lose part of stage 1's gain in kidney and lesion mean dose-rate (docs/model.md).

Lesion balancing (``FitConfig.lesion_balance``; our addition, not the shipped recipe): the reported lesion mean
error averages lesions, each counting once, but the MSE weighs a lesion by its voxel count, and a network trained
without it underestimates small lesions most, on its own training scans too (mean |bias| 38 % under 5 mL against
12 % over 50 mL, training and validation patients, fast SPECT). With balancing, each lesion smaller than
the mean lesion volume of its scan has its weight multiplied by the ratio of the two, so it carries the loss of a
lesion of mean volume; larger lesions keep theirs. Parameter-free, per scan, applied after VOI balancing.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import torch

from cohort_dosimetry.model import PACK_DEPTH, DblurDoseNet, pack_indices
from cohort_dosimetry.physics import resolve_device
from cohort_dosimetry.training._dataset import REPORTED_CLASSES

BODY_WEIGHT, OUTSIDE_WEIGHT = 0.7, 0.3  # loss weights inside/outside the body (Li et al. 2022, public code)


@dataclasses.dataclass
class TrainingVolume:
    """One scan, normalised as the model card says; every array (z, y, x) float32.

    ``spect``: SPECT / sum * spect_scale; ``density`` g/cm3; ``prior``: DVK / sum(SPECT Bq) * dose_rate_scale;
    ``label``: MC dose-rate of the true activity, same scaling; ``weight``: loss weight per voxel
    (:func:`loss_weights`).
    """

    spect: np.ndarray
    density: np.ndarray
    prior: np.ndarray
    label: np.ndarray
    weight: np.ndarray


@dataclasses.dataclass
class FitConfig:
    # Defaults: the shipped compact-grid run, sized to about 40 min on 2 CPU cores.
    epochs: int = 60
    batch_size: int = 16
    learning_rate: float = 1e-3
    crop: int | None = 64  # in-plane random crop (voxels) for training steps; validation uses whole slices
    slices_per_epoch: int | None = 2048  # None = every training slice once per epoch
    seed: int = 0
    lr_patience: int = 5  # ReduceLROnPlateau on the validation loss
    lr_factor: float = 0.5
    validation_stride: int = 8  # validation loss over every n-th slice of each validation volume
    voi_balance: bool = False  # loss weights of cold VOIs raised to the body's mean (module docstring)
    lesion_balance: bool = False  # loss weights of small lesions raised to the scan's mean lesion (module docstring)


def loss_weights(
    label: np.ndarray, labels: np.ndarray, names: dict[int, str], voi_balance: bool, lesion_balance: bool = False
) -> np.ndarray:
    """Loss weight per voxel (z, y, x) float32: 0.7 in the body (``labels`` > 0), 0.3 outside; with ``voi_balance``
    the voxels of each VOI of :data:`REPORTED_CLASSES` get 0.7 * max(1, mean(label^2 in the body) / mean(label^2
    in the VOI)); with ``lesion_balance`` the weight of each lesion's voxels is then multiplied by max(1, mean
    volume of the scan's lesions / its volume). ``names`` maps VOI label values to names."""
    from cohort_dosimetry.vocabulary import voi_type

    body = labels > 0
    weight = np.where(body, BODY_WEIGHT, OUTSIDE_WEIGHT).astype(np.float32)
    if voi_balance:
        square = np.square(label, dtype=np.float64)
        body_mean = square[body].mean()
        for value, name in names.items():
            voi = labels == value
            if voi_type(name) in REPORTED_CLASSES and voi.any():
                voi_mean = square[voi].mean()
                factor = body_mean / voi_mean if voi_mean > 0 else 1.0
                weight[voi] = BODY_WEIGHT * max(1.0, factor)
    if lesion_balance:
        counts = {
            value: np.count_nonzero(labels == value) for value, name in names.items() if voi_type(name) == "lesion"
        }
        volumes = {value: n for value, n in counts.items() if n > 0}
        if volumes:
            mean_volume = np.mean(list(volumes.values()))
            for value, n in volumes.items():
                weight[labels == value] *= max(1.0, mean_volume / n)
    return weight


def weighted_mse(pred: torch.Tensor, label: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Mean of weight * (pred - label)^2; all (N, 1, H, W) (``weight`` from :func:`loss_weights`)."""
    return (weight * (pred - label) ** 2).mean()


def training_step(model: DblurDoseNet, optimiser: torch.optim.Optimizer, pack, prior, label, weight) -> float:
    """One Adam step on a batch (pack (N, 2, 11, H, W), prior/label/weight (N, 1, H, W)); returns the loss before it."""
    model.train()
    optimiser.zero_grad(set_to_none=True)
    loss = weighted_mse(model(pack, prior), label, weight)
    loss.backward()
    optimiser.step()
    return loss.item()


def _batch(
    volumes: list[TrainingVolume],
    items: np.ndarray,
    crops: np.ndarray | None,
    crop: int | None,
    device: torch.device | str = "cpu",
):
    """Packs, priors, labels, loss weights for (volume, slice) ``items`` on ``device``; ``crops`` (n, 2) top-left
    corners or None."""
    packs, priors, labels, weights = [], [], [], []
    for k, (v, z) in enumerate(items):
        vol = volumes[v]
        idx = pack_indices(vol.spect.shape[0], PACK_DEPTH, [z])[0]
        if crops is None:
            sy = sx = slice(None)
        else:
            sy, sx = slice(crops[k, 0], crops[k, 0] + crop), slice(crops[k, 1], crops[k, 1] + crop)
        packs.append(np.stack([vol.spect[idx][:, sy, sx], vol.density[idx][:, sy, sx]]))
        priors.append(vol.prior[z, sy, sx][None])
        labels.append(vol.label[z, sy, sx][None])
        weights.append(vol.weight[z, sy, sx][None])
    as_t = lambda arrs: torch.from_numpy(np.ascontiguousarray(np.stack(arrs))).to(device)  # noqa: E731
    return as_t(packs), as_t(priors), as_t(labels), as_t(weights)


def _all_slices(volumes: list[TrainingVolume]) -> np.ndarray:
    return np.array([(v, z) for v, vol in enumerate(volumes) for z in range(vol.spect.shape[0])], dtype=np.int64)


def evaluate_loss(model: DblurDoseNet, volumes: list[TrainingVolume], batch_size: int, stride: int = 1) -> float:
    """Weighted MSE over every ``stride``-th whole slice of ``volumes`` (eval mode, no gradient), on the device of
    ``model``'s parameters.

    A volume listed several times (the same object: :func:`~cohort_dosimetry.training._recipe._balanced_mix`
    repeats the few fine-tuning scans) is evaluated once and counted as often as it is listed, which gives the mean
    over the full list without recomputing the copies.
    """
    model.eval()
    device = next(model.parameters()).device
    by_id = {id(vol): vol for vol in volumes}
    copies = collections.Counter(id(vol) for vol in volumes)
    unique = list(by_id.values())
    items = _all_slices(unique)
    items = items[items[:, 1] % stride == 0]
    multiplicity = np.array([copies[id(vol)] for vol in unique], dtype=np.float64)[items[:, 0]]
    total = 0.0
    with torch.inference_mode():
        for start in range(0, len(items), batch_size):
            pack, prior, label, weight = _batch(unique, items[start : start + batch_size], None, None, device)
            per_slice = (weight * (model(pack, prior) - label) ** 2).mean(dim=(1, 2, 3)).double().cpu().numpy()
            total += float(per_slice @ multiplicity[start : start + batch_size])
    return total / float(multiplicity.sum())


def fit(
    train: list[TrainingVolume],
    validation: list[TrainingVolume],
    config: FitConfig,
    checkpoint_dir: str | Path,
    log=print,
    initial_state: dict | None = None,
    device: str | torch.device | None = None,
) -> tuple[DblurDoseNet, list[dict]]:
    """Train from ``initial_state`` (a state dict: fine-tuning) or from scratch, or resume from
    ``checkpoint_dir/last.pt`` when it exists; returns the best model (on the CPU, eval mode) and history.

    ``device``: "cpu", "cuda" or None (CUDA when available). The volumes stay in host memory; each batch is copied
    to the device. Float32 throughout, on CUDA too (no autocast: the loss of small dose-rates would lose digits;
    convolutions may use TF32 as torch allows by default). Checkpoints load onto any device, so a run started on one
    can resume on the other.

    Every epoch draws its slices and crops from a generator seeded by (seed, epoch), so a resumed run takes exactly
    the steps of an uninterrupted one. After each epoch ``last.pt`` (model, optimiser, scheduler, history) is written,
    and ``best.pt`` when the validation loss improved. Each history entry records the epoch's wall-clock ``seconds``
    (its steps and validation loss), so the cost of a run resumed several times adds up from its history.
    """
    checkpoint_dir = Path(checkpoint_dir)
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    device = resolve_device(device)
    torch.manual_seed(config.seed)
    model = DblurDoseNet()
    if initial_state is not None:
        model.load_state_dict(initial_state)
    model.to(device)
    optimiser = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimiser, factor=config.lr_factor, patience=config.lr_patience
    )
    history: list[dict] = []
    last = checkpoint_dir / "last.pt"
    if last.exists():
        state = torch.load(last, weights_only=False, map_location=device)
        same = {k: v for k, v in dataclasses.asdict(config).items() if k != "epochs"}
        # a field missing from an older checkpoint had its default's meaning then (voi_balance, lesion_balance came
        # later)
        saved = {**dataclasses.asdict(FitConfig()), **state["config"]}
        if {k: v for k, v in saved.items() if k != "epochs"} != same:
            raise ValueError(f"checkpoint {last} was written with another configuration {state['config']}")
        model.load_state_dict(state["model"])
        optimiser.load_state_dict(state["optimiser"])
        scheduler.load_state_dict(state["scheduler"])
        history = state["history"]
        log(f"resuming from {last} after epoch {len(history)}")
    items = _all_slices(train)
    smallest = min(min(v.spect.shape[1:]) for v in train)
    if config.crop is not None and not 16 <= config.crop <= smallest:
        raise ValueError(f"crop {config.crop} must lie between 16 and the smallest in-plane size {smallest}")
    for epoch in range(len(history), config.epochs):
        tic = time.perf_counter()
        rng = np.random.default_rng([config.seed, epoch])
        order = rng.permutation(len(items))
        if config.slices_per_epoch is not None:
            order = order[: config.slices_per_epoch]
        losses = []
        for start in range(0, len(order), config.batch_size):
            chosen = items[order[start : start + config.batch_size]]
            crops = None
            if config.crop is not None:
                shapes = np.array([train[v].spect.shape[1:] for v, _ in chosen])
                crops = (rng.random((len(chosen), 2)) * (shapes - config.crop + 1)).astype(np.int64)
            losses.append(training_step(model, optimiser, *_batch(train, chosen, crops, config.crop, device)))
        val_loss = evaluate_loss(model, validation, config.batch_size, config.validation_stride)
        scheduler.step(val_loss)
        history.append(
            {
                "epoch": epoch + 1,
                "train_loss": float(np.mean(losses)),
                "validation_loss": val_loss,
                "learning_rate": optimiser.param_groups[0]["lr"],
                "seconds": round(time.perf_counter() - tic, 1),
            }
        )
        log(json.dumps(history[-1]))
        if val_loss <= min(h["validation_loss"] for h in history):
            torch.save({"model": model.state_dict(), "epoch": epoch + 1}, checkpoint_dir / "best.pt")
        torch.save(
            {
                "model": model.state_dict(),
                "optimiser": optimiser.state_dict(),
                "scheduler": scheduler.state_dict(),
                "history": history,
                "config": dataclasses.asdict(config),
            },
            checkpoint_dir / "last.pt.tmp",
        )
        (checkpoint_dir / "last.pt.tmp").replace(last)
    best = checkpoint_dir / "best.pt"
    if best.exists():
        model.load_state_dict(torch.load(best, weights_only=False, map_location=device)["model"])
    return model.cpu().eval(), history


def normalisation_constants(scans) -> tuple[float, float]:
    """(spect_scale, dose_rate_scale) of the model card from training scans (``PatientScan`` list).

    Li et al. 2022 normalise SPECT to sum 1 per volume and scale dose-rates "by a constant to the range of the
    density map"; here both constants bring the median over scans of the 99.9th percentile of the normalised map to
    1 (density spans about 0-2 g/cm3), rounded to 2 significant digits.
    """
    spect_high, dose_high = [], []
    for scan in scans:
        spect = np.asarray(scan.load("spect"), dtype=np.float64)
        total = spect.sum()
        spect_high.append(np.percentile(spect / total, 99.9))
        dose_high.append(np.percentile(np.asarray(scan.load("label"), dtype=np.float64) / total, 99.9))
    round2 = lambda v: float(f"{v:.2g}")  # noqa: E731
    return round2(1.0 / np.median(spect_high)), round2(1.0 / np.median(dose_high))


def training_volume(
    scan, spect_scale: float, dose_rate_scale: float, voi_balance: bool = False, lesion_balance: bool = False
) -> TrainingVolume:
    """A prepared scan normalised as the model card says (see :mod:`._card`), with its loss weights."""
    spect = np.asarray(scan.load("spect"), dtype=np.float32)
    total = float(spect.sum(dtype=np.float64))
    label = (np.asarray(scan.load("label")) / total * dose_rate_scale).astype(np.float32)
    return TrainingVolume(
        spect=(spect / total * spect_scale).astype(np.float32),
        density=np.asarray(scan.load("density"), dtype=np.float32),
        prior=(np.asarray(scan.load("dvk")) / total * dose_rate_scale).astype(np.float32),
        label=label,
        weight=loss_weights(label, np.asarray(scan.load("labels")), scan.voi_names(), voi_balance, lesion_balance),
    )
