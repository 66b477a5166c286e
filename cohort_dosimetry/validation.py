"""Scientific validation that regenerates: kernels against published voxel S-values, the homogeneous limit, DVK
against Monte Carlo on a virtual patient, the CNN against DVK on held-out virtual patients, and registration with
voxel-level time integration on moving virtual patients (Monte Carlo of the true activity, no SPECT).

:func:`validate_science` reruns the chosen sections at a stated size (:data:`SIZES`) and writes to one folder a
``README.md`` (markdown tables; each says what was compared, the size, seeds, device, date, software version and
wall time), one CSV per table and PNG figures. ``cohort-dosimetry validate-science`` drives it; ``make validation``
writes ``docs/validation/``. Sections run separately (``sections=``): the kernel and homogeneous sections take
seconds, the patient sections minutes (their Monte Carlo truth dominates).

Every patient here is a synthetic virtual patient (:mod:`cohort_dosimetry.phantoms`), never patient data.

Which emissions the kernels and the Monte Carlo include (``EMISSIONS_STATEMENT``, also in docs/physics.md): the
ICRP-107 data of Lu-177 (:mod:`cohort_dosimetry.physics`); "electron" = the beta spectrum (133.3 keV per decay),
internal-conversion electrons (13.5 keV) and Auger electrons (1.1 keV) = 147.9 keV per decay; "photon" = gammas,
x-rays (35.1 keV per decay). Electron lines below 10 keV and photon lines below 5 keV (most Auger electrons, the
Hf M-shell x-rays) deposit their energy at the decay site. The DVK kernels are "beta" (all electrons) plus
"photon"; the Monte Carlo of a dose-rate map transports both. "beta_spectrum" (the beta spectrum alone) exists only
to compare like with like against published tables.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import math
import platform
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from cohort_dosimetry import __version__
from cohort_dosimetry.constants import COMPACT_SPACING_MM, J_PER_MEV, KERNEL_TISSUE_DENSITY_G_CM3
from cohort_dosimetry.grid import Grid

SECTIONS = ("kernels", "homogeneous", "dvk_vs_mc", "cnn_vs_dvk", "motion")

#: Lanconelli N, Pacilio M, Lo Meo S, Botta F, Di Dia A, Torres Aroche LA, Coca Perez MA, Cremonesi M, "A free
#: database of radionuclide voxel S values for the dosimetry of nonuniform activity distributions", Phys Med Biol
#: 57:517-533 (2012): Lu-177, soft tissue, cubic voxels. Voxel side (mm) -> S-values (mGy/(MBq s)) at the offsets
#: (i, j, k) = (0,0,0), (0,0,1), (0,1,1), (1,1,1), (0,0,2) from the source voxel, as printed (3 significant digits)
#: in the database's text tables (the copy read is the one redistributed with the MIRDCalculation package of the MGH
#: physics research group).
LANCONELLI_2012_LU177_SOFT = {
    2.21: (1.66, 4.83e-2, 2.52e-3, 2.50e-4, 7.70e-5),
    2.33: (1.43, 3.95e-2, 1.97e-3, 2.00e-4, 6.89e-5),
    2.4: (1.31, 3.53e-2, 1.72e-3, 1.77e-4, 6.48e-5),
    3.0: (0.693, 1.51e-2, 6.17e-4, 7.98e-5, 4.08e-5),
    3.59: (0.413, 7.55e-3, 2.80e-4, 4.72e-5, 2.83e-5),
    3.9: (0.325, 5.49e-3, 1.97e-4, 3.81e-5, 2.41e-5),
    4.0: (0.302, 4.98e-3, 1.78e-4, 3.58e-5, 2.29e-5),
    4.42: (0.226, 3.39e-3, 1.19e-4, 2.82e-5, 1.88e-5),
    4.8: (0.178, 2.46e-3, 8.65e-5, 2.35e-5, 1.61e-5),
    5.0: (0.158, 2.11e-3, 7.43e-5, 2.15e-5, 1.48e-5),
    6.0: (0.0925, 1.04e-3, 3.94e-5, 1.46e-5, 1.04e-5),
    6.8: (0.0641, 6.45e-4, 2.66e-5, 1.14e-5, 8.17e-6),
    9.28: (0.0256, 1.98e-4, 1.14e-5, 6.19e-6, 4.53e-6),
}
#: The offsets of :data:`LANCONELLI_2012_LU177_SOFT`, in its column order, and their multiplicity in the 3x3x3 block.
PUBLISHED_OFFSETS = ((0, 0, 0), (0, 0, 1), (0, 1, 1), (1, 1, 1), (0, 0, 2))
_INNER_27_MULTIPLICITY = (1, 6, 12, 8)

EMISSIONS_STATEMENT = (
    "Emissions are those of ICRP Publication 107 for Lu-177 (PyPI package `icrp107-database`). The dose voxel kernels "
    "(DVK) are the sum of two Monte Carlo kernels of the package's own engine: kind `beta` = **all electrons**: the "
    "beta spectrum (133.3 keV per decay), internal-conversion electrons (13.5 keV) and Auger electrons (1.1 keV), "
    "147.9 keV per decay; kind `photon` = gammas (208.4 keV at 11.0 %, 113.0 keV at 6.4 %, ...) and x-rays "
    "(Hf K 54.7-63.4 keV, ...), 35.1 keV per decay. The Monte Carlo of a dose-rate map (`dose_rate_mc`, "
    '`emissions=("electron", "photon")`) transports the same two sets. Electron lines below 10 keV (1.0 of '
    "the 14.7 keV per decay of conversion and Auger electrons) and photon lines below 5 keV (Hf M-shell x-rays, "
    "0.03 keV per decay) are deposited at the decay site; "
    "bremsstrahlung and delta rays are not produced (radiative yield of Lu-177 betas in tissue < 0.1 %). A third "
    'set, `emissions=("beta",)` (kernel kind `beta_spectrum`), is the beta spectrum alone: it exists only to compare '
    "like with like against published tables whose source is the beta spectrum, and no dose-rate method uses it."
)


@dataclasses.dataclass(frozen=True)
class ValidationSize:
    """How much each section computes. Decays are per run; seeds are virtual-patient seeds.

    kernel_voxels_mm : published voxel sides (keys of :data:`LANCONELLI_2012_LU177_SOFT`) to compare at.
    kernel_decays : decays per electron kernel ("beta", "beta_spectrum") on a 5^3 grid (beyond the 1.8 mm
        maximum electron range at every published size).
    photon_kernel_decays, photon_kernel_shape : the photon kernel's decays and grid (11 = the published tables').
    homogeneous_electron_decays : decays of the electron equilibrium runs (5^3 voxels of 4 mm).
    homogeneous_total_decays : decays of the electron + photon equilibrium run (20^3 voxels of 10 cm), 0 to skip.
    patient_seeds : held-out virtual patients of the CNN section (never used in training or weight selection);
        the DVK-against-MC section uses the first ``dvk_mc_patients`` of them.
    hours, realisations : scan times (h post injection) and SPECT noise realisations per patient.
    mc_fraction : the patients' Monte Carlo truth gets this fraction of the decays of the training data's rule
        (cohort_dosimetry.training.DataSpec; 1 = the same, whose label uncertainty is <= 3 % median in organs), and
        its label-uncertainty target grows by 1 / sqrt(mc_fraction).
    motion_seeds, motion_grid, motion_hours, motion_decays : the motion section's moving virtual patients (patient
        and motion seed), their grid (a name of cohort_dosimetry.grid.GRIDS or a Grid), scan times (h) and the
        decays of each of its Monte Carlo runs (electrons + photons, one run per time point and anatomy).
    """

    name: str
    kernel_voxels_mm: tuple[float, ...]
    kernel_decays: int
    photon_kernel_decays: int
    photon_kernel_shape: int
    homogeneous_electron_decays: int
    homogeneous_total_decays: int
    patient_seeds: tuple[int, ...]
    dvk_mc_patients: int
    hours: tuple[float, ...]
    realisations: int
    mc_fraction: float = 1.0
    motion_seeds: tuple[int, ...] = ()
    motion_grid: str | Grid = "compact"
    motion_hours: tuple[float, ...] = (4.0, 24.0, 96.0, 168.0)
    motion_decays: int = 0

    def describe(self) -> str:
        return (
            f"S-values at {len(self.kernel_voxels_mm)} voxel sizes "
            f"({self.kernel_decays:,} decays per electron kernel, {self.photon_kernel_decays:,} per photon kernel "
            f"on {self.photon_kernel_shape}^3 voxels); homogeneous limit with {self.homogeneous_electron_decays:,} "
            f"electron decays"
            + (
                f" and {self.homogeneous_total_decays:,} electron + photon decays"
                if self.homogeneous_total_decays
                else ""
            )
            + f"; virtual patients {list(self.patient_seeds)} (DVK against MC on the first "
            f"{self.dvk_mc_patients}), scans at {list(self.hours)} h, {self.realisations} SPECT noise "
            f"realisation{'s' if self.realisations > 1 else ''} each; Monte Carlo truth with "
            + (
                "the training data's decays"
                if self.mc_fraction == 1
                else f"{self.mc_fraction:g} x the training data's decays"
            )
            + (
                f"; moving virtual patients {list(self.motion_seeds)} on grid {_grid_text(self.motion_grid)}, scans at "
                f"{list(self.motion_hours)} h, {self.motion_decays:,} decays per Monte Carlo run"
                if self.motion_seeds
                else ""
            )
        )


def _grid_text(grid: str | Grid) -> str:
    from cohort_dosimetry.grid import resolve_grid

    g = resolve_grid(grid)
    name = f"`{grid}` " if isinstance(grid, str) else ""
    return f"{name}{'x'.join(map(str, g.shape))} at {' x '.join(f'{s:g}' for s in g.spacing_mm)} mm"


#: Seeds of virtual patients never used to train, validate or select the shipped weights (the model card lists
#: training seeds 1-7 and 10-14, validation seed 18, test seeds 8, 9, 15-17; seeds 37-66 were used to compare
#: candidate weights). These were drawn after all of that.
FRESH_PATIENT_SEEDS = (67, 68, 69, 70, 71)

SIZES = {
    # for the smoke tests: seconds per section (kernel, homogeneous; motion on a coarse grid with 3 scans)
    "tiny": ValidationSize(
        "tiny",
        (4.8,),
        100_000,
        100_000,
        5,
        100_000,
        0,
        FRESH_PATIENT_SEEDS[:1],
        1,
        (24.0,),
        1,
        motion_seeds=FRESH_PATIENT_SEEDS[:1],
        motion_grid=Grid((40, 48, 64), (6.0, 6.5, 6.5)),
        motion_hours=(4.0, 24.0, 96.0),
        motion_decays=200_000,
    ),
    # about 10 minutes on 2 CPU cores (the motion section adds about 3)
    "quick": ValidationSize(
        "quick",
        (2.21, 3.0, 4.42, 4.8, 6.0),
        500_000,
        1_000_000,
        11,
        400_000,
        300_000,
        FRESH_PATIENT_SEEDS[:1],
        1,
        (24.0, 96.0),
        1,
        mc_fraction=0.5,
        motion_seeds=FRESH_PATIENT_SEEDS[:1],
        motion_decays=2_000_000,
    ),
    # the documented evidence in docs/validation: about 37 minutes on 2 CPU cores (9 of them the motion section)
    "full": ValidationSize(
        "full",
        tuple(LANCONELLI_2012_LU177_SOFT),
        2_000_000,
        4_000_000,
        11,
        2_000_000,
        1_000_000,
        FRESH_PATIENT_SEEDS[:3],
        3,
        (4.0, 24.0, 96.0, 168.0),
        3,
        motion_seeds=FRESH_PATIENT_SEEDS[:3],
        motion_decays=8_000_000,
    ),
}


@dataclasses.dataclass
class Table:
    """One result table: written as ``<name>.csv`` and as a markdown table in the README."""

    name: str
    title: str
    compared: str
    frame: pd.DataFrame
    seeds: str
    readme_columns: Sequence[str] | None = None  # the columns shown in the README (all if None)


@dataclasses.dataclass
class SectionResult:
    """What a section found: its tables, figures (file names), prose, key numbers and wall time (s)."""

    name: str
    title: str
    text: str
    tables: list[Table]
    figures: list[tuple[str, str]]  # (file name, caption)
    numbers: dict
    wall_s: float = 0.0


# ------------------------------------------------------------------------------------------------------ driver
def validate_science(
    out,
    size: str | ValidationSize = "full",
    sections: Sequence[str] = SECTIONS,
    device=None,
    work_dir=None,
    log: Callable[[str], None] = print,
) -> dict[str, SectionResult]:
    """Run ``sections`` at ``size`` and write README.md, CSVs and PNGs to ``out``; returns the results by section.

    ``work_dir``: where the virtual patients' data (hundreds of MB per patient) are prepared and kept for reuse;
    None = a temporary folder removed at the end. ``device``: torch device for the Monte Carlo, DVK and CNN
    (None = CUDA when available).
    """
    from cohort_dosimetry.physics import resolve_device

    spec = SIZES[size] if isinstance(size, str) else size
    unknown = [s for s in sections if s not in SECTIONS]
    if unknown or not sections:
        raise ValueError(f"sections must be a non-empty subset of {SECTIONS}, got {list(sections)}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    dev = resolve_device(device)
    started = datetime.datetime.now(datetime.UTC)
    tmp = None
    if work_dir is None and {"dvk_vs_mc", "cnn_vs_dvk"} & set(sections):
        tmp = Path(tempfile.mkdtemp(prefix="validation-"))
    work = Path(work_dir) if work_dir is not None else tmp
    runners = {
        "kernels": _section_kernels,
        "homogeneous": _section_homogeneous,
        "dvk_vs_mc": _section_dvk_vs_mc,
        "cnn_vs_dvk": _section_cnn_vs_dvk,
        "motion": _section_motion,
    }
    results: dict[str, SectionResult] = {}
    try:
        for name in SECTIONS:
            if name not in sections:
                continue
            log(f"validation section {name} ({spec.name}) ...")
            tic = time.perf_counter()
            result = runners[name](spec, out, dev, work, log)
            result.wall_s = time.perf_counter() - tic
            results[name] = result
            for table in result.tables:
                table.frame.to_csv(out / f"{table.name}.csv", index=False, float_format="%.6g")
            log(f"validation section {name}: {result.wall_s:.0f} s")
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    _write_readme(out, spec, results, _environment(dev), started)
    return results


def _environment(dev) -> dict:
    import torch

    from cohort_dosimetry.physics import ENGINE_VERSION

    device = str(dev)
    if dev.type == "cuda":
        device += f" ({torch.cuda.get_device_name(dev)})"
    else:
        device += f" ({platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads)"
    return {
        "software": f"cohort-dosimetry {__version__}, Monte Carlo engine {ENGINE_VERSION}, torch {torch.__version__}, "
        f"Python {platform.python_version()}",
        "device": device,
    }


# ------------------------------------------------------------------------------------------------- 1. kernels
def _section_kernels(spec: ValidationSize, out: Path, dev, work, log) -> SectionResult:
    from cohort_dosimetry.physics import generate_kernel, nuclide

    lu = nuclide("Lu177")
    e_beta = lu.energy_per_decay_mev("beta") * 1e3
    e_electron = lu.energy_per_decay_mev("electron") * 1e3
    rows, energy_rows = [], []
    for side in spec.kernel_voxels_mm:
        published = dict(zip(PUBLISHED_OFFSETS, LANCONELLI_2012_LU177_SOFT[side], strict=True))
        spacing = (side,) * 3
        kernels, infos = {}, {}
        for key, kind, shape, n, rho in (
            ("beta", "beta", 5, spec.kernel_decays, KERNEL_TISSUE_DENSITY_G_CM3),
            ("beta_spectrum", "beta_spectrum", 5, spec.kernel_decays, KERNEL_TISSUE_DENSITY_G_CM3),
            ("photon", "photon", spec.photon_kernel_shape, spec.photon_kernel_decays, KERNEL_TISSUE_DENSITY_G_CM3),
            ("beta_spectrum_1.00", "beta_spectrum", 5, spec.kernel_decays, 1.00),
            ("photon_1.00", "photon", spec.photon_kernel_shape, spec.photon_kernel_decays, 1.00),
        ):
            kernels[key], infos[key] = generate_kernel("Lu177", spacing, shape, kind, n, dev, rho)
        log(
            f"  kernels at {side} mm: S(0,0,0) all electrons {kernels['beta'][2, 2, 2]:.4g}, beta spectrum "
            f"{kernels['beta_spectrum'][2, 2, 2]:.4g} (at 1.00 g/cm3 {kernels['beta_spectrum_1.00'][2, 2, 2]:.4g}), "
            f"photon {_at(kernels['photon'], (0, 0, 0)):.3g} mGy/(MBq s)"
        )
        for offset in PUBLISHED_OFFSETS:
            photon = _at(kernels["photon"], offset)
            full = _at(kernels["beta"], offset) + photon
            like = _at(kernels["beta_spectrum"], offset) + photon
            like_100 = _at(kernels["beta_spectrum_1.00"], offset) + _at(kernels["photon_1.00"], offset)
            rows.append(
                {
                    "voxel_mm": side,
                    "offset": "".join(map(str, offset)),
                    "published": published[offset],
                    "ours_all_electrons": full,
                    "ratio_all_electrons": full / published[offset],
                    "ours_beta_spectrum": like,
                    "ratio_beta_spectrum": like / published[offset],
                    "ours_beta_spectrum_rho_1.00": like_100,
                    "ratio_beta_spectrum_rho_1.00": like_100 / published[offset],
                    "photon_share": photon / like,
                    "rel_uncertainty_1sigma": _kernel_sigma(kernels, infos, offset),
                }
            )
        inner = {key: _inner_27({o: _at(k, o) for o in PUBLISHED_OFFSETS}) for key, k in kernels.items()}
        energy_rows.append(
            {
                "voxel_mm": side,
                "published_electron_kev": _kev_per_decay(_inner_27(published) - inner["photon"], side),
                "published_electron_kev_rho_1.00": _kev_per_decay(
                    _inner_27(published) - inner["photon_1.00"], side, 1.00
                ),
                "ours_beta_spectrum_kev": _kev_per_decay(inner["beta_spectrum"], side),
                "ours_all_electrons_kev": _kev_per_decay(inner["beta"], side),
                "icrp107_beta_kev": e_beta,
                "icrp107_all_electrons_kev": e_electron,
            }
        )
    table = pd.DataFrame(rows)
    energy = pd.DataFrame(energy_rows)
    energy["published_over_beta"] = energy["published_electron_kev"] / energy["icrp107_beta_kev"]
    energy["published_over_beta_rho_1.00"] = energy["published_electron_kev_rho_1.00"] / energy["icrp107_beta_kev"]
    centre = table[table["offset"] == "000"]
    face = table[table["offset"] == "001"]
    far = table[table["offset"] == "002"]

    def by_size(rows: pd.DataFrame, column: str) -> dict:
        return dict(zip(rows["voxel_mm"], rows[column], strict=True))

    numbers = {
        "ratio_all_electrons_s000": by_size(centre, "ratio_all_electrons"),
        "ratio_beta_spectrum_s000": by_size(centre, "ratio_beta_spectrum"),
        "ratio_beta_spectrum_s001": by_size(face, "ratio_beta_spectrum"),
        "ratio_beta_spectrum_rho_1.00_s000": by_size(centre, "ratio_beta_spectrum_rho_1.00"),
        "ratio_beta_spectrum_rho_1.00_s001": by_size(face, "ratio_beta_spectrum_rho_1.00"),
        "ratio_photon_s002": by_size(far, "ratio_beta_spectrum"),
        "published_electron_kev": by_size(energy, "published_electron_kev"),
    }
    figures = [_plot_kernel_ratios(out, table)]
    r_full, r_like, r_100 = (
        centre[c] for c in ("ratio_all_electrons", "ratio_beta_spectrum", "ratio_beta_spectrum_rho_1.00")
    )
    f_full, f_like, f_100 = (
        face[c] for c in ("ratio_all_electrons", "ratio_beta_spectrum", "ratio_beta_spectrum_rho_1.00")
    )
    r_far = far["ratio_beta_spectrum"]
    e_pub, e_pub_100 = energy["published_electron_kev"], energy["published_electron_kev_rho_1.00"]
    sizes = _span(spec.kernel_voxels_mm, "g") + " mm"
    residual = float(np.mean(r_like)) - 1.0
    reproduced = bool(np.all(np.abs(r_100 - 1) < 0.015) and np.all(np.abs(f_100 - 1) < 0.03))
    seeds = "kernel Monte Carlo seed 0 (every kernel run)"
    compared = (
        "our engine's Lu-177 voxel S-values (1 MBq uniform in the centre voxel, homogeneous soft tissue, "
        "symmetrised) against Lanconelli et al. 2012 at the published voxel sizes; three sources: all ICRP-107 "
        "electrons at 1.04 g/cm3 (what the DVK uses), the beta spectrum alone at 1.04 g/cm3 (like with like), "
        "and the beta spectrum alone at 1.00 g/cm3; each plus our photon kernel at the same density"
    )
    conclusion = (
        f"The beta spectrum alone in a medium of 1.00 g/cm3 reproduces the published tables: S(0,0,0) "
        f"{_span(r_100)} and S(0,0,1) {_span(f_100)} times the published values at every size, and the tables' "
        f"electron energy per decay, counted with 1.00 g/cm3 voxel masses, is {_span(e_pub_100, '.1f')} keV against "
        f"the beta spectrum's {e_beta:.1f} keV. So the published source is the beta spectrum (plus photons) without "
        "conversion and Auger electrons, in a medium of about 1.00 g/cm3 rather than 1.04 g/cm3: read from the "
        "numbers; the paper's methods text was not reachable to confirm it."
        if reproduced
        else f"A like-with-like residual of {residual:+.1%} (mean over sizes) remains that the material at hand "
        "does not explain (candidates: the medium's density or composition behind their voxel mass, or their beta "
        "spectrum)."
    )
    text = f"""\
