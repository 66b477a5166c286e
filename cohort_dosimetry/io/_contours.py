"""Contours (RTSTRUCT polygons, DICOM SEG masks) into one label map of regions on a reference grid (the CT's).

ROI and segment names become VOI names by :func:`cohort_dosimetry.vocabulary.map_roi_names`: the user's mapping,
the vocabulary, clinical and AAPM TG-263 synonyms; any other name is kept as written with VOI class ``other``. One
note per contour object lists the ROIs renamed or kept as written, and ``source_names`` records the ROI name of
every VOI whose name differs from it.

Every VOI keeps its own contour where contours overlap (a liver contour holds its lesions, External holds
everything): the label map holds regions, one per combination of VOIs a voxel lies in, and the attrs say which VOIs
each region belongs to (:mod:`cohort_dosimetry.vocabulary`, section regions). Without overlaps the map is the plain
one of the virtual patients: one label per VOI. Two rules follow the vocabulary: ``body``, the remainder of the body,
is the part of its contour outside every other VOI (but those of class body, such as ``external``); and where lesions
overlap ``liver``, ``liver_healthy`` = liver minus every lesion is derived.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import highdicom as hd
import numpy as np
import SimpleITK as sitk
from matplotlib.path import Path as Polygon

from cohort_dosimetry.grid import Grid
from cohort_dosimetry.io._errors import IngestError
from cohort_dosimetry.io._headers import read_full, reader_of_input
from cohort_dosimetry.io._resample import resample_to_grid
from cohort_dosimetry.io._volume import Volume
from cohort_dosimetry.vocabulary import (
    OVERLAP_REGION_START,
    UNKNOWN_LABEL_START,
    derive_vois,
    label_of,
    labels_attrs,
    map_roi_names,
    match_roi_name,
    region_name,
    voi_type,
)

#: A planar contour may lie at most this fraction of a slice spacing off the nearest slice centre of the grid.
OFF_PLANE_TOLERANCE = 0.25
#: Largest region value an int16 label map holds.
_MAX_REGION = int(np.iinfo(np.int16).max)


@dataclass(frozen=True)
class LabelMap:
    """VOIs on a grid.

    ``labels``: int16 Volume (z, y, x), 0 = no VOI, else a region value; ``names`` {region value: region name};
    ``notes``: problems the reader had to tell (empty or skipped contours), for the ingest report (warnings);
    ``naming``: how ROI names were read (renamed, kept as written, derived VOIs), for the report (information);
    ``vois`` {VOI name: region values} (derived VOIs included; empty = one VOI per name of ``names``);
    ``source_names`` {VOI name: ROI name as written} where they differ; ``derived`` {VOI name: how};
    ``kept_by_guard``: VOIs that kept a voxel on a coarser grid only by the resampling guard.
    """

    labels: Volume
    names: dict[int, str]
    notes: list[str] = field(default_factory=list)
    vois: dict[str, tuple[int, ...]] = field(default_factory=dict)
    source_names: dict[str, str] = field(default_factory=dict)
    derived: dict[str, str] = field(default_factory=dict)
    kept_by_guard: tuple[str, ...] = ()
    naming: str = ""

    def __post_init__(self):
        if not self.vois:
            object.__setattr__(self, "vois", {name: (value,) for value, name in sorted(self.names.items())})

    def attrs(self) -> dict:
        """The ``labels`` array's attrs: ``names``, and ``vois``, ``source_names``, ``derived`` where needed."""
        return labels_attrs(self.vois, self.names, self.source_names, self.derived)

    @property
    def overlapping(self) -> bool:
        """True when some voxel lies in several VOIs (the attrs then carry ``vois``)."""
        return "vois" in self.attrs()

    def resampled(self, grid: Grid) -> LabelMap:
        """This map on ``grid`` (nearest neighbour with the guard of :func:`resample_to_grid`, region by region).

        A VOI that keeps no voxel (it lies outside ``grid``) is left out with a note (the result's ``notes`` hold
        only such new notes); derived VOIs are derived anew on ``grid``.
        """
        contour = {name: values for name, values in self.vois.items() if name not in self.derived}
        if self.overlapping:
            source = Volume(self.labels.array, self.labels.grid, "1", {"names": self.names, "vois": contour})
            out = resample_to_grid(source, grid, "labels")
            names = {int(v): str(n) for v, n in out.attrs["names"].items()}
            vois = {str(n): tuple(v) for n, v in out.attrs["vois"].items()}
            kept = list(out.attrs.get("labels_kept_by_guard", []))
        else:
            out = resample_to_grid(self.labels, grid, "labels")
            present = set(np.unique(out.array).tolist())
            names = {v: n for v, n in self.names.items() if v in present}
            vois = {n: tuple(v for v in values if v in present) for n, values in contour.items()}
            kept = [self.names[v] for v in out.attrs.get("labels_kept_by_guard", [])]
        notes = [
            f"VOI {name!r} has no voxel on the dose grid (its contour lies outside it); left out"
            for name, values in vois.items()
            if not values
        ]
        vois = {name: values for name, values in vois.items() if values}
        derived, how = derive_vois(vois)
        return LabelMap(
            Volume(out.array.astype(np.int16), grid, "1"),
            names,
            notes,
            {**vois, **derived},
            {n: r for n, r in self.source_names.items() if n in vois},
            how,
            tuple(kept),
        )


