"""The steps of a cohort run as plain functions of paths and ids, usable without Prefect.

Each step opens the store itself, does one unit of work and returns a small, picklable summary, so that an
orchestrator (the Prefect flows in ``flows/``, a notebook, a shell loop) can run steps anywhere -- another process, a
Dask worker on another machine -- and pass only ids and paths between them, never arrays.

Every step is idempotent: it looks in the store first and skips work that is complete, so a rerun after a crash
computes only what is missing. For dose-rate maps "complete" means made with the run's settings: each map records its
settings key in its provenance (:func:`map_settings`), and a map made with other settings is computed again.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import pandas as pd
import xarray as xr

from cohort_dosimetry import __version__
from cohort_dosimetry.constants import DEFAULT_DOSE_GRID, MC_DECAYS, MC_SCAN_RULES, MC_TARGET_HOURS, METHODS
from cohort_dosimetry.grid import parse_dose_grid


@dataclass(frozen=True)
class StepResult:
    """What one step did for one scan: ``status`` is "done", "skipped" (already complete) or "failed";
    ``device``: where a dose step computed ("cpu", "cuda:0"; "" for other steps and for maps not computed)."""

    step: str
    patient: str
    timepoint: str
    status: str
    seconds: float
    message: str = ""
    device: str = ""
    #: dose steps: the stored map this step computed or reused: {"settings_sha256", "written_utc", "device" (that
    #: computed it), "waited_s" (for another run computing it)}; empty for other steps and failures
    map_record: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return asdict(self)


#: Ingest report status -> step status of the run record.
_INGEST_STATUS = {"written": "done", "new_version": "done", "unchanged": "skipped", "rejected": "failed"}


def plan_cohort_ingest(
    dicom_dir: str | Path,
    cohort_dir: str | Path,
    grid: str = DEFAULT_DOSE_GRID,
    roi_names: dict[str, str] | None = None,
):
    """Discovery and labels of an ingest in steps (``cohort_dosimetry.io.plan_ingest``): the plan whose scans
    :func:`ingest_planned_scan` builds and writes one by one, anywhere; :func:`finish_cohort_ingest` ends it."""
    from cohort_dosimetry.io import plan_ingest

    return plan_ingest(dicom_dir, cohort_dir, grid=parse_dose_grid(grid), roi_names=roi_names)


def ingest_planned_scan(cohort_dir: str | Path, scan, lock_timeout_s: float | None = None) -> dict:
    """Build and write one planned scan (``cohort_dosimetry.io.ingest_scan``); store locks are waited for at most
    ``lock_timeout_s`` seconds (None: the configured wait). Returns {"rows": its report rows, "seconds": wall time}."""
    from cohort_dosimetry.io import ingest_scan
    from cohort_dosimetry.store import lock_timeout

    t0 = time.perf_counter()
    with lock_timeout(lock_timeout_s):
        rows = ingest_scan(cohort_dir, scan)
    return {"rows": rows, "seconds": time.perf_counter() - t0}


def failed_planned_scan(scan, message: str) -> dict:
    """The outcome of a planned scan whose :func:`ingest_planned_scan` did not return (its process died, it timed
    out), as :func:`ingest_planned_scan` gives it: one "rejected" report row naming the SPECT series."""
    return {"rows": [scan.failed(message)], "seconds": 0.0}


def finish_cohort_ingest(cohort_dir: str | Path, plan, outcomes: list[dict]) -> list[dict]:
    """End an ingest in steps: cycle notes and the report table (``cohort_dosimetry.io.finish_ingest``) from the
    plan's rows and the scans' ``outcomes`` (of :func:`ingest_planned_scan` or :func:`failed_planned_scan`).
    Returns one StepResult per scan or rejected file/series."""
    from cohort_dosimetry.io import finish_ingest

    finish_ingest(cohort_dir, [*plan.rows, *(row for outcome in outcomes for row in outcome["rows"])])
    results = [_ingest_step(row, 0.0) for row in plan.rows if _is_outcome_row(row)]
    for outcome in outcomes:
        row = next((r for r in outcome["rows"] if _is_outcome_row(r)), None)
        if row is not None:
            results.append(_ingest_step(row, outcome["seconds"]))
    return results


def _is_outcome_row(row: dict) -> bool:
    """A report row that says what became of a scan, file or series (not a warning or a note about it)."""
    return row["status"] in _INGEST_STATUS and row["severity"] != "warning"


def _ingest_step(row: dict, seconds: float) -> dict:
    return StepResult(
        "ingest",
        row["patient"],
        row["timepoint"],
        _INGEST_STATUS[row["status"]],
        seconds,
        "" if row["status"] != "rejected" else f"{row['source']}: {row['message']}",
    ).as_dict()


def map_settings(
    method: str,
    spacing_mm,
    *,
    mc_decays: int = MC_DECAYS,
    seed: int = 0,
    weights: str | Path | None = None,
    prior_dvk: dict | None = None,
) -> dict:
    """The settings key of one dose-rate map: everything that decides its values, as plain JSON types.

    A stored map whose provenance ``settings`` equal this key is current and is reused; any difference makes a run
    compute it again (:func:`map_stale_reason`). The key holds ``method`` and ``grid_spacing_mm`` ((z, y, x) mm),
    and per method:

    * "dvk": ``nuclide`` and ``kernel_sha256``, the sha256 of the kernel it is convolved with (float32 bytes of
      ``physics.voxel_kernel(nuclide, spacing, default_kernel_shape(spacing), "total")``);
    * "cnn": ``weights_sha256`` and ``normalisation`` of the model card ``weights`` (None: the shipped one), and
      ``prior_dvk``, the DVK map it takes as its prior: ``{"settings_sha256", "written_utc"}`` of the stored DVK
      map, ``written_utc`` None when the DVK map was computed for it in memory (required for "cnn");
    * "mc": ``engine`` and ``engine_version`` (``physics.ENGINE_VERSION``), ``nuclide``, ``n_decays`` and ``seed``.

    Recorded beside the key but not in it: software version, device and wall time. A release or a device that
    changes no setting gives the same map up to float round-off; a change of the numbers comes with a new engine
    version, kernel or weights, which are in the key.
    """
    from cohort_dosimetry.dose import dose_method

    spec = dose_method(method)
    key: dict[str, Any] = {"method": method, "grid_spacing_mm": [float(s) for s in spacing_mm]}
    if method == "cnn" and (not isinstance(prior_dvk, dict) or set(prior_dvk) != {"settings_sha256", "written_utc"}):
        raise ValueError(
            "the cnn map's settings need prior_dvk = {settings_sha256, written_utc} of its DVK map, "
            f"got {prior_dvk!r}"
        )
    settings = spec.settings(tuple(key["grid_spacing_mm"]), mc_decays=mc_decays, seed=seed, weights=weights)
    key.update(json.loads(json.dumps(settings)))  # a fresh copy in plain JSON types
    if method == "cnn":
        assert prior_dvk is not None  # checked above
        key["prior_dvk"] = dict(prior_dvk)
    return key


def settings_sha256(settings: dict) -> str:
    """sha256 of a settings key (:func:`map_settings`) as canonical JSON (sorted keys, no spaces)."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def map_stale_reason(record: dict | None, settings: dict) -> str:
    """Why a stored map must be computed for ``settings`` (:func:`map_settings`): "" when its provenance
    ``record`` (None: no map stored) holds exactly these settings, else the reason in words."""
    if record is None:
        return "no map stored"
    stored = record.get("settings")
    if not isinstance(stored, dict):
        return "the stored map records no settings"
    if stored == settings:
        return ""
    changes = []
    for key in sorted(set(stored) | set(settings)):
        old, new = stored.get(key), settings.get(key)
        if old == new:
            continue
        if (
            key == "prior_dvk"
            and isinstance(old, dict)
            and isinstance(new, dict)
            and old.get("settings_sha256") == new.get("settings_sha256")
        ):
            changes.append("its DVK prior is another DVK map (the DVK map was computed again)")
        elif key == "prior_dvk":
            changes.append("its DVK prior has other settings")
        else:
            changes.append(f"{key} {_brief(old)} -> {_brief(new)}")
    return "settings changed: " + "; ".join(changes)


