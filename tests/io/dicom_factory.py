"""Seeded factory of small synthetic SPECT/CT patients written as DICOM with pydicom (virtual patients, no real data).

A patient is a box phantom on a CT grid (z, y, x): ``body`` (0 HU), ``liver`` (60 HU) inside it and a small
``lesion_1`` inside the liver, contoured as axis-aligned rectangles whose edges run between voxel centres (so their
rasterisation is exact). The SPECT (Bq/mL) is written as one NM multi-frame on its own, coarser grid covering the CT.
Every writer returns the truth it wrote so tests compare against it, and takes switches to break one thing at a time.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

CT_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
NM_STORAGE = "1.2.840.10008.5.1.4.1.1.20"
RTSTRUCT_STORAGE = "1.2.840.10008.5.1.4.1.1.481.3"
INJECTION = dt.datetime(2024, 3, 4, 9, 30, 0)


@dataclass
class Patient:
    """What was written for one patient: identity, geometry and per scan the truth."""

    patient_id: str
    name: str
    birth_date: str
    ct_shape: tuple[int, int, int]
    ct_spacing: tuple[float, float, float]
    ct_origin_xyz: tuple[float, float, float]
    ct_hu: np.ndarray
    labels: np.ndarray
    names: dict[int, str]
    hours: list[float] = field(default_factory=list)
    total_activity_bq: list[float] = field(default_factory=list)
    nm_files: list[Path] = field(default_factory=list)
    ct_dirs: list[Path] = field(default_factory=list)
    rtstruct_files: list[Path] = field(default_factory=list)


def _file_meta(sop_class: str, sop_instance: str) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_instance
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return meta


def _base(patient: Patient, modality: str, sop_class: str, study_uid: str, series_uid: str, frame_uid: str,
          when: dt.datetime, series_number: int) -> Dataset:
    ds = Dataset()
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta = _file_meta(sop_class, ds.SOPInstanceUID)
    ds.SOPClassUID = sop_class
    ds.Modality = modality
    ds.PatientName = patient.name
    ds.PatientID = patient.patient_id
    ds.PatientBirthDate = patient.birth_date
    ds.PatientSex = "F"
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.FrameOfReferenceUID = frame_uid
    ds.SeriesNumber = series_number
    ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = when.strftime("%Y%m%d")
    ds.StudyTime = ds.SeriesTime = ds.AcquisitionTime = ds.ContentTime = when.strftime("%H%M%S")
    return ds


def make_patient(seed: int, patient_id: str = "H10000001", name: str = "Fakename^Anna", birth_date: str = "19580214",
                 ct_shape=(14, 20, 22), ct_spacing=(4.0, 3.0, 3.0), lesion_voxels=(2, 2, 2)) -> Patient:
    """The truth of a box phantom (nothing written yet)."""
    rng = np.random.default_rng(seed)
    nz, ny, nx = ct_shape
    labels = np.zeros(ct_shape, dtype=np.int16)
    labels[1:nz - 1, 2:ny - 2, 2:nx - 2] = 1
    liver = (slice(3, 9), slice(5, 13), slice(4, 14))
    labels[liver] = 4
    lz, ly, lx = lesion_voxels
    z0, y0, x0 = 5 + int(rng.integers(0, 2)), 7, 7
    labels[z0:z0 + lz, y0:y0 + ly, x0:x0 + lx] = 101
    hu = np.full(ct_shape, -1000.0, dtype=np.float32)
    hu[labels > 0] = 0.0
    hu[labels == 4] = 60.0
    hu[labels == 101] = 40.0
    hu[labels > 0] += rng.normal(0, 5, int((labels > 0).sum())).round()
    origin = (-(nx - 1) / 2 * ct_spacing[2], -(ny - 1) / 2 * ct_spacing[1], 100.0)
    return Patient(patient_id, name, birth_date, tuple(ct_shape), tuple(ct_spacing), origin, hu, labels,
                   {1: "body", 4: "liver", 101: "lesion_1"})


def write_ct(patient: Patient, folder: Path, study_uid: str, series_uid: str, frame_uid: str, when: dt.datetime,
             drop_slice: int | None = None, tilt_mm_per_slice: float = 0.0, spacing_jitter: dict | None = None,
             orientation=(1.0, 0.0, 0.0, 0.0, 1.0, 0.0)) -> list[Dataset]:
    """One file per slice, named so that file order is not slice order (InstanceNumber deliberately reversed)."""
    folder.mkdir(parents=True, exist_ok=True)
    nz, ny, nx = patient.ct_shape
    dz, dy, dx = patient.ct_spacing
    written = []
    order = np.random.default_rng(nz).permutation(nz)
    for k in range(nz):
        if k == drop_slice:
            continue
        ds = _base(patient, "CT", CT_STORAGE, study_uid, series_uid, frame_uid, when, 2)
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.InstanceNumber = nz - k
        z = patient.ct_origin_xyz[2] + k * dz + (spacing_jitter or {}).get(k, 0.0)
        ds.ImagePositionPatient = [patient.ct_origin_xyz[0], patient.ct_origin_xyz[1] + k * tilt_mm_per_slice, z]
        ds.ImageOrientationPatient = list(orientation)
        ds.PixelSpacing = [dy, dx]
        ds.SliceThickness = dz
        ds.Rows, ds.Columns = ny, nx
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated = ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 1
        ds.RescaleIntercept = -1024
        ds.RescaleSlope = 1
        ds.PixelData = (patient.ct_hu[k] + 1024).astype(np.int16).tobytes()
        ds.save_as(folder / f"img{order[k]:03d}", enforce_file_format=True)
        written.append(ds)
    return written


def nm_grid(patient: Patient, spacing=(4.8, 4.8, 4.8)):
    """A SPECT grid covering the CT extent, shifted half a voxel: (shape (z, y, x), origin (x, y, z), spacing)."""
    extent = np.asarray(patient.ct_shape) * np.asarray(patient.ct_spacing)
    shape = tuple(int(n) for n in np.ceil(extent / np.asarray(spacing)) + 2)
    ct_first_edge = np.asarray(patient.ct_origin_xyz)[::-1] - np.asarray(patient.ct_spacing) / 2  # (z, y, x)
    origin_zyx = ct_first_edge - np.asarray(spacing) + np.asarray(spacing) / 2 + 0.5 * np.asarray(spacing) * 0.37
    return shape, tuple(origin_zyx[::-1]), tuple(spacing)


def write_nm(patient: Patient, path: Path, study_uid: str, frame_uid: str, hours: float, activity_bq_ml: np.ndarray,
             origin_xyz, spacing, units: str = "BQML", image_type=("ORIGINAL", "PRIMARY", "RECON TOMO", "EMISSION"),
             slope: float | None = None, rows_cols_frames_override: tuple | None = None,
             radiopharmaceutical: bool = True) -> Dataset:
    """One multi-frame NM (RECON TOMO) at ``hours`` after :data:`INJECTION`; values stored as uint16 x slope."""
    when = INJECTION + dt.timedelta(hours=hours)
    ds = _base(patient, "NM", NM_STORAGE, study_uid, generate_uid(), frame_uid, when, 1)
    ds.ImageType = list(image_type)
    ds.Units = units
    nz, ny, nx = activity_bq_ml.shape
    ds.NumberOfFrames = nz
    ds.FrameIncrementPointer = 0x00540080
    ds.SliceVector = list(range(1, nz + 1))
    ds.NumberOfSlices = nz
    ds.Rows, ds.Columns = ny, nx
    if rows_cols_frames_override:
        ds.Rows, ds.Columns, ds.NumberOfFrames = rows_cols_frames_override
    ds.PixelSpacing = [spacing[1], spacing[2]]
    ds.SpacingBetweenSlices = spacing[0]
    ds.SliceThickness = spacing[0]
    detector = Dataset()
    detector.ImagePositionPatient = list(origin_xyz)
    detector.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.DetectorInformationSequence = Sequence([detector])
    if radiopharmaceutical:
        item = Dataset()
        item.RadiopharmaceuticalStartDateTime = INJECTION.strftime("%Y%m%d%H%M%S")
        item.RadionuclideTotalDose = 7.4e9
        item.RadionuclideHalfLife = 574300.8  # Lu-177, 6.647 d (ICRP-107)
        code = Dataset()
        code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = "C-145A8", "SRT", "^177^Lutetium"
        item.RadionuclideCodeSequence = Sequence([code])
        ds.RadiopharmaceuticalInformationSequence = Sequence([item])
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    slope = slope if slope is not None else float(activity_bq_ml.max()) / 60000.0 or 1.0
    ds.RescaleSlope = slope
    ds.RescaleIntercept = 0
    stored = np.round(activity_bq_ml / (slope if np.isfinite(slope) else 1.0)).astype(np.uint16)
    ds.PixelData = stored.tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return ds


def write_rtstruct(patient: Patient, path: Path, study_uid: str, ct_series_uid: str, frame_uid: str,
                   when: dt.datetime, names: dict[int, str] | None = None) -> None:
    """One ROI per label; per slice one rectangle through the midpoints around the label's voxels (boxes only)."""
    names = names or patient.names
    ds = _base(patient, "RTSTRUCT", RTSTRUCT_STORAGE, study_uid, generate_uid(), frame_uid, when, 3)
    del ds.FrameOfReferenceUID
    frame = Dataset()
    frame.FrameOfReferenceUID = frame_uid
    series = Dataset()
    series.SeriesInstanceUID = ct_series_uid
    study = Dataset()
    study.ReferencedSOPInstanceUID = study_uid
    study.RTReferencedSeriesSequence = Sequence([series])
    frame.RTReferencedStudySequence = Sequence([study])
    ds.ReferencedFrameOfReferenceSequence = Sequence([frame])
    rois, contours = [], []
    dz, dy, dx = patient.ct_spacing
    x0, y0, z0 = patient.ct_origin_xyz
    for number, (value, name) in enumerate(names.items(), start=1):
        roi = Dataset()
        roi.ROINumber, roi.ROIName, roi.ReferencedFrameOfReferenceUID = number, name, frame_uid
        rois.append(roi)
        items = []
        for k in range(patient.ct_shape[0]):
            rows, cols = np.nonzero(patient.labels[k] == value)
            if rows.size == 0:
                continue
            xa, xb = x0 + (cols.min() - 0.5) * dx, x0 + (cols.max() + 0.5) * dx
            ya, yb = y0 + (rows.min() - 0.5) * dy, y0 + (rows.max() + 0.5) * dy
            z = z0 + k * dz
            contour = Dataset()
            contour.ContourGeometricType = "CLOSED_PLANAR"
            contour.NumberOfContourPoints = 4
            contour.ContourData = [xa, ya, z, xb, ya, z, xb, yb, z, xa, yb, z]
            items.append(contour)
        roi_contour = Dataset()
        roi_contour.ReferencedROINumber = number
        roi_contour.ContourSequence = Sequence(items)
        contours.append(roi_contour)
    ds.StructureSetROISequence = Sequence(rois)
    ds.ROIContourSequence = Sequence(contours)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)


