"""Seeded factory of small synthetic SPECT/CT patients written as DICOM with pydicom (virtual patients, no real data).

A patient is a box phantom on a CT grid (z, y, x): ``body`` (0 HU), ``liver`` (60 HU) inside it and a small
``lesion_1`` inside the liver, contoured as axis-aligned rectangles whose edges run between voxel centres (so their
rasterisation is exact). The SPECT (Bq/mL) is written as one NM multi-frame on its own, coarser grid covering the CT,
or as single-frame PT slices in Bq/mL (as some workstations export SPECT), with switches for the radionuclide, the
decay correction, signed values and Real World Value Mapping units.
Every writer returns the truth it wrote so tests compare against it, and takes switches to break one thing at a time.
"""

from __future__ import annotations

import copy
import datetime as dt
from collections.abc import Sequence as SequenceOf
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

CT_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
NM_STORAGE = "1.2.840.10008.5.1.4.1.1.20"
RTSTRUCT_STORAGE = "1.2.840.10008.5.1.4.1.1.481.3"
PT_STORAGE = "1.2.840.10008.5.1.4.1.1.128"
#: Radionuclide Code Sequence item of Lu-177: SNOMED CT 447553000 (DICOM PS3.16 CID 18)
LU177_CODE = ("447553000", "SCT", "^177^Lutetium")
LU177_HALF_LIFE_S = 574300.8  # 6.647 d (ICRP-107)
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


def _base(
    patient: Patient,
    modality: str,
    sop_class: str,
    study_uid: str,
    series_uid: str,
    frame_uid: str,
    when: dt.datetime,
    series_number: int,
) -> Dataset:
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


def make_patient(
    seed: int,
    patient_id: str = "H10000001",
    name: str = "Fakename^Anna",
    birth_date: str = "19580214",
    ct_shape=(14, 20, 22),
    ct_spacing=(4.0, 3.0, 3.0),
    lesion_voxels=(2, 2, 2),
) -> Patient:
    """The truth of a box phantom (nothing written yet)."""
    rng = np.random.default_rng(seed)
    nz, ny, nx = ct_shape
    labels = np.zeros(ct_shape, dtype=np.int16)
    labels[1 : nz - 1, 2 : ny - 2, 2 : nx - 2] = 1
    liver = (slice(3, 9), slice(5, 13), slice(4, 14))
    labels[liver] = 4
    lz, ly, lx = lesion_voxels
    z0, y0, x0 = 5 + int(rng.integers(0, 2)), 7, 7
    labels[z0 : z0 + lz, y0 : y0 + ly, x0 : x0 + lx] = 101
    hu = np.full(ct_shape, -1000.0, dtype=np.float32)
    hu[labels > 0] = 0.0
    hu[labels == 4] = 60.0
    hu[labels == 101] = 40.0
    hu[labels > 0] += rng.normal(0, 5, int((labels > 0).sum())).round()
    origin = (-(nx - 1) / 2 * ct_spacing[2], -(ny - 1) / 2 * ct_spacing[1], 100.0)
    return Patient(
        patient_id,
        name,
        birth_date,
        tuple(ct_shape),
        tuple(ct_spacing),
        origin,
        hu,
        labels,
        {1: "body", 4: "liver", 101: "lesion_1"},
    )


def write_ct(
    patient: Patient,
    folder: Path,
    study_uid: str,
    series_uid: str,
    frame_uid: str,
    when: dt.datetime,
    drop_slice: int | None = None,
    tilt_mm_per_slice: float = 0.0,
    spacing_jitter: dict | None = None,
    orientation=(1.0, 0.0, 0.0, 0.0, 1.0, 0.0),
    n_slices: int | None = None,
) -> list[Dataset]:
    """One file per slice, named so that file order is not slice order (InstanceNumber deliberately reversed).
    ``n_slices`` writes only the first (most inferior) slices: a CT range shorter than the SPECT's."""
    folder.mkdir(parents=True, exist_ok=True)
    nz, ny, nx = patient.ct_shape
    dz, dy, dx = patient.ct_spacing
    written = []
    order = np.random.default_rng(nz).permutation(nz)
    for k in range(nz):
        if k == drop_slice or (n_slices is not None and k >= n_slices):
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


