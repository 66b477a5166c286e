"""Per-VOI means of vert.py's maps: DVK, MC electrons, MC photons, MC/DVK and the photon share of the MC dose-rate.

"vert cortical" / "vert trabec.": vertebra voxels at rho >= 1.2 g/cm3 (the engine's bone) and below (its soft tissue).
"""
import sys

import numpy as np

NAMES = {1: "body", 4: "liver", 5: "kidney_left", 6: "kidney_right", 7: "spleen", 8: "vertebra_L2",
         9: "vertebra_L3", 10: "vertebra_L4", 11: "vertebra_L5", 101: "lesion_1"}
for f in sys.argv[1:]:
    d = np.load(f)
    lab, rho = d["lab"], d["rho"]
    print(f.rsplit("/", 1)[-1], "(dose-rates in Gy/s)")
    print(f"{'voi':14s} {'voxels':>6s} {'rho':>5s} {'A share':>8s} {'DVK':>10s} {'MC e':>10s} {'MC ph':>10s} "
          f"{'MC/DVK':>7s} {'ph frac':>7s}")
    vert = np.isin(lab, [8, 9, 10, 11])
    rows = [(n, lab == k) for k, n in NAMES.items()]
    rows += [("vert cortical", vert & (rho >= 1.2)), ("vert trabec.", vert & (rho < 1.2))]
    for n, m in rows:
        if not m.any():
            continue
        dv, e, ph = (float(d[k][m].mean()) for k in ("dvk", "e", "ph"))
        print(f"{n:14s} {m.sum():6d} {rho[m].mean():5.2f} {d['a'][m].sum() / d['a'].sum():8.4f} {dv:10.3e} "
              f"{e:10.3e} {ph:10.3e} {(e + ph) / dv:7.3f} {ph / (e + ph):7.3f}")
    print()