**Question.** With all ICRP-107 electrons, our source-voxel S-values are {_span(r_full)} times the published Lu-177
soft-tissue values of Lanconelli et al. (Phys Med Biol 57:517, 2012) at {sizes}. An error in electron transport would
change with voxel size (the escaping fraction scales as range / side); an offset that hardly changes (here by
{np.ptp(r_full):.3f} over these sizes) points at the source definition instead.

**What the published tables hold.** The search of stored public material reached the published table values (as
redistributed with the open MIRDCalculation package) but not the paper's methods section, so which emissions
Lanconelli et al. simulated is read here from their numbers, not from their text:

- The tables include photons: S(0,0,2) (two voxel sides from the source, beyond the 1.8 mm maximum electron range at
  every size) is nonzero and our photon kernel gives {_span(r_far)} of it.
- The electron energy per decay the tables hold near the source: the published inner 3x3x3 block (where all the
  electron energy of a voxel source lands at these sizes) times the voxel mass at 1.04 g/cm3, minus our photon
  kernel's share there, is {_span(e_pub, ".1f")} keV per decay at every size ({_span(energy["published_over_beta"])}
  times the ICRP-107 mean beta energy, {e_beta:.1f} keV); all ICRP-107 electrons carry {e_electron:.1f} keV. The
  tables hold the beta spectrum's energy, not that of all of Lu-177's electrons.

