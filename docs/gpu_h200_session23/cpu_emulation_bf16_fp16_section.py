import numpy as np, torch, time, sys
from cohort_dosimetry.phantoms import make_virtual_patient
from cohort_dosimetry.model import _inference, SHIPPED_CARD
from cohort_dosimetry.physics import dose_rate_dvk
torch.set_num_threads(2)
p = make_virtual_patient(47, hours=(24.0,))
sp = tuple(p.attrs["spacing_mm"])
labels, names = p["labels"].values, p["labels"].attrs["names"]
lung = np.where((labels == [k for k,v in names.items() if v=="lung_left"][0]).any(axis=(1,2)))[0]
zs = slice(int(lung[len(lung)//2]) - 8, int(lung[len(lung)//2]) + 8)
s = (p["activity"].values[0] * np.prod(sp) / 1000).astype(np.float32)
d = p["density"].values
dvk = dose_rate_dvk(s, d, sp, device="cpu")
s, d, dvk, labels = s[zs], d[zs], dvk[zs], labels[zs]
ref = _inference.predict_dose_rate(s, d, dvk, sp, weights=SHIPPED_CARD, device="cpu", batch_size=4)
for dt in (torch.bfloat16, torch.float16):
    _inference._mixed_precision = lambda device, dt=dt: torch.autocast("cpu", dtype=dt)
    t=time.time(); m = _inference.predict_dose_rate(s, d, dvk, sp, weights=SHIPPED_CARD, device="cpu", batch_size=4); t=time.time()-t
    dd = [(names[int(v)], 100*(m[labels==v].mean()/ref[labels==v].mean()-1), (labels==v).sum()) for v in np.unique(labels[labels>0])]
    dd.sort(key=lambda x: -abs(x[1]))
    print(dt, f"{t:.1f}s", "max voxel diff % of max", 100*np.abs(m-ref).max()/ref.max(), flush=True)
    print("  worst VOI mean diffs %:", ", ".join(f"{n} {x:+.3f} ({k} vox)" for n,x,k in dd[:6]), flush=True)