def write_nm(
    patient: Patient,
    path: Path,
    study_uid: str,
    frame_uid: str,
    hours: float,
    activity_bq_ml: np.ndarray,
    origin_xyz,
    spacing,
    units: str | None = "BQML",
    image_type=("ORIGINAL", "PRIMARY", "RECON TOMO", "EMISSION"),
    slope: float | SequenceOf | None = None,
    rows_cols_frames_override: tuple | None = None,
    radiopharmaceutical: bool = True,
    injection: dt.datetime = INJECTION,
    administered_bq: float = 7.4e9,
    nuclide_code: tuple[str, str, str] | None = LU177_CODE,
    radiopharmaceutical_name: str | None = None,
    half_life_s: float | None = LU177_HALF_LIFE_S,
    decay_correction: str | None = None,
    decay_factor: float | None = None,
    decay_correction_datetime: dt.datetime | None = None,
    rotation: tuple[float, int] | None = None,
    signed: bool = False,
    rwvm_units: str | None = None,
    rwvm_per_frame: bool = False,
) -> Dataset:
    """One multi-frame NM (RECON TOMO) at ``hours`` after ``injection``; values stored as uint16 (``signed``: int16,
    so negative values survive) x ``slope`` (default: the largest magnitude / 60000, or / 30000 when signed).

    Radiopharmaceutical: ``nuclide_code`` (CodeValue, CodingSchemeDesignator, CodeMeaning) or None for no Radionuclide
    Code Sequence, ``radiopharmaceutical_name`` (0018,0031) and ``half_life_s`` (None: not written). Decay:
    ``decay_correction`` (NONE/START/ADMIN), ``decay_factor``, ``decay_correction_datetime`` as written; ``rotation``
    (ms per view, views) is the Rotation Information Sequence. ``rwvm_units`` (e.g. "Bq/ml"): the slope goes into a Real
    World Value Mapping in those UCUM units and RescaleSlope is 1; with ``rwvm_per_frame`` one mapping per frame in the
    Per-frame Functional Groups, ``slope`` then one number per frame. ``units`` None: no Units (0054,1001).
    """
    when = injection + dt.timedelta(hours=hours)
    ds = _base(patient, "NM", NM_STORAGE, study_uid, generate_uid(), frame_uid, when, 1)
    ds.ImageType = list(image_type)
    if units is not None:
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
        ds.RadiopharmaceuticalInformationSequence = Sequence(
            [_radiopharmaceutical_item(injection, administered_bq, nuclide_code, radiopharmaceutical_name, half_life_s)]
        )
    _decay_tags(ds, decay_correction, decay_factor, decay_correction_datetime)
    if rotation is not None:
        item = Dataset()
        item.ActualFrameDuration, item.NumberOfFramesInRotation = int(rotation[0]), int(rotation[1])
        ds.RotationInformationSequence = Sequence([item])
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1 if signed else 0
    top = float(np.abs(activity_bq_ml).max()) / (30000.0 if signed else 60000.0) or 1.0
    slopes = np.broadcast_to(np.asarray(slope if slope is not None else top, dtype=np.float64), (nz,))
    safe = np.where(np.isfinite(slopes), slopes, 1.0)[:, None, None]
    stored = np.round(activity_bq_ml / safe).astype(np.int16 if signed else np.uint16)
    if rwvm_units is None:
        ds.RescaleSlope = slopes[0]
    else:
        ds.RescaleSlope = 1
        mappings = [_rwvm_item(rwvm_units, s, stored) for s in slopes]
        if rwvm_per_frame:
            frames = []
            for mapping in mappings:
                frame = Dataset()
                frame.RealWorldValueMappingSequence = Sequence([mapping])
                frames.append(frame)
            ds.PerFrameFunctionalGroupsSequence = Sequence(frames)
        else:
            ds.RealWorldValueMappingSequence = Sequence([mappings[0]])
    ds.RescaleIntercept = 0
    ds.PixelData = stored.tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return ds