**Result.** At 1.04 g/cm3, S(0,0,0) with the beta spectrum alone (plus our photons) is {_span(r_like)} times the
published value (all electrons: {_span(r_full)}), S(0,0,1), which holds the escaping electrons and so tests the
transport, {_span(f_like)} (all electrons: {_span(f_full)}). The difference between the two sources is the
conversion and Auger electrons ({e_electron - e_beta:.1f} keV per decay) that the published source lacks.
{conclusion}

Our kernels and Monte Carlo keep all ICRP-107 electrons at 1.04 g/cm3: they are Lu-177's emissions in soft tissue.
`tests/physics/test_kernels.py::test_central_value_matches_lanconelli` compares like with like.
"""
    tables = [
        Table(
            "kernels_s_values",
            "Voxel S-values against Lanconelli et al. 2012 (Lu-177, soft tissue)",
            compared,
            table,
            seeds,
            readme_columns=[
                "voxel_mm",
                "offset",
                "published",
                "ratio_all_electrons",
                "ratio_beta_spectrum",
                "ratio_beta_spectrum_rho_1.00",
                "photon_share",
                "rel_uncertainty_1sigma",
            ],
        ),
        Table(
            "kernels_electron_energy",
            "Electron energy per decay held in the inner 3x3x3 voxels",
            (
                "electron energy per decay in the 3x3x3 block around the source voxel: published table (minus our "
                "photon kernel there; voxel mass at 1.04 and at 1.00 g/cm3) against our two electron sources and "
                "ICRP-107"
            ),
            energy,
            seeds,
        ),
    ]
    return SectionResult("kernels", "Kernels against published voxel S-values", text, tables, figures, numbers)


def _at(kernel: np.ndarray, offset) -> float:
    c = np.array(kernel.shape) // 2
    return float(kernel[tuple(c + np.array(offset))])


def _inner_27(values: dict) -> float:
    """Sum of S-values over the 3x3x3 voxels around the source, from the values at :data:`PUBLISHED_OFFSETS`."""
    return sum(m * values[o] for m, o in zip(_INNER_27_MULTIPLICITY, PUBLISHED_OFFSETS[:4], strict=True))


def _kev_per_decay(s_sum: float, side_mm: float, density_g_cm3: float = KERNEL_TISSUE_DENSITY_G_CM3) -> float:
    """keV per decay deposited by a sum of S-values (mGy/(MBq s) = 1e-9 Gy per decay) over voxels of ``side_mm``
    of ``density_g_cm3``."""
    mass_kg = side_mm**3 * 1e-3 * density_g_cm3 * 1e-3
    return s_sum * 1e-9 * mass_kg / J_PER_MEV * 1e3


def _kernel_sigma(kernels, infos, offset) -> float:
    """Relative 1-sigma statistical uncertainty of beta-spectrum + photon at ``offset`` from the runs' provenance
    (named voxels: centre, face, edge, corner; 2 sides out along x)."""
    names = {(0, 0, 0): "centre", (0, 0, 1): "face_x", (0, 1, 1): "edge_yx", (1, 1, 1): "corner"}

    def rel(kind):
        info, shape = infos[kind], kernels[kind].shape[2]
        name = names.get(tuple(offset))
        if name is None:  # (0, 0, 2)
            name = "x_edge" if shape // 2 == 2 else "x_half_way" if shape // 4 == 2 else None
        return info["relative_uncertainty"].get(name, np.nan) if name else np.nan

    parts = [(_at(kernels[k], offset), rel(k)) for k in ("beta_spectrum", "photon")]
    total = sum(v for v, _ in parts)
    return float(math.sqrt(sum((v * r) ** 2 for v, r in parts if v > 0)) / total) if total > 0 else float("nan")


def _plot_kernel_ratios(out: Path, table: pd.DataFrame) -> tuple[str, str]:
    fig, axes = _figure(1, 3, (13, 4))
    for ax, offset, title in zip(
        axes,
        ("000", "001", "002"),
        ("S(0,0,0): source voxel", "S(0,0,1): face neighbour", "S(0,0,2): photons"),
        strict=True,
    ):
        rows = table[table["offset"] == offset]
        ax.axhline(1.0, color="0.5", lw=0.8)
        ax.plot(rows["voxel_mm"], rows["ratio_all_electrons"], "o-", label="all ICRP-107 electrons + photons")
        ax.plot(rows["voxel_mm"], rows["ratio_beta_spectrum"], "s-", label="beta spectrum + photons")
        ax.plot(
            rows["voxel_mm"], rows["ratio_beta_spectrum_rho_1.00"], "^--", label="beta spectrum + photons, 1.00 g/cm3"
        )
        ax.set_title(title)
        ax.set_xlabel("voxel side (mm)")
        ax.set_ylabel("ours / Lanconelli 2012")
    axes[0].legend(fontsize=8)
    name = "kernels_s_value_ratios.png"
    _save(fig, out / name)
    return name, "Our S-values over the published ones against voxel size: all electrons, the beta spectrum alone."


# --------------------------------------------------------------------------------------------- 2. homogeneous
def _section_homogeneous(spec: ValidationSize, out: Path, dev, work, log) -> SectionResult:
    from cohort_dosimetry.physics import (
        default_kernel_shape,
        dose_rate_dvk,
        nuclide,
        run_monte_carlo,
        shipped_kernels,
        voxel_kernel,
    )

    lu = nuclide("Lu177")
    rows = []

    def add(
        method, emissions, geometry, decays, seed, measured, sigma, equilibrium_kev, expected_kev, systematic, note
    ):
        ratio = measured / expected_kev
        allowed = 3.0 * sigma + systematic
        rows.append(
            {
                "method": method,
                "emissions": emissions,
                "geometry": geometry,
                "decays": decays,
                "seed": seed,
                "equilibrium_kev_per_decay": equilibrium_kev,
                "expected_kev_per_decay": expected_kev,
                "measured_kev_per_decay": measured,
                "ratio": ratio,
                "sigma_ratio": sigma,
                "allowed_deviation": allowed,
                "within": bool(abs(ratio - 1.0) <= allowed),
                "ratio_to_equilibrium": measured / equilibrium_kev,
                "note": note,
            }
        )

    # Monte Carlo, charged-particle equilibrium: 5^3 voxels of 4 mm, central 3^3 block 4 mm from every face
    shape, side, a_voxel = (5, 5, 5), 4.0, 1.0e6
    rho = np.full(shape, KERNEL_TISSUE_DENSITY_G_CM3, np.float32)
    mass_kg = KERNEL_TISSUE_DENSITY_G_CM3 * (side / 10) ** 3 * 1e-3
    for seed, (emissions, kind) in enumerate(((("electron",), "electron"), (("beta",), "beta")), start=11):
        r = run_monte_carlo(
            np.full(shape, a_voxel),
            rho,
            (side,) * 3,
            n_decays=spec.homogeneous_electron_decays,
            seed=seed,
            device=dev,
            emissions=emissions,
        )
        kev, sigma = _block_kev(r, (slice(1, 4),) * 3, a_voxel, mass_kg)
        add(
            "MC",
            "+".join(emissions),
            "5^3 voxels of 4 mm, soft tissue; central 3^3 (4 mm from the faces > 1.8 mm range)",
            spec.homogeneous_electron_decays,
            seed,
            kev,
            sigma,
            lu.energy_per_decay_mev(kind) * 1e3,
            lu.energy_per_decay_mev(kind) * 1e3,
            0.001,
            "charged-particle equilibrium; 0.1 % allowed for the beta sampling table (mean within 0.05 % of ICRP-107)",
        )
        log(f"  MC {emissions}: {kev:.2f} keV per decay (expected {lu.energy_per_decay_mev(kind) * 1e3:.2f})")
    # Monte Carlo, radiation equilibrium: 20^3 voxels of 10 cm, central 6^3 block 70 cm from every face
    if spec.homogeneous_total_decays:
        shape, side = (20, 20, 20), 100.0
        rho = np.full(shape, KERNEL_TISSUE_DENSITY_G_CM3, np.float32)
        mass_kg = KERNEL_TISSUE_DENSITY_G_CM3 * (side / 10) ** 3 * 1e-3
        r = run_monte_carlo(
            np.full(shape, a_voxel), rho, (side,) * 3, n_decays=spec.homogeneous_total_decays, seed=5, device=dev
        )
        kev, sigma = _block_kev(r, (slice(7, 13),) * 3, a_voxel, mass_kg)
        add(
            "MC",
            "electron+photon",
            "20^3 voxels of 10 cm (2 m cube), soft tissue; central 6^3 (70 cm = 9.8 mean "
            "free paths at 208 keV from the faces)",
            spec.homogeneous_total_decays,
            5,
            kev,
            sigma,
            lu.energy_per_decay_mev("total") * 1e3,
            lu.energy_per_decay_mev("total") * 1e3,
            0.004,
            "radiation equilibrium; 0.4 % allowed for photons escaping the finite cube (buildup-bounded estimate)",
        )
        log(f"  MC electron+photon: {kev:.2f} keV per decay (expected {lu.energy_per_decay_mev('total') * 1e3:.2f})")
    # DVK with the shipped compact-grid kernels: uniform activity over the kernel's whole reach
    spacing = COMPACT_SPACING_MM
    kshape = default_kernel_shape(spacing)
    mass_kg = KERNEL_TISSUE_DENSITY_G_CM3 * float(np.prod(spacing)) * 1e-6
    centre = tuple(s // 2 for s in kshape)
    escaped = {e["kind"]: e["energy_per_decay_mev"]["escaped_from_grid"] * 1e3 for e in shipped_kernels()}
    for kind, emitted, expected in (
        ("beta", "electron", lu.energy_per_decay_mev("electron") * 1e3),
        ("total", "electron+photon", lu.energy_per_decay_mev("total") * 1e3),
    ):
        kernel = voxel_kernel("Lu177", spacing, kshape, kind=kind, device=dev)
        dose = dose_rate_dvk(
            np.full(kshape, a_voxel, np.float32),
            np.full(kshape, KERNEL_TISSUE_DENSITY_G_CM3, np.float32),
            spacing,
            kernel=kernel,
            device=dev,
        )
        kev = float(dose[centre]) * mass_kg / a_voxel / J_PER_MEV * 1e3
        beyond = escaped.get("beta", 0.0) + (escaped.get("photon", 0.0) if kind == "total" else 0.0)
        add(
            "DVK",
            emitted,
            f"uniform activity over the {kshape[0]}x{kshape[1]}x{kshape[2]} voxels of the shipped "
            f"{spacing[0]:g}x{spacing[1]:g}x{spacing[2]:g} mm kernel; centre voxel",
            None,
            None,
            kev,
            0.0,
            expected,
            expected - beyond,
            0.002,
            f"expected = equilibrium minus the energy the kernel's Monte Carlo grid (+-100 mm) let escape, "
            f"{beyond:.2f} keV per decay (kernel_data/index.json); 0.2 % for the kernel runs' sampled emission "
            "and float32 sums",
        )
        log(f"  DVK {kind}: {kev:.2f} keV per decay (expected {expected:.2f}, {beyond:.2f} beyond the kernel)")
    table = pd.DataFrame(rows)
    numbers = {
        "ratios": dict(zip(table["method"] + " " + table["emissions"], table["ratio"], strict=True)),
        "within": dict(zip(table["method"] + " " + table["emissions"], table["within"], strict=True)),
        "rows": table,
    }
    text = """\