def activity_on_nm_grid(patient: Patient, shape, origin_xyz, spacing, hours: float, seed: int) -> np.ndarray:
    """Bq/mL on the NM grid: uptake per VOI of the CT label map sampled at NM voxel centres, decaying with Lu-177."""
    rng = np.random.default_rng(seed)
    z = origin_xyz[2] + spacing[0] * np.arange(shape[0])
    y = origin_xyz[1] + spacing[1] * np.arange(shape[1])
    x = origin_xyz[0] + spacing[2] * np.arange(shape[2])
    k = np.round((z - patient.ct_origin_xyz[2]) / patient.ct_spacing[0]).astype(int)
    j = np.round((y - patient.ct_origin_xyz[1]) / patient.ct_spacing[1]).astype(int)
    i = np.round((x - patient.ct_origin_xyz[0]) / patient.ct_spacing[2]).astype(int)
    inside = [(a >= 0) & (a < n) for a, n in zip((k, j, i), patient.ct_shape)]
    labels = np.zeros(shape, dtype=np.int16)
    kk, jj, ii = np.meshgrid(np.clip(k, 0, patient.ct_shape[0] - 1), np.clip(j, 0, patient.ct_shape[1] - 1),
                             np.clip(i, 0, patient.ct_shape[2] - 1), indexing="ij")
    mask = inside[0][:, None, None] & inside[1][None, :, None] & inside[2][None, None, :]
    labels[mask] = patient.labels[kk, jj, ii][mask]
    uptake = {0: 0.0, 1: 2e3, 4: 4e4, 101: 3e5}
    decay = 0.5 ** (hours / (6.647 * 24))  # Lu-177 half-life 6.647 d (ICRP-107)
    activity = np.vectorize(uptake.get)(labels).astype(np.float64) * decay
    return (activity * rng.uniform(0.9, 1.1, shape)).astype(np.float32)


