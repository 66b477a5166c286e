"""Lesion mean dose-rate bias against lesion volume, seeds 37-41 (descriptive; after the fifth decision).

For every lesion of the held-out patients 37-41: its volume (mL, from the seeded anatomy, which is what the
evaluation used) and the relative bias of its mean dose-rate, mean_estimate / mean_true - 1, averaged over that
patient's scans, for DVK and for a candidate's CNN (A by default), per SPECT model. Then the mean error
|bias| per volume band and the reduction against DVK in each band. Run from the repository:
.venv/bin/python <this file> [CANDIDATE [FOLDER]]; FOLDER is a comparison folder (this one by default, or
../seeds_42-46 with candidates A and D), its patients are those of its tables.
"""
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from comparison import per_voi, pyt_seeds  # noqa: E402

from cohort_dosimetry.phantoms import make_anatomy  # noqa: E402
from cohort_dosimetry.phantoms._vocabulary import LESION_LABEL_OFFSET  # noqa: E402

BANDS_ML = (0.0, 5.0, 15.0, 50.0, np.inf)


def lesion_volumes(seeds) -> pd.DataFrame:
    rows = []
    for seed in seeds:
        anatomy = make_anatomy(seed, "compact")
        labels = anatomy["labels"].values
        voxel_ml = float(np.prod(anatomy.attrs["spacing_mm"])) / 1000.0
        for name, site in anatomy.attrs["lesion_sites"].items():
            voxels = int((labels == LESION_LABEL_OFFSET + int(name.split("_")[1])).sum())
            rows.append({"patient": f"patient_{seed}", "voi": name, "site": site, "volume_ml": voxels * voxel_ml})
    return pd.DataFrame(rows)


def main(cand: str = "A", folder: str | None = None) -> None:
    here = Path(folder) if folder else Path(__file__).parent
    for model in ("fast", "pytomography"):
        rows = per_voi(here, cand, model, pyt_seeds(here, cand))
        volumes = lesion_volumes(sorted({int(p.split("_")[1]) for p in rows.patient}))
        rows = rows[rows.voi_class == "lesion"].assign(bias=lambda d: d.mean_estimate / d.mean_true - 1)
        lesions = rows.pivot_table(index=["patient", "voi"], columns="method", values="bias").reset_index()
        lesions = lesions.merge(volumes, on=["patient", "voi"], validate="one_to_one").sort_values("volume_ml")
        print(f"\n{cand}, {model} SPECT: mean relative bias per lesion, over its scans")
        print(lesions.to_string(index=False, float_format="%.3f"))
        band = pd.cut(lesions.volume_ml, BANDS_ML, right=False)
        error = lesions[["cnn", "dvk"]].abs().groupby(band, observed=True).agg(["mean", "size"])
        table = pd.DataFrame({"lesions": error[("cnn", "size")], "cnn_mean_error": error[("cnn", "mean")],
                              "dvk_mean_error": error[("dvk", "mean")]})
        table["reduction"] = 1 - table.cnn_mean_error / table.dvk_mean_error
        print(f"\nmean error |bias| per volume band (mL), {model}:")
        print(table.to_string(float_format="%.3f"))


if __name__ == "__main__":
    main(*sys.argv[1:])
