"""DICOM export of virtual patients: what a SPECT/CT scanner and a contouring workstation hand over.

Virtual patients stand in for patient data: everything written here is synthetic, identity included
(:func:`~cohort_dosimetry.phantoms.synthetic_identity`).

One virtual patient (:func:`export_dicom`) becomes, per time point (one study per scan day, acquisition order)::

    OUT_DIR/dicom/patient_{index:02d}/study_{k}/     k = 1.. in acquisition order
        CT/CT_{slice:04d}.dcm   CT Image Storage, one file per z slice, HU = stored int16 * 1 - 1024
        NM/NM.dcm               NM Image Storage, one multi-frame RECON TOMO file, Units BQML, Bq/mL = stored * slope
        RTSTRUCT/RS.dcm         RT Structure Set: one ROI per label, contours traced per CT slice
        SEG/SEG.dcm             Segmentation Storage (BINARY, highdicom): one segment per label, references the CT
    OUT_DIR/ground_truth/{PatientID}.zarr            the truth, outside the DICOM tree (see :func:`read_ground_truth`)

Geometry: the Dataset's array axes (z, y, x) run along +z, +y, +x of DICOM patient space (LPS) and ``origin_mm`` is
the centre of voxel (0, 0, 0). The anatomy keeps these patient coordinates whatever ``patient_position`` (0018,5100)
the scan is written in; the position only changes how the scanner stores it (:data:`PATIENT_POSITIONS`). The scanner
keeps its image axes fixed to the gantry (rows left to right, columns top to bottom as seen from the table end,
slices into the bore), so turning the patient flips patient axes against them (PS3.3 C.7.3.1.1.2; the direction
cosines below are those written by CT scanners, cf. plastimatch's XiO import):

=====  ==========================  ==================  ======================
 pos    ImageOrientationPatient     slice normal        stored (slice, row, col)
=====  ==========================  ==================  ======================
 HFS    [ 1, 0, 0,  0,  1, 0]       +z (to the head)    (z, y, x)
 FFS    [-1, 0, 0,  0,  1, 0]       -z (to the feet)    (z reversed, y, x reversed)
 HFP    [-1, 0, 0,  0, -1, 0]       +z                  (z, y reversed, x reversed)
 FFP    [ 1, 0, 0,  0, -1, 0]       -z                  (z reversed, y reversed, x)
=====  ==========================  ==================  ======================

Stored slice k (InstanceNumber k + 1, NM frame k + 1) lies k slice spacings from the first along the slice normal
(row x column cosine; for the NM a positive SpacingBetweenSlices stacks frames along it, PS3.3 C.8.4.15), and its
ImagePositionPatient is the centre of its first stored voxel. For HFS, slice k is at ``origin_mm[0] + k dz`` and
ImagePositionPatient is ``(origin_x, origin_y, origin_z + k dz)``. The NM is written on the Dataset's (CT) grid,
where the generator delivers the reconstructed SPECT, so the round trip is exact up to rescale precision; the ingest
resamples whatever grid it gets. CT and NM of one time point share a Frame of Reference (a hybrid SPECT/CT
acquisition); each time point has its own.

All UIDs derive from the patient's seed, its grid, its SPECT model (``attrs["spect_model"]`` where the generator
sets it), its patient position (other than HFS) and the scan's hours after injection through
``pydicom.uid.generate_uid(entropy_srcs=...)``: re-exporting a patient reproduces every UID.

RTSTRUCT ROIs are the disjoint label regions of the label map (``body`` is body tissue outside the other VOIs).
Where a region has holes on a slice (an organ inside ``body``, a lesion inside ``liver``), the slice holds several
CLOSED_PLANAR contours, and a voxel belongs to the ROI when its centre lies inside an odd number of them (even-odd
rule). Contours run through the midpoints between voxel centres, so rasterising them at voxel centres gives the
label mask back. A label that is named but absent from the map gets neither an ROI nor a segment.

Moving patients (:func:`~cohort_dosimetry.phantoms.move_patient`: ``ct_hu``, ``density`` and ``labels`` with a
leading timepoint axis) lie differently at every scan: each study gets its own time point's CT, and its RTSTRUCT and
SEG are traced from that time point's labels; the NM is the time point's (moved) SPECT as always. Their UIDs add the
motion's parameters (``motion_seed``, the motion limits, the reference time point) to the key, so a moved export never
shares a UID with the static export of the same patient. Their ground truth adds the motion (:func:`read_ground_truth`).
A static patient is exported as before.
"""

from __future__ import annotations

import datetime as dt
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import highdicom as hd
import numpy as np
import xarray as xr
from contourpy import LineType, contour_generator
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sr.codedict import codes
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    CTImageStorage,
    ExplicitVRLittleEndian,
    NuclearMedicineImageStorage,
    RTStructureSetStorage,
    generate_uid,
)
from tqdm.auto import tqdm

from cohort_dosimetry import __version__
from cohort_dosimetry.constants import SYNTHETIC_MODEL_NAME
from cohort_dosimetry.phantoms._identity import SyntheticIdentity, synthetic_identity
from cohort_dosimetry.physics import nuclide
from cohort_dosimetry.vocabulary import label_of, segment_description

# RT Referenced Study Sequence items reference the study with the (retired) Detached Study Management SOP Class,
# as PS3.3 C.8.8.5 prescribes.
_DETACHED_STUDY_MANAGEMENT = "1.2.840.10008.3.1.2.3.1"

# CT stored values: HU = stored * 1 + (-1024), the usual CT rescale (PS3.3 C.8.2.1: Rescale Type HU).
_CT_RESCALE_INTERCEPT = -1024
_NM_MAX_STORED = 65535  # NM Image Pixel Module: 16 bits allocated and stored, unsigned
# 20 % energy window (Li et al., Med Phys 49:1216, 2022) centred on the 208.37 keV photopeak of Lu-177 (ICRP-107).
_ENERGY_WINDOW_KEV = (208.37 * 0.9, 208.37 * 1.1)
_RADIONUCLIDE_CODES = {"Lu177": codes.SCT._177Lutetium}
_MANUFACTURER = "cohort-dosimetry virtual patient"

#: Patient Position (0018,5100) -> signs (along x, along y) of the image row and column direction cosines: the row
#: cosine is (sign_x, 0, 0), the column cosine (0, sign_y, 0) and the slice normal (0, 0, sign_x * sign_y).
PATIENT_POSITIONS = {"HFS": (1, 1), "FFS": (-1, 1), "HFP": (-1, -1), "FFP": (1, -1)}

