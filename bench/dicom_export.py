"""Time the DICOM export of one compact-grid virtual patient, per object type and per scan.

Synthetic virtual patient (no patient data), ``fast`` SPECT model, 4 time points. Baseline, measured in the same run:
writing the same arrays raw with ``numpy.save`` (the disk-write floor of a scan). Prints wall and CPU seconds per scan
for the CT series, the NM multi-frame, the RTSTRUCT (incl. contour tracing), the SEG and the ground truth, and their
ratio to the baseline. Usage: ``python bench/dicom_export.py [--grid compact|paper] [--repeat N]``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from cohort_dosimetry.phantoms import _dicom_export as dx
from cohort_dosimetry.phantoms import make_virtual_patient


def _best(fn, repeat: int) -> tuple[float, float]:
    """Fastest wall and CPU seconds of ``repeat`` calls of ``fn``."""
    wall, cpu = [], []
    for _ in range(repeat):
        w, c = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - w)
        cpu.append(time.process_time() - c)
    return min(wall), min(cpu)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grid", default="compact", choices=("compact", "paper"))
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    start = time.perf_counter()
    patient_ds = make_virtual_patient(0, grid=args.grid)
    generate_s = time.perf_counter() - start
    n_scans = patient_ds.sizes["timepoint"]
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        patient = dx._PatientContext.from_dataset(patient_ds, 0, None)
        scan = dx._ScanContext(patient, 0, patient.hours[0])
        ct_hu, activity = patient_ds["ct_hu"].values, patient_ds["activity"].isel(timepoint=0).values
        ct_slices = dx._write_ct(scan, ct_hu, out / "CT")
        segments = dx._segment_descriptions(patient.label_names, patient.where)

        def raw_arrays():
            for name, array in (("ct", ct_hu), ("nm", activity), ("labels", patient.labels)):
                np.save(out / f"{name}.npy", array)

        rows = [
            ("baseline: numpy.save of CT, NM, labels", _best(raw_arrays, args.repeat)),
            ("CT series", _best(lambda: dx._write_ct(scan, ct_hu, out / "CT"), args.repeat)),
            ("NM multi-frame", _best(lambda: dx._write_nm(scan, activity, out / "NM.dcm"), args.repeat)),
            (
                "RTSTRUCT incl. tracing",
                _best(
                    lambda: dx._write_rtstruct(
                        scan, ct_slices, dx._trace_contours(patient.labels, patient.label_names), out / "RS.dcm"
                    ),
                    args.repeat,
                ),
            ),
            ("SEG (highdicom)", _best(lambda: dx._write_seg(scan, ct_slices, segments, out / "SEG.dcm"), args.repeat)),
        ]
        whole = _best(lambda: dx.export_dicom(patient_ds, out / "patient"), 1)
    baseline_wall = rows[0][1][0]
    print(f"DICOM export, {args.grid} grid {patient_ds['ct_hu'].shape} (z, y, x), synthetic virtual patient")
    print(f"{'object (one scan)':<42}{'wall s':>9}{'cpu s':>9}{'x baseline':>12}")
    for name, (wall, cpu) in rows:
        print(f"{name:<42}{wall:>9.3f}{cpu:>9.3f}{wall / baseline_wall:>12.1f}")
    wall, cpu = whole
    print(
        f"{'export_dicom, per scan (4 scans + truth)':<42}{wall / n_scans:>9.3f}{cpu / n_scans:>9.3f}"
        f"{wall / n_scans / baseline_wall:>12.1f}"
    )
    print(f"(generating the patient, fast model, 4 time points: {generate_s:.1f} s)")


if __name__ == "__main__":
    main()
