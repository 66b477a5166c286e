"""Virtual patients: seeded synthetic anatomy, Lu-177 DOTATATE kinetics, two SPECT models, DICOM export.

Synthetic virtual patients stand in for patient data everywhere they are used. Public names are resolved lazily
from the private modules that define them (DICOM export pulls in highdicom; the SPECT model PyTomography).
"""
from __future__ import annotations

from cohort_dosimetry._lazy import lazy_exports

_PUBLIC = {
    "VOI_NAMES": "_vocabulary",
    "VOI_TYPES": "_vocabulary",
    "LESION_LABEL_OFFSET": "_vocabulary",
    "voi_type": "_vocabulary",
    "label_of": "_vocabulary",
    "name_of": "_vocabulary",
    "Grid": "_grid",
    "GRIDS": "_grid",
    "ADMINISTERED_ACTIVITY_BQ": "_kinetics",
    "compartment_activity_bq": "_kinetics",
    "cumulated_activity_bq_s": "_kinetics",
    "make_anatomy": "_anatomy",
    "activity_true": "_anatomy",
    "Acquisition": "_spect_acquisition",
    "SPECT_MODELS": "_spect",
    "simulate_spect": "_spect",
    "calibrate_fast_model": "_calibration",
    "sphere_phantom": "_calibration",
    "make_virtual_patient": "_virtual_patient",
    "export_dicom": "_dicom_export",
    "export_cohort": "_dicom_export",
    "read_ground_truth": "_dicom_export",
    "cohort_plan": "_dicom_export",
    "synthetic_identity": "_identity",
}

__getattr__, __all__ = lazy_exports(__name__, _PUBLIC)
