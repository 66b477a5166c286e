"""DICOM in: discover studies in any folder layout, read CT / SPECT / contours / RTDOSE, resample onto the dose grid,
and ingest whole cohorts into the store.

Public API::

    ingest(dicom_dir, cohort_dir, grid="compact", key=None, workers=1, counts_calibration=None) -> report DataFrame
    plan_ingest(dicom_dir, cohort_dir, grid="compact", ...) -> IngestPlan   ingest in steps, e.g. one task per scan:
    ingest_scan(cohort_dir, planned_scan) -> [report row]              discovery and labels once (the plan), then
    finish_ingest(cohort_dir, rows) -> report DataFrame                each scan built and written anywhere, then
                                                                       cycle notes and the report table
    discover_studies(dicom_dir) -> Discovery            headers only: scans (SPECT + CT + contours), problems
    read_ct_series(paths) -> Volume                     HU, (z, y, x)
    read_nm(paths, counts_calibration=None, nuclide=None) -> SpectImage   NM or PT slices: Bq/mL at the acquisition
                                                        start (decay correction undone, negatives clamped) + injection /
                                                        acquisition / activity / nuclide (only Lu-177 accepted)
    read_rtstruct(path, reference_grid, roi_names=None) -> LabelMap   contours on the reference (CT) grid: VOI names
                                                        from the vocabulary, overlapping ROIs as regions
    read_seg(path, reference_grid, roi_names=None) -> LabelMap
    read_rtdose(path) -> ExternalDose                   dose as given (DoseUnits, DoseType, DoseSummationType)
    dose_grid(ct_grid, "ct" | "compact" | (z, y, x) mm) -> Grid
    resample_to_grid(volume, grid, "activity" | "ct_hu" | "labels" | "dose") -> Volume
    IngestError                                         bad input: .subject (file or series) and .problem

DICOM out, in the reference CT's frame of reference and study (identity read from the CT, never from the store)::

    write_rt_dose(dose_gy, grid, reference_ct, path, ...)        RT Dose, GY, PHYSICAL, DoseGridScaling for the range
    write_dose_rate_map(dose_rate_gy_s, grid, reference_ct, ...)  Parametric Map in Gy/s (highdicom)
    write_seg(labels, names, grid, reference_ct, path)           SEG of the VOIs as used (highdicom, BINARY)
    export_scans(cohort_dir, dicom_dir, out_dir, patients=None)  every scan's maps and VOIs, every cycle's absorbed
                                                                 dose as RT Dose (`cohort-dosimetry export`)

Axis order is (z, y, x) everywhere; geometry follows DICOM patient space (LPS, mm), see :mod:`cohort_dosimetry.grid`.
"""

from cohort_dosimetry.io._contours import LabelMap, read_rtstruct, read_seg
from cohort_dosimetry.io._ct import read_ct_series
from cohort_dosimetry.io._discovery import Discovery, ScanSources, Series, discover_studies
from cohort_dosimetry.io._errors import IngestError, Problem
from cohort_dosimetry.io._export import SUMMATION_TYPES, reference_series, write_dose_rate_map, write_rt_dose, write_seg
from cohort_dosimetry.io._export_scans import EXPORT_COLUMNS, ReferenceCT, export_scans, find_reference_cts
from cohort_dosimetry.io._ingest import IngestPlan, PlannedScan, finish_ingest, ingest, ingest_scan, plan_ingest
from cohort_dosimetry.io._nm import CountsCalibration, SpectImage, read_nm
from cohort_dosimetry.io._resample import dose_grid, resample_to_grid
from cohort_dosimetry.io._rtdose import ExternalDose, read_rtdose
from cohort_dosimetry.io._volume import Volume

__all__ = [
    "EXPORT_COLUMNS",
    "SUMMATION_TYPES",
    "ReferenceCT",
    "export_scans",
    "find_reference_cts",
    "reference_series",
    "write_dose_rate_map",
    "write_rt_dose",
    "write_seg",
    "CountsCalibration",
    "Discovery",
    "ExternalDose",
    "IngestError",
    "IngestPlan",
    "LabelMap",
    "PlannedScan",
    "Problem",
    "ScanSources",
    "Series",
    "SpectImage",
    "Volume",
    "discover_studies",
    "dose_grid",
    "finish_ingest",
    "ingest",
    "ingest_scan",
    "plan_ingest",
    "read_ct_series",
    "read_nm",
    "read_rtdose",
    "read_rtstruct",
    "read_seg",
    "resample_to_grid",
]