def _brief(value) -> str:
    """A setting's value in a reason: hashes cut to 12 hex digits."""
    if isinstance(value, str) and len(value) > 16:
        return value[:12] + "..."
    return json.dumps(value, sort_keys=True)


def compute_scan_dose(
    cohort_dir: str | Path,
    patient: str,
    timepoint: str,
    methods: tuple[str, ...],
    device: str | None = None,
    mc_decays: int = MC_DECAYS,
    seed: int = 0,
    weights: str | Path | None = None,
    wait_timeout_s: float | None = None,
) -> list[dict]:
    """Bring the dose-rate maps of one scan (its latest version) up to date for these settings, in the order of
    :data:`METHODS`.

    A map is reused when the scan's provenance records the settings key this run asks for (:func:`map_settings`:
    method, grid, kernel, weights, engine version, MC decays and seed, and for the CNN the DVK map it took as its
    prior); otherwise it is computed and stored, and a map it replaces is kept as superseded
    (``Cohort.write_arrays``). Computing takes the scan's compute lock of that method (``Cohort.compute_lock``;
    waits at most ``wait_timeout_s`` s for another run computing the same map, None: as long as that run computes)
    and checks the provenance again once it holds it, so two runs never compute one map: the second reuses the
    first's. ``weights``: model card of the CNN (None: the shipped one).

    Returns one StepResult (as a dict) per method: "done" (computed; ``message`` says why) or "skipped" (reused;
    ``message`` says when another run computed it meanwhile), with ``map_record`` naming the stored map.
    """
    from cohort_dosimetry.store import open_cohort

    maps = _ScanMaps(open_cohort(cohort_dir), patient, timepoint, device, mc_decays, seed, weights, wait_timeout_s)
    return [maps.bring_up_to_date(m).as_dict() for m in METHODS if m in methods]


