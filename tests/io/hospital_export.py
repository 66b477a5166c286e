"""A hospital's PACS export of a small Lu-177 DOTATATE cohort, built from virtual patients (no patient data).

Our own exporter (:func:`cohort_dosimetry.phantoms.export_dicom`) writes tidy files; a hospital folder is not tidy.
:func:`build_hospital_export` takes tiny virtual patients through that exporter and then reshapes the files the way
a clinical export arrives:

- contours come as one RTSTRUCT per study written by a third-party tool (rt-utils), with clinical names (TG-263 style
  ``Kidney_L``, ``GTV_1``, ``External``; another patient ``Kidney_Left``, ``Lesion 1``, ``BODY``) and overlapping as
  clinical contours do (the liver contour holds its lesion, External holds everything), plus a ROI outside our
  vocabulary (``Bowel_Bag``); there is no SEG;
- patient A was treated in two cycles 8 weeks apart (3 + 2 scans, hours counted from each cycle's injection);
- one CT is JPEG Lossless (process 14 SV1, dcmtk's ``dcmcjpeg +e1``; JPEG-LS lossless where dcmtk is absent);
- one SPECT is decay corrected to the administration (DecayCorrection ADMIN, DecayFactor), one is a filtered
  reconstruction with negative voxels stored as signed integers, none carries a Real World Value Mapping;
- patient C's study is a Tc-99m bone scan (a foreign nuclide);
- a CT slice is duplicated in another folder, and a copy of one SPECT file is cut off in its pixel data;
- everything arrives in two deliveries: part 1 holds three studies, part 2 the whole folder (part 1 again included).

Every SPECT's truth is what the exporter wrote, before any reshaping: its total activity (Bq) at the acquisition, its
patient, cycle and hours after its own cycle's injection.
"""

from __future__ import annotations

import datetime as dt
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
import xarray as xr

from cohort_dosimetry.phantoms import export_dicom

LU177_HALF_LIFE_S = 6.647 * 86400.0  # ICRP-107
TC99M_HALF_LIFE_S = 6.0067 * 3600.0  # ICRP-107
SHAPE = (14, 40, 48)  # (z, y, x)
SPACING_MM = (4.0, 4.0, 4.0)
ORIGIN_MM = (-30.0, -80.0, -96.0)
CYCLE_1 = dt.datetime(2024, 3, 4, 9, 30)
CYCLE_2 = CYCLE_1 + dt.timedelta(weeks=8)


@dataclass
class SpectTruth:
    """What one exported SPECT series is: its patient, cycle, hours after that cycle's injection, total activity."""

    patient_id: str
    cycle: int
    hours: float
    acquisition: dt.datetime
    total_activity_bq: float
    delivered_in_part_1: bool


@dataclass
class HospitalExport:
    part_1: Path
    part_2: Path
    good: list[SpectTruth]
    #: ROI names as written per patient id -> the name the statistics must carry
    roi_names: dict[str, dict[str, str]]
    #: file names of the copies that must be reported, not used
    duplicate_file: str = ""
    broken_file: str = ""
    foreign_nuclide_patient: str = ""
    negative_voxels: int = 0
    notes: list[str] = field(default_factory=list)


