"""Virtual patients: seeded synthetic anatomy, Lu-177 DOTATATE kinetics, two SPECT models, DICOM export.

Synthetic virtual patients stand in for patient data everywhere they are used. Grids are
:mod:`cohort_dosimetry.grid`, VOI names :mod:`cohort_dosimetry.vocabulary`.
"""

from cohort_dosimetry.phantoms._anatomy import activity_true, make_anatomy
from cohort_dosimetry.phantoms._calibration import calibrate_fast_model, sphere_phantom
from cohort_dosimetry.phantoms._dicom_export import cohort_plan, export_cohort, export_dicom, read_ground_truth
from cohort_dosimetry.phantoms._identity import synthetic_identity
from cohort_dosimetry.phantoms._kinetics import (
    ADMINISTERED_ACTIVITY_BQ,
    compartment_activity_bq,
    cumulated_activity_bq_s,
)
from cohort_dosimetry.phantoms._motion import BREATHING_ORGANS, motion_points, move_patient
from cohort_dosimetry.phantoms._spect import SPECT_MODELS, simulate_spect
from cohort_dosimetry.phantoms._spect_acquisition import Acquisition
from cohort_dosimetry.phantoms._spect_fast import FastModelCalibration
from cohort_dosimetry.phantoms._virtual_patient import make_virtual_patient

__all__ = [
    "BREATHING_ORGANS",
    "motion_points",
    "move_patient",
    "ADMINISTERED_ACTIVITY_BQ",
    "Acquisition",
    "FastModelCalibration",
    "SPECT_MODELS",
    "activity_true",
    "calibrate_fast_model",
    "cohort_plan",
    "compartment_activity_bq",
    "cumulated_activity_bq_s",
    "export_cohort",
    "export_dicom",
    "make_anatomy",
    "make_virtual_patient",
    "read_ground_truth",
    "simulate_spect",
    "sphere_phantom",
    "synthetic_identity",
]
