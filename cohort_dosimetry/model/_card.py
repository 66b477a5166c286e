"""Weights (safetensors) and their model card (JSON): the network's input/output contract and how it was made.

The card is the single source of the normalisation used at inference:

* SPECT (Bq per voxel) is divided by its volume sum (Li et al. 2022: "normalised to sum 1 per volume"), then
  multiplied by ``spect_scale`` so that its values lie in the range of the density map (g/cm3, about 0-2);
* dose-rates (the DVK prior and the label, Gy/s) are divided by the same volume sum of activity (Bq) and multiplied by
  ``dose_rate_scale`` (Bq s / Gy); the network output is scaled back by the inverse.

Dividing both by the total activity makes the map independent of the administered activity, which dose-rate is
linear in; the two constants are set once from the training data and stored here.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import numpy as np
from safetensors.torch import load_file, save_file

from cohort_dosimetry import __version__
from cohort_dosimetry.model._network import PACK_DEPTH, DblurDoseNet

SHIPPED_CARD = Path(__file__).parent / "weights" / "dblurdosenet_compact.json"


@dataclasses.dataclass
class ModelCard:
    """What a weights file expects and how it was made (MONAI-bundle style metadata)."""

    spacing_mm: tuple[float, float, float]  # (z, y, x) grid spacing the network was trained on
    spect_scale: float  # SPECT/sum(SPECT) * spect_scale is the network's SPECT channel
    dose_rate_scale: float  # Gy/s / sum(SPECT in Bq) * dose_rate_scale is the network's dose-rate unit (Bq s/Gy)
    training_data: dict  # virtual patients: how many, seeds, SPECT model, time points, realisations, labels
    training: dict  # optimiser, epochs, loss, seed, crops; and whether this is a reduced run
    validation_metrics: dict
    # Measured after the weights were fixed, on virtual patients never used in training (empty when not measured):
    # per SPECT model the accuracy-goal checks and the bias of VOI mean dose-rates (training.mean_bias);
    # shown in the report's Methods wherever CNN dose-rates of these weights are reported.
    held_out_evaluation: dict = dataclasses.field(default_factory=dict)
    nuclide: str = "Lu177"
    pack_depth: int = PACK_DEPTH
    input_channels: tuple[str, str] = ("spect", "density")
    input_units: dict = dataclasses.field(
        default_factory=lambda: {"spect": "Bq per voxel", "density": "g/cm3", "dvk": "Gy/s", "output": "Gy/s"}
    )
    density_threshold_g_cm3: float = 0.1  # output is zero where rho <= this (Li et al. 2022)
    code_version: str = __version__
    weights_file: str = ""
    weights_sha256: str = ""
    parameter_count: int = 0

    def on_grid(self, spacing_mm) -> bool:
        """Whether a (z, y, x) spacing in mm is this card's grid: equal to 0.1 %, so rounding in DICOM headers and
        resampling does not count as another grid."""
        return bool(np.allclose(np.asarray(spacing_mm, dtype=float), self.spacing_mm, rtol=1e-3, atol=0.0))

    @classmethod
    def from_json(cls, path: Path) -> ModelCard:
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise ValueError(f"model card {path}: cannot be read as JSON ({err})") from err
        names = {f.name for f in dataclasses.fields(cls)}
        required = [
            f.name
            for f in dataclasses.fields(cls)
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        ]
        missing = [name for name in required if name not in data]
        unknown = sorted(set(data) - names)
        if missing or unknown:
            raise ValueError(f"model card {path}: missing fields {missing}, unknown fields {unknown}")
        data["spacing_mm"] = tuple(float(s) for s in data["spacing_mm"])
        data["input_channels"] = tuple(data["input_channels"])
        return cls(**data)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save_model(model: DblurDoseNet, card: ModelCard, card_path: str | Path) -> Path:
    """Write ``<stem>.safetensors`` beside ``card_path`` and the card (with the weights' sha256) at ``card_path``."""
    card_path = Path(card_path)
    card_path.parent.mkdir(parents=True, exist_ok=True)
    weights_path = card_path.with_suffix(".safetensors")
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(weights_path))
    card = dataclasses.replace(
        card,
        weights_file=weights_path.name,
        weights_sha256=_sha256(weights_path),
        parameter_count=sum(p.numel() for p in model.parameters()),
    )
    card_path.write_text(json.dumps(dataclasses.asdict(card), indent=2) + "\n")
    return card_path


def load_model(card_path: str | Path | None = None) -> tuple[DblurDoseNet, ModelCard]:
    """Read a model card and its weights (``None`` = the shipped compact-grid model), checking the sha256.

    Returns the network on the CPU in eval mode and its card. Raises ``ValueError`` naming the file when the card
    is unreadable, the weights file is missing or its sha256 differs from the card's.
    """
    card_path = Path(SHIPPED_CARD if card_path is None else card_path)
    if not card_path.is_file():
        raise ValueError(f"model card {card_path} does not exist")
    card = ModelCard.from_json(card_path)
    weights = card_path.parent / card.weights_file
    if not card.weights_file or not weights.is_file():
        raise ValueError(f"model card {card_path}: weights file {weights} is missing")
    actual = _sha256(weights)
    if actual != card.weights_sha256:
        raise ValueError(
            f"weights file {weights}: sha256 {actual} does not match the model card's {card.weights_sha256} "
            "(corrupted or replaced); refusing to load"
        )
    model = DblurDoseNet()
    model.load_state_dict(load_file(str(weights)))
    return model.eval(), card
