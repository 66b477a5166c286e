"""DICOM out: absorbed dose as RT Dose, dose rate as a Parametric Map and VOIs as a Segmentation, each in the frame of
reference of a reference CT series and referencing it, so that 3D Slicer, MIM or a planning system overlays them on
that CT.

Public API::

    write_rt_dose(dose_gy, grid, reference_ct, path, summation_type="CYCLE", description=...) -> Path
    write_dose_rate_map(dose_rate_gy_s, grid, reference_ct, path, description=...) -> Path
    write_seg(labels, names, grid, reference_ct, path, vois=None) -> Path
    reference_series(files or Datasets) -> [Dataset]    one CT series, checked, sorted along its slice normal
    SUMMATION_TYPES                                     the RT Dose's Dose Summation Types and what they mean

``reference_ct``: the reference CT series as pydicom Datasets (headers suffice: ``stop_before_pixels=True``) or as
paths to its files. Patient and study identity are copied from its headers (the new objects join the CT's study):
the export reads the original DICOM, never the store, which holds pseudonyms only.

Geometry: arrays are (z, y, x) on a :class:`~cohort_dosimetry.grid.Grid` in the CT's patient coordinates (DICOM
LPS, mm, written in (z, y, x) order; ``origin_mm`` is the centre of voxel (0, 0, 0); row i of ``direction`` is the
unit vector along array axis i), on any grid: the CT's, a coarser dose grid, an oblique one. The RT Dose stores
array axis x along its rows (ImageOrientationPatient's first cosine), y down its columns (the second) and z as its
frames, stacked along the slice normal, row cosine x column cosine, at Grid Frame Offset Vector k dz from the first
frame (PS3.3 C.8.8.3.2, offsets relative to the first frame, first value 0): for a standard axial grid
ImagePositionPatient is ``origin_mm[::-1]`` (x, y, z); a grid whose z axis runs against the normal is written with
its frames in reverse order, so the offsets ascend from 0. The Segmentation and Parametric Map hand the grid to
highdicom as a :class:`highdicom.Volume`, which writes each frame's position and the shared orientation.

A grid must lie in the reference CT's field of view (its centre within the CT's bounding box): a dose grid on the
wrong CT or with swapped axes is refused before anything is written.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import ExplicitVRLittleEndian, RTDoseStorage
from pydicom.valuerep import format_number_as_ds

from cohort_dosimetry import __version__
from cohort_dosimetry.grid import Grid
from cohort_dosimetry.vocabulary import segment_description, voi_regions

#: Equipment of every object written here (General Equipment Module).
MANUFACTURER = "cohort-dosimetry"
MODEL_NAME = "cohort_dosimetry.io"

#: Dose Summation Type (3004,000A) values this module writes (PS3.5 6.3: Defined Terms may be extended by
#: implementers, with a meaning no standard term has); see :func:`write_rt_dose`.
SUMMATION_TYPES: dict[str, str] = {
    "CYCLE": "absorbed dose of one therapy cycle: one administration of the radiopharmaceutical, to complete decay",
    "MULTI_CYCLE": "absorbed dose summed over two or more therapy cycles of one patient",
}

#: Bits Allocated (= Bits Stored) of RT Dose pixel data: PS3.3 C.8.8.3.4.3 allows 16 or 32; unsigned, as two's
#: complement is for Dose Type ERROR (C.8.8.3.4.6).
_RT_DOSE_BITS = (16, 32)
#: Largest stored value per Bits Allocated. 32-bit data keep to 2**31 - 1: readers that take 32-bit pixel data as
#: signed (dcm2niix v1.0.20220720 writes it to an int32 NIfTI) wrap larger values to negative doses; the half range
#: costs nothing (a step of 4.7e-10 of the maximum).
_MAX_STORED = {16: 2**16 - 1, 32: 2**31 - 1}

#: Frame Increment Pointer of the RT Dose frames: Grid Frame Offset Vector (3004,000C) (PS3.3 C.8.8.3.2).
_GRID_FRAME_OFFSET_VECTOR = 0x3004000C

#: Orthonormality tolerance of a grid's direction rows (cosines as written to DS strings carry about 1e-10).
_DIRECTION_TOLERANCE = 1e-4


def write_rt_dose(
    dose_gy: np.ndarray,
    grid: Grid,
    reference_ct: Sequence[Dataset] | Sequence[str | os.PathLike],
    path: str | os.PathLike,
    summation_type: str = "CYCLE",
    description: str = "absorbed dose",
    *,
    bits: int = 32,
    series_number: int = 901,
    series_instance_uid: str | None = None,
    sop_instance_uid: str | None = None,
) -> Path:
    """Write an absorbed-dose map as one multi-frame RT Dose (RT Dose IOD, PS3.3 A.18) on ``grid``.

    Args:
        dose_gy: absorbed dose (z, y, x) on ``grid`` in Gy, finite and >= 0.
        grid: where the voxels are, in the reference CT's patient coordinates (module docstring).
        reference_ct: the reference CT series (Datasets or file paths): Frame of Reference, patient and study.
        path: the file to write (its folder is created).
        summation_type: Dose Summation Type (3004,000A), ``"CYCLE"`` (one therapy cycle) or ``"MULTI_CYCLE"`` (summed
            over cycles), :data:`SUMMATION_TYPES`. No Defined Term of the standard fits a radionuclide therapy (PS3.3
            C.8.8.3, Table C.8-39): PLAN, MULTI_PLAN, FRACTION, BEAM, BRACHY, their _SESSION forms and CONTROL_POINT
            sum the delivery of an RT Plan and require a Referenced RT Plan Sequence (300C,0002); RECORD requires a
            Referenced Treatment Record Sequence (3008,0030); PLAN_OVERVIEW is a dose "with respect to plan overview
            parameters" and comes with a Plan Overview Sequence (300C,0116) describing RT Plans. A radionuclide therapy
            has no RT Plan, treatment record or plan overview: its absorbed dose follows from the activity the patient
            took up, and a reference to a plan that does not exist would dangle (dciodvfy reports PLAN and RECORD
            without their references as errors). Had the therapy a plan, one cycle (one administration) would be a
            FRACTION_SESSION and the whole treatment a PLAN; the two local terms say the same without a plan. Defined
            Terms may be extended by implementers with values of a meaning no standard term has (PS3.5 6.3); readers
            that do not know them (dciodvfy warns "Unrecognized defined term") still read the dose.
        description: Series Description and Dose Comment (at most 64 characters), e.g. "absorbed dose cycle 2, DVK".
        bits: 32 (default) or 16 bits per voxel, unsigned. DoseGridScaling = max / (2**16 - 1) for 16 bits and
            max / (2**31 - 1) for 32 bits (:data:`_MAX_STORED`), so a voxel is written to within DoseGridScaling / 2.
            32 bits keep the whole range of a radionuclide dose map (lesions of 10-100 Gy beside a background of mGy)
            at float32-like precision; 16 bits round to about 0.8 mGy per 100 Gy of maximum, the size of the
            background. Some tools read only 16 bits (dicom3tools 1.00 of 2022 aborts on 32-bit pixel data).
        series_number, series_instance_uid, sop_instance_uid: identify the new object; UIDs are new unless given.

    Returns:
        ``path``.

    Raises:
        ValueError: shapes differ, the dose is negative or not finite, the grid lies outside the CT's field of view
            or its direction is not orthonormal, the series is not one CT series, a summation type other than
            :data:`SUMMATION_TYPES`, bits other than 16 or 32.
    """
    dose = np.asarray(dose_gy, dtype=np.float64)
    _check_array(dose, grid, "dose_gy")
    if not np.all(np.isfinite(dose)) or dose.min() < 0:
        raise ValueError(
            f"dose_gy must be finite and >= 0 Gy (RT Dose PHYSICAL is unsigned), got min {np.nanmin(dose)}"
            f", {np.count_nonzero(~np.isfinite(dose))} non-finite voxels"
        )
    if summation_type not in SUMMATION_TYPES:
        raise ValueError(
            f"Dose Summation Type {summation_type!r}: use one of {sorted(SUMMATION_TYPES)} (a standard "
            "term would need a Referenced RT Plan, Treatment Record or Plan Overview, which radionuclide "
            "therapy does not have)"
        )
    if bits not in _RT_DOSE_BITS:
        raise ValueError(f"bits must be one of {_RT_DOSE_BITS} (PS3.3 C.8.8.3.4.3), got {bits}")
    ct = reference_series(reference_ct)
    _check_in_field_of_view(grid, ct)
    frames, position_xyz, row_xyz, col_xyz = _frames_along_normal(dose, grid)

    max_stored = _MAX_STORED[bits]
    scaling = _ds_at_least(dose.max() / max_stored) if dose.max() > 0 else 1.0
    stored = np.minimum(np.rint(frames / scaling), max_stored).astype(np.uint32 if bits == 32 else np.uint16)

    first = ct[0]
    now = dt.datetime.now().replace(microsecond=0)
    ds = hd.SOPClass(
        study_instance_uid=first.StudyInstanceUID,
        series_instance_uid=series_instance_uid or hd.UID(),
        series_number=series_number,
        sop_instance_uid=sop_instance_uid or hd.UID(),
        sop_class_uid=RTDoseStorage,
        instance_number=1,
        modality="RTDOSE",
        manufacturer=MANUFACTURER,
        transfer_syntax_uid=ExplicitVRLittleEndian,
        series_description=description[:64],
        manufacturer_model_name=MODEL_NAME,
        software_versions=__version__,
        content_date=now.date(),
        content_time=now.time(),
        specific_character_set=first.get("SpecificCharacterSet", "ISO_IR 100"),
    )
    ds.copy_patient_and_study_information(first)
    ds.OperatorsName = ""  # RT Series Module, type 2
    ds.FrameOfReferenceUID = first.FrameOfReferenceUID
    ds.PositionReferenceIndicator = first.get("PositionReferenceIndicator", "")

    # General Image: the CT slices the dose was computed on (with their series in the Common Instance Reference).
    ds.ReferencedImageSequence = hd.ReferencedImageSequence(referenced_images=ct)
    series = Dataset()
    series.SeriesInstanceUID = first.SeriesInstanceUID
    series.ReferencedInstanceSequence = [_instance_reference(item) for item in ct]
    ds.ReferencedSeriesSequence = [series]

    # Image Plane, Image Pixel, Multi-frame, RT Dose.
    nz, ny, nx = stored.shape
    dz, dy, dx = grid.spacing_mm
    ds.ImagePositionPatient = _ds_list(position_xyz)
    ds.ImageOrientationPatient = _ds_list([*row_xyz, *col_xyz])
    ds.PixelSpacing = _ds_list((dy, dx))  # (between rows, between columns) = (y, x)
    ds.SliceThickness = _ds(dz)
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = bits, bits, bits - 1, 0
    ds.Rows, ds.Columns = ny, nx
    ds.NumberOfFrames = nz
    ds.FrameIncrementPointer = _GRID_FRAME_OFFSET_VECTOR
    ds.GridFrameOffsetVector = _ds_list(np.arange(nz) * dz)
    ds.DoseUnits = "GY"
    ds.DoseType = "PHYSICAL"
    ds.DoseSummationType = summation_type
    ds.DoseGridScaling = _ds(scaling)
    ds.DoseComment = description[:64]
    ds.PixelData = stored.astype(stored.dtype.newbyteorder("<")).tobytes()
    return _save(ds, path)


def write_dose_rate_map(
    dose_rate_gy_s: np.ndarray,
    grid: Grid,
    reference_ct: Sequence[Dataset] | Sequence[str | os.PathLike],
    path: str | os.PathLike,
    description: str = "absorbed dose rate",
    *,
    series_number: int = 902,
    series_instance_uid: str | None = None,
    sop_instance_uid: str | None = None,
) -> Path:
    """Write a dose-rate map as a Parametric Map (highdicom, PS3.3 A.75) in Gy/s.

    A Parametric Map, not an RT Dose: Dose Units (3004,0002) know only GY and RELATIVE, so an RT Dose cannot say
    "per second"; a Parametric Map carries its unit in a Real World Value Mapping (UCUM ``Gy/s``). The voxels are
    written as 32-bit float pixel data with the identity mapping (slope 1, intercept 0): the float32 values come
    back exactly.

    Args:
        dose_rate_gy_s: absorbed dose rate (z, y, x) on ``grid`` in Gy/s, finite.
        grid, reference_ct, path: as for :func:`write_rt_dose`.
        description: Content Description and Series Description (at most 64 characters).
        series_number, series_instance_uid, sop_instance_uid: identify the new object.

    Returns:
        ``path``.
    """
    rate = np.asarray(dose_rate_gy_s, dtype=np.float32)
    _check_array(rate, grid, "dose_rate_gy_s")
    if not np.all(np.isfinite(rate)):
        raise ValueError(f"dose_rate_gy_s holds {np.count_nonzero(~np.isfinite(rate))} NaN or infinite voxels")
    ct = reference_series(reference_ct)
    _check_in_field_of_view(grid, ct)
    low, high = float(rate.min()), float(rate.max())
    mapping = hd.pm.RealWorldValueMapping(
        lut_label="GY_PER_S",
        lut_explanation="absorbed dose rate",
        unit=codes.UCUM.GrayPerSecond,
        value_range=(low, high if high > low else low + 1.0),
        slope=1.0,
        intercept=0.0,
    )
    pm = hd.pm.ParametricMap(
        **_new_instance(
            ct, _volume(rate, grid, ct[0].FrameOfReferenceUID), series_instance_uid, series_number, sop_instance_uid
        ),
        contains_recognizable_visual_features=False,
        real_world_value_mappings=[mapping],
        content_label="DOSERATE",
        content_description=description[:64],
        # LINEAR_EXACT: the window is in Gy/s, far narrower than 1 (which LINEAR would need, PS3.3 C.11.2.1.2.1)
        voi_lut_transformations=[
            hd.VOILUTTransformation(
                window_center=(low + high) / 2.0, window_width=max(high - low, 1e-30), voi_lut_function="LINEAR_EXACT"
            )
        ],
    )
    pm.SeriesDescription = description[:64]
    # Frame Anatomy (PS3.3 C.7.6.16.2.8): the region the CT covers, unpaired; without it General Series would need a
    # Laterality (dciodvfy reports its absence as an error).
    anatomy = Dataset()
    anatomy.AnatomicRegionSequence = [_anatomic_region(ct[0])]
    anatomy.FrameLaterality = "U"
    pm.SharedFunctionalGroupsSequence[0].FrameAnatomySequence = [anatomy]
    return _save(pm, path)


def write_seg(
    labels: np.ndarray,
    names: Mapping,
    grid: Grid,
    reference_ct: Sequence[Dataset] | Sequence[str | os.PathLike],
    path: str | os.PathLike,
    vois: Mapping | None = None,
    *,
    series_number: int = 903,
    series_instance_uid: str | None = None,
    sop_instance_uid: str | None = None,
) -> Path:
    """Write the VOIs of a label map as a BINARY Segmentation (highdicom, PS3.3 A.51), one segment per VOI.

    BINARY, not LABELMAP: a label map's VOIs may overlap (regions, :mod:`cohort_dosimetry.vocabulary`), which only
    BINARY can hold, and LABELMAP (added to the standard in 2024) is unknown to many readers. Segments are numbered
    1.. in the order of :func:`~cohort_dosimetry.vocabulary.voi_regions` (ascending label for a plain map); each
    has the VOI name as Segment Label and SNOMED CT codes for category and type: organs as anatomical structures
    (laterality as a modifier: Lung + Left), ``lesion_k`` as a morphologically abnormal structure of type Lesion,
    names outside the vocabulary as a spatial concept of type Region in Space. A VOI without voxels gets no segment.

    Args:
        labels: int (z, y, x) on ``grid``, 0 = no VOI, else a region value.
        names: {region value: name} as in the store's ``labels.attrs["names"]`` (keys may be strings).
        grid, reference_ct, path: as for :func:`write_rt_dose`.
        vois: {VOI name: region values} when regions are shared by VOIs (``labels.attrs["vois"]``); None: every
            name is a VOI of its own label.
        series_number, series_instance_uid, sop_instance_uid: identify the new object.

    Returns:
        ``path``.
    """
    labels = np.asarray(labels)
    _check_array(labels, grid, "labels")
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be integers, got {labels.dtype}")
    regions = voi_regions(names, vois)
    present = [(name, values) for name, values in regions.items() if np.isin(labels, values).any()]
    if not present:
        raise ValueError("labels hold no voxel of any named VOI: nothing to segment")
    ct = reference_series(reference_ct)
    _check_in_field_of_view(grid, ct)
    disjoint = len({v for _, values in present for v in values}) == sum(len(values) for _, values in present)
    if disjoint:  # one segment number per voxel: a (z, y, x) map of segment numbers
        pixels = np.zeros(labels.shape, dtype=np.uint16)
        for number, (_, values) in enumerate(present, start=1):
            pixels[np.isin(labels, values)] = number
    else:  # overlapping VOIs: one binary mask per segment, (z, y, x, segment)
        pixels = np.stack([np.isin(labels, values) for _, values in present], axis=-1).astype(np.uint8)
    algorithm = hd.AlgorithmIdentificationSequence(
        name="cohort-dosimetry VOI label map on the dose grid",
        family=codes.cid7162.MorphologicalOperations,
        version=__version__,
    )
    descriptions = [segment_description(number, name, algorithm) for number, (name, _) in enumerate(present, start=1)]
    seg = hd.seg.Segmentation(
        **_new_instance(
            ct, _volume(pixels, grid, ct[0].FrameOfReferenceUID), series_instance_uid, series_number, sop_instance_uid
        ),
        segmentation_type="BINARY",
        segment_descriptions=descriptions,
        content_label="VOIS",
        content_description="VOIs on the dose grid",
    )
    seg.SeriesDescription = "VOIs on the dose grid"
    return _save(seg, path)


def reference_series(reference_ct: Sequence[Dataset] | Sequence[str | os.PathLike]) -> list[Dataset]:
    """The reference CT series as Datasets (files read without pixel data), checked to be one CT series of one
    patient in one frame of reference, in ascending position along its slice normal."""
    items = list(reference_ct)
    if not items:
        raise ValueError("reference_ct is empty: give the reference CT series (Datasets or file paths)")
    slices = [item if isinstance(item, Dataset) else pydicom.dcmread(item, stop_before_pixels=True) for item in items]
    for keyword in ("SeriesInstanceUID", "FrameOfReferenceUID", "StudyInstanceUID", "PatientID"):
        values = {str(s.get(keyword, "")) for s in slices}
        if len(values) != 1 or values == {""}:
            raise ValueError(
                f"reference_ct must be one CT series: {keyword} takes {len(values)} values "
                f"({'missing' if values == {''} else 'differing'})"
            )
    modalities = {s.get("Modality") for s in slices}
    if modalities != {"CT"}:
        raise ValueError(f"reference_ct must be a CT series, found Modality {sorted(map(str, modalities))}")
    for s in slices:
        for keyword in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "Rows", "Columns"):
            if keyword not in s:
                raise ValueError(f"reference_ct slice {s.get('SOPInstanceUID')} lacks {keyword}")
    orientation = np.asarray(slices[0].ImageOrientationPatient, dtype=float)
    normal = np.cross(orientation[:3], orientation[3:])
    return sorted(slices, key=lambda s: float(np.dot(normal, np.asarray(s.ImagePositionPatient, dtype=float))))


# ---------------------------------------------------------------------------------------------------------------
# geometry


def _new_instance(ct, pixel_array, series_instance_uid, series_number, sop_instance_uid) -> dict:
    """The arguments every highdicom object written here shares: its source CT, pixels, UIDs and equipment."""
    return {
        "source_images": ct,
        "pixel_array": pixel_array,
        "series_instance_uid": series_instance_uid or hd.UID(),
        "series_number": series_number,
        "sop_instance_uid": sop_instance_uid or hd.UID(),
        "instance_number": 1,
        "manufacturer": MANUFACTURER,
        "manufacturer_model_name": MODEL_NAME,
        "software_versions": __version__,
        "device_serial_number": "0",
    }


def _check_array(array: np.ndarray, grid: Grid, name: str) -> None:
    if array.shape != grid.shape:
        raise ValueError(f"{name} has shape {array.shape}, the grid {grid.shape} (z, y, x)")


def _axes_xyz(grid: Grid) -> np.ndarray:
    """Rows: unit vectors (x, y, z) along array axes z, y, x; ValueError if they are not orthonormal."""
    axes = np.asarray([row[::-1] for row in grid.direction], dtype=float)
    if not np.allclose(axes @ axes.T, np.eye(3), atol=_DIRECTION_TOLERANCE):
        raise ValueError(f"the grid's direction {grid.direction} is not orthonormal")
    return axes


def _frames_along_normal(array: np.ndarray, grid: Grid):
    """(frames, ImagePositionPatient of the first frame, row cosine, column cosine), all (x, y, z): the array's
    z slices ordered along the slice normal (row cosine x column cosine)."""
    axes = _axes_xyz(grid)
    assert grid.origin_mm is not None  # Grid.__post_init__ fills it
    origin_xyz = np.asarray(grid.origin_mm[::-1], dtype=float)
    row_xyz, col_xyz = axes[2], axes[1]
    if float(np.dot(np.cross(row_xyz, col_xyz), axes[0])) > 0:
        return array, origin_xyz, row_xyz, col_xyz
    last = origin_xyz + (grid.shape[0] - 1) * grid.spacing_mm[0] * axes[0]
    return array[::-1], last, row_xyz, col_xyz


def _volume(array: np.ndarray, grid: Grid, frame_of_reference_uid: str) -> hd.Volume:
    """``array`` (z, y, x[, segment]) on ``grid`` as a highdicom Volume: the direction's columns are the array axes
    in (x, y, z), the position is voxel (0, 0, 0)'s centre (x, y, z)."""
    axes = _axes_xyz(grid)
    assert grid.origin_mm is not None  # Grid.__post_init__ fills it
    channels: dict | None = None
    if array.ndim == 4:
        channels = {"SegmentNumber": list(range(1, array.shape[3] + 1))}
    return hd.Volume.from_components(
        array,
        spacing=list(grid.spacing_mm),
        coordinate_system="PATIENT",
        position=list(grid.origin_mm[::-1]),
        direction=[float(v) for v in axes.T.ravel()],
        frame_of_reference_uid=frame_of_reference_uid,
        channels=channels,
    )