Uniform activity in uniform soft tissue (1.04 g/cm3): where the source extends beyond the particles' reach in every
direction, the dose-rate is activity concentration x energy per decay / density (charged-particle equilibrium for
electrons, radiation equilibrium for electrons and photons; Attix, Introduction to Radiological Physics, ch. 4). The
table gives the dose-rate as keV per decay deposited per voxel mass (= dose-rate x voxel mass / activity), against
the ICRP-107 energy per decay (`equilibrium`). `ratio` = measured / expected; the deviation allowed is 3 standard
errors (batch statistics of the run) plus the systematic named in the CSV's note. The DVK of a uniform map falls
short of the equilibrium by the photon energy beyond the kernel's +-100 mm reach (`ratio_to_equilibrium`): that is
the kernel's truncation, so its `expected` is the equilibrium minus that energy.
"""
    tables = [
        Table(
            "homogeneous_limit",
            "Homogeneous limit: dose-rate = activity x energy per decay / mass",
            (
                "Monte Carlo and DVK dose-rates in uniform activity in homogeneous soft tissue against "
                "activity x ICRP-107 energy per decay / mass"
            ),
            table,
            "MC seeds 11 (electrons), 12 (beta spectrum), 5 (electrons + photons); the DVK uses the shipped kernels",
            readme_columns=[
                "method",
                "emissions",
                "decays",
                "equilibrium_kev_per_decay",
                "expected_kev_per_decay",
                "measured_kev_per_decay",
                "ratio",
                "sigma_ratio",
                "allowed_deviation",
                "within",
                "ratio_to_equilibrium",
            ],
        )
    ]
    return SectionResult("homogeneous", "The homogeneous limit", text, tables, [], numbers)


def _block_kev(result, block, a_voxel: float, mass_kg: float) -> tuple[float, float]:
    """Mean keV per decay deposited per voxel mass in ``block`` and its relative standard error."""
    dose = result.dose_rate_gy_s[block].astype(np.float64)
    sigma = dose * np.nan_to_num(result.relative_uncertainty[block].astype(np.float64))
    kev = float(dose.mean()) * mass_kg / a_voxel / J_PER_MEV * 1e3
    return kev, float(np.sqrt((sigma**2).sum()) / dose.sum())


# ------------------------------------------------------------------------------------- 3. DVK against MC (patient)
def _data_spec(spec: ValidationSize):
    from cohort_dosimetry.training import DataSpec

    base = DataSpec()
    f = spec.mc_fraction
    return DataSpec(
        hours=tuple(spec.hours),
        realisations=spec.realisations,
        mc_decays_per_voxel=base.mc_decays_per_voxel * f,
        mc_decays_per_activity_share=base.mc_decays_per_activity_share * f,
        mc_max_decays=int(base.mc_max_decays * f),
        mc_label_uncertainty_target=base.mc_label_uncertainty_target / math.sqrt(f),
    )


def _prepared(work: Path, seeds, spec: ValidationSize, dev, log) -> tuple[Path, str]:
    """Prepare (or reuse, from ``work``) the virtual patients; returns their data folder and a sentence saying what
    preparing them cost (their ``patient.json``), which a section's wall time leaves out when they were reused."""
    from cohort_dosimetry.training import make_patient_data

    data = Path(work) / "patients"
    seconds = []
    for seed in seeds:
        meta = make_patient_data(data, seed, _data_spec(spec), device=dev, log=lambda s: log("  " + s))
        seconds.append(sum(meta["seconds"].values()))
    cost = (
        f"Preparing these patients (Monte Carlo truth per kinetic compartment, SPECT, DVK) took "
        f"{', '.join(f'{s / 60:.1f}' for s in seconds)} min (patients {', '.join(map(str, seeds))}); a section's "
        "wall time includes it only where that section prepared them."
    )
    return data, cost


