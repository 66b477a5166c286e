"""Voxel-level absorbed dose per patient: registration, warp and voxel integration against the VOI-level integration.

Inputs: seeded synthetic virtual patients (``make_virtual_patient(seed, grid="compact")``, 130x128x128 at
3.0x3.91x3.91 mm, 4 time points at 4, 24, 96 and 168 h, fast SPECT model; no patient data) moved between time points
by ``move_patient`` (rigid shift up to 15 mm and rotation up to 5 degrees, breathing organ displacement up to 8 mm,
the true motion kept). Dose-rate maps: ``dose_rate_dvk`` of each time point's moved reconstructed activity
(Bq per voxel = Bq/mL x voxel volume mL) and density.

Measured per patient in this run:
- setup (not product cost, reported): making the patient, moving it, the 4 DVK dose-rate maps;
- registration: ``register`` of the CT of each of the 3 later time points to the first (rigid, then diffeomorphic
  demons), seconds per registration and per patient; target registration error (TRE) against the true motion over
  the reference body voxels whose true position lies inside the field of view, and Dice of the kidneys and the spleen
  (``contour_dice``), with registration and without (``identity_result``: the maps used as they lie);
- warp + integrate: the 3 later dose-rate maps warped onto the first time point's grid (``RegistrationResult.warp``,
  as the cohort flow warps them: ``pipeline.REGISTRATION_SETTINGS["warp"]``) and ``integrate_voxels`` of the 4 maps;
- baseline, VOI level: each time point's VOI mean dose-rates (its own contours, no registration needed) and
  ``fit_time_activity`` of every VOI's mean curve (best of 3).
Ratio: (registration + warp + integrate) / VOI level, i.e. how many times the VOI-level cost the voxel-level path
costs. The DVK maps are common to both paths and left out of both.

Run: ``.venv/bin/python bench/absorbed_dose.py [--patients N] [--seed S] [--device cpu|cuda]``; patient i has
patient and motion seed S + i. A few minutes per patient on 2 CPU cores; the machine may be shared: the load average
is printed with the table.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
from _timing import best_of

from cohort_dosimetry.grid import GRIDS, Grid
from cohort_dosimetry.phantoms import make_virtual_patient, move_patient
from cohort_dosimetry.physics import dose_rate_dvk
from cohort_dosimetry.pipeline import REGISTRATION_SETTINGS
from cohort_dosimetry.registration import contour_dice, identity_result, register, target_registration_error
from cohort_dosimetry.stats import fit_time_activity, integrate_voxels

DICE_ORGANS = ("kidney_left", "kidney_right", "spleen")


def observable_body(labels: np.ndarray, truth: np.ndarray, grid: Grid) -> np.ndarray:
    """Reference body voxels (z, y, x) whose true position at the moved time point lies inside the field of view
    (elsewhere the moved CT holds no information). ``truth`` (3, z, y, x) true displacement, mm, axial grid."""
    index = np.indices(grid.shape).astype(np.float64) + truth / np.asarray(grid.spacing_mm)[:, None, None, None]
    inside = np.all((index >= 0) & (index <= np.asarray(grid.shape)[:, None, None, None] - 1), axis=0)
    return (labels > 0) & inside


def pooled_tre(errors: list[dict]) -> tuple[float, float]:
    """Mean (weighted by voxel count) and max of several ``target_registration_error`` results, mm."""
    n = np.array([e["n"] for e in errors], dtype=np.float64)
    return float(np.sum(n * [e["mean_mm"] for e in errors]) / n.sum()), max(e["max_mm"] for e in errors)


def voi_level(rates: np.ndarray, labels: np.ndarray, names: dict, hours: np.ndarray) -> dict:
    """VOI-level integration: per time point VOI mean dose-rates on that time point's own contours, then
    ``fit_time_activity`` of every VOI's mean curve. ``rates`` (t, z, y, x) Gy/s, ``labels`` (t, z, y, x)."""
    n_labels = max(names) + 1
    curves = []
    for rate, label in zip(rates, labels):
        flat = label.ravel()
        counts = np.bincount(flat, minlength=n_labels)
        sums = np.bincount(flat, weights=rate.ravel().astype(np.float64), minlength=n_labels)
        curves.append(sums / np.maximum(counts, 1))
    curve = np.stack(curves)
    return {name: fit_time_activity(hours, curve[:, label]) for label, name in names.items()}