def _check_in_field_of_view(grid: Grid, ct: list[Dataset]) -> None:
    """ValueError unless the grid's centre lies in the bounding box (x, y, z) of the CT's voxel centres, widened by
    one grid voxel diagonal."""
    axes = _axes_xyz(grid)
    assert grid.origin_mm is not None  # Grid.__post_init__ fills it
    centre = (
        np.asarray(grid.origin_mm[::-1], dtype=float)
        + ((np.asarray(grid.shape) - 1) / 2.0 * np.asarray(grid.spacing_mm)) @ axes
    )
    corners = []
    for s in (ct[0], ct[-1]):
        position = np.asarray(s.ImagePositionPatient, dtype=float)
        orientation = np.asarray(s.ImageOrientationPatient, dtype=float)
        along_row = orientation[:3] * float(s.PixelSpacing[1]) * (int(s.Columns) - 1)
        down_col = orientation[3:] * float(s.PixelSpacing[0]) * (int(s.Rows) - 1)
        corners += [position, position + along_row, position + down_col, position + along_row + down_col]
    low, high = np.min(corners, axis=0), np.max(corners, axis=0)
    slack = float(np.linalg.norm(grid.spacing_mm))
    if np.any(centre < low - slack) or np.any(centre > high + slack):
        raise ValueError(
            f"the grid's centre (x, y, z) {np.round(centre, 2).tolist()} mm lies outside the reference "
            f"CT's field of view {np.round(low, 2).tolist()}..{np.round(high, 2).tolist()} mm: wrong CT, "
            "or the grid's axes are not (z, y, x)"
        )


