"""Candidate D of the sixth comparison (docs/cnn_weights_choice.md): A's recipe with lesion balancing in stage 2.

Stage 1 is not refitted: it is restored from the weights A was fine-tuned from (commit 7b4cd1d, sha256 2c1f3da6...)
by writing them, with their card's 60-epoch history, as a finished stage-1 checkpoint that
``cohort_dosimetry.model._pipeline.train_model`` resumes from. Stage 2 is A's ``FINE_TUNING`` with
``lesion_balance=True``, nothing else changed. The per-patient data are the default DataSpec's (MC truth and fast
scans of seeds 1-7, 10-14, 18) and A's 9 PyTomography fine-tuning scans, prepared beforehand (``scans.py`` here) and
linked into OUT as data/ and data_fine_tuning/. Resumable: rerun the same command.

Usage, from the repository: .venv/bin/python docs/cnn_weights_evidence/candidate_D/train_D.py OUT DATA FINE_TUNING_DATA
"""
import dataclasses
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

from cohort_dosimetry.model import DblurDoseNet
from cohort_dosimetry.model._dataset import HELD_OUT_SEEDS, DataSpec
from cohort_dosimetry.model._pipeline import FINE_TUNING, train_model
from cohort_dosimetry.model._training import FitConfig

STAGE1_COMMIT, STAGE1_SHA256 = "7b4cd1d", "2c1f3da63cebee172268fdb7592bf9173959b62427b2526da345f542b2756eb8"
TRAIN, VALIDATION = [*range(1, 8), *range(10, 15)], [18]
D_FINE_TUNING = dataclasses.replace(FINE_TUNING, config=dataclasses.replace(FINE_TUNING.config, lesion_balance=True))


def git_show(path: str, out: Path) -> None:
    out.write_bytes(subprocess.run(["git", "show", f"{STAGE1_COMMIT}:{path}"], check=True, capture_output=True).stdout)


def stage1_checkpoint(out: Path) -> None:
    """checkpoints/last.pt and best.pt holding A's stage-1 weights and history (fit then has no epoch left)."""
    checkpoints = out / "checkpoints"
    if (checkpoints / "last.pt").exists():
        return
    checkpoints.mkdir(parents=True)
    weights, card = out / "stage1.safetensors", out / "stage1.json"
    git_show("cohort_dosimetry/model/weights/dblurdosenet_compact.safetensors", weights)
    git_show("cohort_dosimetry/model/weights/dblurdosenet_compact.json", card)
    if hashlib.sha256(weights.read_bytes()).hexdigest() != STAGE1_SHA256:
        raise SystemExit("stage-1 weights of 7b4cd1d do not match their sha256")
    history = json.loads(card.read_text())["validation_metrics"]["history"]
    config = FitConfig()
    if len(history) != config.epochs:
        raise SystemExit(f"stage-1 history has {len(history)} epochs, FitConfig() {config.epochs}")
    network = DblurDoseNet()
    network.load_state_dict(load_file(weights))
    model = network.state_dict()
    fresh = torch.optim.Adam(network.parameters(), lr=config.learning_rate)  # unused: no stage-1 epoch is left
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(fresh)
    best_epoch = min(history, key=lambda h: h["validation_loss"])["epoch"]
    torch.save({"model": model, "epoch": best_epoch}, checkpoints / "best.pt")
    torch.save({"model": model, "optimiser": fresh.state_dict(), "scheduler": scheduler.state_dict(),
                "history": history, "config": dataclasses.asdict(config)}, checkpoints / "last.pt")


def main(out: str, data: str, fine_tuning_data: str) -> None:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for name, target in (("data", data), ("data_fine_tuning", fine_tuning_data)):
        if not (out / name).exists():
            (out / name).symlink_to(Path(target).resolve())
    stage1_checkpoint(out)
    train_model(out, TRAIN, VALIDATION, HELD_OUT_SEEDS, DataSpec(), FitConfig(), fine_tuning=D_FINE_TUNING,
                device="cpu", log=lambda s: print(s, flush=True),
                note="candidate D (sixth comparison, docs/cnn_weights_choice.md): stage 1 restored from the weights "
                     f"of commit {STAGE1_COMMIT} (sha256 {STAGE1_SHA256[:8]}..., A's stage 1) with their history; "
                     "stage 2 = A's FINE_TUNING with lesion_balance=True, on 2 CPU cores; "
                     "docs/cnn_weights_evidence/candidate_D/train_D.py")


if __name__ == "__main__":
    main(*sys.argv[1:])
