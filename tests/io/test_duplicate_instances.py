"""Files holding the same SOP instance, as PACS exports carry them: exact copies, broken copies, conflicting copies.

All patients are synthetic virtual patients written by tests/io/dicom_factory.py (no patient data).
"""

from __future__ import annotations

import shutil

import numpy as np
import pydicom
import pytest
from pydicom import uid

from cohort_dosimetry.io import discover_studies, ingest, read_ct_series, read_nm
from cohort_dosimetry.store import open_cohort, pseudonymise_patient_id
from tests.io import dicom_factory as factory

KEY = "duplicate-instances-test-key-01"


def _rows(discovery, severity: str, fragment: str) -> list:
    return [p for p in discovery.problems if p.severity == severity and fragment in p.problem]


def _cut_before_rows(data: bytes) -> bytes:
    """The file up to the Rows element (0028,0010): a copy cut off in its header, SOP Instance UID still there."""
    return data[: data.index(b"\x28\x00\x10\x00US")]


def test_exact_copies_of_a_ct_slice_count_once(tmp_path):
    patient = factory.write_patient(tmp_path, seed=21)
    (ct_dir,) = patient.ct_dirs
    slices = sorted(ct_dir.iterdir())
    shutil.copy(slices[2], ct_dir / "img002_copy")  # beside the original
    (tmp_path / "again").mkdir()
    shutil.copy(slices[5], tmp_path / "again" / "5.dcm")  # in another folder
    discovery = discover_studies(tmp_path)
    (scan,) = discovery.scans
    assert sorted(scan.ct.files) == slices
    notes = _rows(discovery, "info", "exact copy of")
    assert sorted(p.subject for p in notes) == sorted(
        [str((ct_dir / "img002_copy").relative_to(tmp_path)), "again/5.dcm"]
    )
    assert not [p for p in discovery.problems if p.severity != "info"]
    np.testing.assert_array_equal(read_ct_series(scan.ct.files).array, patient.ct_hu)


@pytest.mark.parametrize("cut", ["pixel data", "header"])
@pytest.mark.parametrize("broken_first", [False, True], ids=["good-file-first", "broken-file-first"])
def test_a_truncated_nm_copy_beside_the_good_one_is_reported_and_not_used(tmp_path, cut, broken_first):
    patient = factory.write_patient(tmp_path, seed=22)
    (good,) = patient.nm_files
    data = good.read_bytes()
    # path order decides which copy discovery meets first: "H1.../nm/spect" against "0_copy" or "z_copy"
    broken = tmp_path / ("0_copy" if broken_first else "z_copy") / "spect.dcm"
    broken.parent.mkdir()
    broken.write_bytes(data[:-1000] if cut == "pixel data" else _cut_before_rows(data))
    written = pydicom.dcmread(good)
    shape = (int(written.NumberOfFrames), int(written.Rows), int(written.Columns))
    discovery = discover_studies(tmp_path)
    (scan,) = discovery.scans
    assert scan.spect.files == [good]
    assert scan.spect.rows_cols_frames == (shape[1], shape[2], shape[0])
    (warning,) = [p for p in discovery.problems if p.severity == "warning"]
    assert warning.subject == str(broken.relative_to(tmp_path))
    assert f"broken copy of {good.relative_to(tmp_path)}" in warning.problem and "pixel data" in warning.problem
    assert not [p for p in discovery.problems if p.severity == "error"]
    stored = np.frombuffer(written.PixelData, dtype=np.uint16).reshape(shape)
    np.testing.assert_array_equal(
        read_nm(scan.spect.files).activity.array, stored.astype(np.float32) * np.float32(written.RescaleSlope)
    )


@pytest.mark.parametrize("folder", ["0_copy", "z_copy"], ids=["broken-file-first", "good-file-first"])
def test_a_copy_cut_off_anywhere_never_costs_the_good_scan(tmp_path, folder):
    patient = factory.write_patient(tmp_path, seed=27)
    (good,) = patient.nm_files
    data = good.read_bytes()
    pixels_at = data.index(b"\xe0\x7f\x10\x00")  # Pixel Data (7FE0,0010)
    sop_uid_at = data.index(b"\x08\x00\x18\x00UI")  # SOP Instance UID (0008,0018), explicit VR little endian
    padded_ends = sop_uid_at + 8 + int.from_bytes(data[sop_uid_at + 6 : sop_uid_at + 8], "little")
    # a UID of odd length is padded with one NUL (PS3.5 9.1): a cut through the padding keeps the whole UID
    sop_uid_ends = sop_uid_at + 8 + len(data[sop_uid_at + 8 : padded_ends].rstrip(b"\0"))
    broken = tmp_path / folder / "spect.dcm"
    broken.parent.mkdir()
    rng = np.random.default_rng(27)
    cuts = sorted(
        {*rng.integers(133, pixels_at + 12, 40).tolist(), sop_uid_ends - 1, sop_uid_ends, pixels_at, len(data) - 2}
    )
    for cut in cuts:
        broken.write_bytes(data[:cut])
        discovery = discover_studies(tmp_path)
        (scan,) = discovery.scans
        assert scan.spect.files == [good] and scan.ct is not None and scan.contours is not None, cut
        about_copy = [p for p in discovery.problems if p.subject == f"{folder}/spect.dcm"]
        assert len(about_copy) == 1, (cut, about_copy)
        # once the copy holds its whole SOP Instance UID it is known as a copy: a warning; before, a corrupt file
        expected = "warning" if cut >= sop_uid_ends else "error"
        assert about_copy[0].severity == expected, (cut, about_copy)
        assert [p for p in discovery.problems if p.severity == "error"] == [
            p for p in about_copy if expected == "error"
        ]