def vocabulary_name(name: str) -> str | None:
    """The vocabulary name of one ROI name (user mapping aside), None if it is not recognised; an unnumbered lesion
    comes back as ``"lesion"`` (see :func:`cohort_dosimetry.vocabulary.match_roi_name`)."""
    return match_roi_name(name)


def _voi_names(rois: list[str], roi_names: Mapping[str, str] | None) -> tuple[list[str], list[str]]:
    """VOI name of each ROI (in order), and what to say about it: which ROIs were renamed or kept as written."""
    matches = map_roi_names(rois, roi_names)
    renamed = [f"{m.roi!r} -> {m.name}" for m in matches if m.recognised and m.renamed]
    kept = [repr(m.roi) for m in matches if not m.recognised]
    clashes = [f"{m.roi!r} {m.note}" for m in matches if m.note]
    parts = []
    if renamed:
        parts.append(f"ROI names mapped to the vocabulary: {', '.join(renamed)}")
    if kept:
        parts.append(f"not in the vocabulary, kept as written with VOI class other: {', '.join(kept)}")
    if clashes:
        parts.append(f"two ROIs for one name: {'; '.join(clashes)}")
    return [m.name for m in matches], parts


def _regions(
    masks: list[tuple[str, str, np.ndarray]], grid: Grid, notes: list[str], naming: list[str], source: str
) -> LabelMap:
    """The region label map of VOI masks ``(VOI name, ROI name as written, bool mask (z, y, x))`` in ROI order.

    ``notes``: the problems found so far; ``naming``: what to say about the names. The naming, the body rule and the
    derived VOIs make one note (one per contour object, whatever its number of ROIs)."""
    naming = list(naming)
    vois = []
    for name, roi, mask in masks:
        if not mask.any():
            notes.append(f"{source}: ROI {roi!r} ({name}) has no voxel on the CT grid; left out")
            continue
        vois.append((name, roi, mask))
    body = [i for i, (name, _, _) in enumerate(vois) if name == "body"]
    if body:  # the vocabulary's body is the remainder: outside every VOI but those of class body
        others = np.zeros(grid.shape, dtype=bool)
        for name, _, mask in vois:
            if voi_type(name) != "body":
                others |= mask
        name, roi, mask = vois[body[0]]
        inside = np.count_nonzero(mask & others)
        if inside:
            naming.append(
                f"ROI {roi!r} is body, the remainder of the body: its {inside} voxels inside other VOIs "
                "count for those VOIs only"
            )
            vois[body[0]] = (name, roi, mask & ~others)
            if not vois[body[0]][2].any():
                notes.append(f"{source}: ROI {roi!r} (body) lies entirely inside other VOIs; left out")
                del vois[body[0]]
    # Fixed labels of the vocabulary where there is one, else from UNKNOWN_LABEL_START in ROI order.
    values, next_value = [], UNKNOWN_LABEL_START
    for name, _, _ in vois:
        try:
            value = label_of(name)
        except ValueError:
            value = UNKNOWN_LABEL_START
        if value >= UNKNOWN_LABEL_START:
            value, next_value = next_value, next_value + 1
        values.append(value)
    if next_value > OVERLAP_REGION_START:
        raise IngestError(
            source,
            f"{next_value - UNKNOWN_LABEL_START} ROIs without a fixed label; at most "
            f"{OVERLAP_REGION_START - UNKNOWN_LABEL_START} fit the label numbering",
        )
    # Combination of VOIs (indices, ascending) of every voxel, built one VOI at a time.
    combo = np.zeros(grid.shape, dtype=np.int32)
    members: list[tuple[int, ...]] = [()]
    known: dict[tuple[int, ...], int] = {(): 0}
    for i, (_, _, mask) in enumerate(vois):
        uniq, inverse = np.unique(combo[mask], return_inverse=True)
        new = np.empty(len(uniq), dtype=np.int32)
        for j, old in enumerate(uniq.tolist()):
            key = members[old] + (i,)
            if key not in known:
                known[key] = len(members)
                members.append(key)
            new[j] = known[key]
        combo[mask] = new[inverse.ravel()]
    present = [c for c in np.unique(combo).tolist() if c != 0]
    shared = sorted((c for c in present if len(members[c]) > 1), key=lambda c: sorted(values[i] for i in members[c]))
    if OVERLAP_REGION_START + len(shared) - 1 > _MAX_REGION:
        raise IngestError(
            source,
            f"{len(shared)} combinations of overlapping ROIs; at most "
            f"{_MAX_REGION - OVERLAP_REGION_START + 1} fit an int16 label map",
        )
    region = {c: values[members[c][0]] for c in present if len(members[c]) == 1}
    region.update({c: OVERLAP_REGION_START + j for j, c in enumerate(shared)})
    lookup = np.zeros(len(members), dtype=np.int16)
    for c, value in region.items():
        lookup[c] = value
    names = {region[c]: region_name([vois[i][0] for i in members[c]]) for c in present}
    voi_regions = {
        name: tuple(sorted(region[c] for c in present if i in members[c])) for i, (name, _, _) in enumerate(vois)
    }
    derived, how = derive_vois(voi_regions)
    naming += [f"{name} derived as {description}" for name, description in how.items()]
    source_names = {name: roi for name, roi, _ in vois if roi != name}
    return LabelMap(
        Volume(lookup[combo], grid, "1"),
        dict(sorted(names.items())),
        notes,
        {**voi_regions, **derived},
        source_names,
        how,
        naming=f"{source}: {'; '.join(naming)}" if naming else "",
    )