class _ScanMaps:
    """The dose-rate maps of one scan version for one set of run settings: which are current, and computing those
    that are not. Reads the scan's inputs once, and only when something is computed."""

    def __init__(self, cohort, patient, timepoint, device, mc_decays, seed, weights, wait_timeout_s):
        self.cohort, self.patient, self.timepoint = cohort, patient, timepoint
        attrs = cohort.scan_attrs(patient, timepoint)
        self.version, self.spacing = attrs["version"], attrs["spacing_mm"]
        self.device, self.mc_decays, self.seed, self.weights = device, mc_decays, seed, weights
        self.wait_timeout_s = wait_timeout_s
        self._inputs = None  # activity and density, loaded on first use
        self._dvk = None  # (written_utc, array) of the DVK map this step stored

    @staticmethod
    def arrays(method: str) -> tuple[str, ...]:
        from cohort_dosimetry.dose import dose_arrays

        return dose_arrays(method)

    def records(self, method: str) -> list[dict | None]:
        """The provenance records of the method's arrays in the scan version now (None where absent)."""
        provenance = self.cohort.scan_attrs(self.patient, self.timepoint, self.version).get("provenance", {})
        return [provenance.get(name) for name in self.arrays(method)]

    def settings(self, method: str) -> dict:
        prior = self.prior_dvk() if method == "cnn" else None
        return map_settings(
            method, self.spacing, mc_decays=self.mc_decays, seed=self.seed, weights=self.weights, prior_dvk=prior
        )

    def stale_reason(self, method: str, settings: dict) -> str:
        return next((r for r in (map_stale_reason(rec, settings) for rec in self.records(method)) if r), "")

    def prior_dvk(self) -> dict:
        """The DVK map the CNN takes as its prior: the stored one when it is current, else one computed in memory."""
        dvk = map_settings("dvk", self.spacing)
        (record,) = self.records("dvk")
        stored = record is not None and not map_stale_reason(record, dvk)
        return {
            "settings_sha256": settings_sha256(dvk),
            "written_utc": cast(dict, record)["written_utc"] if stored else None,
        }  # stored: record is not None

    def bring_up_to_date(self, method: str) -> StepResult:
        settings = self.settings(method)
        if not self.stale_reason(method, settings):
            return self._reused(method, 0.0, "")
        t_wait = time.perf_counter()
        with self.cohort.compute_lock(self.patient, self.timepoint, method, timeout_s=self.wait_timeout_s):
            waited = time.perf_counter() - t_wait
            for _ in range(5):  # again only when the CNN's prior is replaced while it is being read
                settings = self.settings(method)
                reason = self.stale_reason(method, settings)
                if not reason:
                    return self._reused(method, waited, "computed by a concurrent run while this run waited")
                scan = self._inputs_for(method, settings)
                if scan is not None:
                    break
            else:
                raise RuntimeError(
                    f"scan {self.patient}/{self.timepoint}: its DVK map was replaced 5 times while "
                    "the CNN read it as its prior"
                )
            return self._compute(method, scan, settings, reason, waited)

    def _inputs_for(self, method: str, settings: dict):
        """The Dataset ``dose_rates`` computes the method from; None if the CNN's stored prior changed meanwhile."""
        if self._inputs is None:
            lazy = self.cohort.scan(self.patient, self.timepoint, self.version)
            self._inputs = lazy[["activity", "density"]].load()
        written = settings["prior_dvk"]["written_utc"] if method == "cnn" else None
        if written is None:  # DVK, MC, or a CNN whose DVK prior is computed in memory by dose_rates
            return self._inputs
        if self._dvk is not None and self._dvk[0] == written:
            prior = self._dvk[1]
        else:
            prior = self.cohort.scan(self.patient, self.timepoint, self.version)["dose_rate_dvk"].values
            if (self.records("dvk")[0] or {}).get("written_utc") != written:
                return None
        return self._inputs.assign(dose_rate_dvk=(("z", "y", "x"), prior))

    def _compute(self, method: str, scan, settings: dict, reason: str, waited: float) -> StepResult:
        from cohort_dosimetry.dose import dose_rates
        from cohort_dosimetry.physics import resolve_device

        dev = resolve_device(self.device)
        t0 = time.perf_counter()
        maps = dose_rates(
            scan, methods=(method,), device=dev, mc_decays=self.mc_decays, seed=self.seed, weights=self.weights
        )
        seconds = time.perf_counter() - t0
        digest = settings_sha256(settings)
        provenance = {
            "method": method,
            "settings": settings,
            "settings_sha256": digest,
            "software_version": __version__,
            "device": str(dev),
            "wall_time_s": round(seconds, 3),
            "reason": reason,
        }
        record = self.cohort.write_arrays(
            self.patient, self.timepoint, maps[list(self.arrays(method))], provenance=provenance, version=self.version
        )
        if method == "dvk":
            self._dvk = (record["written_utc"], maps["dose_rate_dvk"].values)
        stored = {
            "settings_sha256": digest,
            "written_utc": record["written_utc"],
            "device": str(dev),
            "waited_s": round(waited, 3),
        }
        return StepResult(
            f"dose_{method}", self.patient, self.timepoint, "done", seconds, reason, device=str(dev), map_record=stored
        )

    def _reused(self, method: str, waited: float, message: str) -> StepResult:
        record = self.records(method)[0]
        assert record is not None  # reused only when every record is current
        stored = {
            "settings_sha256": record.get("settings_sha256", ""),
            "written_utc": record["written_utc"],
            "device": record.get("device", ""),
            "waited_s": round(waited, 3),
        }
        return StepResult(f"dose_{method}", self.patient, self.timepoint, "skipped", 0.0, message, map_record=stored)