def write_pt_slices(
    patient: Patient,
    folder: Path,
    study_uid: str,
    frame_uid: str,
    hours: float,
    activity_bq_ml: np.ndarray,
    origin_xyz,
    spacing,
    slopes: SequenceOf[float] | None = None,
    injection: dt.datetime = INJECTION,
    administered_bq: float = 7.4e9,
    nuclide_code: tuple[str, str, str] | None = LU177_CODE,
    radiopharmaceutical_name: str | None = None,
    half_life_s: float | None = LU177_HALF_LIFE_S,
    units: str = "BQML",
    decay_correction: str | None = "START",
    decay_factor: float | None = None,
    decay_correction_datetime: dt.datetime | None = None,
    frame_duration_ms: float | None = None,
) -> list[Path]:
    """The SPECT as single-frame PT images in Bq/mL, as some workstations export it (PT Image Storage): one file per
    slice, ImagePositionPatient at the top level, int16 x a slope per slice (default the slice's largest magnitude /
    30000), Decay Correction (Type 1 in PT) and optional ActualFrameDuration; file order shuffled."""
    folder.mkdir(parents=True, exist_ok=True)
    when = injection + dt.timedelta(hours=hours)
    series_uid = generate_uid()
    nz, ny, nx = activity_bq_ml.shape
    paths = []
    order = np.random.default_rng(nz + 1).permutation(nz)
    for k in range(nz):
        ds = _base(patient, "PT", PT_STORAGE, study_uid, series_uid, frame_uid, when, 4)
        ds.ImageType = ["ORIGINAL", "PRIMARY"]
        ds.SeriesType = ["STATIC", "IMAGE"]
        ds.Units = units
        ds.CorrectedImage = ["DECY", "ATTN", "SCAT"] if decay_correction not in (None, "NONE") else ["ATTN", "SCAT"]
        ds.InstanceNumber = k + 1
        ds.ImagePositionPatient = [origin_xyz[0], origin_xyz[1], origin_xyz[2] + k * spacing[0]]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.PixelSpacing = [spacing[1], spacing[2]]
        ds.SliceThickness = spacing[0]
        ds.Rows, ds.Columns = ny, nx
        ds.RadiopharmaceuticalInformationSequence = Sequence(
            [_radiopharmaceutical_item(injection, administered_bq, nuclide_code, radiopharmaceutical_name, half_life_s)]
        )
        _decay_tags(ds, decay_correction, decay_factor, decay_correction_datetime)
        if frame_duration_ms is not None:
            ds.ActualFrameDuration = int(frame_duration_ms)
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated = ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 1
        slope = slopes[k] if slopes is not None else (float(np.abs(activity_bq_ml[k]).max()) / 30000.0 or 1.0)
        ds.RescaleSlope = slope
        ds.RescaleIntercept = 0
        ds.PixelData = np.round(activity_bq_ml[k] / slope).astype(np.int16).tobytes()
        paths.append(folder / f"pt{order[k]:03d}.dcm")
        ds.save_as(paths[-1], enforce_file_format=True)
    return paths


def nm_to_pt_slices(
    nm_path: Path, folder: Path, nuclide_code: tuple[str, str, str] | None = None, half_life_s: float | None = None
) -> list[Path]:
    """Rewrite a multi-frame NM written by :func:`write_nm` as single-frame PT slices (same patient, study, frame of
    reference, stored values and slope; Units BQML, Decay Correction START), optionally naming another nuclide, and
    delete the NM file."""
    nm = pydicom.dcmread(nm_path)
    frames = nm.pixel_array
    x0, y0, z0 = (float(v) for v in nm.DetectorInformationSequence[0].ImagePositionPatient)
    dz = float(nm.SpacingBetweenSlices)
    series_uid = generate_uid()
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for k in range(frames.shape[0]):
        ds = copy.deepcopy(nm)
        for keyword in (
            "NumberOfFrames",
            "FrameIncrementPointer",
            "SliceVector",
            "NumberOfSlices",
            "DetectorInformationSequence",
            "ImageType",
        ):
            delattr(ds, keyword)
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = PT_STORAGE
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.Modality, ds.SeriesInstanceUID, ds.Units, ds.DecayCorrection = "PT", series_uid, "BQML", "START"
        ds.ImageType = ["ORIGINAL", "PRIMARY"]
        ds.ImagePositionPatient = [x0, y0, z0 + k * dz]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        item = ds.RadiopharmaceuticalInformationSequence[0]
        if nuclide_code is not None:
            (
                item.RadionuclideCodeSequence[0].CodeValue,
                item.RadionuclideCodeSequence[0].CodingSchemeDesignator,
                item.RadionuclideCodeSequence[0].CodeMeaning,
            ) = nuclide_code
        if half_life_s is not None:
            item.RadionuclideHalfLife = half_life_s
        ds.PixelData = frames[k].tobytes()
        paths.append(folder / f"pt{k:03d}.dcm")
        ds.save_as(paths[-1], enforce_file_format=True)
    nm_path.unlink()
    return paths