@reader_of_input
def read_rtstruct(
    path: Path, reference: Grid, subject: str | None = None, roi_names: Mapping[str, str] | None = None
) -> LabelMap:
    """Rasterise the closed planar contours of an RTSTRUCT onto ``reference`` (normally the CT grid).

    A voxel belongs to a ROI when its centre lies inside the ROI's polygons on its slice (even-odd rule, so inner
    contours cut holes). Contours must lie in the grid's slice planes (within :data:`OFF_PLANE_TOLERANCE` slices).
    ROIs may overlap; each keeps its own voxels (regions, see the module docstring). ``roi_names``: the user's
    {ROI name as written: vocabulary name}, consulted before the built-in synonyms.
    """
    subject = subject or str(path)
    ds = read_full(Path(path), subject)
    if ds.get("Modality") != "RTSTRUCT":
        raise IngestError(subject, f"expected RTSTRUCT, found Modality {ds.get('Modality')!r}")
    rois = {
        int(item.ROINumber): str(item.get("ROIName") or "").strip() or f"ROI {item.ROINumber}"
        for item in ds.get("StructureSetROISequence") or []
    }
    voi_names, naming = _voi_names(list(rois.values()), roi_names)
    notes: list[str] = []
    masks = {number: np.zeros(reference.shape, dtype=bool) for number in rois}
    image = reference.reference_image()
    origin = np.asarray(image.GetOrigin())
    direction = np.asarray(image.GetDirection()).reshape(3, 3)
    spacing = np.asarray(image.GetSpacing())
    nz, ny, nx = reference.shape
    skipped = off_grid = 0
    for roi in ds.get("ROIContourSequence") or []:
        number = int(roi.ReferencedROINumber)
        if number not in masks:
            notes.append(f"{subject}: contours reference ROI number {number}, which has no name; left out")
            continue
        mask = masks[number]
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
    if skipped:
        notes.append(f"{subject}: {skipped} contours that are not CLOSED_PLANAR (points, open lines) were ignored")
    if off_grid:
        notes.append(f"{subject}: {off_grid} contours lie outside the CT grid or between its slices; ignored")
    return _regions(
        [(name, rois[number], masks[number]) for number, name in zip(rois, voi_names)],
        reference,
        notes,
        naming,
        subject,
    )


@reader_of_input
def read_seg(
    path: Path, reference: Grid, subject: str | None = None, roi_names: Mapping[str, str] | None = None
) -> LabelMap:
    """Read a DICOM SEG (highdicom) and place its segments on ``reference`` (normally the CT grid).

    Each segment is resampled onto ``reference`` with nearest-neighbour interpolation in physical space (SimpleITK);
    segments may overlap, each keeps its own voxels (regions, see the module docstring). ``roi_names`` as for
    :func:`read_rtstruct`, applied to the segment labels.
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
    segments = {number: label.strip() or f"segment {number}" for number, label in segments.items()}
    voi_names, naming = _voi_names(list(segments.values()), roi_names)
    notes: list[str] = []
    target = reference.reference_image()
    masks = {number: np.zeros(reference.shape, dtype=bool) for number in segments}
    for number in volume.get_channel_values("ReferencedSegmentNumber"):
        one = volume.get_channel(ReferencedSegmentNumber=number)
        image = sitk.Cast(one.to_simpleitk(), sitk.sitkUInt8)
        on_grid = sitk.Resample(image, target, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
        # highdicom types channel values as str | int | float | Enum; segment numbers are ints
        masks[int(number)] |= sitk.GetArrayFromImage(on_grid).astype(bool)  # type: ignore[arg-type]
    return _regions(
        [(name, segments[number], masks[number]) for number, name in zip(segments, voi_names)],
        reference,
        notes,
        naming,
        subject,
    )