def patient_cycles(cohort_dir: str | Path) -> list[tuple[str, int]]:
    """(patient, therapy cycle) of every cycle with scans in the store, sorted. Per-cycle results of a cycle that no
    longer has scans (its scans were renumbered into other cycles) are removed here."""
    from cohort_dosimetry.store import open_cohort

    cohort = open_cohort(cohort_dir)
    cycles = sorted({(patient, int(cohort.scan_attrs(patient, tp)["cycle"])) for patient, tp in cohort.scans()})
    for patient, cycle in set(cohort.cycle_results()) - set(cycles):
        cohort.remove_cycle(patient, cycle)
    return cycles


def cycle_timepoints(cohort_dir: str | Path, patient: str, cycle: int) -> list[str]:
    """The scans of a patient's therapy cycle, earliest first (the first is the cycle's reference scan)."""
    from cohort_dosimetry.store import open_cohort

    cohort = open_cohort(cohort_dir)
    return _cycle_scans({tp: cohort.scan_attrs(patient, tp) for tp in cohort.timepoints(patient)}, cycle)


def _cycle_scans(attrs: Mapping[str, Mapping[str, Any]], cycle: int) -> list[str]:
    return [
        tp for _, tp in sorted((a["hours_post_injection"], tp) for tp, a in attrs.items() if int(a["cycle"]) == cycle)
    ]


#: The registration of :func:`cycle_absorbed_dose` (``cohort_dosimetry.registration.register``'s defaults: rigid,
#: then diffeomorphic demons) and how dose-rate maps are warped onto the reference grid: cubic B-spline, which blurs
#: a hot organ into its surroundings less than linear interpolation does (on moving virtual patients, kidney and
#: lesion absorbed doses 2.6 % from the unmoved truth on average with it, 4.5 % with linear, the registration itself
#: adding 0.3 %; its overshoot made a 20 mL lesion 7.4 % high: docs/validation, section 5).
REGISTRATION_SETTINGS: dict[str, Any] = {"method": "rigid + diffeomorphic demons", "warp": "bspline"}