def test_two_readable_copies_that_differ_reject_the_series_naming_both(tmp_path):
    patient = factory.write_patient(tmp_path, seed=23)
    (ct_dir,) = patient.ct_dirs
    original = sorted(ct_dir.iterdir())[6]
    ds = pydicom.dcmread(original)
    ds.RescaleIntercept = -1000  # another reconstruction's header under the same SOP Instance UID
    (tmp_path / "resent").mkdir()
    ds.save_as(tmp_path / "resent" / "slice.dcm")
    discovery = discover_studies(tmp_path)
    (error,) = [p for p in discovery.problems if p.severity == "error"]
    assert error.subject.startswith("CT series")
    assert str(original.relative_to(tmp_path)) in error.problem and "resent/slice.dcm" in error.problem
    assert "different content" in error.problem
    (scan,) = discovery.scans
    assert scan.ct is None and "was rejected" in scan.ct_pairing


def test_the_same_image_in_another_encoding_counts_once(tmp_path):
    patient = factory.write_patient(tmp_path, seed=24)
    (ct_dir,) = patient.ct_dirs
    original = sorted(ct_dir.iterdir())[1]
    ds = pydicom.dcmread(original)
    ds.compress(uid.RLELossless, generate_instance_uid=False)  # pydicom's default gives the copy a new UID
    (tmp_path / "compressed").mkdir()
    ds.save_as(tmp_path / "compressed" / "slice.dcm", enforce_file_format=True)
    discovery = discover_studies(tmp_path)
    (scan,) = discovery.scans
    assert len(scan.ct.files) == patient.ct_shape[0]
    assert [p.subject for p in _rows(discovery, "info", "in another encoding")] == ["compressed/slice.dcm"]
    assert not [p for p in discovery.problems if p.severity != "info"]


def test_copies_none_of_which_reads_reject_the_series(tmp_path):
    patient = factory.write_patient(tmp_path, seed=25)
    (ct_dir,) = patient.ct_dirs
    original = sorted(ct_dir.iterdir())[3]
    data = original.read_bytes()
    original.write_bytes(data[:-300])
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "slice.dcm").write_bytes(data[:-500])
    discovery = discover_studies(tmp_path)
    (error,) = [p for p in discovery.problems if p.severity == "error"]
    assert "none reads" in error.problem and "other/slice.dcm" in error.problem
    assert str(original.relative_to(tmp_path)) in error.problem
    assert discovery.scans[0].ct is None


def test_ingest_lands_the_scan_once_despite_copies(tmp_path, monkeypatch):
    monkeypatch.setenv("COHORT_DOSIMETRY_PSEUDONYM_KEY", KEY)
    root = tmp_path / "dicom"
    patient = factory.write_patient(root, seed=26)
    (ct_dir,) = patient.ct_dirs
    (nm,) = patient.nm_files
    shutil.copytree(ct_dir, root / "second_export" / "ct")  # the whole CT once more
    (root / "0_broken").mkdir()
    (root / "0_broken" / "spect").write_bytes(_cut_before_rows(nm.read_bytes()))
    report = ingest(root, tmp_path / "cohort", grid="ct")
    pseudonym = pseudonymise_patient_id(patient.patient_id, KEY)
    cohort = open_cohort(tmp_path / "cohort")
    assert [p for p, _ in cohort.scans()] == [pseudonym]
    assert set(report.loc[report["timepoint"] != "", "status"]) == {"written"}, report["message"].tolist()
    assert not (report["severity"] == "error").any(), report["message"].tolist()
    copies = report[report["message"].str.contains("exact copy of", regex=False)]
    assert len(copies) == patient.ct_shape[0] and (copies["severity"] == "info").all()
    broken = report[report["message"].str.contains("broken copy", regex=False)]
    assert list(broken["source"]) == ["0_broken/spect"] and list(broken["severity"]) == ["warning"]
    (timepoint,) = [t for _, t in cohort.scans()]
    np.testing.assert_array_equal(cohort.scan(pseudonym, timepoint)["ct_hu"].values, patient.ct_hu)
    assert len(cohort.scan_attrs(pseudonym, timepoint)["source_file_hashes"]) == patient.ct_shape[0] + 2