def tiny_virtual_patient(seed: int, hours, scale: float = 1.0) -> xr.Dataset:
    """A small virtual patient of the form ``make_virtual_patient`` returns: body with liver (holding lesion_1),
    kidneys, spleen and a bowel region, activity decaying with organ-specific half-lives."""
    z, y, x = np.meshgrid(*(np.arange(n, dtype=float) for n in SHAPE), indexing="ij")
    labels = np.zeros(SHAPE, dtype=np.int16)
    labels[((y - 20) / 17) ** 2 + ((x - 24) / 22) ** 2 <= 1] = 1  # body
    labels[(z >= 2) & (z <= 11) & (((y - 16) / 7) ** 2 + ((x - 14) / 8) ** 2 <= 1)] = 4  # liver (patient right)
    labels[(z >= 4) & (z <= 8) & ((y - 16) ** 2 + (x - 13) ** 2 <= 6.5)] = 101  # lesion_1 inside the liver
    labels[(z >= 3) & (z <= 10) & (((y - 28) / 3.5) ** 2 + ((x - 36) / 3) ** 2 <= 1)] = 5  # kidney_left
    labels[(z >= 3) & (z <= 10) & (((y - 28) / 3.5) ** 2 + ((x - 12) / 3) ** 2 <= 1)] = 6  # kidney_right
    labels[(z >= 4) & (z <= 10) & (((y - 18) / 4) ** 2 + ((x - 37) / 3.5) ** 2 <= 1)] = 7  # spleen
    names = {1: "body", 4: "liver", 5: "kidney_left", 6: "kidney_right", 7: "spleen", 101: "lesion_1"}
    hu_of = {0: -1000.0, 1: 10.0, 4: 60.0, 5: 35.0, 6: 35.0, 7: 45.0, 101: 50.0}
    ct_hu = np.vectorize(hu_of.get)(labels).astype(np.float32)
    uptake = {0: 0.0, 1: 0.5, 4: 4.0, 5: 12.0, 6: 11.0, 7: 8.0, 101: 60.0}
    half_life_h = {0: 1.0, 1: 30.0, 4: 70.0, 5: 50.0, 6: 50.0, 7: 65.0, 101: 110.0}
    hours = np.asarray(hours, dtype=float)
    base = np.vectorize(uptake.get)(labels)
    t_half = np.vectorize(half_life_h.get)(labels)
    activity = scale * 1.0e5 * base[None] * np.exp(-np.log(2) * hours[:, None, None, None] / t_half[None])
    activity = activity.astype(np.float32)
    return xr.Dataset(
        {
            "ct_hu": (("z", "y", "x"), ct_hu, {"units": "HU"}),
            "density": (
                ("z", "y", "x"),
                np.clip(1.0 + ct_hu / 1000.0, 0.001, None).astype(np.float32),
                {"units": "g/cm3"},
            ),
            "labels": (("z", "y", "x"), labels, {"names": names}),
            "activity": (("timepoint", "z", "y", "x"), activity, {"units": "Bq/mL"}),
            "activity_true": (("timepoint", "z", "y", "x"), activity, {"units": "Bq/mL"}),
        },
        coords={"timepoint": np.arange(len(hours)), "hours_post_injection": ("timepoint", hours)},
        attrs={
            "seed": seed,
            "spacing_mm": SPACING_MM,
            "origin_mm": ORIGIN_MM,
            "administered_activity_bq": 7.4e9,
            "nuclide": "Lu177",
            "sex": "female",
        },
    )


def _clinical_masks(labels: np.ndarray, names: dict[str, str]) -> dict[str, np.ndarray]:
    """ROI name as written -> mask (z, y, x), overlapping as clinical contours do."""
    organ = {
        "external": labels > 0,
        "liver": np.isin(labels, (4, 101)),
        "lesion": labels == 101,
        "kidney_left": labels == 5,
        "kidney_right": labels == 6,
        "spleen": labels == 7,
    }
    z, y, x = np.meshgrid(*(np.arange(n) for n in SHAPE), indexing="ij")
    organ["bowel"] = (labels == 1) & (z >= 2) & (z <= 9) & (np.abs(y - 30) <= 3) & (np.abs(x - 24) <= 4)
    return {written: organ[key] for key, written in names.items()}


def _write_rtstruct(study: Path, masks: dict[str, np.ndarray]) -> None:
    """Replace the exporter's RTSTRUCT and SEG by one RTSTRUCT written by rt-utils (a third-party tool)."""
    from rt_utils import RTStructBuilder

    shutil.rmtree(study / "RTSTRUCT")
    shutil.rmtree(study / "SEG")
    rtstruct = RTStructBuilder.create_new(dicom_series_path=str(study / "CT"))
    for name, mask in masks.items():
        # rt-utils masks are (rows, columns, slices) in its slice order (ascending position: our z order)
        rtstruct.add_roi(mask=np.transpose(mask, (1, 2, 0)), name=name, approximate_contours=False)
    (study / "RTSTRUCT").mkdir()
    rtstruct.save(str(study / "RTSTRUCT" / "RS_clinical.dcm"))


def _total_activity_bq(nm_file: Path) -> float:
    ds = pydicom.dcmread(nm_file)
    values = ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope) + float(ds.get("RescaleIntercept", 0) or 0)
    voxel_ml = float(ds.PixelSpacing[0]) * float(ds.PixelSpacing[1]) * float(ds.SpacingBetweenSlices) / 1000.0
    return float(np.clip(values, 0, None).sum() * voxel_ml)