def cycle_absorbed_dose(
    cohort_dir: str | Path, patient: str, cycle: int, methods: tuple[str, ...] = METHODS
) -> list[dict]:
    """Absorbed-dose maps of one patient's therapy cycle: register, warp, integrate voxel by voxel, store.

    The reference is the cycle's earliest scan. Every other scan's CT is registered onto the reference CT
    (``cohort_dosimetry.registration.register``: rigid, then diffeomorphic demons; the transform is invertible and
    its Jacobian determinant range is recorded), each method's dose-rate map is warped onto the reference grid
    (cubic B-spline, negatives clipped to 0; beyond a scan's field of view, the nearest edge voxel's value, and the
    share of reference voxels that lie there is recorded), and the maps of all time points are integrated voxel by voxel
    (``cohort_dosimetry.stats.integrate_voxels``: trapezoid, then a fitted or physical tail, the rule of each voxel
    kept). Stored with ``Cohort.write_cycle``: ``absorbed_dose_<method>`` (Gy), ``integration_rule_<method>`` and
    ``displacement_mm``, attrs with the registrations' quality (metric, Jacobian range, Dice of the warped contours
    per VOI present at both time points) and the provenance of every input map.

    A method is integrated only when every scan of the cycle has its map (else it is skipped, with the reason: e.g.
    Monte Carlo run on one scan per cycle); a cycle with one scan has no voxel-level integration (the VOI-level
    single-time-point rules apply). Idempotent: results whose ``inputs_sha256`` (scan versions, each input map's
    settings and write time, these settings) equal the current ones are kept. Returns one StepResult per method,
    step ``absorbed_dose_<method>``, timepoint the reference scan's.
    """
    from cohort_dosimetry import __version__ as version
    from cohort_dosimetry.grid import Grid
    from cohort_dosimetry.registration import dice, register
    from cohort_dosimetry.stats import RULES, integrate_voxels
    from cohort_dosimetry.store import open_cohort
    from cohort_dosimetry.vocabulary import voi_regions

    t0 = time.perf_counter()
    cohort = open_cohort(cohort_dir)
    attrs = {tp: cohort.scan_attrs(patient, tp) for tp in cohort.timepoints(patient)}
    timepoints = _cycle_scans(attrs, cycle)
    if not timepoints:
        raise ValueError(f"patient {patient}: no scan of cycle {cycle} in the store")
    reference = timepoints[0]

    def result(method: str, status: str, message: str = "") -> dict:
        return StepResult(
            f"absorbed_dose_{method}", patient, reference, status, time.perf_counter() - t0, message
        ).as_dict()

    if len(timepoints) < 2:
        why = f"cycle {cycle} has one scan ({reference}): no voxel-level integration (single-time-point rules apply)"
        cohort.remove_cycle(patient, cycle)  # results of when the cycle had more scans are no longer true
        return [result(m, "skipped", why) for m in methods]
    inputs: dict[str, dict] = {}
    skipped: dict[str, str] = {}
    for method in methods:
        records = {tp: attrs[tp].get("provenance", {}).get(f"dose_rate_{method}") for tp in timepoints}
        lacking = [tp for tp, record in records.items() if record is None]
        if lacking:
            skipped[method] = f"no {method} dose-rate map at {', '.join(lacking)} of cycle {cycle}"
            continue
        inputs[method] = {tp: {k: r[k] for k in ("settings_sha256", "written_utc")} for tp, r in records.items()}
    key = {
        "timepoints": {
            tp: {"version": attrs[tp]["version"], "hours": attrs[tp]["hours_post_injection"]} for tp in timepoints
        },
        "maps": inputs,
        "registration": REGISTRATION_SETTINGS,
        "software_version": version,
    }
    digest = settings_sha256(key)
    stored = cohort.cycle_attrs(patient, cycle)
    if stored is not None and stored.get("inputs_sha256") == digest:
        return [result(m, "skipped", skipped.get(m, "")) for m in methods]
    if not inputs:
        cohort.remove_cycle(patient, cycle)
        return [result(m, "skipped", skipped[m]) for m in methods]

    def load(tp: str) -> tuple[Grid, Any]:
        ds = cohort.scan(patient, tp, version=attrs[tp]["version"])
        return Grid.from_attrs(tuple(ds.sizes[d] for d in ("z", "y", "x")), attrs[tp]), ds

    ref_grid, ref_ds = load(reference)
    ref_ct = ref_ds["ct_hu"].values
    ref_labels = ref_ds["labels"]
    ref_regions = voi_regions(ref_labels.attrs["names"], ref_labels.attrs.get("vois"))
    # the reference's own maps are used as they are (None: no warp); every other scan is registered onto it
    registrations: dict[str, tuple[Any, Any]] = {reference: (None, ref_ds)}
    quality = {}
    fields = [np.zeros((3, *ref_grid.shape), dtype=np.float32)]
    for tp in timepoints[1:]:
        grid, ds = load(tp)
        try:
            reg = register(ref_ct, ds["ct_hu"].values, ref_grid, moving_spacing_mm=grid)
        except RuntimeError as err:  # SimpleITK's failures (no overlap, a diverging optimiser) name no scan
            raise ValueError(f"patient {patient} cycle {cycle}: registering {tp} onto {reference}: {err}") from None
        labels = ds["labels"]
        regions = voi_regions(labels.attrs["names"], labels.attrs.get("vois"))
        warped = reg.warp(labels.values, "nearest", default_value=0)
        dices = {
            voi: dice(np.isin(ref_labels.values, ref_regions[voi]), np.isin(warped, regions[voi]))
            for voi in sorted(set(ref_regions) & set(regions))
        }
        finite = {voi: d for voi, d in dices.items() if np.isfinite(d)}
        worst = min(finite, key=finite.__getitem__) if finite else ""
        quality[tp] = {
            "rotation_deg": reg.rotation_deg,
            "translation_mm": float(np.linalg.norm(reg.translation_mm)),
            "metric_before_hu2": reg.metric_before,
            "metric_hu2": reg.metric,
            "jacobian_min": reg.jacobian_range[0],
            "jacobian_max": reg.jacobian_range[1],
            "dice_min": finite[worst] if finite else float("nan"),
            "dice_min_voi": worst,
            "outside_fov_fraction": _outside_fraction(reg),
            "seconds": reg.seconds,
            "dice": dices,
            "settings": reg.settings,
        }
        registrations[tp] = (reg, ds)
        fields.append(reg.displacement_mm)

    hours = [float(attrs[tp]["hours_post_injection"]) for tp in timepoints]
    nuclide = str(attrs[reference]["nuclide"])
    variables: dict[str, tuple] = {
        "displacement_mm": (("timepoint", "component", "z", "y", "x"), np.stack(fields).astype(np.float32))
    }
    method_attrs = {}
    for method, maps in inputs.items():
        rates = np.stack(
            [
                ds[f"dose_rate_{method}"].values.astype(np.float32)
                if reg is None
                else reg.warp(ds[f"dose_rate_{method}"].values.astype(np.float32), REGISTRATION_SETTINGS["warp"])
                for reg, ds in registrations.values()
            ]
        )
        integrated = integrate_voxels(rates, hours, nuclide)
        legend = {str(code): name for code, (name, _) in RULES.items()}
        variables[f"absorbed_dose_{method}"] = (("z", "y", "x"), integrated.dose_gy)
        variables[f"integration_rule_{method}"] = (("z", "y", "x"), integrated.rule, {"legend": legend})
        method_attrs[method] = {"inputs": maps, "rule_counts": integrated.counts, "tail_points": integrated.tail_points}
    ds_out = xr.Dataset(
        {name: xr.Variable(*spec) for name, spec in variables.items()},
        coords={"timepoint": timepoints, "component": ["z", "y", "x"]},
    )
    cohort.write_cycle(
        patient,
        cycle,
        ds_out,
        {
            "reference_timepoint": reference,
            "timepoints": timepoints,
            "hours_post_injection": hours,
            "nuclide": nuclide,
            "scan_versions": {tp: attrs[tp]["version"] for tp in timepoints},
            **{k: list(np.ravel(attrs[reference][k])) for k in ("spacing_mm", "origin_mm", "direction")},
            "registration": quality,
            "registration_settings": REGISTRATION_SETTINGS,
            "methods": method_attrs,
            "methods_skipped": skipped,
            "inputs_sha256": digest,
            "software_version": version,
            "seconds": time.perf_counter() - t0,
        },
    )
    return [result(m, "done" if m in inputs else "skipped", skipped.get(m, "")) for m in methods]


