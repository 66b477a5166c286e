"""Training/evaluation data from virtual patients (synthetic: no patient data), one directory per patient.

Per patient (seed): anatomy and compartments (``make_anatomy``), the reconstructed SPECT of every time point and noise
realisation (``make_virtual_patient``), its DVK dose-rate (the prior) and the label: the MC dose-rate of the TRUE
activity. Dose-rate is linear in activity, so the MC runs ONCE PER KINETIC COMPARTMENT (unit-sum uptake shape, 1 Bq)
and every time point's label is ``sum_c A_c(t) * mc_c`` with the compartment activities ``A_c(t)`` (Bq) of the
kinetic model; its uncertainty adds in quadrature, ``sigma(t)^2 = sum_c (A_c(t) mc_c u_c)^2``.

Electrons and photons are simulated in separate, independent MC runs and summed (``emissions=`` of
``dose_rate_mc``): electrons give about 96 % of the dose-rate inside an uptake region, photons the rest, which
includes the cross-dose from the large diffuse compartments (blood, remainder) into the organs; photons get
``mc_photon_fraction`` of the electron decays (see :class:`DataSpec` for the measured trade-off).

Directory ``<data>/patient_<seed>/`` (all arrays (z, y, x) float32 ``.npy`` unless said otherwise):
``density`` g/cm3, ``labels`` int16, ``mc_per_bq`` (compartment, z, y, x) Gy/s per Bq, ``mc_uncertainty``
(compartment, z, y, x) relative, ``label_t{t}`` Gy/s, ``label_uncertainty_t{t}`` relative, ``spect_t{t}_r{r}`` Bq
per voxel, ``dvk_t{t}_r{r}`` Gy/s, and ``patient.json`` (seed, hours, compartments, decays, seconds per stage,
label uncertainty). A patient directory with ``patient.json`` is complete and is reused, not recomputed.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import numpy as np

ORGAN_CLASSES = ("liver", "kidney", "spleen", "lesion")  # "organ voxels" for the label-uncertainty target
#: VOI classes reported by the evaluation (Li et al. 2022): healthy liver, lesions, kidneys, spleen, lumbar vertebrae.
REPORTED_CLASSES = ("liver", "lesion", "kidney", "spleen", "vertebra")
#: Virtual patients held out from training of the shipped weights (``cohort-dosimetry train`` / ``evaluate``).
HELD_OUT_SEEDS = [8, 9, 15, 16, 17]


@dataclasses.dataclass(frozen=True)
class DataSpec:
    """How a patient's data are made. MC electron decays of a compartment: the larger of
    ``mc_decays_per_voxel`` x its support (voxels) and ``mc_decays_per_activity_share`` x its largest share of the
    patient's activity over the time points, clipped to [``mc_min_decays``, ``mc_max_decays``]; photon decays are
    ``mc_photon_fraction`` times that (at least ``mc_min_decays``). The activity-share term is for small hot
    compartments: a lesion holding 16 % of the activity at 3 voxels' worth of decays per voxel left its photon
    cross-dose the largest noise term in the healthy liver around it (seed 3: 3.0 % of the 4.3 % median).
    Where the rule leaves a time point's median label uncertainty in organ voxels above
    ``mc_label_uncertainty_target``, :func:`compartment_mc` tops up the compartment that dominates it (the rule
    alone left 2 of the 52 time points of the shipped weights' training data at 3.2-3.3 %).

    The defaults meet the label target, median relative uncertainty <= 3 % in organ voxels, measured: on the
    largest compact patient (seed 2, 17 compartments) 2.3-2.7 % per time point in 134 s of MC on 2 cores. There
    the healthy-liver compartment's own electron noise gives 1.7 % at 600 decays per voxel and the remainder
    compartment's photon cross-dose 1.2 % at 1e7 photon decays, hence 1000 per voxel and photons at half the
    electrons. The Monte Carlo stratifies beta energies per voxel, which cut the decays needed by 2.3.
    """

    grid: str = "compact"
    hours: tuple[float, ...] = (4.0, 24.0, 96.0, 168.0)
    realisations: int = 3
    spect: str = "fast"
    mc_decays_per_voxel: float = 1000.0
    mc_decays_per_activity_share: float = 1e8
    mc_min_decays: int = 200_000
    mc_max_decays: int = 50_000_000
    mc_photon_fraction: float = 0.5
    mc_label_uncertainty_target: float = 0.03


def patient_dir(data_dir: str | Path, seed: int) -> Path:
    return Path(data_dir) / f"patient_{seed}"


def make_patient_data(
    data_dir: str | Path, seed: int, spec: DataSpec, device=None, log=print, mc_from: str | Path | None = None
) -> dict:
    """Simulate one virtual patient's SPECT, DVK and MC labels into ``patient_dir(data_dir, seed)``; returns its
    ``patient.json`` content. Reuses a complete directory written with the same ``spec`` and, for the fast SPECT
    model, the same stored calibration constants; refuses (ValueError naming the folder) one made otherwise.

    ``mc_from``: another data folder holding this patient prepared with the same grid and MC settings (``mc_*``);
    its per-compartment MC maps are reused instead of simulated again (they do not depend on the time points or the
    SPECT model). Used for the PyTomography fine-tuning scans of patients already prepared with the fast model.
    """
    from cohort_dosimetry.phantoms import make_anatomy, make_virtual_patient
    from cohort_dosimetry.physics import dose_rate_dvk

    out = patient_dir(data_dir, seed)
    meta_path = out / "patient.json"
    constants = _spect_constants(spec)
    if meta_path.exists():
        meta = json.loads(meta_path.read_text())
        # a folder from before the constants were recorded has none: reusable only for PyTomography data
        if meta["spec"] == _spec_json(spec) and meta.get("spect_constants", {}) == constants:
            return meta
        raise ValueError(
            f"{out} holds data made with another specification {meta['spec']} or SPECT model constants "
            f"{meta.get('spect_constants')} (now {constants}); use a new data folder"
        )
    out.mkdir(parents=True, exist_ok=True)
    seconds: dict[str, float] = {}

    tic = time.perf_counter()
    anatomy = make_anatomy(seed, spec.grid)
    spacing = tuple(float(s) for s in anatomy.attrs["spacing_mm"])
    density = anatomy["density"].values.astype(np.float32)
    seconds["anatomy"] = time.perf_counter() - tic

    tic = time.perf_counter()
    if mc_from is None:
        mc, mc_uncertainty, decays = compartment_mc(anatomy, spec, seed, device=device, log=log)
        seconds["mc_compartments"] = time.perf_counter() - tic
    else:
        mc, mc_uncertainty, decays = _reused_mc(patient_dir(mc_from, seed), spec, density)
        seconds["mc_compartments"] = 0.0
    label_uncertainty = write_labels(out, anatomy, spec, mc, mc_uncertainty)
    labels = anatomy["labels"].values.astype(np.int16)

    tic = time.perf_counter()
    patient = make_virtual_patient(
        seed, grid=spec.grid, hours=list(spec.hours), spect=spec.spect, realisations=spec.realisations
    )
    seconds["spect"] = time.perf_counter() - tic
    voxel_ml = float(np.prod(spacing)) / 1000.0
    spect_all = _spect_by_realisation(patient, spec.realisations)  # (realisation, timepoint, z, y, x) Bq/mL
    tic = time.perf_counter()
    for t in range(len(spec.hours)):
        for r in range(spec.realisations):
            spect_bq = (spect_all[r, t] * voxel_ml).astype(np.float32)
            np.save(out / f"spect_t{t}_r{r}.npy", spect_bq)
            np.save(out / f"dvk_t{t}_r{r}.npy", dose_rate_dvk(spect_bq, density, spacing, device=device))
    seconds["dvk"] = time.perf_counter() - tic
    np.save(out / "density.npy", density)
    np.save(out / "labels.npy", labels)

    meta = {
        "seed": int(seed),
        "spec": _spec_json(spec),
        "spect_constants": constants,
        "spacing_mm": list(spacing),
        "compartments": [str(c) for c in anatomy["compartment"].values],
        "mc_decays": decays,
        "label_median_relative_uncertainty_in_organs": label_uncertainty,
        "voi_names": {str(k): v for k, v in anatomy["labels"].attrs["names"].items()},
        "seconds": seconds,
        "synthetic": True,
        "mc_from": None if mc_from is None else str(patient_dir(mc_from, seed)),
    }
    meta_path.write_text(json.dumps(meta, indent=2) + "\n")
    log(
        f"patient {seed}: done in {sum(seconds.values()):.0f} s "
        f"{json.dumps({k: round(v, 1) for k, v in seconds.items()})}; "
        f"median label uncertainty in organ voxels {max(label_uncertainty):.3f} (worst time point)"
    )
    return meta


def _reused_mc(source: Path, spec: DataSpec, density: np.ndarray):
    """(mc, mc_uncertainty, decays) of a patient prepared in ``source`` with the same grid, MC settings and density
    (g/cm3, (z, y, x): the phantom code must not have changed in between)."""
    meta_path = source / "patient.json"
    if not meta_path.exists():
        raise ValueError(f"{source}: no prepared patient (patient.json missing) to reuse the MC maps from")
    theirs = json.loads(meta_path.read_text())["spec"]
    ours = _spec_json(spec)
    mc_keys = [k for k in ours if k == "grid" or k.startswith("mc_")]
    differ = {k: (theirs.get(k), ours[k]) for k in mc_keys if theirs.get(k) != ours[k]}
    if differ:
        raise ValueError(f"{source} was prepared with other MC settings {differ} (theirs, ours); cannot reuse its maps")
    if not np.array_equal(np.load(source / "density.npy"), density):
        raise ValueError(
            f"{source}: its density differs from this patient's (phantom code changed?); cannot reuse its MC maps"
        )
    decays = json.loads(meta_path.read_text())["mc_decays"]
    return np.load(source / "mc_per_bq.npy"), np.load(source / "mc_uncertainty.npy"), decays


def compartment_mc(anatomy, spec: DataSpec, seed: int, device=None, log=print):
    """MC dose-rate per Bq of every kinetic compartment of ``anatomy`` (electrons and photons in separate runs).

    Decays follow :class:`DataSpec`'s allocation rule; then, while the median label uncertainty in organ voxels of
    some time point exceeds ``spec.mc_label_uncertainty_target``, the compartment carrying the largest share of that
    time point's label variance gets an extra, independent run (at most ``MAX_TOP_UPS`` in all), sized from that
    share to reach the target, and is combined with its earlier runs weighted by decays
    (:func:`combine_mc_runs`). A patient still above the target after them is logged and recorded, not dropped.

    Returns (mc (compartment, z, y, x) Gy/s per Bq, relative uncertainty (compartment, z, y, x), decays per
    compartment as a list of {"electron": total, "photon": total, "runs": [[electron, photon], ...]}).
    """
    from cohort_dosimetry.phantoms import compartment_activity_bq
    from cohort_dosimetry.physics import dose_rate_mc

    spacing = tuple(float(s) for s in anatomy.attrs["spacing_mm"])
    density = anatomy["density"].values.astype(np.float32)
    compartments = anatomy["compartments"].values
    names = anatomy["compartment"].values
    if len(names) * 2 > _SEEDS_PER_RUN:
        raise ValueError(f"patient {seed}: {len(names)} compartments; MC seeds allow at most {_SEEDS_PER_RUN // 2}")
    activity_c = compartment_activity_bq(anatomy, list(spec.hours)).values  # (timepoint, compartment) Bq
    share = (activity_c / activity_c.sum(axis=1, keepdims=True)).max(axis=0)
    # per compartment and emission: (dose-rate Gy/s per Bq, absolute standard error Gy/s per Bq, decays)
    runs: list[dict[str, tuple[np.ndarray, np.ndarray, int]]] = []
    decay_runs: list[list[list[int]]] = []  # per compartment: [electron, photon] decays of each run

    def simulate(c: int, n: int, run: int) -> dict[str, tuple[np.ndarray, np.ndarray, int]]:
        n_photon = max(int(n * spec.mc_photon_fraction), spec.mc_min_decays)
        out = {}
        for k, (emission, n_e) in enumerate((("electron", n), ("photon", n_photon))):
            dose, u = dose_rate_mc(
                compartments[c],
                density,
                spacing,
                n_decays=n_e,
                seed=seed * 1000 + _SEEDS_PER_RUN * run + 2 * c + k,
                device=device,
                emissions=(emission,),
            )
            out[emission] = (dose, dose * np.nan_to_num(u), n_e)
        return out

    for c, name in enumerate(names):
        support = int(np.count_nonzero(compartments[c]))
        wanted = max(spec.mc_decays_per_voxel * support, spec.mc_decays_per_activity_share * share[c])
        n = int(np.clip(wanted, spec.mc_min_decays, spec.mc_max_decays))
        t0 = time.perf_counter()
        runs.append(simulate(c, n, 0))
        decay_runs.append([[runs[c]["electron"][2], runs[c]["photon"][2]]])
        log(
            f"patient {seed}: MC of compartment {name} ({support} voxels, {runs[c]['electron'][2]} electron + "
            f"{runs[c]['photon'][2]} photon decays) {time.perf_counter() - t0:.1f} s"
        )

    def maps():
        mc = np.stack([r["electron"][0] + r["photon"][0] for r in runs]).astype(np.float32)
        sigma = np.stack([np.hypot(r["electron"][1], r["photon"][1]) for r in runs]).astype(np.float32)
        return mc, sigma

    organ = organ_mask(anatomy["labels"].values, anatomy["labels"].attrs["names"])
    mc, sigma = maps()
    for top_up in range(1, MAX_TOP_UPS + 1):
        median_u, variance_share = _label_uncertainty_in_organs(activity_c, mc[:, organ], sigma[:, organ])
        t = int(np.argmax(median_u))
        if median_u[t] <= spec.mc_label_uncertainty_target:
            break
        c = int(np.argmax(variance_share[t]))
        f = float(variance_share[t, c])
        # relative variance scales as 1/decays: after (1 + g) times the decays, (1 - f) + f / (1 + g) must reach the
        # target; 10 % margin for the median's noise, at most 3 times the decays so far (the share is an estimate),
        # and a doubling where c alone cannot get there
        room = (spec.mc_label_uncertainty_target / median_u[t]) ** 2 - (1.0 - f)
        g = 1.0 if room <= 0 else min(3.0, 1.1 * f / room - 1.0)
        n = max(int(g * runs[c]["electron"][2]), spec.mc_min_decays)
        t0 = time.perf_counter()
        extra = simulate(c, n, top_up)
        runs[c] = {e: combine_mc_runs(runs[c][e], extra[e]) for e in runs[c]}
        decay_runs[c].append([extra["electron"][2], extra["photon"][2]])
        log(
            f"patient {seed}: median label uncertainty in organ voxels "
            f"{', '.join(f'{u:.4f} at {h:g} h' for u, h in zip(median_u, spec.hours))}: above the target "
            f"{spec.mc_label_uncertainty_target:g}; top-up {top_up} of compartment {names[c]} ({f:.0%} of its "
            f"variance): {extra['electron'][2]} electron + {extra['photon'][2]} photon decays "
            f"{time.perf_counter() - t0:.1f} s"
        )
        mc, sigma = maps()
    else:
        median_u, _ = _label_uncertainty_in_organs(activity_c, mc[:, organ], sigma[:, organ])
        if median_u.max() > spec.mc_label_uncertainty_target:
            log(
                f"patient {seed}: WARNING label uncertainty still {median_u.max():.4f} after {MAX_TOP_UPS} top-ups "
                f"(target {spec.mc_label_uncertainty_target:g}); kept and recorded in patient.json"
            )
    decays = [
        {"electron": int(sum(r[0] for r in rs)), "photon": int(sum(r[1] for r in rs)), "runs": rs} for rs in decay_runs
    ]
    mc_uncertainty = np.divide(sigma, mc, out=np.zeros_like(sigma), where=mc > 0)
    return mc, mc_uncertainty, decays


#: MC seeds of a patient: ``seed * 1000 + _SEEDS_PER_RUN * run + 2 * compartment + (0 electron, 1 photon)``, so
#: runs (0 the allocation rule, 1.. the top-ups) and patients never share a seed.
_SEEDS_PER_RUN = 100
#: Label top-ups per patient at most (each one run of one compartment; see :func:`compartment_mc`).
MAX_TOP_UPS = 9


def combine_mc_runs(a: tuple[np.ndarray, np.ndarray, int], b: tuple[np.ndarray, np.ndarray, int]):
    """Two independent MC runs of one source as one: (dose-rate, absolute standard error, decays) each, arrays of
    any shape. Each run is the mean over its decays, so the combination weights them by decays:
    ``(n_a d_a + n_b d_b) / (n_a + n_b)`` with standard error ``sqrt(n_a^2 s_a^2 + n_b^2 s_b^2) / (n_a + n_b)``."""
    (d_a, s_a, n_a), (d_b, s_b, n_b) = a, b
    n = n_a + n_b
    dose = (n_a * d_a.astype(np.float64) + n_b * d_b) / n
    sigma = np.hypot(n_a * s_a.astype(np.float64), n_b * s_b.astype(np.float64)) / n
    return dose.astype(np.float32), sigma.astype(np.float32), n


def _label_uncertainty_in_organs(activity_c: np.ndarray, mc: np.ndarray, sigma: np.ndarray):
    """Per time point, the median relative label uncertainty over organ voxels and each compartment's share of the
    mean relative label variance there. ``activity_c`` (timepoint, compartment) Bq; ``mc`` and ``sigma``
    (compartment, voxel) Gy/s per Bq. Returns ((timepoint,), (timepoint, compartment))."""
    median_u, shares = [], []
    for a in activity_c.astype(np.float64):
        label = a @ mc
        parts = (a[:, None] * sigma) ** 2  # (compartment, voxel) Gy^2/s^2
        rel = np.sqrt(parts.sum(axis=0)) / np.where(label > 0, label, np.inf)
        median_u.append(float(np.median(rel)))
        per_c = (parts / np.where(label > 0, label, np.inf) ** 2).mean(axis=1)
        shares.append(per_c / max(per_c.sum(), np.finfo(float).tiny))
    return np.asarray(median_u), np.asarray(shares)


def write_labels(out: Path, anatomy, spec: DataSpec, mc: np.ndarray, mc_uncertainty: np.ndarray) -> list[float]:
    """Write ``mc_per_bq``, ``mc_uncertainty`` and every time point's ``label_t{t}`` (Gy/s) with its relative
    uncertainty into ``out``; returns the median label uncertainty in organ voxels per time point."""
    from cohort_dosimetry.phantoms import compartment_activity_bq

    np.save(out / "mc_per_bq.npy", mc)
    np.save(out / "mc_uncertainty.npy", mc_uncertainty)
    activity_c = compartment_activity_bq(anatomy, list(spec.hours)).values  # (timepoint, compartment) Bq
    organ = organ_mask(anatomy["labels"].values, anatomy["labels"].attrs["names"])
    label_uncertainty = []
    for t in range(len(spec.hours)):
        label = np.tensordot(activity_c[t], mc, axes=(0, 0)).astype(np.float32)
        sigma = np.sqrt(np.tensordot(activity_c[t] ** 2, (mc * mc_uncertainty) ** 2, axes=(0, 0)))
        rel = np.divide(sigma, label, out=np.zeros_like(label), where=label > 0).astype(np.float32)
        np.save(out / f"label_t{t}.npy", label)
        np.save(out / f"label_uncertainty_t{t}.npy", rel)
        label_uncertainty.append(float(np.median(rel[organ])))
    return label_uncertainty


def _spec_json(spec: DataSpec) -> dict:
    return json.loads(json.dumps(dataclasses.asdict(spec)))


def _spect_constants(spec: DataSpec) -> dict:
    """The SPECT model's constants that the data depend on beyond ``spec``: the fast model's stored calibration."""
    if spec.spect != "fast":
        return {}
    from cohort_dosimetry.phantoms import FastModelCalibration

    return dataclasses.asdict(FastModelCalibration.stored())


def _spect_by_realisation(patient, realisations: int) -> np.ndarray:
    activity = patient["activity"]
    if "realisation" in activity.dims:
        return activity.transpose("realisation", "timepoint", "z", "y", "x").values
    if realisations != 1:
        raise ValueError(f"make_virtual_patient returned no 'realisation' dimension for {realisations} realisations")
    return activity.transpose("timepoint", "z", "y", "x").values[None]


def organ_mask(labels: np.ndarray, names) -> np.ndarray:
    """Voxels of the VOI classes liver, kidney, spleen, lesion: where the label uncertainty target applies."""
    from cohort_dosimetry.vocabulary import voi_type

    organ_labels = [int(k) for k, v in names.items() if voi_type(v) in ORGAN_CLASSES]
    return np.isin(labels, organ_labels)


@dataclasses.dataclass
class PatientScan:
    """One scan of a prepared patient, arrays loaded lazily from the patient directory (memory-mapped)."""

    directory: Path
    timepoint: int
    realisation: int

    def load(self, name: str) -> np.ndarray:
        suffix = {
            "spect": f"_t{self.timepoint}_r{self.realisation}",
            "dvk": f"_t{self.timepoint}_r{self.realisation}",
            "label": f"_t{self.timepoint}",
            "label_uncertainty": f"_t{self.timepoint}",
        }.get(name, "")
        return np.load(self.directory / f"{name}{suffix}.npy", mmap_mode="r")

    def voi_names(self) -> dict[int, str]:
        """VOI label value -> name (``patient.json``)."""
        names = json.loads((self.directory / "patient.json").read_text())["voi_names"]
        return {int(k): v for k, v in names.items()}


def patient_scans(data_dir: str | Path, seeds, spec: DataSpec) -> list[PatientScan]:
    """Every (time point, realisation) scan of the prepared patients ``seeds``."""
    scans = []
    for seed in seeds:
        directory = patient_dir(data_dir, seed)
        if not (directory / "patient.json").exists():
            raise ValueError(f"{directory}: no prepared data (patient.json missing); run make_patient_data first")
        scans += [PatientScan(directory, t, r) for t in range(len(spec.hours)) for r in range(spec.realisations)]
    return scans