def bench_patient(seed: int, device) -> dict:
    row: dict = {"seed": seed}
    start = time.perf_counter()
    patient = make_virtual_patient(seed, grid="compact", device=device)
    row["make_s"] = time.perf_counter() - start
    grid = Grid.from_attrs(tuple(int(patient.sizes[d]) for d in ("z", "y", "x")), patient.attrs)
    assert grid.shape == GRIDS["compact"].shape and grid.spacing_mm == GRIDS["compact"].spacing_mm
    hours = patient["hours_post_injection"].values.astype(np.float64)
    n_t = len(hours)

    start = time.perf_counter()
    moved = move_patient(patient, seed=seed)
    row["move_s"] = time.perf_counter() - start
    ct = moved["ct_hu"].values
    labels = moved["labels"].values
    names = {int(k): v for k, v in moved["labels"].attrs["names"].items()}
    activity = moved["activity"].values  # (timepoint, z, y, x) Bq/mL
    density = moved["density"].values

    start = time.perf_counter()
    rates = np.stack(
        [
            dose_rate_dvk(activity[t] * grid.voxel_volume_ml, density[t], grid.spacing_mm, device=device)
            for t in range(n_t)
        ]
    )
    row["dvk_s"] = time.perf_counter() - start

    # registration of every later time point's CT to the first
    results = {}
    for t in range(1, n_t):
        results[t] = register(ct[0], ct[t], grid)
    row["registration_s"] = sum(r.seconds for r in results.values())
    row["per_registration_s"] = row["registration_s"] / len(results)
    identity = identity_result(ct[0], grid)
    with_reg, without = [], []
    dice_with, dice_without = [], []
    for t, result in results.items():
        truth = moved["displacement_true"].values[t]
        body = observable_body(labels[0], truth, grid)
        with_reg.append(target_registration_error(result, truth, body))
        without.append(target_registration_error(identity, truth, body))
        after = contour_dice(labels[0], labels[t], result, names)
        before = contour_dice(labels[0], labels[t], identity, names)
        dice_with += [after[o] for o in DICE_ORGANS]
        dice_without += [before[o] for o in DICE_ORGANS]
    row["tre_with"] = pooled_tre(with_reg)
    row["tre_without"] = pooled_tre(without)
    row["dice_with"] = min(dice_with)
    row["dice_without"] = min(dice_without)

    # warp the later dose-rate maps onto the reference and integrate voxel by voxel
    start = time.perf_counter()
    warped = np.stack([rates[0]] + [results[t].warp(rates[t], REGISTRATION_SETTINGS["warp"]) for t in range(1, n_t)])
    voxel = integrate_voxels(warped, hours)
    row["warp_integrate_s"] = time.perf_counter() - start
    row["voxel_counts"] = voxel.counts

    # baseline: the VOI-level integration of the same patient
    row["voi_s"] = best_of(3, lambda: voi_level(rates, labels, names, hours))
    row["n_vois"] = len(names)
    row["ratio"] = (row["registration_s"] + row["warp_integrate_s"]) / row["voi_s"]
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=3, help="virtual patients (default 3)")
    parser.add_argument("--seed", type=int, default=0, help="patient i has patient and motion seed SEED + i")
    parser.add_argument("--device", default=None, help="torch device of the SPECT model and DVK (default: auto)")
    args = parser.parse_args()
    if args.patients < 1:
        parser.error("--patients must be >= 1")
    rows = [bench_patient(args.seed + i, args.device) for i in range(args.patients)]
    grid = GRIDS["compact"]
    print(
        f"voxel-level absorbed dose per patient, compact grid {'x'.join(map(str, grid.shape))}, 4 time points, "
        f"3 registrations (synthetic virtual patients; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} "
        f"cores)"
    )
    print(
        f"{'patient':>8}{'reg s':>8}{'s/reg':>7}{'warp+int s':>11}{'VOI s':>8}{'ratio':>8}"
        f"{'TRE mean/max reg mm':>21}{'TRE mean/max none mm':>22}{'Dice min reg':>14}{'Dice min none':>15}"
    )
    for r in rows:
        tre_with = "{:.1f} / {:.1f}".format(*r["tre_with"])
        tre_without = "{:.1f} / {:.1f}".format(*r["tre_without"])
        print(
            f"{r['seed']:>8}{r['registration_s']:>8.1f}{r['per_registration_s']:>7.1f}{r['warp_integrate_s']:>11.2f}"
            f"{r['voi_s']:>8.3f}{r['ratio']:>8.0f}{tre_with:>21}{tre_without:>22}"
            f"{r['dice_with']:>14.3f}{r['dice_without']:>15.3f}"
        )
    print(
        "ratio: (registration + warp + integrate) / VOI level (VOI mean curves from each time point's own contours and "
        f"fit_time_activity of all {rows[0]['n_vois']} VOIs, best of 3)."
    )
    print(
        "TRE: over the reference body voxels that stay in the field of view, pooled over the 3 moved time points; "
        f"Dice: the smallest of {', '.join(DICE_ORGANS)} over the 3 time points; 'none' = without registration."
    )
    for r in rows:
        counts = ", ".join(f"{k} {v}" for k, v in r["voxel_counts"].items())
        print(
            f"patient {r['seed']} setup (not in the ratio): make_virtual_patient {r['make_s']:.1f} s, move_patient "
            f"{r['move_s']:.1f} s, 4 DVK maps {r['dvk_s']:.1f} s; voxel rules: {counts}"
        )


if __name__ == "__main__":
    main()
