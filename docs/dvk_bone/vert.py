"""DVK against the Monte Carlo engine for the SAME activity: where do they differ, and is it photons in bone?

Usage: python vert.py SEED HOURS OUTDIR. For virtual patient SEED at HOURS post injection, on its true activity and on
its fast SPECT (realisation 0): DVK (1.04/rho scaling) and the MC engine run twice, electrons only and photons only
(20 million decays each), saved to OUTDIR/vert_SEED_HOURS_{true,spect}.npz for vert_an.py.
Synthetic virtual patients only; seeds 18 (validation) and 1 (training) were used, no test patient.
"""
import sys
import time
from pathlib import Path

import numpy as np

from cohort_dosimetry.phantoms import make_virtual_patient
from cohort_dosimetry.physics import dose_rate_dvk, dose_rate_mc

seed, hour, out = int(sys.argv[1]), float(sys.argv[2]), Path(sys.argv[3])
p = make_virtual_patient(seed, hours=[hour])
sp = tuple(float(s) for s in p.attrs["spacing_mm"])
vox_ml = np.prod(sp) / 1000.0
rho = p.density.values.astype(np.float32)
lab = p.labels.values
for src, act in (("true", p.activity_true.isel(timepoint=0).values), ("spect", p.activity.isel(timepoint=0).values)):
    a = (act * vox_ml).astype(np.float32)  # Bq per voxel
    t = time.time()
    dvk = dose_rate_dvk(a, rho, sp)
    e, _ = dose_rate_mc(a, rho, sp, n_decays=20_000_000, emissions=("electron",), seed=1)
    ph, _ = dose_rate_mc(a, rho, sp, n_decays=20_000_000, emissions=("photon",), seed=2)
    print(f"{src}: done in {time.time() - t:.0f} s")
    np.savez_compressed(out / f"vert_{seed}_{int(hour)}_{src}.npz", dvk=dvk, e=e, ph=ph, a=a, rho=rho, lab=lab)