def _hospital_nm(nm_file: Path) -> pydicom.Dataset:
    ds = pydicom.dcmread(nm_file)
    del ds.RealWorldValueMappingSequence  # most clinical NM files carry Units only
    ds.Manufacturer, ds.ManufacturerModelName = "Imaginary Medical", "Symbion T16"
    return ds


def _decay_correct_to_administration(nm_file: Path, injection: dt.datetime, hours: float) -> None:
    """Values corrected back to the injection, as some workstations write them: x exp(+lambda t)."""
    ds = _hospital_nm(nm_file)
    factor = float(np.exp(np.log(2) * hours * 3600.0 / LU177_HALF_LIFE_S))
    ds.RescaleSlope = f"{float(ds.RescaleSlope) * factor:.10g}"
    ds.DecayCorrection = "ADMIN"
    ds.DecayFactor = f"{factor:.10g}"
    ds.DecayCorrectionDateTime = injection.strftime("%Y%m%d%H%M%S")
    ds.save_as(nm_file)


def _with_negative_voxels(nm_file: Path, rng: np.random.Generator) -> int:
    """A filtered reconstruction: stored as signed int16 (half the resolution of the unsigned original), with
    negative values in voxels that held no activity. Returns how many voxels were made negative."""
    ds = _hospital_nm(nm_file)
    stored = ds.pixel_array.astype(np.int64)
    half = np.minimum(np.rint(stored / 2.0), 32767).astype(np.int16)  # int16 holds 32767 at most
    empty = np.flatnonzero(half.ravel() == 0)
    chosen = rng.choice(empty, size=min(300, empty.size), replace=False)
    flat = half.ravel()
    flat[chosen] = -rng.integers(1, 400, size=chosen.size, dtype=np.int16)
    ds.PixelRepresentation = 1
    ds.RescaleSlope = f"{float(ds.RescaleSlope) * 2.0:.10g}"
    ds.PixelData = flat.reshape(half.shape).tobytes()
    ds.save_as(nm_file)
    return int(chosen.size)


def _foreign_nuclide(nm_file: Path) -> None:
    """A Tc-99m bone scan: radionuclide code, name and half-life all say so."""
    ds = _hospital_nm(nm_file)
    item = ds.RadiopharmaceuticalInformationSequence[0]
    code = item.RadionuclideCodeSequence[0]
    code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = "44588005", "SCT", "Technetium Tc^99m^"
    item.Radiopharmaceutical = "Tc-99m MDP"
    del item.RadiopharmaceuticalCodeSequence
    item.RadionuclideHalfLife = f"{TC99M_HALF_LIFE_S:.1f}"
    item.RadionuclideTotalDose = "7.0e8"
    ds.save_as(nm_file)


def _compress_ct(ct_dir: Path) -> str:
    """Every slice of ``ct_dir`` rewritten as JPEG Lossless SV1 (dcmtk) or, without dcmtk, JPEG-LS lossless."""
    dcmcjpeg = shutil.which("dcmcjpeg")
    for path in sorted(ct_dir.glob("*.dcm")):
        if dcmcjpeg:
            subprocess.run([dcmcjpeg, "+e1", str(path), str(path)], check=True, capture_output=True)
        else:
            ds = pydicom.dcmread(path)
            ds.compress(pydicom.uid.JPEGLSLossless)
            ds.save_as(path)
    return str(pydicom.dcmread(next(ct_dir.glob("*.dcm")), stop_before_pixels=True).file_meta.TransferSyntaxUID)