def _anatomic_region(ct: Dataset) -> Dataset:
    """The CT's anatomic region as a code item: its Anatomic Region Sequence if it has one, else its Body Part
    Examined as the SNOMED CT code PS3.16 Annex L gives it, else the entire body (no narrower region claimed)."""
    if ct.get("AnatomicRegionSequence"):
        item = ct.AnatomicRegionSequence[0]
        return hd.sr.CodedConcept(item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning)
    body_parts = {
        "ABDOMEN": codes.SCT.Abdomen,
        "CHEST": codes.SCT.Chest,
        "THORAX": codes.SCT.Thorax,
        "PELVIS": codes.SCT.Pelvis,
        "ABDOMENPELVIS": codes.SCT.AbdomenAndPelvis,
        "CHESTABDOMEN": codes.SCT.ChestAndAbdomen,
        "CHESTABDOMENPELVIS": codes.SCT.ChestAbdomenAndPelvis,
        "NECK": codes.SCT.Neck,
        "HEADNECK": codes.SCT.HeadAndNeck,
        "WHOLEBODY": codes.SCT.EntireBody,
    }
    code = body_parts.get(str(ct.get("BodyPartExamined", "")).upper().replace(" ", ""), codes.SCT.EntireBody)
    return hd.sr.CodedConcept.from_code(code)


# ---------------------------------------------------------------------------------------------------------------
# segments


# ---------------------------------------------------------------------------------------------------------------
# small helpers


def _instance_reference(item: Dataset) -> Dataset:
    ref = Dataset()
    ref.ReferencedSOPClassUID = item.SOPClassUID
    ref.ReferencedSOPInstanceUID = item.SOPInstanceUID
    return ref


def _save(ds: Dataset, path: str | os.PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def _ds(value: float) -> str:
    """A number as DICOM DS text at the most precision 16 characters hold (pydicom's formatting)."""
    return format_number_as_ds(float(value))


def _ds_list(values) -> list[str]:
    return [_ds(v) for v in values]


def _ds_at_least(value: float) -> float:
    """The DS value written for ``value`` (> 0), never below it: the scaling written is the one used, and
    ``max / scaling`` stays within the stored range."""
    candidate = value
    while float(_ds(candidate)) < value:
        candidate = candidate * (1.0 + 1e-12) if candidate > value else np.nextafter(value, np.inf)
    return float(_ds(candidate))