# A moved patient's attrs that set its motion (those of move_patient): in every UID key and in the ground truth.
_MOTION_ATTRS = ("motion_seed", "max_shift_mm", "max_rotation_deg", "organ_displacement_mm", "reference_timepoint")
# move_patient's motion parameters, copied into the ground truth where present (motion_points reads them back).
_MOTION_PARAMETERS = (
    "rigid_rotation",
    "rigid_translation_mm",
    "rotation_centre_mm",
    "rotation_deg",
    "shift_mm",
    "breathing_centre_mm",
    "breathing_semi_axes_mm",
    "breathing_relative",
    "breathing_amplitude_mm",
    "breathing_max_mm",
    "jacobian_min",
    "activity_scale",
)
# displacement_true is stored rounded to this step, mm (exact in float32: the smooth field then compresses several-fold)
_DISPLACEMENT_STEP_MM = 2.0**-10


@dataclass(frozen=True)
class ScanExport:
    """Files written for one time point of one virtual patient.

    Attributes:
        hours_post_injection: scan time after injection, h.
        acquisition_datetime: injection datetime + hours_post_injection (naive, local time).
        study_instance_uid, frame_of_reference_uid: shared by all objects of this time point.
        ct_dir: folder of the CT series (one file per slice); nm_file, rtstruct_file, seg_file: single files.
    """

    hours_post_injection: float
    acquisition_datetime: dt.datetime
    study_instance_uid: str
    frame_of_reference_uid: str
    ct_dir: Path
    nm_file: Path
    rtstruct_file: Path
    seg_file: Path


@dataclass(frozen=True)
class PatientExport:
    """What :func:`export_dicom` wrote for one virtual patient (scans in acquisition order)."""

    patient_index: int
    seed: int
    patient_id: str
    injection_datetime: dt.datetime
    dicom_dir: Path
    ground_truth: Path
    scans: tuple[ScanExport, ...]
    #: Patient Position (0018,5100) the scans were written in (see :data:`PATIENT_POSITIONS`)
    patient_position: str = "HFS"


@dataclass(frozen=True)
class CohortExport:
    """What :func:`export_cohort` wrote: its folder and one :class:`PatientExport` per patient."""

    out_dir: Path
    patients: tuple[PatientExport, ...]

    @property
    def n_scans(self) -> int:
        return sum(len(p.scans) for p in self.patients)


def export_dicom(
    patient_ds: xr.Dataset,
    out_dir: str | os.PathLike,
    *,
    patient_index: int = 0,
    injection_datetime: dt.datetime | None = None,
    patient_position: str = "HFS",
) -> PatientExport:
    """Write one virtual patient as DICOM (CT, NM, RTSTRUCT, SEG per time point) plus its ground truth.

    Args:
        patient_ds: a virtual patient as made by ``make_virtual_patient``: ``ct_hu`` (z, y, x) HU, ``density``
            (z, y, x) g/cm3, ``labels`` (z, y, x) int with ``attrs["names"]`` {int: name}, ``activity`` and
            ``activity_true`` (timepoint, z, y, x) Bq/mL, coordinate ``hours_post_injection`` (timepoint) h;
            attrs ``seed``, ``spacing_mm`` and ``origin_mm`` (z, y, x) mm, ``administered_activity_bq``, ``nuclide``
            and optionally ``sex``. Or a moved patient as made by ``move_patient``: ``ct_hu``, ``density`` and
            ``labels`` (timepoint, z, y, x), the anatomy of each scan, ``displacement_true`` (timepoint, component,
            z, y, x) mm, and ``activity_true_unmoved`` (timepoint, z, y, x) Bq/mL added by the caller: the unmoved
            patient's ``activity_true`` (``move_patient`` returns the moved one), for the ground truth.
        out_dir: the cohort folder; files go to ``out_dir/dicom/patient_{index:02d}/`` and
            ``out_dir/ground_truth/``.
        patient_index: the patient's number in the cohort; names its folder.
        injection_datetime: start of the injection; None derives a Monday morning in 2024 from the seed.
        patient_position: how the patient lay in the scanner, one of :data:`PATIENT_POSITIONS` (HFS head first
            supine, FFS feet first supine, HFP head first prone, FFP feet first prone). The anatomy keeps its patient
            coordinates; the CT, NM and SEG store it flipped as that position's scanner would (module docstring).

    Returns:
        A :class:`PatientExport` listing what was written.

    Raises:
        ValueError: the Dataset lacks a variable or attribute, holds values DICOM cannot carry (message names the
            patient and scan), or the patient position is not one of :data:`PATIENT_POSITIONS`; FileExistsError:
            the patient's DICOM folder is not empty (stale files of an earlier export would mix into the new series).
    """
    patient = _PatientContext.from_dataset(patient_ds, patient_index, injection_datetime, patient_position)
    out_dir = Path(out_dir)
    dicom_dir = out_dir / "dicom" / f"patient_{patient_index:02d}"
    _require_empty(dicom_dir)
    moving = patient.moved_labels is not None
    ct_hu = patient_ds["ct_hu"].values
    # a static patient's contours serve every scan; a moved patient's are traced per scan from its own labels
    contours = None if moving else _trace_contours(patient.labels, patient.label_names)
    segments = _segment_descriptions(patient.label_names, patient.where)
    scans = []
    for k, hours in enumerate(patient.hours):
        scan = _ScanContext(patient, k, hours)
        study_dir = dicom_dir / f"study_{k + 1}"
        ct_slices = _write_ct(scan, ct_hu[k] if moving else ct_hu, study_dir / "CT")
        nm_file = _write_nm(scan, patient_ds["activity"].isel(timepoint=k).values, study_dir / "NM" / "NM.dcm")
        scan_contours = _trace_contours(scan.labels, patient.label_names) if contours is None else contours
        rs_file = _write_rtstruct(scan, ct_slices, scan_contours, study_dir / "RTSTRUCT" / "RS.dcm")
        seg_file = _write_seg(scan, ct_slices, segments, study_dir / "SEG" / "SEG.dcm")
        scans.append(
            ScanExport(
                float(hours),
                scan.acquired,
                scan.study_uid,
                scan.frame_of_reference_uid,
                study_dir / "CT",
                nm_file,
                rs_file,
                seg_file,
            )
        )
    truth = _write_ground_truth(patient, patient_ds, scans, out_dir / "ground_truth")
    return PatientExport(
        patient_index,
        patient.seed,
        patient.identity.patient_id,
        patient.injection,
        dicom_dir,
        truth,
        tuple(scans),
        patient.layout.position,
    )