def build_hospital_export(root: Path, seed: int = 5) -> HospitalExport:
    """Build the two deliveries under ``root`` (``root/part_1``, ``root/part_2``); see the module docstring."""
    rng = np.random.default_rng(seed)
    staging = root / "exporter"
    names_a = {
        "external": "External",
        "liver": "Liver",
        "lesion": "GTV_1",
        "kidney_left": "Kidney_L",
        "kidney_right": "Kidney_R",
        "spleen": "Spleen",
        "bowel": "Bowel_Bag",
    }
    names_b = {
        "external": "BODY",
        "liver": "liver",
        "lesion": "Lesion 1",
        "kidney_left": "Kidney_Left",
        "kidney_right": "Kidney_Right",
        "spleen": "SPLEEN",
        "bowel": "Bowel_Bag",
    }
    expected_a = {
        "External": "external",
        "Liver": "liver",
        "GTV_1": "lesion_1",
        "Kidney_L": "kidney_left",
        "Kidney_R": "kidney_right",
        "Spleen": "spleen",
        "Bowel_Bag": "Bowel_Bag",
    }
    expected_b = {
        "BODY": "external",
        "liver": "liver",
        "Lesion 1": "lesion_1",
        "Kidney_Left": "kidney_left",
        "Kidney_Right": "kidney_right",
        "SPLEEN": "spleen",
        "Bowel_Bag": "Bowel_Bag",
    }

    # (label, seed, hours, injection, cycle, ROI names); patient A twice: the same seed is the same person
    plan = [
        ("A", 11, (4.0, 24.0, 96.0), CYCLE_1, 1, names_a),
        ("A", 11, (20.0, 70.0), CYCLE_2, 2, names_a),
        ("B", 12, (4.0, 24.0, 168.0), CYCLE_1 + dt.timedelta(days=3), 1, names_b),
        ("C", 13, (3.0,), CYCLE_1 + dt.timedelta(days=10), 1, names_b),
    ]
    studies: list[tuple[str, int, Path, SpectTruth | None]] = []
    result = HospitalExport(root / "part_1", root / "part_2", [], {})
    for index, (who, patient_seed, hours, injection, cycle, names) in enumerate(plan):
        patient = tiny_virtual_patient(patient_seed, hours, scale=1.0 if cycle == 1 else 0.8)
        exported = export_dicom(patient, staging / f"{who}{cycle}", patient_index=index, injection_datetime=injection)
        masks = _clinical_masks(patient["labels"].values, names)
        result.roi_names[exported.patient_id] = expected_a if who == "A" else expected_b
        for k, scan in enumerate(exported.scans):
            study = scan.nm_file.parent.parent
            _write_rtstruct(study, masks)
            truth = SpectTruth(
                exported.patient_id,
                cycle,
                float(scan.hours_post_injection),
                scan.acquisition_datetime,
                _total_activity_bq(scan.nm_file),
                delivered_in_part_1=False,
            )
            if who == "C":
                _foreign_nuclide(scan.nm_file)
                result.foreign_nuclide_patient = exported.patient_id
                truth = None
            elif (who, cycle, k) == ("A", 1, 1):
                result.notes.append(f"JPEG CT: {_compress_ct(scan.ct_dir)}")
                _hospital_nm(scan.nm_file).save_as(scan.nm_file)
            elif (who, cycle, k) == ("A", 1, 2):
                _decay_correct_to_administration(scan.nm_file, injection, scan.hours_post_injection)
            elif (who, k) == ("B", 0):
                result.negative_voxels = _with_negative_voxels(scan.nm_file, rng)
            else:
                _hospital_nm(scan.nm_file).save_as(scan.nm_file)
            studies.append((f"{who}_cycle{cycle}_{scan.acquisition_datetime:%Y%m%d}", k, study, truth))

    part_1_studies = {("A_cycle1", 0), ("A_cycle1", 1), ("B_cycle1", 0)}
    for name, k, study, truth in studies:
        in_part_1 = (name.rsplit("_", 1)[0], k) in part_1_studies
        for part in (result.part_1, result.part_2) if in_part_1 else (result.part_2,):
            shutil.copytree(study, part / "PACS" / name)
        if truth is not None:
            truth.delivered_in_part_1 = in_part_1
            result.good.append(truth)

    # copies lying beside the good files: an exact duplicate CT slice, a SPECT cut off in its pixel data
    first_a = result.part_2 / "PACS" / studies[0][0]
    duplicate = sorted((first_a / "CT").glob("*.dcm"))[3]
    (result.part_2 / "copies").mkdir()
    shutil.copy(duplicate, result.part_2 / "copies" / "IM_dup_0004.dcm")
    result.duplicate_file = "IM_dup_0004.dcm"
    nm = next((first_a / "NM").glob("*.dcm"))
    data = nm.read_bytes()
    (result.part_2 / "copies" / "NM_resent.dcm").write_bytes(data[: len(data) - len(data) // 3])
    result.broken_file = "NM_resent.dcm"
    shutil.rmtree(staging)
    return result