def _section_dvk_vs_mc(spec: ValidationSize, out: Path, dev, work, log) -> SectionResult:
    from cohort_dosimetry.phantoms import activity_true, make_anatomy
    from cohort_dosimetry.physics import dose_rate_dvk
    from cohort_dosimetry.stats import nrmse
    from cohort_dosimetry.training import patient_dir
    from cohort_dosimetry.vocabulary import voi_type

    seeds = spec.patient_seeds[: spec.dvk_mc_patients]
    data, cost = _prepared(work, seeds, spec, dev, log)
    rows = []
    example = None
    label_uncertainty: list[list[float]] = []
    for seed in seeds:
        directory = patient_dir(data, seed)
        meta = json.loads((directory / "patient.json").read_text())
        label_uncertainty.append(meta["label_median_relative_uncertainty_in_organs"])
        anatomy = make_anatomy(seed, "compact")
        spacing = tuple(float(s) for s in anatomy.attrs["spacing_mm"])
        voxel_ml = float(np.prod(spacing)) / 1000.0
        density = np.load(directory / "density.npy")
        labels = np.load(directory / "labels.npy")
        names = {int(k): v for k, v in meta["voi_names"].items()}
        truth_activity = activity_true(anatomy, list(spec.hours)).values
        for t, hour in enumerate(spec.hours):
            activity_bq = (truth_activity[t] * voxel_ml).astype(np.float32)
            dvk = dose_rate_dvk(activity_bq, density, spacing, device=dev).astype(np.float64)
            mc = np.load(directory / f"label_t{t}.npy").astype(np.float64)
            mc_sigma = mc * np.nan_to_num(np.load(directory / f"label_uncertainty_t{t}.npy").astype(np.float64))
            if example is None and (t == 1 or len(spec.hours) == 1):  # 24 h in the default scan times
                example = (seed, hour, dvk, mc, density, spacing)
            for label, voi in names.items():
                mask = labels == label
                if not mask.any() or voi_type(voi) in ("body", "other"):
                    continue
                m_mc, m_dvk = float(mc[mask].mean()), float(dvk[mask].mean())
                rows.append(
                    {
                        "patient": seed,
                        "hours": hour,
                        "voi": voi,
                        "voi_class": voi_type(voi),
                        "voxels": int(mask.sum()),
                        "mean_mc_mgy_h": m_mc * 3.6e6,
                        "mean_dvk_mgy_h": m_dvk * 3.6e6,
                        "mean_error": m_dvk / m_mc - 1.0,
                        "mc_mean_rel_uncertainty": float(np.sqrt((mc_sigma[mask] ** 2).sum()) / mc[mask].sum()),
                        "nrmse": nrmse(dvk, mc, mask),
                        "nrmse_mc_noise_floor": float(
                            np.sqrt(np.mean(mc_sigma[mask] ** 2)) / np.sqrt(np.mean(mc[mask] ** 2))
                        ),
                    }
                )
        log(f"  DVK against MC: patient {seed} done")
    table = pd.DataFrame(rows)
    table["abs_mean_error"] = table["mean_error"].abs()
    table["patient_voi"] = table["patient"].astype(str) + ":" + table["voi"]
    by_class = (
        table.groupby("voi_class")
        .agg(
            vois=("patient_voi", "nunique"),
            rows=("voi", "size"),
            mean_error=("mean_error", "mean"),
            abs_mean_error=("abs_mean_error", "mean"),
            worst_abs_mean_error=("abs_mean_error", "max"),
            nrmse=("nrmse", "mean"),
            nrmse_mc_noise_floor=("nrmse_mc_noise_floor", "mean"),
            mc_mean_rel_uncertainty=("mc_mean_rel_uncertainty", "mean"),
        )
        .reset_index()
    )
    figures = [_plot_dvk_vs_mc(out, table, example)]
    numbers = {"by_class": by_class}
    label_u = max(max(u) for u in label_uncertainty)
    mc_decays = (
        "one run per kinetic compartment, electrons and photons separately, combined per time point, as the "
        f"training labels are made; {spec.mc_fraction:g} x the training data's decays; median relative uncertainty "
        f"in organ voxels at most {label_u:.1%} per time point"
    )
    compared = (
        "DVK (shipped kernels, density scaling) of the TRUE activity against the Monte Carlo of the same "
        "activity (the training labels' truth) on synthetic virtual patients, compact grid 3 x 3.91 x 3.91 mm"
    )
    text = f"""\
Both methods get the same, true activity map of a synthetic virtual patient (no SPECT: this isolates the dose
calculation). The Monte Carlo is the truth the CNN is trained and evaluated against: electrons and photons
transported through the patient's densities ({mc_decays}). The DVK convolves with kernels made in homogeneous soft
tissue and scales by 1.04/rho, so it differs where the tissue is not soft tissue (lungs, bone) and near
interfaces. `mean_error` is signed (DVK / MC - 1 of the VOI mean); `nrmse` is over the VOI's voxels and contains the
Monte Carlo's own noise, whose share is `nrmse_mc_noise_floor` (the NRMSE a perfect method would show). `vois`
counts the VOIs of all patients, `rows` their time points. {cost}
"""
    tables = [
        Table(
            "dvk_vs_mc_by_class",
            "DVK against Monte Carlo per VOI class (true activity)",
            compared,
            by_class,
            f"virtual patients {list(seeds)}; MC seeds as in cohort_dosimetry.training (seed x 1000 + run)",
        ),
        Table(
            "dvk_vs_mc_per_voi",
            "DVK against Monte Carlo per VOI",
            compared,
            table,
            f"virtual patients {list(seeds)}",
            readme_columns=[],
        ),
    ]
    return SectionResult("dvk_vs_mc", "DVK against Monte Carlo on virtual patients", text, tables, figures, numbers)


def _plot_dvk_vs_mc(out: Path, table: pd.DataFrame, example) -> tuple[str, str]:
    fig, axes = _figure(1, 2, (12, 4.5))
    classes = sorted(table["voi_class"].unique())
    data = [table.loc[table["voi_class"] == c, "mean_error"] * 100 for c in classes]
    axes[0].boxplot(data, showfliers=True)
    axes[0].set_xticks(range(1, len(classes) + 1), classes, rotation=30)
    axes[0].axhline(0.0, color="0.5", lw=0.8)
    axes[0].set_ylabel("DVK / MC - 1 of the VOI mean (%)")
    axes[0].set_title("per VOI, all patients and time points")
    seed, hour, dvk, mc, density, spacing = example
    y = int(np.argmax(mc.sum(axis=(0, 2))))  # the coronal slice with the most dose
    mc_slice, dvk_slice = mc[:, y, :], dvk[:, y, :]
    body_median = float(np.median(mc[density > 0.1]))
    shown = (density[:, y, :] > 0.1) & (mc_slice > 0.05 * body_median)
    ratio = np.where(shown, dvk_slice / np.maximum(mc_slice, 1e-30), np.nan)
    nz, nx = ratio.shape
    im = axes[1].imshow(
        ratio, origin="lower", cmap="coolwarm", vmin=0.5, vmax=1.5, extent=(0, nx * spacing[2], 0, nz * spacing[0])
    )
    fig.colorbar(im, ax=axes[1], label="DVK / MC")
    axes[1].set_xlabel("x (mm)")
    axes[1].set_ylabel("z (mm)")
    axes[1].set_title(f"patient {seed}, {hour:g} h, coronal slice {y}: DVK / MC in the body")
    name = "dvk_vs_mc.png"
    _save(fig, out / name)
    return name, "DVK against Monte Carlo of the true activity: VOI mean errors and a coronal slice of the ratio."


# ----------------------------------------------------------------------------------------------- 4. CNN vs DVK
def _section_cnn_vs_dvk(spec: ValidationSize, out: Path, dev, work, log) -> SectionResult:
    from cohort_dosimetry.training import evaluate, goal_checks, mean_bias, patient_dir

    seeds = list(spec.patient_seeds)
    data, cost = _prepared(work, seeds, spec, dev, log)
    label_u = max(
        max(
            json.loads((patient_dir(data, s) / "patient.json").read_text())[
                "label_median_relative_uncertainty_in_organs"
            ]
        )
        for s in seeds
    )
    per_voi, noise, summary = evaluate(
        data, seeds, _data_spec(spec), None, methods=("dvk", "cnn"), device=dev, log=lambda s: log("  " + s)
    )
    checks = goal_checks(per_voi)
    bias = mean_bias(per_voi, methods=("dvk", "cnn"))
    bias_rows = [
        {
            "voi_class": c,
            "vois": v["vois"],
            "dvk_bias": v["dvk"][0],
            "dvk_sd": v["dvk"][1],
            "cnn_bias": v["cnn"][0],
            "cnn_sd": v["cnn"][1],
        }
        for c, v in bias["voi_mean_bias"].items()
    ]
    per_patient = (
        per_voi.groupby(["patient", "method", "voi_class"])[["mean_error", "nrmse"]]
        .mean()
        .unstack("method")
        .reset_index()
    )
    per_patient.columns = ["_".join(c for c in col if c) for col in per_patient.columns]
    summary_wide = summary.pivot(index="voi_class", columns="method").reset_index()
    summary_wide.columns = [f"{method}_{metric}" if method else metric for metric, method in summary_wide.columns]
    figures = [_plot_cnn_vs_dvk(out, summary)]
    numbers = {"goal_checks": checks, "summary": summary, "met": int(checks["met"].sum()), "checks": len(checks)}
    compared = (
        "CNN (shipped DblurDoseNet weights) and DVK dose-rates from the simulated SPECT against the Monte Carlo "
        "of the TRUE activity, on held-out synthetic virtual patients (cohort_dosimetry.training.evaluate)"
    )
    seeds_text = (
        f"virtual patients {seeds} (never used to train, validate or select the weights); SPECT model 'fast'; "
        f"scans at {list(spec.hours)} h x {spec.realisations} noise realisation(s)"
    )
    text = f"""\
The CNN's published claim is that it recovers what SPECT's resolution loses and improves on the DVK against the
truth. Both start from the same reconstructed SPECT (fast SPECT model of cohort_dosimetry.phantoms) and are scored
against the Monte Carlo of the true activity. Errors are fractions: `mean_error` = |mean estimate - mean truth| /
mean truth per VOI, `nrmse` over the VOI's voxels (it contains the truth's own Monte Carlo noise, median
{label_u:.1%} or less per time point in organ voxels), DRx errors likewise; averages over VOIs, scans and patients;
ensemble noise in % over the noise realisations. The acceptance goals of the shipped weights (`goal_checks`):
mean-error reduction >= 40 % against DVK for kidneys and lesions, NRMSE below DVK's in every class.
**{checks["met"].sum()} of {len(checks)} goals met** on {len(seeds)} patient{"s" if len(seeds) > 1 else ""}. With
few patients the numbers scatter from patient to patient (see the per-patient table); the model card's held-out
evaluation pools 20 patients (seeds 47-66, 240 scans). {cost}
"""
    tables = [
        Table(
            "cnn_vs_dvk_summary",
            "CNN and DVK against the Monte Carlo truth per VOI class",
            compared,
            summary_wide,
            seeds_text,
            readme_columns=[
                c
                for c in summary_wide.columns
                if c == "voi_class" or c.split("_", 1)[1] in ("mean_error", "nrmse", "ensemble_noise_percent")
            ],
        ),
        Table("cnn_vs_dvk_goal_checks", "Acceptance goals of the CNN against the DVK", compared, checks, seeds_text),
        Table(
            "cnn_vs_dvk_mean_bias",
            "Bias of VOI mean dose-rates (estimate / truth - 1), mean and sd over VOIs",
            compared,
            pd.DataFrame(bias_rows),
            seeds_text,
        ),
        Table(
            "cnn_vs_dvk_per_patient",
            "Per patient: mean error and NRMSE by VOI class",
            compared,
            per_patient,
            seeds_text,
        ),
        Table("cnn_vs_dvk_per_voi", "Every VOI of every scan", compared, per_voi, seeds_text, readme_columns=[]),
    ]
    if len(noise):
        tables.append(
            Table(
                "cnn_vs_dvk_ensemble_noise",
                "Ensemble noise over realisations (%)",
                compared,
                noise,
                seeds_text,
                readme_columns=[],
            )
        )
    return SectionResult("cnn_vs_dvk", "CNN against DVK on held-out virtual patients", text, tables, figures, numbers)