def _outside_fraction(reg) -> float:
    """Share of the reference voxels that a registration maps outside the moving scan's field of view."""
    inside = reg.warp(np.ones(reg.moving_grid.shape, dtype=np.float32), "linear", default_value=0.0)
    return float(np.mean(inside < 0.5))


def scan_statistics(cohort_dir: str | Path, patient: str, timepoint: str) -> dict[str, pd.DataFrame]:
    """The ``voi_stats`` and ``concordance`` rows of one scan (small tables; the volumes stay in the store)."""
    from cohort_dosimetry.stats import scan_tables
    from cohort_dosimetry.store import open_cohort

    return scan_tables(open_cohort(cohort_dir).scan(patient, timepoint), patient, timepoint)


def cycle_statistics(cohort_dir: str | Path, patient: str, cycle: int) -> dict[str, pd.DataFrame]:
    """The ``voxel_absorbed_dose``, ``dose_volume_histograms`` and ``registrations`` rows of one cycle's stored
    absorbed-dose maps (``cohort_dosimetry.stats.stored_cycle_tables``)."""
    from cohort_dosimetry.stats import stored_cycle_tables
    from cohort_dosimetry.store import open_cohort

    return stored_cycle_tables(open_cohort(cohort_dir), patient, cycle)


def write_cohort_tables(
    cohort_dir: str | Path,
    per_scan: list[dict[str, pd.DataFrame]],
    per_cycle: list[dict[str, pd.DataFrame]] | None = None,
    sensitivity_cps_per_mbq: float | None = None,
    calibration_uncertainty: float | None = None,
) -> dict:
    """Concatenate per-scan rows, integrate over time per therapy cycle and write ``voi_stats``, ``concordance``,
    ``absorbed_dose`` and ``absorbed_dose_total`` (the sum over each patient's cycles); with ``per_cycle``
    (:func:`cycle_statistics` of every stored cycle) the tables of the absorbed-dose maps too.
    ``sensitivity_cps_per_mbq`` (the site's camera) and ``calibration_uncertainty`` (relative): the count-noise and
    calibration components of the absorbed dose's uncertainty (``cohort_dosimetry.stats.absorbed_dose``)."""
    from cohort_dosimetry.stats import write_cohort_tables as write_tables
    from cohort_dosimetry.store import open_cohort

    if not per_scan:
        raise ValueError(f"cohort {cohort_dir}: no scan has statistics; nothing to tabulate")
    tables = write_tables(
        open_cohort(cohort_dir),
        pd.concat([t["voi_stats"] for t in per_scan], ignore_index=True),
        pd.concat([t["concordance"] for t in per_scan], ignore_index=True),
        per_cycle,
        sensitivity_cps_per_mbq=sensitivity_cps_per_mbq,
        calibration_uncertainty=calibration_uncertainty,
    )
    return {f"n_{name}_rows": len(table) for name, table in tables.items()}


