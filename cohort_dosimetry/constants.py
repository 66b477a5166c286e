"""Shared constants and defaults: the one place a method name, a default, a grid or a unit factor is written down.

Every package (io, physics, dose, stats, phantoms, flows, commands) imports these from here; none redefines them.
Physical data with a published source (decay data, attenuation, HU to density, published S-values) live with the
code that uses them, next to their source (docs/physics.md lists them all).
"""

from __future__ import annotations

#: The dose-rate methods, in the order tables and reports show them: dose voxel kernel, DVK + DblurDoseNet residual
#: (CNN), Monte Carlo. ``cohort_dosimetry.dose`` registers one implementation per name.
METHODS: tuple[str, ...] = ("dvk", "cnn", "mc")

#: The radionuclide the dose-rate methods compute for: the kernels, spectra and CNN weights are Lu-177's.
DOSE_NUCLIDE = "Lu177"

#: Decays the Monte Carlo simulates per scan when none are asked for. On the compact grid they give a relative
#: statistical uncertainty of a few per cent in kidney voxels of a typical virtual patient 24 h after injection;
#: the run records the number used with every MC map.
MC_DECAYS = 5_000_000
#: Which scans Monte Carlo runs on (``mc_scans`` of the flows, ``cohort-dosimetry run --mc-scans``): every scan, or one
#: per patient and therapy cycle, the earliest or the one nearest :data:`MC_TARGET_HOURS` after injection.
MC_SCAN_RULES: tuple[str, ...] = ("all", "first", "nearest-96h")
#: Hours post injection "nearest-96h" aims at: the "single measurement after 4 days" of Hänscheid et al. (J Nucl Med
#: 59:75, 2018), the middle of the 72-120 h window in which the single-time-point absorbed dose uses their formula.
MC_TARGET_HOURS = 96.0

#: The compact dose grid spacing (z, y, x) in mm: the grid the shipped CNN weights were trained on, and the default
#: dose grid of ``ingest`` and ``run`` (a (130, 128, 128) virtual patient covers 390 x 500 x 500 mm).
COMPACT_SPACING_MM: tuple[float, float, float] = (3.0, 3.91, 3.91)
#: The virtual patients' compact grid shape (z, y, x).
COMPACT_SHAPE: tuple[int, int, int] = (130, 128, 128)
#: The dose grid ``ingest`` and ``run`` use unless told otherwise: one default, so that ``ingest`` then ``run``
#: compute on the grid the scans were stored on.
DEFAULT_DOSE_GRID = "compact"

#: Density of the dose voxel kernels' medium, soft tissue, g/cm3: the density of Li et al. 2022's 1.04/rho scaling
#: (ICRU-44 soft-tissue composition, whose nominal density NIST lists as 1.06). Not the medium of Lanconelli et al.
#: 2012, whose tables fit 1.00 g/cm3 (docs/validation).
KERNEL_TISSUE_DENSITY_G_CM3 = 1.04

#: ManufacturerModelName of every DICOM object the virtual-patient exporter writes. The ingest reads it to mark a
#: scan ``synthetic`` in the store, so that every table and report built on it can say it is not patient data.
SYNTHETIC_MODEL_NAME = "cohort_dosimetry.phantoms"

# Unit factors.
SECONDS_PER_HOUR = 3600.0
#: mL per mm3 (1 mL = 1 cm3 = 1000 mm3): Bq/mL x voxel volume in mm3 x this = Bq per voxel.
ML_PER_MM3 = 1e-3
#: Gy/s -> mGy/h, the unit dose-rates are shown in.
MGY_PER_H_PER_GY_PER_S = 1e3 * SECONDS_PER_HOUR
#: Joules per MeV (CODATA 2018, exact).
J_PER_MEV = 1.602176634e-13