def export_cohort(
    out_dir: str | os.PathLike,
    n_patients: int = 12,
    seed: int = 0,
    grid="compact",
    spect: str = "fast",
    progress: bool = True,
    workers: int | None = None,
    motion: bool = False,
) -> CohortExport:
    """Generate and export a cohort of virtual patients like the published one.

    Half the patients (``n_patients // 2``, chosen from ``seed``) miss one of the four scans (which one is drawn
    from ``seed`` too), the others have all four of the generator's default hours (4, 24, 96, 168 h): 12 patients
    give 42 scans from day 0 to day 7, as in Li et al. (Med Phys 49:1216, 2022).
    Patient ``i`` is generated with seed ``SeedSequence([seed, i])`` and exported with :func:`export_dicom`.
    With ``motion`` it is first moved with ``move_patient(patient, seed=<the same patient seed>)`` at the default
    limits (rigid shift up to 15 mm, rotation up to 5 degrees, breathing-scale organ displacement up to 8 mm; the
    first scan is the reference): ``move_patient`` separates its random stream from the anatomy's by a salt, so
    the patient's one seed fixes anatomy, SPECT and motion together, and a patient's motion does not change with
    ``n_patients`` or its index.

    Args:
        out_dir: the cohort folder (layout in the module docstring).
        n_patients: number of virtual patients.
        seed: the cohort's seed.
        grid: the generator's grid, a name ("compact", "paper") or a Grid.
        spect: the SPECT model, "fast" or "pytomography".
        progress: show a progress bar over scans.
        workers: processes generating patients side by side; None uses one per CPU core (at most one per patient).
            Each holds one patient at a time, so memory grows with ``workers``, not with ``n_patients``.
        motion: move the patients between scans (above); their ground truth keeps the motion.

    Returns:
        A :class:`CohortExport` (patients in index order).
    """
    if n_patients < 1:
        raise ValueError(f"cohort export to {out_dir}: n_patients must be at least 1, got {n_patients}")
    out_dir = Path(out_dir)
    _require_empty(out_dir / "dicom")
    plans = cohort_plan(n_patients, seed)
    jobs = [
        (out_dir, index, patient_seed, hours, grid, spect, motion) for index, (patient_seed, hours) in enumerate(plans)
    ]
    workers = min(workers or os.cpu_count() or 1, n_patients)
    results = []
    with tqdm(
        total=sum(len(h) for _, h in plans), unit="scan", disable=not progress, desc=f"virtual patients -> {out_dir}"
    ) as bar:
        if workers == 1:
            for job in jobs:
                results.append(_generate_and_export(job))
                bar.update(len(results[-1].scans))
        else:
            import multiprocessing

            # spawn: workers must not inherit the parent's torch thread pool; one torch thread per core each.
            with ProcessPoolExecutor(
                workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_limit_threads,
                initargs=(max(1, (os.cpu_count() or 1) // workers),),
            ) as pool:
                for result in pool.map(_generate_and_export, jobs):
                    results.append(result)
                    bar.update(len(result.scans))
    return CohortExport(out_dir, tuple(results))


def cohort_plan(n_patients: int, seed: int) -> list[tuple[int, tuple[float, ...]]]:
    """Per patient of a cohort: its generator seed and its scan hours (a subset of the generator's default hours)."""
    from cohort_dosimetry.phantoms._virtual_patient import DEFAULT_HOURS

    rng = np.random.default_rng([seed, 0x5CA2])
    three_scans = set(rng.choice(n_patients, n_patients // 2, replace=False).tolist())
    plans = []
    for index in range(n_patients):
        hours = tuple(DEFAULT_HOURS)
        if index in three_scans:
            missed = int(rng.integers(len(hours)))
            hours = hours[:missed] + hours[missed + 1 :]
        plans.append((int(np.random.SeedSequence([seed, index]).generate_state(1)[0]), hours))
    return plans


def read_ground_truth(path: str | os.PathLike) -> xr.Dataset:
    """Read one patient's ground truth written by :func:`export_dicom` (loaded into memory).

    Returns:
        Dataset with ``activity_true`` (timepoint, z, y, x) Bq/mL, ``density`` (z, y, x) g/cm3, ``labels``
        (z, y, x) int with ``attrs["names"]`` {int: name}, coordinate ``hours_post_injection`` (timepoint) h, and
        attrs ``seed``, ``patient_id``, ``spacing_mm``, ``origin_mm`` (z, y, x), ``administered_activity_bq``,
        ``nuclide``, ``injection_datetime`` (ISO 8601) and per time point ``study_instance_uids``,
        ``frame_of_reference_uids`` and ``acquisition_datetimes``, to match the truth to ingested scans; attr
        ``moves`` says whether the patient moves between scans (False for ground truth written without the attr).

        A moving patient's (``moves`` True) ``labels`` and ``density`` are those of the reference time point (attr
        ``reference_timepoint``, where every other time point's motion starts), ``activity_true`` is what each scan
        imaged (moved with the anatomy), and the Dataset adds:

        * ``activity_true_unmoved`` (timepoint, z, y, x) Bq/mL: the activity of each time point in the reference
          anatomy (before the motion), to compare a registration's output with;
        * ``labels_moved`` (timepoint, z, y, x) int (``attrs["names"]``): each scan's own labels, those of its
          RTSTRUCT and SEG;
        * ``displacement_true`` (timepoint, component, z, y, x) float32 mm, ``component`` = "z", "y", "x": where each
          reference voxel centre lies at each time point (``F(p) - p``), rounded to 2^-10 mm;
        * the motion's parameters as ``move_patient`` returns them (``rigid_rotation``, ``rigid_translation_mm``,
          ``rotation_centre_mm``, ``rotation_deg``, ``shift_mm``, ``breathing_*`` with coordinate ``organ``,
          ``jacobian_min``, ``activity_scale``), so that ``motion_points`` maps any point exactly;
        * attrs ``motion_seed``, ``max_shift_mm``, ``max_rotation_deg``, ``organ_displacement_mm`` and
          ``reference_timepoint``.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"ground truth {path} does not exist")
    ds = xr.open_zarr(path, consolidated=False).load()
    for name in ("labels", "labels_moved"):
        if name in ds:
            ds[name].attrs["names"] = {int(k): v for k, v in ds[name].attrs["names"].items()}
    ds.attrs.setdefault("moves", False)
    return ds


# ---------------------------------------------------------------------------------------------------------------
# context shared by the objects of a patient / of a scan


@dataclass(frozen=True)
class _StoredLayout:
    """How a scanner stores the patient's (z, y, x) grid in one patient position (see :data:`PATIENT_POSITIONS`).

    ``signs`` (z, y, x): +1 where the stored (slice, row, column) index runs along +z, +y, +x of the patient, -1 where
    it runs against it.
    """

    position: str
    signs: tuple[int, int, int]

    @classmethod
    def of(cls, position: str, where: str) -> _StoredLayout:
        if position not in PATIENT_POSITIONS:
            raise ValueError(f"{where}: patient position {position!r} is not one of {', '.join(PATIENT_POSITIONS)}")
        sign_x, sign_y = PATIENT_POSITIONS[position]
        return cls(position, (sign_x * sign_y, sign_y, sign_x))

    @property
    def image_orientation(self) -> list[int]:
        """ImageOrientationPatient: row cosine then column cosine, each (x, y, z)."""
        _, sign_y, sign_x = self.signs
        return [sign_x, 0, 0, 0, sign_y, 0]

    def stored(self, array: np.ndarray) -> np.ndarray:
        """A (z, y, x) array in stored (slice, row, column) order (its own inverse)."""
        return np.flip(array, axis=tuple(axis for axis, sign in enumerate(self.signs) if sign < 0))

    def patient_index(self, axis: int, k: int, n: int) -> int:
        """The patient-order index along ``axis`` (0 = z, 1 = y, 2 = x) of stored index ``k`` of ``n``."""
        return k if self.signs[axis] > 0 else n - 1 - k


@dataclass(frozen=True)
class _PatientContext:
    seed: int
    where: str  # names the patient in error messages
    identity: SyntheticIdentity
    injection: dt.datetime
    administered_activity_bq: float
    nuclide: str
    half_life_s: float
    spacing_mm: tuple[float, ...]
    origin_mm: tuple[float, ...]
    labels: np.ndarray
    label_names: dict[int, str]
    hours: tuple[float, ...]
    spect_model: str
    layout: _StoredLayout
    #: a moved patient's labels per scan (timepoint, z, y, x); None for a static patient (``labels`` for every scan)
    moved_labels: np.ndarray | None = None
    #: a moved patient's reference time point (its ``labels`` and the truth's ``density`` are that time point's)
    reference: int = 0
    #: a moved patient's motion attrs (:data:`_MOTION_ATTRS`) as "name=value" strings, part of every UID key
    motion_key: tuple[str, ...] = ()
    #: the simulated SPECT acquisition's (views, seconds per view), attrs ``n_views`` and ``seconds_per_view``;
    #: None when the Dataset does not give both (the NM's Rotation Information Sequence is then empty: unknown)
    views: tuple[int, float] | None = None

    @classmethod
    def from_dataset(
        cls, ds: xr.Dataset, patient_index: int, injection: dt.datetime | None, patient_position: str = "HFS"
    ) -> _PatientContext:
        where = f"virtual patient {patient_index} (seed {ds.attrs.get('seed')})"
        layout = _StoredLayout.of(patient_position, where)
        missing = [v for v in ("ct_hu", "labels", "activity", "activity_true", "density") if v not in ds]
        missing += [
            a for a in ("seed", "spacing_mm", "origin_mm", "administered_activity_bq", "nuclide") if a not in ds.attrs
        ]
        if "hours_post_injection" not in ds.coords:
            missing.append("hours_post_injection")
        if missing:
            raise ValueError(f"{where}: Dataset lacks {', '.join(missing)}")
        moving = "timepoint" in ds["ct_hu"].dims
        if moving:
            missing = [v for v in ("displacement_true", "activity_true_unmoved") if v not in ds]
            if missing:
                raise ValueError(
                    f"{where}: a moved patient (ct_hu with a timepoint axis) lacks {', '.join(missing)} "
                    "(activity_true_unmoved: the unmoved patient's activity_true, (timepoint, z, y, x) Bq/mL)"
                )
            n_t = ds.sizes["timepoint"]
            for name in ("ct_hu", "labels", "density", "activity_true_unmoved"):
                if ds[name].dims != ("timepoint", "z", "y", "x"):
                    raise ValueError(
                        f"{where}: {name} of a moved patient must be (timepoint, z, y, x), got {ds[name].dims}"
                    )
            shape = ds["ct_hu"].shape[1:]
            if ds["displacement_true"].shape != (n_t, 3, *shape):
                raise ValueError(
                    f"{where}: displacement_true must be (timepoint, component, z, y, x) {(n_t, 3, *shape)}, "
                    f"got {ds['displacement_true'].dims} {ds['displacement_true'].shape}"
                )
            reference = int(ds.attrs.get("reference_timepoint", 0))
            if not 0 <= reference < n_t:
                raise ValueError(f"{where}: reference_timepoint {reference} outside 0..{n_t - 1}")
        else:
            shape = ds["ct_hu"].shape
            reference = 0
        for name in ("labels", "density"):
            if ds[name].shape != ds["ct_hu"].shape:
                raise ValueError(f"{where}: {name} has shape {ds[name].shape}, ct_hu has {ds['ct_hu'].shape}")
        for name in ("activity", "activity_true", *(["activity_true_unmoved"] if moving else [])):
            if ds[name].dims != ("timepoint", "z", "y", "x") or ds[name].shape[1:] != shape:
                raise ValueError(
                    f"{where}: {name} must be (timepoint, z, y, x) on the ct_hu grid {shape}, "
                    f"got {ds[name].dims} {ds[name].shape}"
                )
        hours = tuple(float(h) for h in ds["hours_post_injection"].values)
        if list(hours) != sorted(hours) or len(set(hours)) != len(hours) or hours[0] < 0:
            raise ValueError(f"{where}: hours_post_injection {hours} must be distinct, >= 0 and increasing")
        ct_hu = ds["ct_hu"].values
        if (
            not np.isfinite(ct_hu).all()
            or ct_hu.min() < -32768 + _CT_RESCALE_INTERCEPT
            or ct_hu.max() > 32767 + _CT_RESCALE_INTERCEPT
        ):
            raise ValueError(
                f"{where}: ct_hu spans {ct_hu.min()}..{ct_hu.max()} HU, beyond int16 storage "
                f"with intercept {_CT_RESCALE_INTERCEPT}"
            )
        for k, h in enumerate(hours):
            activity = ds["activity"].isel(timepoint=k).values
            if not np.isfinite(activity).all() or activity.min() < 0:
                raise ValueError(
                    f"{where}, scan {k + 1} ({h:g} h): activity must be finite and >= 0 Bq/mL "
                    f"(a reconstructed SPECT in BQML), got min {activity.min():.4g}"
                )
        names = {int(k): str(v) for k, v in ds["labels"].attrs.get("names", {}).items()}
        labels = np.asarray(ds["labels"].values)
        unnamed = sorted(set(np.unique(labels).tolist()) - set(names) - {0})
        if unnamed:
            raise ValueError(f"{where}: label values {unnamed} have no name in labels.attrs['names']")
        reference_labels = labels[reference] if moving else labels
        seed = int(ds.attrs["seed"])
        if injection is None:
            injection = _default_injection_datetime(seed)
        views = None
        if "n_views" in ds.attrs and "seconds_per_view" in ds.attrs:
            views = (int(ds.attrs["n_views"]), float(ds.attrs["seconds_per_view"]))
            if not (views[0] > 0 and np.isfinite(views[1]) and views[1] > 0):
                raise ValueError(f"{where}: n_views and seconds_per_view must be positive, got {views}")
        nuclide_name = str(ds.attrs["nuclide"])
        if nuclide_name not in _RADIONUCLIDE_CODES:
            raise ValueError(
                f"{where}: no DICOM radionuclide code for {nuclide_name!r} (known: {', '.join(_RADIONUCLIDE_CODES)})"
            )
        return cls(
            seed=seed,
            where=where,
            identity=synthetic_identity(seed, ds.attrs.get("sex")),
            injection=injection.replace(microsecond=0),
            administered_activity_bq=float(ds.attrs["administered_activity_bq"]),
            nuclide=nuclide_name,
            half_life_s=float(nuclide(nuclide_name).half_life_s),
            spacing_mm=tuple(float(s) for s in ds.attrs["spacing_mm"]),
            origin_mm=tuple(float(o) for o in ds.attrs["origin_mm"]),
            labels=reference_labels,
            label_names={k: names[k] for k in sorted(names)},
            hours=hours,
            spect_model=str(ds.attrs.get("spect_model", "")),
            layout=layout,
            moved_labels=labels if moving else None,
            reference=reference,
            motion_key=tuple(f"{a}={ds.attrs.get(a)}" for a in _MOTION_ATTRS) if moving else (),
            views=views,
        )

    def uid(self, *parts) -> str:
        """A UID determined by the patient's seed, grid, SPECT model, patient position and motion and by ``parts``
        (what the UID identifies); head first supine and a static patient add nothing to the key."""
        key = [
            "cohort-dosimetry",
            f"seed={self.seed}",
            f"shape={self.labels.shape}",
            f"spacing={self.spacing_mm}",
            f"origin={self.origin_mm}",
            f"spect={self.spect_model}",
        ]
        if self.layout.position != "HFS":
            key.append(f"position={self.layout.position}")
        if self.moved_labels is not None:
            key.append(f"motion={self.motion_key}")
        return generate_uid(entropy_srcs=key + [str(p) for p in parts])

    def first_voxel_xyz(self, k: int) -> tuple[float, float, float]:
        """ImagePositionPatient (x, y, z) mm of stored slice ``k``: the centre of its first stored voxel."""
        nz, ny, nx = self.labels.shape
        dz, dy, dx = self.spacing_mm
        z0, y0, x0 = self.origin_mm
        _, sign_y, sign_x = self.layout.signs
        return (
            x0 if sign_x > 0 else x0 + (nx - 1) * dx,
            y0 if sign_y > 0 else y0 + (ny - 1) * dy,
            z0 + self.layout.patient_index(0, k, nz) * dz,
        )


class _ScanContext:
    """One time point: its datetimes and the UIDs its objects share."""

    def __init__(self, patient: _PatientContext, k: int, hours: float):
        self.patient = patient
        self.number = k + 1
        #: this scan's labels (z, y, x): a moved patient's own at this time point, else the patient's
        self.labels = patient.labels if patient.moved_labels is None else patient.moved_labels[k]
        self.hours = hours
        self.acquired = patient.injection + dt.timedelta(seconds=round(hours * 3600.0))
        self.study_uid = patient.uid("study", hours)
        self.frame_of_reference_uid = patient.uid("frame-of-reference", hours)
        self.where = f"{patient.where}, scan {self.number} ({hours:g} h)"

    def uid(self, *parts) -> str:
        return self.patient.uid(self.hours, *parts)

    def new_file(
        self,
        sop_class_uid: str,
        sop_instance_uid: str,
        modality: str,
        series_uid: str,
        series_number: int,
        series_description: str,
    ) -> Dataset:
        """A dataset with file meta, SOP Common, Patient, General Study, General Series and Equipment filled in."""
        p, ident = self.patient, self.patient.identity
        meta = FileMetaDataset()
        # pydicom hints these as UID; assigning a str is supported (the UI element value becomes a UID)
        meta.MediaStorageSOPClassUID = sop_class_uid  # type: ignore[assignment]
        meta.MediaStorageSOPInstanceUID = sop_instance_uid  # type: ignore[assignment]
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
        ds = Dataset()
        ds.file_meta = meta
        ds.SpecificCharacterSet = "ISO_IR 100"
        ds.SOPClassUID = sop_class_uid
        ds.SOPInstanceUID = sop_instance_uid
        ds.InstanceCreationDate, ds.InstanceCreationTime = _da(self.acquired), _tm(self.acquired)
        ds.PatientName = ident.patient_name
        ds.PatientID = ident.patient_id
        ds.PatientBirthDate = _da(ident.birth_date)
        ds.PatientSex = ident.sex
        ds.PatientAge = f"{ident.age_at(self.acquired.date()):03d}Y"
        ds.PatientWeight = _ds(ident.weight_kg)
        ds.StudyInstanceUID = self.study_uid
        ds.StudyDate, ds.StudyTime = _da(self.acquired), _tm(self.acquired)
        ds.StudyID = str(self.number)
        ds.AccessionNumber = f"A{ident.patient_id[1:]}{self.number}"
        ds.ReferringPhysicianName = ""
        ds.StudyDescription = f"{p.nuclide} therapy SPECT/CT {self.hours:g} h p.i."
        ds.Modality = modality
        ds.SeriesInstanceUID = series_uid
        ds.SeriesNumber = series_number
        ds.SeriesDate, ds.SeriesTime = _da(self.acquired), _tm(self.acquired)
        ds.SeriesDescription = series_description
        ds.Manufacturer = _MANUFACTURER
        ds.ManufacturerModelName = SYNTHETIC_MODEL_NAME
        ds.SoftwareVersions = __version__
        ds.DeviceSerialNumber = "0"
        return ds


# ---------------------------------------------------------------------------------------------------------------
# CT


def _write_ct(scan: _ScanContext, ct_hu: np.ndarray, folder: Path) -> list[Dataset]:
    """Write ``ct_hu`` (z, y, x) HU as one CT Image Storage file per z slice, in the patient position's stored order;
    returns the slice datasets (stored slice order, InstanceNumber 1..)."""
    p = scan.patient
    stored = np.rint(np.asarray(ct_hu, dtype=np.float64) - _CT_RESCALE_INTERCEPT).astype(np.int16)
    stored = p.layout.stored(stored)
    folder.mkdir(parents=True, exist_ok=True)
    series_uid = scan.uid("ct-series")
    dz, dy, dx = p.spacing_mm
    slices = []
    for k in range(stored.shape[0]):
        ds = scan.new_file(CTImageStorage, scan.uid("ct-image", k), "CT", series_uid, 2, "CT low dose, attenuation map")
        ds.PatientPosition = p.layout.position
        ds.BodyPartExamined = "ABDOMEN"
        ds.FrameOfReferenceUID = scan.frame_of_reference_uid
        ds.PositionReferenceIndicator = ""
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.InstanceNumber = k + 1
        ds.AcquisitionNumber = 1
        ds.AcquisitionDate, ds.AcquisitionTime = _da(scan.acquired), _tm(scan.acquired)
        ds.AcquisitionDateTime = _dt(scan.acquired)
        ds.ContentDate, ds.ContentTime = _da(scan.acquired), _tm(scan.acquired)
        position_xyz = p.first_voxel_xyz(k)
        ds.ImagePositionPatient = _ds_list(position_xyz)
        ds.ImageOrientationPatient = p.layout.image_orientation
        ds.PixelSpacing = _ds_list((dy, dx))
        ds.SliceThickness = _ds(dz)
        ds.SliceLocation = _ds(position_xyz[2])  # the table position: patient z, as scanners write it
        ds.KVP = 120
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows, ds.Columns = stored.shape[1], stored.shape[2]
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleIntercept = _CT_RESCALE_INTERCEPT
        ds.RescaleSlope = 1
        ds.RescaleType = "HU"
        ds.WindowCenter, ds.WindowWidth = 40, 400  # soft-tissue window
        ds.PixelData = stored[k].tobytes()
        ds.save_as(folder / f"CT_{k + 1:04d}.dcm", enforce_file_format=True)
        slices.append(ds)
    return slices


# ---------------------------------------------------------------------------------------------------------------
# NM (reconstructed SPECT)


def _write_nm(scan: _ScanContext, activity: np.ndarray, path: Path) -> Path:
    """Write ``activity`` (z, y, x) Bq/mL as one NM Image Storage multi-frame file (frame k = stored slice k, the
    same slice as CT InstanceNumber k + 1)."""
    p = scan.patient
    activity = np.asarray(activity, dtype=np.float64)
    # One slope for the whole volume (the NM Image Module has a single rescale); the DS string written to the file
    # is the slope used to quantise, so the reader's product reproduces activity to within slope / 2.
    slope = float(_ds(max(activity.max(), 1e-6) / _NM_MAX_STORED))
    stored = p.layout.stored(np.minimum(np.rint(activity / slope), _NM_MAX_STORED).astype(np.uint16))
    nz, ny, nx = stored.shape
    dz, dy, dx = p.spacing_mm
    head_first = p.layout.position.startswith("HF")
    supine = p.layout.position.endswith("S")

    ds = scan.new_file(
        NuclearMedicineImageStorage,
        scan.uid("nm-image"),
        "NM",
        scan.uid("nm-series"),
        3,
        f"SPECT {p.nuclide} 208 keV OSEM Bq/mL",
    )
    ds.BodyPartExamined = "ABDOMEN"
    ds.FrameOfReferenceUID = scan.frame_of_reference_uid
    ds.PositionReferenceIndicator = ""
    ds.ImageType = ["ORIGINAL", "PRIMARY", "RECON TOMO", "EMISSION"]
    ds.InstanceNumber = 1
    ds.AcquisitionDate, ds.AcquisitionTime = _da(scan.acquired), _tm(scan.acquired)
    ds.AcquisitionDateTime = _dt(scan.acquired)
    ds.ContentDate, ds.ContentTime = _da(scan.acquired), _tm(scan.acquired)
    ds.PatientOrientationCodeSequence = [_code_item(codes.cid19.Recumbent)]
    # NM states the patient position by codes (PS3.3 C.8.4.6), not by Patient Position (0018,5100).
    ds.PatientOrientationCodeSequence[0].PatientOrientationModifierCodeSequence = [
        _code_item(codes.cid20.Supine if supine else codes.cid20.Prone)
    ]
    ds.PatientGantryRelationshipCodeSequence = [
        _code_item(codes.cid21.Headfirst if head_first else codes.cid21.FeetFirst)
    ]
    ds.AcquisitionContextSequence = []
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = ny, nx
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.PixelSpacing = _ds_list((dy, dx))
    ds.NumberOfFrames = nz
    ds.FrameIncrementPointer = 0x00540080  # Slice Vector
    ds.SliceVector = list(range(1, nz + 1))
    ds.NumberOfSlices = nz
    ds.SliceThickness = _ds(dz)
    ds.SpacingBetweenSlices = _ds(dz)
    ds.CorrectedImage = ["UNIF", "COR", "ATTN", "SCAT"]
    ds.CountsAccumulated = None  # type 2: the generator reports no projection counts here
    ds.Units = "BQML"
    ds.RescaleIntercept = 0
    ds.RescaleSlope = _ds(slope)
    ds.RealWorldValueMappingSequence = [
        hd.pm.RealWorldValueMapping(
            lut_label="BQML",
            lut_explanation="activity concentration",
            unit=codes.UCUM.BecquerelsPerMilliliter,
            value_range=(0, _NM_MAX_STORED),
            slope=slope,
            intercept=0.0,
        )
    ]

    window = Dataset()
    window.EnergyWindowRangeSequence = [Dataset()]
    window.EnergyWindowRangeSequence[0].EnergyWindowLowerLimit = _ds(_ENERGY_WINDOW_KEV[0])
    window.EnergyWindowRangeSequence[0].EnergyWindowUpperLimit = _ds(_ENERGY_WINDOW_KEV[1])
    window.EnergyWindowName = "Lu177 208keV 20%"
    ds.EnergyWindowInformationSequence = [window]
    ds.NumberOfEnergyWindows = 1

    pharm = Dataset()
    pharm.RadionuclideCodeSequence = [_code_item(_RADIONUCLIDE_CODES[p.nuclide])]
    pharm.Radiopharmaceutical = f"{p.nuclide} DOTATATE"
    pharm.RadiopharmaceuticalCodeSequence = [_code_item(codes.SCT.Lutetium177DOTATATE)]
    pharm.RadiopharmaceuticalRoute = "Intravenous"
    pharm.AdministrationRouteCodeSequence = [_code_item(codes.SCT.IntravenousRoute)]
    pharm.RadiopharmaceuticalStartTime = _tm(p.injection)
    pharm.RadiopharmaceuticalStartDateTime = _dt(p.injection)
    pharm.RadionuclideTotalDose = _ds(p.administered_activity_bq)
    pharm.RadionuclideHalfLife = _ds(p.half_life_s)
    ds.RadiopharmaceuticalInformationSequence = [pharm]

    detector = Dataset()
    detector.CollimatorGridName = "MEGP"
    detector.CollimatorType = "PARA"
    detector.FocalDistance = None
    detector.XFocusCenter = None
    detector.YFocusCenter = None
    detector.ImagePositionPatient = _ds_list(p.first_voxel_xyz(0))
    detector.ImageOrientationPatient = p.layout.image_orientation
    ds.DetectorInformationSequence = [detector]
    ds.NumberOfDetectors = 1

    # The simulated acquisition (NM Tomo Acquisition Module, PS3.3 C.8.4.12): n_views views over 360 degrees,
    # seconds_per_view each. The two heads' views are one interleaved set, as a reconstruction records them (Number
    # of Detectors 1, C.8.4.8.1.3), so views x duration is the projection time that, times the activity and one
    # head's sensitivity, gave the simulated counts. A Dataset that does not say: an empty sequence (Type 2, unknown).
    rotations = []
    if p.views is not None:
        n_views, seconds_per_view = p.views
        rotation = Dataset()
        rotation.StartAngle = 0
        rotation.AngularStep = _ds(360.0 / n_views)
        rotation.RotationDirection = "CW"
        rotation.ScanArc = 360
        rotation.ActualFrameDuration = round(seconds_per_view * 1000.0)  # ms per view
        rotation.NumberOfFramesInRotation = n_views
        rotations.append(rotation)
    ds.RotationInformationSequence = rotations
    ds.NumberOfRotations = 1
    ds.TypeOfDetectorMotion = "STEP AND SHOOT"

    ds.PixelData = stored.tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


# ---------------------------------------------------------------------------------------------------------------
# VOIs: RTSTRUCT and SEG


def _trace_contours(labels: np.ndarray, names: dict[int, str]) -> dict[int, list[list[np.ndarray]]]:
    """Per label present in ``labels`` (z, y, x): per z slice, its closed contours as (n, 2) arrays of (row, col)
    voxel-index coordinates, running through the midpoints between voxel centres (no point repeated)."""
    present = set(np.unique(labels).tolist())
    contours = {}
    for value in names:
        if value not in present:
            continue
        mask = np.pad(labels == value, ((0, 0), (1, 1), (1, 1)))  # zero border: every contour closes
        per_slice = []
        for k in range(mask.shape[0]):
            polygons = []
            if mask[k].any():
                gen = contour_generator(z=mask[k].astype(np.float64), line_type=LineType.Separate)
                for line in cast("list[np.ndarray]", gen.lines(0.5)):  # LineType.Separate: a list of (n, 2) arrays
                    rc = _drop_collinear(line[:-1, ::-1] - 1.0)  # (x, y) of the padded slice -> (row, col)
                    polygons.append(rc)
            per_slice.append(polygons)
        contours[value] = per_slice
    return contours


def _drop_collinear(points: np.ndarray) -> np.ndarray:
    """Remove vertices of a closed polygon (n, 2) that lie on the straight line through their neighbours."""
    prev, nxt = np.roll(points, 1, axis=0), np.roll(points, -1, axis=0)
    a, b = points - prev, nxt - points
    return points[a[:, 0] * b[:, 1] - a[:, 1] * b[:, 0] != 0]


def _write_rtstruct(scan: _ScanContext, ct_slices: list[Dataset], contours: dict, path: Path) -> Path:
    """Write the VOIs as an RT Structure Set referencing the CT slices; ROI number = label value."""
    p = scan.patient
    dz, dy, dx = p.spacing_mm
    z0, y0, x0 = p.origin_mm
    ct_series_uid = ct_slices[0].SeriesInstanceUID
    ds = scan.new_file(
        RTStructureSetStorage,
        scan.uid("rtstruct"),
        "RTSTRUCT",
        scan.uid("rtstruct-series"),
        4,
        "VOIs of the virtual patient",
    )
    ds.FrameOfReferenceUID = scan.frame_of_reference_uid
    ds.PositionReferenceIndicator = ""
    ds.InstanceNumber = 1
    ds.OperatorsName = ""
    ds.StructureSetLabel = "VOIs"
    ds.StructureSetName = "virtual patient labels"
    ds.StructureSetDate, ds.StructureSetTime = _da(scan.acquired), _tm(scan.acquired)

    def image_ref(ct: Dataset) -> Dataset:
        item = Dataset()
        item.ReferencedSOPClassUID = ct.SOPClassUID
        item.ReferencedSOPInstanceUID = ct.SOPInstanceUID
        return item

    series = Dataset()
    series.SeriesInstanceUID = ct_series_uid
    series.ContourImageSequence = [image_ref(ct) for ct in ct_slices]
    study = Dataset()
    study.ReferencedSOPClassUID = _DETACHED_STUDY_MANAGEMENT
    study.ReferencedSOPInstanceUID = scan.study_uid
    study.RTReferencedSeriesSequence = [series]
    frame = Dataset()
    frame.FrameOfReferenceUID = scan.frame_of_reference_uid
    frame.RTReferencedStudySequence = [study]
    ds.ReferencedFrameOfReferenceSequence = [frame]

    rois, roi_contours, observations = [], [], []
    for value, per_slice in contours.items():
        roi = Dataset()
        roi.ROINumber = value
        roi.ReferencedFrameOfReferenceUID = scan.frame_of_reference_uid
        roi.ROIName = p.label_names[value]
        roi.ROIGenerationAlgorithm = "AUTOMATIC"
        rois.append(roi)
        items = []
        for k, polygons in enumerate(per_slice):  # k: patient slice (z); the CT file is its stored slice
            for rc in polygons:
                item = Dataset()
                item.ContourImageSequence = [image_ref(ct_slices[p.layout.patient_index(0, k, len(ct_slices))])]
                item.ContourGeometricType = "CLOSED_PLANAR"
                item.NumberOfContourPoints = len(rc)
                xyz = np.column_stack([x0 + rc[:, 1] * dx, y0 + rc[:, 0] * dy, np.full(len(rc), z0 + k * dz)])
                item.ContourData = _ds_list(xyz.ravel())
                items.append(item)
        roi_contour = Dataset()
        roi_contour.ReferencedROINumber = value
        roi_contour.ContourSequence = items
        roi_contours.append(roi_contour)
        obs = Dataset()
        obs.ObservationNumber = value
        obs.ReferencedROINumber = value
        obs.RTROIInterpretedType = "GTV" if p.label_names[value].startswith("lesion") else "ORGAN"
        obs.ROIInterpreter = ""
        observations.append(obs)
    ds.StructureSetROISequence = rois
    ds.ROIContourSequence = roi_contours
    ds.RTROIObservationsSequence = observations
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def _segment_descriptions(names: dict[int, str], where: str) -> dict[int, str]:
    """Per label: the VOI name its SEG segment gets (codes: :func:`cohort_dosimetry.vocabulary.snomed_codes`); every
    name must be a virtual patient's VOI (organs, vertebra_L2-L5, lesion_k)."""
    for value, name in names.items():
        try:
            label_of(name)
        except ValueError as err:
            raise ValueError(f"{where}: label {value}: {err}") from None
    return dict(names)


def _write_seg(scan: _ScanContext, ct_slices: list[Dataset], segments: dict, path: Path) -> Path:
    """Write the label map as a BINARY DICOM SEG (highdicom) on the CT slices, one segment per label present,
    numbered 1.. in ascending label value. Frame k is CT slice ``ct_slices[k]`` in its stored layout; highdicom
    takes each frame's plane position and orientation from its CT slice."""
    labels = scan.patient.layout.stored(scan.labels)
    present = [v for v in segments if (labels == v).any()]
    segment_map = np.zeros(labels.shape, dtype=np.uint16)
    # The labels are the phantom's definition, drawn from geometric shapes; CID 7162 has no "synthetic phantom"
    # family, morphological operations is the closest baseline one.
    algorithm = hd.AlgorithmIdentificationSequence(
        name="cohort-dosimetry virtual patient", family=codes.cid7162.MorphologicalOperations, version=__version__
    )
    descriptions = []
    for number, value in enumerate(present, start=1):
        segment_map[labels == value] = number
        description = segment_description(number, segments[value], algorithm)
        descriptions.append(description)
    seg = hd.seg.Segmentation(
        source_images=ct_slices,
        pixel_array=segment_map,
        segmentation_type="BINARY",
        segment_descriptions=descriptions,
        series_instance_uid=scan.uid("seg-series"),
        series_number=5,
        sop_instance_uid=scan.uid("seg"),
        instance_number=1,
        manufacturer=_MANUFACTURER,
        manufacturer_model_name="cohort_dosimetry.phantoms",
        software_versions=__version__,
        device_serial_number="0",
        content_label="VOIS",
        content_description="VOIs of the virtual patient",
    )
    seg.SeriesDescription = "VOIs of the virtual patient"
    path.parent.mkdir(parents=True, exist_ok=True)
    seg.save_as(path, enforce_file_format=True)
    return path


# ---------------------------------------------------------------------------------------------------------------
# ground truth


def _write_ground_truth(patient: _PatientContext, ds: xr.Dataset, scans: list[ScanExport], folder: Path) -> Path:
    """Write activity_true, density and labels (+ hours, ids and UIDs to match scans; a moved patient's motion) as
    Zarr v3."""
    names = {str(k): v for k, v in patient.label_names.items()}
    moving = patient.moved_labels is not None
    density = ds["density"].values[patient.reference] if moving else ds["density"].values
    truth = xr.Dataset(
        {
            "activity_true": (
                ("timepoint", "z", "y", "x"),
                ds["activity_true"].values.astype(np.float32),
                {"units": "Bq/mL"},
            ),
            "density": (("z", "y", "x"), density.astype(np.float32), {"units": "g/cm3"}),
            "labels": (("z", "y", "x"), patient.labels, {"names": names}),
        },
        coords={"hours_post_injection": ("timepoint", np.asarray(patient.hours), {"units": "h"})},
        attrs={
            "description": "ground truth of a synthetic virtual patient (not patient data)",
            "seed": patient.seed,
            "patient_id": patient.identity.patient_id,
            "spacing_mm": list(patient.spacing_mm),
            "origin_mm": list(patient.origin_mm),
            "administered_activity_bq": patient.administered_activity_bq,
            "nuclide": patient.nuclide,
            "injection_datetime": patient.injection.isoformat(),
            "study_instance_uids": [s.study_instance_uid for s in scans],
            "frame_of_reference_uids": [s.frame_of_reference_uid for s in scans],
            "acquisition_datetimes": [s.acquisition_datetime.isoformat() for s in scans],
        },
    )
    path = folder / f"{patient.identity.patient_id}.zarr"
    folder.mkdir(parents=True, exist_ok=True)
    shape = patient.labels.shape
    encoding = {"activity_true": {"chunks": (1, *shape)}}
    if moving:
        truth = _with_motion_truth(truth, patient, ds, names)
        for name in ("activity_true_unmoved", "labels_moved"):
            encoding[name] = {"chunks": (1, *shape)}
        encoding["displacement_true"] = {"chunks": (1, 1, *shape)}
    truth.to_zarr(path, mode="w", zarr_format=3, consolidated=False, encoding=encoding)
    return path


def _with_motion_truth(truth: xr.Dataset, patient: _PatientContext, ds: xr.Dataset, names: dict) -> xr.Dataset:
    """``truth`` plus a moved patient's motion: unmoved activity, labels per scan, true displacement (rounded to
    :data:`_DISPLACEMENT_STEP_MM`), the motion's parameters and attrs (see :func:`read_ground_truth`)."""
    assert patient.moved_labels is not None
    displacement = np.round(ds["displacement_true"].values / _DISPLACEMENT_STEP_MM) * _DISPLACEMENT_STEP_MM
    data: dict[str, Any] = {
        "activity_true_unmoved": (
            ("timepoint", "z", "y", "x"),
            ds["activity_true_unmoved"].values.astype(np.float32),
            {"units": "Bq/mL", "long_name": "activity_true before the motion, in the reference anatomy"},
        ),
        "labels_moved": (
            ("timepoint", "z", "y", "x"),
            patient.moved_labels,
            {"names": names, "long_name": "labels of each scan (moved anatomy)"},
        ),
        "displacement_true": (
            ("timepoint", "component", "z", "y", "x"),
            displacement.astype(np.float32),
            {
                "units": "mm",
                "long_name": "true motion F(p) - p at the reference voxel centres",
                "rounding_mm": _DISPLACEMENT_STEP_MM,
            },
        ),
    }
    for name in _MOTION_PARAMETERS:
        if name in ds:
            data[name] = (ds[name].dims, ds[name].values, dict(ds[name].attrs))
    coords = {"component": ("component", np.array(["z", "y", "x"], dtype=object))}
    if "organ" in ds.coords:  # variable-length strings: a Zarr v3 data type with a specification
        coords["organ"] = ("organ", np.asarray(ds["organ"].values, dtype=object))
    attrs = {"moves": True, **{a: ds.attrs[a] for a in _MOTION_ATTRS if a in ds.attrs}}
    attrs["reference_timepoint"] = patient.reference
    return truth.assign(data).assign_coords(coords).assign_attrs(attrs)


# ---------------------------------------------------------------------------------------------------------------
# cohort workers and small helpers


def _generate_and_export(job) -> PatientExport:
    out_dir, index, patient_seed, hours, grid, spect, motion = job
    from cohort_dosimetry.phantoms._virtual_patient import make_virtual_patient

    patient_ds = make_virtual_patient(patient_seed, grid=grid, hours=hours, spect=spect)
    if motion:
        from cohort_dosimetry.phantoms._motion import move_patient

        unmoved = patient_ds["activity_true"]
        patient_ds = move_patient(patient_ds, seed=patient_seed)  # the patient's own seed (export_cohort)
        patient_ds["activity_true_unmoved"] = unmoved
    return export_dicom(patient_ds, out_dir, patient_index=index)


def _require_empty(folder: Path) -> None:
    if folder.exists() and any(folder.iterdir()):
        raise FileExistsError(f"{folder} already holds an export: export into an empty folder")


def _limit_threads(n_threads: int) -> None:
    import torch

    torch.set_num_threads(n_threads)


def _default_injection_datetime(seed: int) -> dt.datetime:
    """A Monday morning in 2024 from the seed: the 24 h, 96 h and 168 h scans then fall on working days."""
    rng = np.random.default_rng([seed, 0x1DA7])
    monday = dt.datetime(2024, 1, 1) + dt.timedelta(weeks=int(rng.integers(52)))  # 2024-01-01 is a Monday
    return monday + dt.timedelta(hours=8, minutes=int(rng.integers(0, 180)))


def _code_item(code) -> Dataset:
    item = Dataset()
    item.CodeValue = code.value
    item.CodingSchemeDesignator = code.scheme_designator
    item.CodeMeaning = code.meaning
    return item


def _ds(value: float) -> str:
    """A number as DICOM DS text (at most 16 characters, 10 significant digits)."""
    return f"{float(value):.10g}"


def _ds_list(values) -> list[str]:
    return [f"{float(v):.10g}" for v in values]


def _da(when: dt.date | dt.datetime) -> str:
    return when.strftime("%Y%m%d")


def _tm(when: dt.datetime) -> str:
    return when.strftime("%H%M%S")


def _dt(when: dt.datetime) -> str:
    return when.strftime("%Y%m%d%H%M%S")