def write_cohort_report(cohort_dir: str | Path, notes: list[str] | tuple[str, ...] = ()) -> str:
    """Write the self-contained HTML report, with the shipped CNN weights' model card for the accuracy of their
    maps; returns its path."""
    import dataclasses

    from cohort_dosimetry.model import SHIPPED_CARD, ModelCard
    from cohort_dosimetry.stats import write_report
    from cohort_dosimetry.store import open_cohort

    card = dataclasses.asdict(ModelCard.from_json(SHIPPED_CARD))
    return str(write_report(open_cohort(cohort_dir), notes=list(notes), model_card=card))


def run_software_versions() -> dict[str, str]:
    """The store's software versions plus the packages that compute the numbers of a run (torch, prefect)."""
    import torch

    from cohort_dosimetry.store import software_versions

    versions = {**software_versions(), "torch": torch.__version__}
    try:
        import prefect

        versions["prefect"] = prefect.__version__
    except ImportError:  # the library runs without Prefect
        pass
    return versions


def weights_sha256() -> str:
    """sha256 of the shipped CNN weights, as their model card records it (and inference checks)."""
    from cohort_dosimetry.dose import dose_method

    return dose_method("cnn").settings(None)["weights_sha256"]


def kernel_sha256(cohort_dir: str | Path) -> str:
    """sha256 of the DVK kernel(s) the cohort's scans are convolved with (one per distinct dose-grid spacing)."""
    from cohort_dosimetry.dose import dose_method
    from cohort_dosimetry.store import open_cohort

    cohort = open_cohort(cohort_dir)
    spacings = sorted({tuple(cohort.scan_attrs(p, t)["spacing_mm"]) for p, t in cohort.scans()})
    return ",".join(dose_method("dvk").settings(tuple(float(v) for v in s))["kernel_sha256"] for s in spacings)


def select_mc_scans(scan_attrs: Mapping[tuple[str, str], Mapping[str, Any]], rule: str) -> set[tuple[str, str]]:
    """The scans Monte Carlo runs on under ``rule`` (one of ``constants.MC_SCAN_RULES``).

    ``scan_attrs``: {(patient, timepoint): the scan's attrs}, with ``cycle`` and, for "first",
    ``acquisition_datetime``, for "nearest-96h", ``hours_post_injection`` (h from the cycle's injection).
    "all": every scan. "first": per patient and cycle the earliest acquisition (timepoint labels count arrivals, not
    time). "nearest-96h": per patient and cycle the scan whose ``hours_post_injection`` is nearest
    ``constants.MC_TARGET_HOURS`` (96 h); of two as near, the later one (after uptake, where a single-time-point
    estimate assumes washout), then the first label.
    """
    if rule not in MC_SCAN_RULES:
        raise ValueError(f"unknown mc_scans rule {rule!r}; expected one of {MC_SCAN_RULES}")
    if rule == "all":
        return set(scan_attrs)
    if rule == "first":
        order = sorted(scan_attrs, key=lambda scan: scan_attrs[scan]["acquisition_datetime"])
    else:

        def distance(scan: tuple[str, str]) -> tuple[float, float, str]:
            hours = float(scan_attrs[scan]["hours_post_injection"])
            return abs(hours - MC_TARGET_HOURS), -hours, scan[1]

        order = sorted(scan_attrs, key=distance)
    chosen: dict[tuple[str, int], tuple[str, str]] = {}
    for patient, timepoint in order:
        chosen.setdefault((patient, int(scan_attrs[patient, timepoint]["cycle"])), (patient, timepoint))
    return set(chosen.values())