def _plot_cnn_vs_dvk(out: Path, summary: pd.DataFrame) -> tuple[str, str]:
    fig, axes = _figure(1, 2, (12, 4))
    classes = list(dict.fromkeys(summary["voi_class"]))
    x = np.arange(len(classes))
    for ax, column, label in zip(axes, ("mean_error", "nrmse"), ("mean dose-rate error", "NRMSE"), strict=True):
        for k, method in enumerate(("dvk", "cnn")):
            rows = summary[summary["method"] == method].set_index("voi_class").reindex(classes)
            ax.bar(x + (k - 0.5) * 0.38, rows[column] * 100, width=0.38, label=method.upper())
        ax.set_xticks(x, classes)
        ax.set_ylabel(f"{label} against MC truth (%)")
    axes[0].legend()
    name = "cnn_vs_dvk.png"
    _save(fig, out / name)
    return name, "CNN and DVK against the Monte Carlo truth on held-out virtual patients, per VOI class."


# ------------------------------------------------------------------------------------------ 5. motion (patient)
#: The motion section's acceptance: |error| of the registered voxel-level VOI mean absorbed dose below this fraction
#: of the unmoved truth, for the kidneys and for lesions of at least ``MOTION_LESION_MIN_ML`` mL.
MOTION_TOLERANCE = 0.05
MOTION_LESION_MIN_ML = 15.0
_MOTION_DICE_ORGANS = ("kidney_left", "kidney_right", "spleen")
#: The absorbed-dose maps compared with the unmoved truth: name -> how the moved time points reach the reference grid.
MOTION_METHODS = {
    "none": "no registration: the moved dose-rate maps integrated as they lie",
    "registered_linear": "registered (rigid + demons), dose-rate maps warped with linear interpolation",
    "registered_bspline": "registered, dose-rate maps warped with cubic B-spline interpolation (negatives to 0)",
    "true_motion_linear": "warped with the TRUE motion, linear interpolation (resampling alone, no registration error)",
    "true_motion_bspline": "warped with the TRUE motion, cubic B-spline interpolation",
}


def _true_motion(moved, t: int, grid: Grid):
    """A RegistrationResult holding ``move_patient``'s true motion of time point ``t`` (reference points -> moved
    points), so that its warp resamples without registration error. The deformable part ``d`` follows from the true
    displacement and the rigid parameters (``F(p) = R (p + d(p) - c) + c + t``); ``jacobian`` is ``det(I + grad d)``
    (``RegistrationResult.from_transform``)."""
    from cohort_dosimetry.registration import RegistrationResult

    displacement = moved["displacement_true"].values[t].astype(np.float64)  # (3, z, y, x) mm
    rotation = moved["rigid_rotation"].values[t]
    centre = moved["rotation_centre_mm"].values
    shift = moved["rigid_translation_mm"].values[t]
    points = np.stack(np.meshgrid(*grid.axes_mm(), indexing="ij"))
    deformable = (
        np.einsum("ji,j...->i...", rotation, points + displacement - (centre + shift)[:, None, None, None])
        + centre[:, None, None, None]
        - points
    )
    return RegistrationResult.from_transform(grid, grid, rotation, centre, shift, deformable, {"true_motion": True})


def _observable_body(labels: np.ndarray, truth: np.ndarray, grid: Grid) -> np.ndarray:
    """Reference body voxels (z, y, x) whose true position at a moved time point lies inside the field of view
    (elsewhere the moved CT holds no information). ``truth`` (3, z, y, x): the true displacement, mm."""
    index = np.indices(grid.shape).astype(np.float64) + truth / np.asarray(grid.spacing_mm)[:, None, None, None]
    inside = np.all((index >= 0) & (index <= np.asarray(grid.shape)[:, None, None, None] - 1), axis=0)
    return (labels > 0) & inside


def _voi_stats(values: np.ndarray, labels: np.ndarray, names: dict, sigma=None) -> dict[str, tuple[float, float]]:
    """VOI name -> (mean of ``values`` over its voxels, relative standard error of that mean from the voxels'
    standard errors ``sigma``, taken as independent; nan without ``sigma``)."""
    flat = labels.ravel()
    n = max(names) + 1
    counts = np.bincount(flat, minlength=n)
    sums = np.bincount(flat, weights=values.ravel().astype(np.float64), minlength=n)
    squares = (
        np.bincount(flat, weights=(sigma.ravel().astype(np.float64) ** 2), minlength=n)
        if sigma is not None
        else np.full(n, np.nan)
    )
    return {
        name: (float(sums[k] / counts[k]), float(np.sqrt(squares[k]) / sums[k]) if sums[k] > 0 else float("nan"))
        for k, name in names.items()
        if counts[k] > 0
    }


def _mc_dose_rate(activity_bq_ml, density, labels, names, grid: Grid, decays: int, seed: int, dev, cost, uncertainty):
    """Monte Carlo dose-rate (z, y, x) Gy/s of an activity map (Bq/mL) in a density map (g/cm3); adds its time to
    ``cost`` and keeps in ``uncertainty`` the largest relative standard error of each VOI's mean so far."""
    from cohort_dosimetry.physics import run_monte_carlo

    tic = time.perf_counter()
    result = run_monte_carlo(
        (activity_bq_ml * grid.voxel_volume_ml).astype(np.float32),
        density,
        grid.spacing_mm,
        n_decays=decays,
        seed=seed,
        device=dev,
    )
    cost["mc_s"] += time.perf_counter() - tic
    cost["mc_runs"] += 1
    sigma = result.dose_rate_gy_s * np.nan_to_num(result.relative_uncertainty)
    for voi, (_, u) in _voi_stats(result.dose_rate_gy_s, labels, names, sigma).items():
        uncertainty[voi] = max(uncertainty.get(voi, 0.0), u)
    return result.dose_rate_gy_s


