"""Session 15: A on TRAINING/VALIDATION patients' scans with the SPECT input Gaussian-filtered (sigma in voxels,
isotropic in voxel units), the 9 PyTomography fine-tuning scans and the fast scans (realisation 0) of the same
patients and time points. Descriptive: does removing high-frequency input content lower A's spleen NRMSE?

Run as it stands, from the repository (.venv/bin/python docs/cnn_weights_evidence/spleen_texture/input_filter.py)
with the session's scratch folders: S12 = `cohort-dosimetry train`'s stage-1 data (<out>/data), S13 = its
fine-tuning data (<out>/data_fine_tuning). It wrote input_filter.parquet, kept here (9 min on 2 cores). The filter
acts on the SPECT before everything (DVK and CNN); the DVK rows are those of the unfiltered SPECT."""
import dataclasses, numpy as np, pandas as pd
from pathlib import Path
from scipy import ndimage as ndi
from cohort_dosimetry.model._dataset import PatientScan
from cohort_dosimetry.model._evaluation import scan_errors
CARD = "cohort_dosimetry/model/weights/dblurdosenet_compact.json"
S12, S13 = Path("/work/runs/s12/data"), Path("/work/runs/s13/data_fine_tuning")
HOURS = (4.0, 24.0, 96.0, 168.0)
scans = ((1, 4.0), (2, 24.0), (3, 96.0), (4, 168.0), (5, 24.0), (6, 168.0), (7, 4.0), (10, 96.0), (18, 96.0))

@dataclasses.dataclass
class Filtered(PatientScan):
    sigma: float = 0.0
    def load(self, name):
        a = super().load(name)
        return ndi.gaussian_filter(np.asarray(a, dtype=np.float32), self.sigma) if name == "spect" and self.sigma else a

rows = []
for seed, h in scans:
    for model, scan0 in (("pyt", PatientScan(S13 / f"patient_{seed}", 0, 0)),
                         ("fast", PatientScan(S12 / f"patient_{seed}", HOURS.index(h), 0))):
        for sigma in (0.0, 0.5, 1.0):
            s = Filtered(scan0.directory, scan0.timepoint, scan0.realisation, sigma)
            for r in scan_errors(s, CARD, device="cpu"):
                if sigma and r["method"] == "dvk":
                    continue
                rows.append(dict(r, spect=model, sigma=sigma, seed=seed, hours=h))
    print(seed, h, flush=True)
d = pd.DataFrame(rows)
d.to_parquet(Path(__file__).with_name("input_filter.parquet"))
d["tag"] = np.where(d.method == "dvk", "dvk", "cnn_s" + d.sigma.astype(str))
d = d[d.voi_class != "body"]
pd.set_option("display.width", 200)
for what in ("nrmse", "mean_error"):
    print(what)
    print(d.pivot_table(index=["spect", "tag"], columns="voi_class", values=what).round(3))
