import numpy as np, torch
from cohort_dosimetry.phantoms import make_virtual_patient
from cohort_dosimetry.model import load_model, SHIPPED_CARD
from cohort_dosimetry.model._inference import for_inference
from cohort_dosimetry.model import _inference
from cohort_dosimetry.physics import dose_rate_dvk
torch.set_num_threads(2)
model, card = load_model(SHIPPED_CARD)
stats = {}
def hook(mod, inp, out):
    if isinstance(out, torch.Tensor):
        a = out.detach().abs()
        nz = a[a > 0]
        s = stats.setdefault(type(mod).__name__, [0.0, np.inf])
        s[0] = max(s[0], float(a.max()))
        if nz.numel(): s[1] = min(s[1], float(nz.min()))
orig = _inference.for_inference
def fi(m):
    m = orig(m)
    for mod in m.modules(): mod.register_forward_hook(hook)
    return m
_inference.for_inference = fi
for seed in (47, 52, 57):
    p = make_virtual_patient(seed, hours=(4.0,))
    s = p["activity"].values[0] * np.prod(p.attrs["spacing_mm"]) / 1000
    d = p["density"].values
    dvk = dose_rate_dvk(s.astype(np.float32), d, tuple(p.attrs["spacing_mm"]), device="cpu")
    _inference.predict_dose_rate(s.astype(np.float32), d, dvk, tuple(p.attrs["spacing_mm"]), weights=SHIPPED_CARD, device="cpu")
for k, v in sorted(stats.items(), key=lambda kv: -kv[1][0]): print(f"{k:28s} max|x| {v[0]:.3g}  min nonzero {v[1]:.3g}")