def _radiopharmaceutical_item(
    injection: dt.datetime, administered_bq: float, nuclide_code, name, half_life_s
) -> Dataset:
    item = Dataset()
    item.RadiopharmaceuticalStartDateTime = injection.strftime("%Y%m%d%H%M%S")
    item.RadionuclideTotalDose = administered_bq
    if half_life_s is not None:
        item.RadionuclideHalfLife = half_life_s
    if name is not None:
        item.Radiopharmaceutical = name
    if nuclide_code is not None:
        code = Dataset()
        code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = nuclide_code
        item.RadionuclideCodeSequence = Sequence([code])
    return item


def _decay_tags(ds: Dataset, correction: str | None, factor: float | None, reference: dt.datetime | None) -> None:
    if correction is not None:
        ds.DecayCorrection = correction
    if factor is not None:
        ds.DecayFactor = factor
    if reference is not None:
        ds.DecayCorrectionDateTime = reference.strftime("%Y%m%d%H%M%S")


def _rwvm_item(units: str, slope: float, stored: np.ndarray) -> Dataset:
    """A Real World Value Mapping item (DICOM PS3.3 C.7.6.16.2.11) in UCUM ``units``: value = stored x slope."""
    unit = Dataset()
    unit.CodeValue, unit.CodingSchemeDesignator, unit.CodeMeaning = units, "UCUM", units
    item = Dataset()
    item.LUTExplanation, item.LUTLabel = "activity concentration", "BQML"
    item.MeasurementUnitsCodeSequence = Sequence([unit])
    item.RealWorldValueFirstValueMapped = int(stored.min())
    item.RealWorldValueLastValueMapped = int(stored.max())
    item.RealWorldValueIntercept = 0.0
    item.RealWorldValueSlope = float(slope)
    return item


def write_rtstruct(
    patient: Patient,
    path: Path,
    study_uid: str,
    ct_series_uid: str,
    frame_uid: str,
    when: dt.datetime,
    names: dict[int, str] | None = None,
) -> None:
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
    kk, jj, ii = np.meshgrid(
        np.clip(k, 0, patient.ct_shape[0] - 1),
        np.clip(j, 0, patient.ct_shape[1] - 1),
        np.clip(i, 0, patient.ct_shape[2] - 1),
        indexing="ij",
    )
    mask = inside[0][:, None, None] & inside[1][None, :, None] & inside[2][None, None, :]
    labels[mask] = patient.labels[kk, jj, ii][mask]
    uptake = {0: 0.0, 1: 2e3, 4: 4e4, 101: 3e5}
    decay = 0.5 ** (hours / (6.647 * 24))  # Lu-177 half-life 6.647 d (ICRP-107)
    activity = np.vectorize(uptake.get)(labels).astype(np.float64) * decay
    return (activity * rng.uniform(0.9, 1.1, shape)).astype(np.float32)


def write_patient(
    root: Path, seed: int, hours=(24.0,), injection: dt.datetime = INJECTION, **patient_kwargs
) -> Patient:
    """A complete patient: per time point its own study with CT, NM and RTSTRUCT (one frame of reference), the
    scans ``hours`` after ``injection`` (one therapy cycle; write another cycle into another ``root``)."""
    patient = make_patient(seed, **patient_kwargs)
    for t, h in enumerate(hours):
        when = injection + dt.timedelta(hours=h)
        study, frame, ct_series = generate_uid(), generate_uid(), generate_uid()
        folder = root / f"{patient.patient_id}_{t}"
        write_ct(patient, folder / "ct", study, ct_series, frame, when)
        shape, origin, spacing = nm_grid(patient)
        activity = activity_on_nm_grid(patient, shape, origin, spacing, h, seed * 10 + t)
        write_nm(patient, folder / "nm" / "spect", study, frame, h, activity, origin, spacing, injection=injection)
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


def write_rtdose(
    patient: Patient,
    path: Path,
    study_uid: str,
    frame_uid: str,
    when: dt.datetime,
    dose_gy: np.ndarray,
    scaling: float = 1e-4,
) -> None:
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
