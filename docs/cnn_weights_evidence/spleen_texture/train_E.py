"""Candidate E of the seventh comparison (docs/cnn_weights_choice.md): A's recipe with more PyTomography scans in
stage 2.

Stage 1 is A's, restored as for candidate D (../candidate_D/train_D.py). Stage 2 is A's ``FINE_TUNING`` with
``train_scans`` = A's 8 plus every scan of the pool (pyt_pool.py) finished when E's training first starts; that list
is frozen in OUT/e_pool_scans.json, so a resumed run uses the same scans. The data are linked into OUT: data/ (the
stage-1 data) and data_fine_tuning/h<hours>/patient_<seed> (A's scans and the pool's, found in SOURCES, folders in
either the per-scan layout or the earlier one-folder-per-patient layout). Resumable: rerun the same command.

Usage, from the repository:
    .venv/bin/python docs/cnn_weights_evidence/spleen_texture/train_E.py OUT DATA POOL SOURCE [SOURCE ...]
"""
import dataclasses
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "candidate_D"))
from train_D import STAGE1_COMMIT, STAGE1_SHA256, TRAIN, VALIDATION, stage1_checkpoint  # noqa: E402

from pyt_pool import ORDER  # noqa: E402

from cohort_dosimetry.model._dataset import HELD_OUT_SEEDS, DataSpec  # noqa: E402
from cohort_dosimetry.model._pipeline import FINE_TUNING, train_model  # noqa: E402
from cohort_dosimetry.model._training import FitConfig  # noqa: E402


def finished(folder: Path, hours: float) -> bool:
    meta = folder / "patient.json"
    return meta.exists() and json.loads(meta.read_text())["spec"]["hours"] == [hours]


def find_scan(sources: list[Path], seed: int, hours: float) -> Path:
    """The prepared one-scan folder of (seed, hours) in one of ``sources``."""
    for source in sources:
        for folder in (source / f"h{hours:g}" / f"patient_{seed}", source / f"patient_{seed}"):
            if finished(folder, hours):
                return folder
    raise SystemExit(f"no prepared PyTomography scan of seed {seed} at {hours:g} h in {[str(s) for s in sources]}")


def pool_scans(out: Path, pool: Path) -> list[tuple[int, float]]:
    frozen = out / "e_pool_scans.json"
    if not frozen.exists():
        scans = [(s, h) for s, h in ORDER if finished(pool / f"h{h:g}" / f"patient_{s}", h)]
        if len(scans) < 4:
            raise SystemExit(f"only {len(scans)} pool scans finished; E needs at least B's four")
        frozen.write_text(json.dumps(scans) + "\n")
    return [(int(s), float(h)) for s, h in json.loads(frozen.read_text())]


def main(out: str, data: str, pool: str, *sources: str) -> None:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if not (out / "data").exists():
        (out / "data").symlink_to(Path(data).resolve())
    extra = pool_scans(out, Path(pool))
    e_fine_tuning = dataclasses.replace(FINE_TUNING, train_scans=FINE_TUNING.train_scans + tuple(extra))
    search = [Path(pool), *map(Path, sources)]
    for seed, hours in e_fine_tuning.train_scans + e_fine_tuning.validation_scans:
        link = out / "data_fine_tuning" / f"h{hours:g}" / f"patient_{seed}"
        if not link.exists():
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(find_scan(search, seed, hours).resolve())
    stage1_checkpoint(out)
    train_model(out, TRAIN, VALIDATION, HELD_OUT_SEEDS, DataSpec(), FitConfig(), fine_tuning=e_fine_tuning,
                device="cpu", log=lambda s: print(s, flush=True),
                note="candidate E (seventh comparison, docs/cnn_weights_choice.md): stage 1 restored from the weights "
                     f"of commit {STAGE1_COMMIT} (sha256 {STAGE1_SHA256[:8]}..., A's stage 1) with their history; "
                     f"stage 2 = A's FINE_TUNING plus {len(extra)} PyTomography scans of training patients, on 2 CPU "
                     "cores; docs/cnn_weights_evidence/spleen_texture/train_E.py")


if __name__ == "__main__":
    main(*sys.argv[1:])
