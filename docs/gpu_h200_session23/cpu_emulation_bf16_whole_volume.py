import numpy as np, torch, time
from cohort_dosimetry.phantoms import make_virtual_patient
from cohort_dosimetry.dose import dose_rates
from cohort_dosimetry.model import _inference
torch.set_num_threads(2)
p = make_virtual_patient(47, hours=(24.0,)); scan = p.isel(timepoint=0)
labels, names = p["labels"].values, p["labels"].attrs["names"]
ref = dose_rates(scan, device="cpu")["dose_rate_cnn"].values
for dt in (torch.bfloat16, torch.float16):
    _inference._mixed_precision = lambda device, dt=dt: torch.autocast("cpu", dtype=dt)
    t=time.time(); m = dose_rates(scan, device="cpu")["dose_rate_cnn"].values; t=time.time()-t
    d = [(names[int(v)], 100*(m[labels==v].mean()/ref[labels==v].mean()-1)) for v in np.unique(labels[labels>0])]
    d.sort(key=lambda x: -abs(x[1]))
    print(dt, f"{t:.1f}s", "max voxel diff % of max", 100*np.abs(m-ref).max()/ref.max())
    print("  worst VOI mean diffs %:", ", ".join(f"{n} {x:+.2f}" for n,x in d[:8]))