def write_patient(root: Path, seed: int, hours=(24.0,), **patient_kwargs) -> Patient:
    """A complete patient: per time point its own study with CT, NM and RTSTRUCT (one frame of reference)."""
    patient = make_patient(seed, **patient_kwargs)
    for t, h in enumerate(hours):
        when = INJECTION + dt.timedelta(hours=h)
        study, frame, ct_series = generate_uid(), generate_uid(), generate_uid()
        folder = root / f"{patient.patient_id}_{t}"
        write_ct(patient, folder / "ct", study, ct_series, frame, when)
        shape, origin, spacing = nm_grid(patient)
        activity = activity_on_nm_grid(patient, shape, origin, spacing, h, seed * 10 + t)
        write_nm(patient, folder / "nm" / "spect", study, frame, h, activity, origin, spacing)
        write_rtstruct(patient, folder / "rs.dcm", study, ct_series, frame, when)
        voxel_ml = float(np.prod(spacing)) / 1000.0
        slope = float(activity.max()) / 60000.0
        stored = np.round(activity / slope) * slope  # what the file holds after uint16 quantisation
        patient.hours.append(float(h))
        patient.total_activity_bq.append(float(stored.sum(dtype=np.float64)) * voxel_ml)
        patient.nm_files.append(folder / "nm" / "spect")
        patient.ct_dirs.append(folder / "ct")
        patient.rtstruct_files.append(folder / "rs.dcm")
    return patient


def write_rtdose(patient: Patient, path: Path, study_uid: str, frame_uid: str, when: dt.datetime,
                 dose_gy: np.ndarray, scaling: float = 1e-4) -> None:
    """An RTDOSE (DoseUnits GY, PHYSICAL, PLAN) on the CT grid, frames in GridFrameOffsetVector order."""
    ds = _base(patient, "RTDOSE", "1.2.840.10008.5.1.4.1.1.481.2", study_uid, generate_uid(), frame_uid, when, 9)
    nz, ny, nx = dose_gy.shape
    ds.ImagePositionPatient = list(patient.ct_origin_xyz)
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.PixelSpacing = list(patient.ct_spacing[1:])
    ds.GridFrameOffsetVector = [k * patient.ct_spacing[0] for k in range(nz)]
    ds.FrameIncrementPointer = 0x3004000C
    ds.NumberOfFrames = nz
    ds.Rows, ds.Columns = ny, nx
    ds.DoseUnits, ds.DoseType, ds.DoseSummationType = "GY", "PHYSICAL", "PLAN"
    ds.DoseGridScaling = scaling
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 32
    ds.HighBit = 31
    ds.PixelRepresentation = 0
    ds.PixelData = np.round(dose_gy / scaling).astype(np.uint32).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