def _motion_patient(seed: int, spec: ValidationSize, dev, cost: dict, log):
    """One moving virtual patient: (VOI rows, registration rows, the example of the figure)."""
    from cohort_dosimetry.phantoms import make_virtual_patient, move_patient
    from cohort_dosimetry.registration import contour_dice, identity_result, register, target_registration_error
    from cohort_dosimetry.stats import integrate_voxels
    from cohort_dosimetry.vocabulary import voi_type

    hours = np.asarray(spec.motion_hours, dtype=np.float64)
    n_t = len(hours)
    tic = time.perf_counter()
    patient = make_virtual_patient(seed, spec.motion_grid, hours=hours, spect="fast", device=dev)
    moved = move_patient(patient, seed=seed)
    cost["setup_s"] += time.perf_counter() - tic
    grid = Grid.from_attrs(tuple(int(patient.sizes[d]) for d in ("z", "y", "x")), patient.attrs)
    names = {int(k): str(v) for k, v in patient["labels"].attrs["names"].items()}
    labels = patient["labels"].values
    uncertainty: dict[str, float] = {}

    # the unmoved truth, and the moved patient's own dose-rates (its reference time point is the unmoved one)
    def mc(activity, density, run_labels, mc_seed):
        return _mc_dose_rate(
            activity, density, run_labels, names, grid, spec.motion_decays, mc_seed, dev, cost, uncertainty
        )

    truth_rates = np.stack(
        [mc(patient["activity_true"].values[t], patient["density"].values, labels, seed * 1000 + t) for t in range(n_t)]
    )
    moved_rates = truth_rates.copy()
    for t in range(1, n_t):
        moved_rates[t] = mc(
            moved["activity_true"].values[t],
            moved["density"].values[t],
            moved["labels"].values[t],
            seed * 1000 + 100 + t,
        )
    log(f"  motion: patient {seed}: Monte Carlo done ({cost['mc_runs']} runs, {cost['mc_s']:.0f} s so far)")

    ct = moved["ct_hu"].values
    identity = identity_result(ct[0], grid)
    organs = np.isin(labels, [k for k, v in names.items() if v in _MOTION_DICE_ORGANS])
    transforms: dict[str, dict] = {"registered": {}, "true_motion": {}}
    reg_rows = []
    for t in range(1, n_t):
        result = register(ct[0], ct[t], grid)
        cost["registration_s"] += result.seconds
        truth = moved["displacement_true"].values[t]
        transforms["registered"][t], transforms["true_motion"][t] = result, _true_motion(moved, t, grid)
        body = _observable_body(labels, truth, grid)
        tre = target_registration_error(result, truth, body)
        tre_none = target_registration_error(identity, truth, body)
        after = contour_dice(labels, moved["labels"].values[t], result, names)
        before = contour_dice(labels, moved["labels"].values[t], None, names)
        reg_rows.append(
            {
                "patient": seed,
                "hours": hours[t],
                "true_rotation_deg": float(moved["rotation_deg"].values[t]),
                "true_shift_mm": float(moved["shift_mm"].values[t]),
                "true_breathing_max_mm": float(moved["breathing_max_mm"].values[t]),
                "found_rotation_deg": result.rotation_deg,
                "tre_mean_mm": tre["mean_mm"],
                "tre_p95_mm": tre["p95_mm"],
                "tre_max_mm": tre["max_mm"],
                "tre_organs_mean_mm": target_registration_error(result, truth, organs)["mean_mm"],
                "tre_none_mean_mm": tre_none["mean_mm"],
                "tre_none_max_mm": tre_none["max_mm"],
                **{f"dice_{o}": after.get(o, np.nan) for o in _MOTION_DICE_ORGANS},
                **{f"dice_none_{o}": before.get(o, np.nan) for o in _MOTION_DICE_ORGANS},
                "jacobian_min": result.jacobian_range[0],
                "jacobian_max": result.jacobian_range[1],
                "seconds": result.seconds,
                "settings": json.dumps(result.settings, sort_keys=True),
            }
        )
        log(
            f"  motion: patient {seed}, {hours[t]:g} h registered in {result.seconds:.0f} s: TRE "
            f"{tre['mean_mm']:.2f} mm mean (none {tre_none['mean_mm']:.1f} mm)"
        )

    # absorbed dose (Gy) of the truth and of every method by the same voxel rule
    tic = time.perf_counter()
    doses = {
        "truth": integrate_voxels(truth_rates, hours).dose_gy,
        "none": integrate_voxels(moved_rates, hours).dose_gy,
    }
    for method in MOTION_METHODS:
        if method != "none":
            transform, kind = method.rsplit("_", 1)
            warped = [transforms[transform][t].warp(moved_rates[t], kind) for t in range(1, n_t)]
            doses[method] = integrate_voxels(np.stack([truth_rates[0], *warped]), hours).dose_gy
    # move_patient keeps each tissue parcel's activity and each voxel's density: a compressed parcel's dose-rate rises
    # by activity_scale / det(I + grad d) (local deposition), whatever the interpolation
    scale = moved["activity_scale"].values
    per_mass = [truth_rates[t] * (scale[t] / transforms["true_motion"][t].jacobian) for t in range(1, n_t)]
    doses["activity_per_mass"] = integrate_voxels(np.stack([truth_rates[0], *per_mass]), hours).dose_gy
    cost["warp_s"] += time.perf_counter() - tic

    means = {name: _voi_stats(dose, labels, names) for name, dose in doses.items()}
    counts = np.bincount(labels.ravel(), minlength=max(names) + 1)
    voi_rows = []
    for k, voi in names.items():
        cls = voi_type(voi)
        if counts[k] == 0 or cls in ("body", "other"):
            continue
        volume = float(counts[k] * grid.voxel_volume_ml)
        truth_gy = means["truth"][voi][0]
        row = {
            "patient": seed,
            "voi": voi,
            "voi_class": cls,
            "volume_ml": volume,
            "acceptance": cls == "kidney" or (cls == "lesion" and volume >= MOTION_LESION_MIN_ML),
            "truth_gy": truth_gy,
        }
        for method in MOTION_METHODS:
            row[f"{method}_gy"] = means[method][voi][0]
            row[f"{method}_error"] = means[method][voi][0] / truth_gy - 1.0
        row["activity_per_mass_effect"] = means["activity_per_mass"][voi][0] / truth_gy - 1.0
        row["mc_rel_uncertainty_max"] = uncertainty.get(voi, np.nan)
        voi_rows.append(row)
    log(f"  motion: patient {seed} done")
    return voi_rows, reg_rows, (seed, grid, labels, names, doses)


def _section_motion(spec: ValidationSize, out: Path, dev, work, log) -> SectionResult:
    if not spec.motion_seeds or spec.motion_decays <= 0:
        raise ValueError(f"size {spec.name!r} has no moving virtual patients or no Monte Carlo decays")
    voi_rows: list[dict] = []
    reg_rows: list[dict] = []
    cost = {"mc_s": 0.0, "mc_runs": 0, "registration_s": 0.0, "warp_s": 0.0, "setup_s": 0.0}
    example = None
    for seed in spec.motion_seeds:
        vois, regs, patient_example = _motion_patient(seed, spec, dev, cost, log)
        voi_rows += vois
        reg_rows += regs
        example = example or patient_example

    per_voi = pd.DataFrame(voi_rows)
    registration = pd.DataFrame(reg_rows)
    methods = list(MOTION_METHODS)
    accepted = per_voi[per_voi["acceptance"]].copy()
    for method in ("registered_linear", "registered_bspline"):
        accepted[f"pass_{method}"] = accepted[f"{method}_error"].abs() < MOTION_TOLERANCE
    summary_rows = []
    for group, rows in (
        ("kidneys", per_voi[per_voi["voi_class"] == "kidney"]),
        (f"lesions >= {MOTION_LESION_MIN_ML:g} mL", accepted[accepted["voi_class"] == "lesion"]),
        ("acceptance VOIs", accepted),
        ("all VOIs", per_voi),
    ):
        for method in methods:
            error = rows[f"{method}_error"]
            summary_rows.append(
                {
                    "vois": group,
                    "method": method,
                    "n": len(rows),
                    "mean_error": float(error.mean()) if len(rows) else np.nan,
                    "mean_abs_error": float(error.abs().mean()) if len(rows) else np.nan,
                    "max_abs_error": float(error.abs().max()) if len(rows) else np.nan,
                    "within_tolerance": int((error.abs() < MOTION_TOLERANCE).sum()),
                }
            )
    summary = pd.DataFrame(summary_rows)
    settings = sorted(set(registration["settings"]))
    figures = [_plot_motion(out, accepted, example)]

    def worst(method: str) -> float:
        return float(accepted[f"{method}_error"].abs().max()) if len(accepted) else float("nan")

    passed = {m: bool(len(accepted)) and bool((accepted[f"{m}_error"].abs() < MOTION_TOLERANCE).all()) for m in methods}
    registration_part = (accepted["registered_linear_error"] - accepted["true_motion_linear_error"]).abs().mean()
    resampling_part = (accepted["true_motion_linear_error"] - accepted["activity_per_mass_effect"]).abs().mean()
    per_mass_part = accepted["activity_per_mass_effect"].abs().mean()
    u_max = float(per_voi.loc[per_voi["voi_class"] == "kidney", "mc_rel_uncertainty_max"].max())

    def verdict(method: str) -> str:
        n_pass = int((accepted[f"{method}_error"].abs() < MOTION_TOLERANCE).sum())
        word = "**met**" if passed[method] else "**not met**"
        return f"{word} ({n_pass} of {len(accepted)} VOIs within {MOTION_TOLERANCE:.0%}, worst {worst(method):.1%})"

    numbers = {
        "passed": passed,
        "worst": {m: worst(m) for m in methods},
        "summary": summary,
        "registration_settings": settings,
        "kidney_mc_uncertainty_max": u_max,
        "components": {
            "registration": float(registration_part),
            "resampling": float(resampling_part),
            "activity_per_mass": float(per_mass_part),
        },
        "cost": cost,
    }
    n_pat = len(spec.motion_seeds)
    compared = (
        "voxel-level absorbed dose (Monte Carlo dose-rates per time point, warped onto the reference time point, "
        "integrate_voxels) of a moving synthetic virtual patient against the same integration of the unmoved "
        f"patient's Monte Carlo dose-rates; VOI means over the reference labels; grid {_grid_text(spec.motion_grid)}"
    )
    seeds_text = (
        f"virtual patients {list(spec.motion_seeds)} (patient seed = motion seed; the registration settings were "
        f"chosen on seeds 11 and 12); Monte Carlo seeds patient x 1000 + t (unmoved) and + 100 + t (moved), "
        f"{spec.motion_decays:,} decays per run; scans at {list(spec.motion_hours)} h"
    )
    settings_text = "; ".join(f"`{s}`" for s in settings)
    methods_text = "\n".join(f"- `{m}`: {d}" for m, d in MOTION_METHODS.items())
    dominant = max(
        (("registration", registration_part), ("resampling", resampling_part), ("activity per mass", per_mass_part)),
        key=lambda item: item[1],
    )[0]
    text = f"""\
Can the registration and the voxel-level time integration be trusted apart from SPECT's blur? Each synthetic virtual
patient ({n_pat} here) is moved between its scans by `move_patient` (rigid repositioning up to 15 mm and 5 degrees,
a breathing deformation of liver, spleen and kidneys up to 8 mm; the first scan is the reference and does not move).
Its TRUE activity is used (no SPECT), and every dose-rate map is a Monte Carlo run (electrons + photons) in the
anatomy of its time point. The CT of each later scan is registered to the reference CT
(`cohort_dosimetry.registration.register` with its defaults), the dose-rate map warped onto the reference grid and
the maps integrated voxel by voxel (`integrate_voxels`, fitted tail). The truth is the unmoved patient's Monte Carlo
dose-rates integrated by the same rule. `error` = method / truth - 1 of the VOI mean absorbed dose over the reference
labels. Registration settings of this run (`RegistrationResult.settings`): {settings_text}.

{methods_text}

The activity is resampled twice between the unmoved truth and a registered map (`move_patient` moves it with the
anatomy by cubic B-spline interpolation, the warp moves the dose-rate back), and each time a hot organ's edge spreads
into its surroundings or, with a B-spline, overshoots: the true-motion rows measure that resampling without
registration error. The cohort flow warps with the B-spline. `activity_per_mass_effect` is a part of the
error that is no resampling at all: `move_patient` keeps each tissue parcel's activity (Bq) and each voxel's density,
so where its smooth breathing field compresses or stretches tissue (Jacobian determinant != 1) the activity per unit
mass, hence the local dose-rate, changes by `activity_scale / det(I + grad d)`; the column is the truth's dose-rates
scaled so (local deposition) and integrated.

**Acceptance** (registered; |error| < {MOTION_TOLERANCE:.0%} for the kidneys and for lesions of
{MOTION_LESION_MIN_ML:g} mL or more): linear warp {verdict("registered_linear")}; cubic B-spline warp
{verdict("registered_bspline")}. Without registration the worst error is {worst("none"):.1%}; with the true motion
{worst("true_motion_linear"):.1%} (linear) and {worst("true_motion_bspline"):.1%} (B-spline). Mean |error| over the
acceptance VOIs by component: registration (registered - true motion, linear warps; the same Monte Carlo runs, so
their noise cancels) {registration_part:.2%}; resampling (true motion, linear - activity per mass; it also holds the
Monte Carlo noise of two independent runs and the moved CT's own noise) {resampling_part:.2%}; activity per mass
{per_mass_part:.2%}. The largest is {dominant} (the parts can partly cancel in the total).

Monte Carlo noise: the largest relative standard error of a kidney's mean dose-rate over all runs is {u_max:.2%}
(from the runs' voxel standard errors, taken as independent), so the difference of two independent runs carries at
most about {np.sqrt(2) * u_max:.2%} of noise (the integrated dose, a positively weighted sum over time points, less).
Registration quality: TRE over the body voxels that stay in the field of view and in kidneys and spleen, and Dice of
kidneys and spleen, per registration. Cost: {cost["mc_runs"]} Monte Carlo runs {cost["mc_s"] / 60:.1f} min,
{len(registration)} registrations {cost["registration_s"] / 60:.1f} min, warps and integrations
{cost["warp_s"] / 60:.1f} min, making and moving the patients {cost["setup_s"] / 60:.1f} min.
"""
    tables = [
        Table(
            "motion_acceptance",
            "Kidneys and lesions >= 15 mL: VOI mean absorbed dose against the unmoved truth",
            compared,
            accepted,
            seeds_text,
            readme_columns=[
                "patient",
                "voi",
                "volume_ml",
                "truth_gy",
                *[f"{m}_error" for m in methods],
                "activity_per_mass_effect",
                "mc_rel_uncertainty_max",
            ],
        ),
        Table("motion_summary", "Errors by method and VOI group", compared, summary, seeds_text),
        Table(
            "motion_registration",
            "Registration against the true motion (per moved time point)",
            "target registration error (TRE) over the reference body voxels that stay in the field of view, and in "
            "kidneys and spleen; Dice of the warped organ labels; with the registration and without (`none`)",
            registration,
            seeds_text,
            readme_columns=[c for c in registration.columns if c != "settings" and not c.startswith("dice_none")],
        ),
        Table("motion_per_voi", "Every VOI", compared, per_voi, seeds_text, readme_columns=[]),
    ]
    return SectionResult(
        "motion", "Registration and voxel integration, apart from SPECT's blur", text, tables, figures, numbers
    )


