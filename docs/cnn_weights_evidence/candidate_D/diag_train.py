"""Lesion bias against volume on TRAINING and VALIDATION patients (seeds 1-7, 10-14, 18): fast SPECT, realisation
0, 4 time points, DVK and a candidate's CNN. Descriptive for A; the gate of the sixth comparison for D
(docs/cnn_weights_choice.md): the mean |bias| of the lesions under 15 mL.

Usage, from the repository: .venv/bin/python docs/cnn_weights_evidence/candidate_D/diag_train.py CARD DATA OUT.parquet
(DATA: the stage-1 data folder, data.py here; CARD: a model card, e.g. cohort_dosimetry/model/weights/...json).
"""
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "seeds_37-41"))
from lesion_volume import BANDS_ML, lesion_volumes  # noqa: E402

from cohort_dosimetry.model._dataset import DataSpec, patient_scans  # noqa: E402
from cohort_dosimetry.model._evaluation import scan_errors  # noqa: E402

SEEDS = [*range(1, 8), *range(10, 15), 18]
GATE_ML = 15.0


def lesion_table(rows: pd.DataFrame) -> pd.DataFrame:
    """Per lesion: volume (mL) and mean relative bias of its mean dose-rate over the scans, per method."""
    rows = rows[rows.voi_class == "lesion"].assign(bias=lambda d: d.mean_estimate / d.mean_true - 1)
    lesions = rows.pivot_table(index=["patient", "voi"], columns="method", values="bias").reset_index()
    return lesions.merge(lesion_volumes(SEEDS), on=["patient", "voi"], validate="one_to_one").sort_values("volume_ml")


def main(card: str, data: str, out: str) -> None:
    out = Path(out)
    if not out.exists():
        rows = []
        for scan in patient_scans(data, SEEDS, DataSpec()):
            if scan.realisation == 0:
                rows += scan_errors(scan, card)
        pd.DataFrame(rows).to_parquet(out)
    rows = pd.read_parquet(out)
    print("mean relative bias of the VOI means by class:")
    print(rows.assign(bias=rows.mean_estimate / rows.mean_true - 1)
          .pivot_table(index="method", columns="voi_class", values="bias").to_string(float_format="%.3f"))
    lesions = lesion_table(rows)
    print(lesions.to_string(index=False, float_format="%.3f"))
    band = pd.cut(lesions.volume_ml, BANDS_ML, right=False)
    print(lesions[["cnn", "dvk"]].abs().groupby(band, observed=True).agg(["mean", "size"]).to_string(float_format="%.3f"))
    small = lesions[lesions.volume_ml < GATE_ML]
    print(f"gate: mean |bias| of the {len(small)} lesions under {GATE_ML:g} mL: CNN {small.cnn.abs().mean():.4f}, "
          f"DVK {small.dvk.abs().mean():.4f}")


if __name__ == "__main__":
    main(*sys.argv[1:])
