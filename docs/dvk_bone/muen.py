"""mu_en/rho of the engine's bone and soft tissue (photoelectric + incoherent x Klein-Nishina mean transfer fraction,
the estimate test_materials checks against NIST for water)."""
import numpy as np
from cohort_dosimetry.physics._materials import TRANSPORT_MATERIALS, photon_mass_coefficients
ME = 0.51099895
def kn_transfer_fraction(e):
    k = e / ME; c = np.linspace(-1, 1, 20001)
    ratio = 1 / (1 + k * (1 - c))  # E'/E
    ds = ratio**2 * (ratio + 1 / ratio - (1 - c**2))
    return np.trapezoid(ds * (1 - ratio), c) / np.trapezoid(ds, c)
mats = {m.name: m for m in TRANSPORT_MATERIALS}
print(f"{'keV':>6s} {'soft':>8s} {'bone':>8s} {'ratio':>6s}")
for e in (0.030, 0.040, 0.055, 0.065, 0.080, 0.113, 0.150, 0.208):
    f = kn_transfer_fraction(e); v = {}
    for n in ("soft_tissue", "bone"):
        c = photon_mass_coefficients(mats[n], e); v[n] = float(c["photoelectric"] + c["incoherent"] * f)
    print(f"{e*1000:6.0f} {v['soft_tissue']:8.4f} {v['bone']:8.4f} {v['bone']/v['soft_tissue']:6.2f}")