def _plot_motion(out: Path, accepted: pd.DataFrame, example) -> tuple[str, str]:
    fig, axes = _figure(1, 2, (13, 4.5))
    ax = axes[0]
    keys = (accepted["patient"].astype(str) + ":" + accepted["voi"]).tolist()
    x = np.arange(len(keys))
    ax.axhspan(-MOTION_TOLERANCE * 100, MOTION_TOLERANCE * 100, color="0.9")
    ax.axhline(0.0, color="0.5", lw=0.8)
    markers = dict(zip(MOTION_METHODS, ("x", "o", "s", "^", "v"), strict=True))
    for k, method in enumerate(MOTION_METHODS):
        ax.plot(x + (k - 2) * 0.12, accepted[f"{method}_error"] * 100, markers[method], ls="none", label=method)
    ax.set_xticks(x, keys, rotation=45, ha="right", fontsize=8)
    ax.set_ylabel("VOI mean absorbed dose / truth - 1 (%)")
    ax.set_title(f"kidneys and lesions >= {MOTION_LESION_MIN_ML:g} mL (grey: +-{MOTION_TOLERANCE:.0%})")
    ax.legend(fontsize=7)
    seed, grid, labels, names, doses = example
    kidney = [k for k, v in names.items() if v == "kidney_left"]
    mask = labels == kidney[0] if kidney else labels > 0
    cz, cy, _ = (int(round(float(c.mean()))) for c in np.nonzero(mask))
    band = (slice(max(cz - 1, 0), cz + 2), slice(max(cy - 1, 0), cy + 2))  # 3 x 3 voxels around the centroid
    x_mm = np.arange(labels.shape[2]) * grid.spacing_mm[2]
    inside = mask[cz, cy, :]
    if inside.any():
        axes[1].axvspan(x_mm[inside].min(), x_mm[inside].max(), color="0.9", label="kidney_left (reference labels)")
    for method, style in (
        ("truth", "k-"),
        ("registered_linear", "C1-"),
        ("registered_bspline", "C2--"),
        ("true_motion_linear", "C3:"),
    ):
        profile = np.where(labels[cz, cy, :] > 0, doses[method][band].mean(axis=(0, 1)), np.nan)  # body only
        axes[1].plot(x_mm, profile, style, lw=1.2, label=method)
    axes[1].set_xlabel("x (mm)")
    axes[1].set_ylabel("absorbed dose (Gy), mean of 3 x 3 voxels")
    axes[1].set_title(f"patient {seed}: profile along x through the left kidney")
    axes[1].legend(fontsize=7)
    name = "motion.png"
    _save(fig, out / name)
    return name, (
        "Moving synthetic virtual patients: VOI mean absorbed dose of each method against the unmoved truth, and an "
        "absorbed-dose profile through a kidney, inside the body (the truth's edges against the warped maps')."
    )


# ---------------------------------------------------------------------------------------------------- output
def _figure(rows: int, cols: int, size):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=size, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, cols)
    return fig, np.atleast_1d(axes).ravel()


def _save(fig, path: Path) -> None:
    fig.savefig(path, dpi=110)


def _span(values, fmt: str = ".3f") -> str:
    values = np.asarray(list(values), dtype=float)
    lo, hi = np.nanmin(values), np.nanmax(values)
    return f"{lo:{fmt}}" if f"{lo:{fmt}}" == f"{hi:{fmt}}" else f"{lo:{fmt}}-{hi:{fmt}}"


def _markdown(frame: pd.DataFrame, columns=None) -> str:
    frame = frame if columns is None else frame[list(columns)]

    def cell(v) -> str:
        if isinstance(v, (bool, np.bool_)):
            return "yes" if v else "no"
        if isinstance(v, (float, np.floating)):
            x = float(v)
            if not np.isfinite(x):
                return "n/a"
            if x == int(x) and abs(x) >= 1000:
                return f"{int(x):,}"
            return f"{x:.4g}" if abs(x) < 1e5 else f"{x:,.0f}"
        if isinstance(v, (int, np.integer)):
            n = int(v)
            return f"{n:,}" if abs(n) >= 10_000 else str(n)
        return "n/a" if v is None else str(v)

    head = "| " + " | ".join(map(str, frame.columns)) + " |"
    rule = "|" + "---|" * len(frame.columns)
    body = ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([head, rule, *body])


def _write_readme(out: Path, spec: ValidationSize, results: dict[str, SectionResult], env: dict, started) -> None:
    """Write each section run now to ``sections/<name>.md`` and assemble README.md from every section file present,
    so a run of some sections keeps the others' latest evidence (each table states the run it comes from)."""
    date = started.strftime("%Y-%m-%d %H:%M UTC")
    total = sum(r.wall_s for r in results.values())
    (out / "sections").mkdir(exist_ok=True)
    for name, result in results.items():
        lines = [
            f"## {SECTIONS.index(name) + 1}. {result.title}",
            "",
            f"*Section run:* {date}, size `{spec.name}` ({spec.describe()}), {result.wall_s:.0f} s on {env['device']}.",
            "",
            result.text.strip(),
            "",
        ]
        for table in result.tables:
            meta = (
                f"*Compared:* {table.compared}. *Size:* `{spec.name}`. *Seeds:* {table.seeds}. "
                f"*Device:* {env['device']}. *Date:* {date}. *Software:* {env['software']}. *Wall time (section):* "
                f"{result.wall_s:.0f} s. *CSV:* [{table.name}.csv]({table.name}.csv)."
            )
            lines += [f"### {table.title}", "", meta, ""]
            if table.readme_columns is None or len(table.readme_columns):
                lines += [_markdown(table.frame, table.readme_columns), ""]
            else:
                lines += [f"({len(table.frame)} rows: see the CSV.)", ""]
        for figure, caption in result.figures:
            lines += [f"![{caption}]({figure})", "", f"*{caption}*", ""]
        (out / "sections" / f"{name}.md").write_text("\n".join(lines))
    present = [n for n in SECTIONS if (out / "sections" / f"{n}.md").exists()]
    lines = [
        "# Scientific validation",
        "",
        "Regenerated by `cohort-dosimetry validate-science --out docs/validation` (`make validation`, size `full`); "
        "every number below comes from such a run, and each table states its own. Patients are **synthetic virtual "
        "patients** (`cohort_dosimetry.phantoms`), never patient data.",
        "",
        f"- latest run: sections {', '.join(results)} at size `{spec.name}`, {date}, {total / 60:.1f} min; device "
        f"{env['device']}; {env['software']}",
        f"- size `{spec.name}`: {spec.describe()}",
        f"- sections here: {', '.join(present)} (one file each under `sections/`, assembled into this page)",
        "",
        "## Which emissions the kernels and the Monte Carlo include",
        "",
        EMISSIONS_STATEMENT,
        "",
    ]
    for name in present:
        lines += [(out / "sections" / f"{name}.md").read_text(), ""]
    (out / "README.md").write_text("\n".join(lines))