def scan_outcomes(results: list[dict]) -> dict[str, int]:
    """Per-scan counts from step results: a scan failed if any of its steps failed, was done if any step did work,
    else it was skipped (complete already). A rejected input with no scan id counts as one failed scan."""
    by_scan: dict[tuple, set[str]] = {}
    for i, r in enumerate(results):
        key = (r["patient"], r["timepoint"]) if r["timepoint"] else ("rejected", i)
        by_scan.setdefault(key, set()).add(r["status"])
    counts = {"done": 0, "skipped": 0, "failed": 0}
    for statuses in by_scan.values():
        counts["failed" if "failed" in statuses else "done" if "done" in statuses else "skipped"] += 1
    return counts


def record_run(
    cohort_dir: str | Path,
    run_id: str,
    results: list[dict],
    wall_time_s: float,
    methods: tuple[str, ...],
    weights_sha256: str = "",
    kernel_sha256: str = "",
) -> pd.DataFrame:
    """Append one row to ``tables/runs.parquet``: what this run did, with which software, weights and kernels, and
    (``dose_devices``) the device each dose-rate map it computed was computed on; ``n_maps_computed`` and
    ``n_maps_reused`` count its maps, and ``tables/run_maps.parquet`` gets one row per map (:func:`run_map_rows`)."""
    from cohort_dosimetry.store import open_cohort

    counts = scan_outcomes(results)
    failed = [r for r in results if r["status"] == "failed"]
    row = {
        "run_id": run_id,
        "started_utc": pd.Timestamp.now(tz="UTC") - pd.Timedelta(seconds=wall_time_s),
        "software_version": ";".join(f"{k}={v}" for k, v in run_software_versions().items()),
        "weights_hash": weights_sha256,
        "kernel_hash": kernel_sha256,
        "n_scans_done": counts["done"],
        "n_scans_skipped": counts["skipped"],
        "n_scans_failed": counts["failed"],
        "wall_time_s": float(wall_time_s),
        "methods": ",".join(methods),
        "failures": "; ".join(f"{r['step']} {r['patient']}/{r['timepoint']}: {r['message']}" for r in failed),
        # where each dose-rate map of this run was computed: "dose_mc P1/tp2: cuda:0; ..."
        "dose_devices": "; ".join(
            f"{r['step']} {r['patient']}/{r['timepoint']}: {r['device']}" for r in results if r.get("device")
        ),
    }
    maps = run_map_rows(run_id, results)  # one run_maps row per dose-rate map; their counts in this row
    for status in ("computed", "reused"):
        row[f"n_maps_{status}"] = int((maps["status"] == status).sum()) if len(maps) else 0
    df = pd.DataFrame([row])
    cohort = open_cohort(cohort_dir)
    cohort.append_table("runs", df)
    if len(maps):
        cohort.append_table("run_maps", maps)
    return df


#: Step status of a dose step -> what became of its map in ``run_maps``.
_MAP_STATUS = {"done": "computed", "skipped": "reused", "failed": "failed"}


def run_map_rows(run_id: str, results: list[dict]) -> pd.DataFrame:
    """The ``run_maps`` rows of a run: one per dose step (``dose_<method>``) in ``results``, saying whether its
    map was computed, reused or failed, why, and which stored map it is (settings sha256, written_utc, device)."""
    rows = []
    for r in results:
        if not r["step"].startswith("dose_"):
            continue
        stored = r.get("map_record") or {}
        rows.append(
            {
                "run_id": run_id,
                "patient": r["patient"],
                "timepoint": r["timepoint"],
                "method": r["step"][5:],
                "status": _MAP_STATUS[r["status"]],
                "reason": r["message"],
                "settings_sha256": stored.get("settings_sha256", ""),
                "map_written_utc": stored.get("written_utc", ""),
                "device": stored.get("device", ""),
                "compute_s": float(r["seconds"]) if r["status"] == "done" else 0.0,
                "waited_s": float(stored.get("waited_s", 0.0)),
            }
        )
    return pd.DataFrame(rows)
