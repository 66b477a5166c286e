"""Contours (RTSTRUCT polygons, DICOM SEG masks) into one integer label map on a reference grid (the CT's).

ROI and segment names are mapped case-insensitively onto the project vocabulary (``cohort_dosimetry.phantoms``:
body, liver, kidney_left, ..., lesion_<k>) and get its integer labels; a name outside the vocabulary is kept as
written, gets a label from :data:`UNKNOWN_LABEL_START` upwards and is reported. Where VOIs overlap the smaller one
wins (they are painted largest first), so a lesion inside the liver keeps its voxels.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import highdicom as hd
import numpy as np
import SimpleITK as sitk
from matplotlib.path import Path as Polygon

from cohort_dosimetry.io._errors import IngestError
from cohort_dosimetry.io._headers import read_full, reader_of_input
from cohort_dosimetry.io._volume import Grid, Volume
from cohort_dosimetry.phantoms import VOI_NAMES, label_of

#: Labels for names outside the vocabulary start here (vocabulary labels are 1-11 and 100 + k for lesion k).
UNKNOWN_LABEL_START = 1000
#: A planar contour may lie at most this fraction of a slice spacing off the nearest slice centre of the grid.
OFF_PLANE_TOLERANCE = 0.25


@dataclass(frozen=True)
class LabelMap:
    """``labels``: int16 Volume (z, y, x) on the reference grid, 0 = no VOI; ``names`` {label: VOI name};
    ``notes``: what the reader had to tell (unknown names, empty or skipped contours), for the ingest report."""

    labels: Volume
    names: dict[int, str]
    notes: list[str] = field(default_factory=list)


def vocabulary_name(name: str) -> str | None:
    """The vocabulary spelling of a ROI name, compared case-insensitively; None if it is not in the vocabulary."""
    wanted = name.strip().lower()
    for known in VOI_NAMES:
        if known.lower() == wanted:
            return known
    if wanted.startswith("lesion_"):
        try:
            label_of(wanted)
            return wanted
        except ValueError:
            return None
    return None


def _label_values(names: list[str], notes: list[str], source: str) -> list[tuple[int, str]]:
    """(label, name) for each name in order; unknown names keep their spelling and get labels from 1000."""
    out, next_unknown, used = [], UNKNOWN_LABEL_START, set()
    for name in names:
        known = vocabulary_name(name)
        if known is None:
            notes.append(
                f"{source}: VOI name {name!r} is not in the vocabulary; kept as written (label {next_unknown})"
            )
            out.append((next_unknown, name.strip()))
            next_unknown += 1
            continue
        value = label_of(known)
        if value in used:
            raise IngestError(source, f"two VOIs map to the same name {known!r}")
        used.add(value)
        out.append((value, known))
    return out


def _paint(masks: list[tuple[int, str, np.ndarray]], grid: Grid, notes: list[str], source: str) -> LabelMap:
    labels = np.zeros(grid.shape, dtype=np.int16)
    names = {}
    for value, name, mask in sorted(masks, key=lambda m: -int(m[2].sum())):
        if not mask.any():
            notes.append(f"{source}: VOI {name!r} has no voxel on the CT grid; left out")
            continue
        labels[mask] = value
        names[value] = name
    lost = [names.pop(v) for v in list(names) if not np.any(labels == v)]
    for name in lost:
        notes.append(f"{source}: VOI {name!r} is entirely covered by smaller VOIs; left out")
    return LabelMap(Volume(labels, grid, "1"), names, notes)


@reader_of_input
def read_rtstruct(path: Path, reference: Grid, subject: str | None = None) -> LabelMap:
    """Rasterise the closed planar contours of an RTSTRUCT onto ``reference`` (normally the CT grid).

    A voxel belongs to a ROI when its centre lies inside the ROI's polygons on its slice (even-odd rule, so inner
    contours cut holes). Contours must lie in the grid's slice planes (within :data:`OFF_PLANE_TOLERANCE` slices).
    """
    subject = subject or str(path)
    ds = read_full(Path(path), subject)
    if ds.get("Modality") != "RTSTRUCT":
        raise IngestError(subject, f"expected RTSTRUCT, found Modality {ds.get('Modality')!r}")
    rois = {int(item.ROINumber): str(item.get("ROIName", f"ROI {item.ROINumber}")) for item in
            ds.get("StructureSetROISequence") or []}
    notes: list[str] = []
    values = dict(zip(rois, _label_values(list(rois.values()), notes, subject)))
    image = reference.reference_image()
    origin = np.asarray(image.GetOrigin())
    direction = np.asarray(image.GetDirection()).reshape(3, 3)
    spacing = np.asarray(image.GetSpacing())
    nz, ny, nx = reference.shape
    skipped = off_grid = 0
    masks = []
    for roi in ds.get("ROIContourSequence") or []:
        number = int(roi.ReferencedROINumber)
        if number not in values:
            notes.append(f"{subject}: contours reference ROI number {number}, which has no name; left out")
            continue
        mask = np.zeros(reference.shape, dtype=bool)
        for contour in roi.get("ContourSequence") or []:
            if str(contour.get("ContourGeometricType", "")).upper() != "CLOSED_PLANAR":
                skipped += 1
                continue
            points = np.asarray([float(v) for v in contour.ContourData], dtype=float).reshape(-1, 3)
            index = ((points - origin) @ direction) / spacing  # continuous (x, y, z) index; direction is orthonormal
            k = int(round(float(index[:, 2].mean())))
            if not 0 <= k < nz or np.abs(index[:, 2] - k).max() > OFF_PLANE_TOLERANCE:
                off_grid += 1
                continue
            col_lo, row_lo = np.maximum(np.floor(index[:, :2].min(axis=0)).astype(int), 0)
            col_hi, row_hi = np.minimum(np.ceil(index[:, :2].max(axis=0)).astype(int) + 1, (nx, ny))
            if col_lo >= col_hi or row_lo >= row_hi:
                off_grid += 1
                continue
            rows, cols = np.mgrid[row_lo:row_hi, col_lo:col_hi]
            inside = Polygon(index[:, :2]).contains_points(np.column_stack([cols.ravel(), rows.ravel()]))
            mask[k, row_lo:row_hi, col_lo:col_hi] ^= inside.reshape(rows.shape)
        value, name = values[number]
        masks.append((value, name, mask))
    if skipped:
        notes.append(f"{subject}: {skipped} contours that are not CLOSED_PLANAR (points, open lines) were ignored")
    if off_grid:
        notes.append(f"{subject}: {off_grid} contours lie outside the CT grid or between its slices; ignored")
    return _paint(masks, reference, notes, subject)


@reader_of_input
def read_seg(path: Path, reference: Grid, subject: str | None = None) -> LabelMap:
    """Read a DICOM SEG (highdicom) and place its segments on ``reference`` (normally the CT grid).

    Segments are combined into one label map and resampled onto ``reference`` with nearest-neighbour interpolation in
    physical space (SimpleITK); where segments overlap, the smaller wins.
    """
    subject = subject or str(path)
    try:
        seg = hd.seg.segread(path)
    except Exception as exc:
        raise IngestError(subject, f"cannot read DICOM SEG ({type(exc).__name__}: {exc})") from None
    segments = {int(item.SegmentNumber): str(item.SegmentLabel) for item in seg.SegmentSequence}
    try:
        volume = seg.get_volume(combine_segments=False, dtype=np.uint8)
    except Exception as exc:
        raise IngestError(subject, f"SEG frames do not form a regular volume ({type(exc).__name__}: {exc})") from None
    notes: list[str] = []
    numbers = list(segments)
    values = dict(zip(numbers, _label_values([segments[n] for n in numbers], notes, subject)))
    target = reference.reference_image()
    masks = []
    for number in volume.get_channel_values("ReferencedSegmentNumber"):
        one = volume.get_channel(ReferencedSegmentNumber=number)
        image = sitk.Cast(one.to_simpleitk(), sitk.sitkUInt8)
        on_grid = sitk.Resample(image, target, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
        value, name = values[int(number)]
        masks.append((value, name, sitk.GetArrayFromImage(on_grid).astype(bool)))
    return _paint(masks, reference, notes, subject)
