"""Compressed and deflated transfer syntaxes, as PACS send them, decode through the readers to the values written.

Files are compressed the way other software does it: dcmtk's command-line compressors (``dcmcjpeg``, ``dcmcjpls``,
``dcmcrle``) and pydicom's encoders (``Dataset.compress``: JPEG-LS via pyjpegls, JPEG 2000 via openjpeg, RLE), and
deflated by pydicom's writer. pydicom's own shipped samples (one image in several transfer syntaxes, written by other
toolkits) are decoded too. Lossless syntaxes must give back every stored value exactly; lossy ones within the bound
stated next to each case. All images are synthetic (no patient data).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom import uid
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from cohort_dosimetry.io import ingest, read_ct_series, read_nm
from cohort_dosimetry.io._headers import pixel_array
from cohort_dosimetry.store import open_cohort, pseudonymise_patient_id
from tests.io import dicom_factory as factory

requires_dcmtk = pytest.mark.skipif(
    not all(shutil.which(tool) for tool in ("dcmcjpeg", "dcmdjpeg", "dcmcjpls", "dcmcrle")),
    reason="needs dcmtk's command-line tools (apt-get install dcmtk)",
)

KEY = "transfer-syntax-test-key-0123"
SHAPE = (4, 32, 32)  # CT slices (z, y, x): small, yet several 8x8 JPEG blocks per slice
INTERCEPT = -1024.0  # RescaleIntercept of every CT written here (HU = stored x slope + intercept)


def _stored_ct(seed: int, bits_stored: int) -> np.ndarray:
    """Stored CT values (z, y, x): air, a soft-tissue ellipse with 20 HU noise and a bone insert, fitting the bits."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: SHAPE[1], : SHAPE[2]]
    body = ((yy - 16) / 14.0) ** 2 + ((xx - 16) / 12.0) ** 2 < 1
    hu = np.where(body, 40.0, -1000.0)[None].repeat(SHAPE[0], axis=0) + rng.normal(0, 20, SHAPE).round()
    hu[:, 13:18, 14:19] = 1200.0
    hu += np.arange(SHAPE[0])[:, None, None] * 7.0  # slices differ, so a mixed-up slice order shows
    slope = 16.0 if bits_stored == 8 else 1.0
    return np.clip(np.round((hu - INTERCEPT) / slope), 0, 2**bits_stored - 1).astype(np.int32)


def _write_ct(folder: Path, stored: np.ndarray, bits_stored: int = 16, signed: bool = True) -> np.ndarray:
    """Single-frame CT slices (Explicit VR Little Endian) holding ``stored``; returns the truth in HU (z, y, x).

    16 bits signed is what most CT scanners write; 12 bits unsigned what JPEG extended (process 4) carries;
    8 bits (slope 16 HU) what JPEG baseline (process 1) carries.
    """
    slope = 16.0 if bits_stored == 8 else 1.0
    patient = factory.make_patient(seed=1, ct_shape=SHAPE)
    patient.ct_hu = (stored * slope + INTERCEPT).astype(np.float32)
    factory.write_ct(patient, folder, generate_uid(), generate_uid(), generate_uid(), factory.INJECTION)
    if (bits_stored, signed) != (16, True):
        for path in folder.iterdir():
            ds = pydicom.dcmread(path)
            k = int(round((float(ds.ImagePositionPatient[2]) - patient.ct_origin_xyz[2]) / patient.ct_spacing[0]))
            ds.BitsAllocated = 8 if bits_stored == 8 else 16
            ds.BitsStored, ds.HighBit = bits_stored, bits_stored - 1
            ds.PixelRepresentation = int(signed)
            ds.RescaleSlope = slope
            dtype = np.uint8 if bits_stored == 8 else (np.int16 if signed else np.uint16)
            ds.PixelData = stored[k].astype(dtype).tobytes()
            ds.save_as(path, enforce_file_format=True)
    return patient.ct_hu


def _dcmtk(command: list[str], source: Path, target: Path) -> None:
    """Run one dcmtk tool over every file of ``source`` into ``target`` (same file names)."""
    target.mkdir(parents=True, exist_ok=True)
    for path in sorted(source.iterdir()):
        done = subprocess.run([*command, str(path), str(target / path.name)], capture_output=True, text=True)
        assert done.returncode == 0, f"{' '.join(command)} {path.name}: {done.stderr}"


def _pydicom_compress(source: Path, target: Path, syntax: str, **options) -> None:
    target.mkdir(parents=True, exist_ok=True)
    for path in sorted(source.iterdir()):
        ds = pydicom.dcmread(path)
        ds.compress(syntax, **options)
        ds.save_as(target / path.name, enforce_file_format=True)


def _pydicom_deflate(source: Path, target: Path) -> None:
    target.mkdir(parents=True, exist_ok=True)
    for path in sorted(source.iterdir()):
        ds = pydicom.dcmread(path)
        ds.file_meta.TransferSyntaxUID = uid.DeflatedExplicitVRLittleEndian
        ds.save_as(target / path.name, enforce_file_format=True)


def _syntaxes(folder: Path) -> set[str]:
    return {str(pydicom.dcmread(p, stop_before_pixels=True).file_meta.TransferSyntaxUID) for p in folder.iterdir()}


def _compress(tool: str, source: Path, target: Path) -> None:
    """The compressions of the lossless CT cases below, by name."""
    if tool == "dcmcjpeg +e1":
        _dcmtk(["dcmcjpeg", "+e1"], source, target)
    elif tool == "dcmcjpeg +el +sv 6":
        _dcmtk(["dcmcjpeg", "+el", "+sv", "6"], source, target)
    elif tool == "dcmcjpls":
        _dcmtk(["dcmcjpls"], source, target)
    elif tool == "dcmcrle":
        _dcmtk(["dcmcrle"], source, target)
    elif tool == "pydicom JPEG-LS":
        _pydicom_compress(source, target, uid.JPEGLSLossless)
    elif tool == "pydicom JPEG 2000":
        _pydicom_compress(source, target, uid.JPEG2000Lossless)
    elif tool == "pydicom RLE":
        _pydicom_compress(source, target, uid.RLELossless)
    elif tool == "pydicom deflate":
        _pydicom_deflate(source, target)
    else:  # pragma: no cover - a typo in the table below
        raise AssertionError(tool)


LOSSLESS = [
    # (transfer syntax, how the files are made)
    pytest.param(uid.JPEGLosslessSV1, "dcmcjpeg +e1", marks=requires_dcmtk, id="jpeg-lossless-sv1-.70"),
    pytest.param(uid.JPEGLossless, "dcmcjpeg +el +sv 6", marks=requires_dcmtk, id="jpeg-lossless-p14-.57"),
    pytest.param(uid.JPEGLSLossless, "dcmcjpls", marks=requires_dcmtk, id="jpeg-ls-lossless-.80-dcmtk"),
    pytest.param(uid.JPEGLSLossless, "pydicom JPEG-LS", id="jpeg-ls-lossless-.80-pydicom"),
    pytest.param(uid.JPEG2000Lossless, "pydicom JPEG 2000", id="jpeg2000-lossless-.90"),
    pytest.param(uid.RLELossless, "dcmcrle", marks=requires_dcmtk, id="rle-dcmtk"),
    pytest.param(uid.RLELossless, "pydicom RLE", id="rle-pydicom"),
    pytest.param(uid.DeflatedExplicitVRLittleEndian, "pydicom deflate", id="deflated"),
]


@pytest.mark.parametrize("syntax, tool", LOSSLESS)
def test_lossless_ct_decodes_to_every_stored_value(tmp_path, syntax, tool):
    truth = _write_ct(tmp_path / "plain", _stored_ct(seed=3, bits_stored=16))  # signed 16-bit
    _compress(tool, tmp_path / "plain", tmp_path / "compressed")
    assert _syntaxes(tmp_path / "compressed") == {syntax}
    plain = read_ct_series(sorted((tmp_path / "plain").iterdir()))
    volume = read_ct_series(sorted((tmp_path / "compressed").iterdir()))
    np.testing.assert_array_equal(volume.array, truth)
    assert volume.grid == plain.grid


@requires_dcmtk
@pytest.mark.parametrize(
    "syntax, bits, command, decompress, bound_stored",
    [
        # dcmcjpeg's default quality 90 (IJG tables scaled by 0.2) on this phantom's 20 HU noise: a mean error of about
        # 3 stored values of the original (dcmtk 3.6.7); bound 5. A decoding fault (sign, bit depth, rescale, slice
        # order) is off by hundreds.
        pytest.param(uid.JPEGBaseline8Bit, 8, ["dcmcjpeg", "+eb"], "dcmdjpeg", 5.0, id="jpeg-baseline-.50"),
        pytest.param(uid.JPEGExtended12Bit, 12, ["dcmcjpeg", "+ee"], "dcmdjpeg", 5.0, id="jpeg-extended-.51"),
        # JPEG-LS near-lossless bounds every sample's error by NEAR (ISO/IEC 14495-1 A.4.4): here 3 stored values.
        pytest.param(
            uid.JPEGLSNearLossless, 12, ["dcmcjpls", "+en", "+md", "3"], "dcmdjpls", 3.0, id="jpeg-ls-near-lossless-.81"
        ),
    ],
)
def test_lossy_ct_decodes_like_dcmtk_and_near_the_truth(tmp_path, syntax, bits, command, decompress, bound_stored):
    truth = _write_ct(tmp_path / "plain", _stored_ct(seed=4, bits_stored=bits), bits_stored=bits, signed=False)
    _dcmtk(command, tmp_path / "plain", tmp_path / "compressed")
    _dcmtk([decompress], tmp_path / "compressed", tmp_path / "dcmtk_decoded")
    assert _syntaxes(tmp_path / "compressed") == {syntax}
    volume = read_ct_series(sorted((tmp_path / "compressed").iterdir()))
    by_dcmtk = read_ct_series(sorted((tmp_path / "dcmtk_decoded").iterdir())).array
    # dcmtk may rescale the stored values for lossy coding (it rewrites RescaleSlope/Intercept): compare in HU;
    # ``step`` is the compressed file's HU per stored value
    step = float(pydicom.dcmread(next((tmp_path / "compressed").iterdir()), stop_before_pixels=True).RescaleSlope)
    # two conforming decoders may differ by one stored value per sample (ISO/IEC 10918-2 IDCT accuracy)
    assert np.abs(volume.array - by_dcmtk).max() <= 1.0 * step + 1e-3
    error = np.abs(volume.array - truth) / (16.0 if bits == 8 else 1.0)  # in stored values of the original
    if syntax == uid.JPEGLSNearLossless:
        assert error.max() <= bound_stored
    else:
        assert error.mean() <= bound_stored
    assert volume.grid.shape == SHAPE


def test_lossy_jpeg2000_ct_is_within_its_psnr(tmp_path):
    truth = _write_ct(tmp_path / "plain", _stored_ct(seed=5, bits_stored=12), bits_stored=12, signed=False)
    _pydicom_compress(tmp_path / "plain", tmp_path / "compressed", uid.JPEG2000, j2k_psnr=[60])
    assert _syntaxes(tmp_path / "compressed") == {uid.JPEG2000}
    volume = read_ct_series(sorted((tmp_path / "compressed").iterdir()))
    # PSNR 60 dB over the 12-bit peak 4095 is an RMS error of 4095 / 10**3 = 4.1 HU; allow twice that
    rms = float(np.sqrt(np.mean((volume.array - truth) ** 2)))
    assert 0 < rms <= 2 * 4095 / 10 ** (60 / 20)


def _nm_file(tmp_path: Path) -> tuple[Path, np.ndarray]:
    """A factory NM multi-frame (uint16 x slope); returns its path and the activity it stores (z, y, x) Bq/mL.

    Frames of 34 x 37 pixels: openjpeg's default five resolution levels need at least 32 pixels a side.
    """
    patient = factory.make_patient(seed=6)
    shape, origin, spacing = factory.nm_grid(patient, spacing=(1.9, 1.9, 1.9))
    activity = factory.activity_on_nm_grid(patient, shape, origin, spacing, 24.0, seed=2)
    path = tmp_path / "plain" / "nm.dcm"
    ds = factory.write_nm(patient, path, generate_uid(), generate_uid(), 24.0, activity, origin, spacing)
    stored = np.frombuffer(ds.PixelData, dtype=np.uint16).reshape(shape)
    return path, stored.astype(np.float32) * np.float32(ds.RescaleSlope)


@pytest.mark.parametrize(
    "syntax, tool",
    [
        pytest.param(uid.JPEGLosslessSV1, "dcmcjpeg +e1", marks=requires_dcmtk, id="jpeg-lossless-sv1-.70"),
        pytest.param(uid.RLELossless, "dcmcrle", marks=requires_dcmtk, id="rle-dcmtk"),
        pytest.param(uid.JPEGLSLossless, "pydicom JPEG-LS", id="jpeg-ls-lossless-.80"),
        pytest.param(uid.JPEG2000Lossless, "pydicom JPEG 2000", id="jpeg2000-lossless-.90"),
        pytest.param(uid.DeflatedExplicitVRLittleEndian, "pydicom deflate", id="deflated"),
    ],
)
def test_multiframe_nm_decodes_every_frame(tmp_path, syntax, tool):
    path, truth = _nm_file(tmp_path)
    _compress(tool, path.parent, tmp_path / "compressed")
    assert _syntaxes(tmp_path / "compressed") == {syntax}
    spect = read_nm([tmp_path / "compressed" / path.name])
    np.testing.assert_array_equal(spect.activity.array, truth)
    assert spect.activity.grid == read_nm([path]).activity.grid


@pytest.mark.parametrize(
    "original, encoded",
    [
        ("MR_small.dcm", "MR_small_RLE.dcm"),
        ("MR_small.dcm", "MR_small_jpeg_ls_lossless.dcm"),
        ("MR_small.dcm", "MR_small_jp2klossless.dcm"),
        ("rtdose.dcm", "rtdose_rle.dcm"),  # multi-frame, 32 bits per sample
    ],
)
def test_shipped_lossless_samples_decode_like_their_uncompressed_twin(original, encoded):
    plain = pydicom.dcmread(get_testdata_file(original))
    compressed = pydicom.dcmread(get_testdata_file(encoded))
    assert compressed.file_meta.TransferSyntaxUID.is_compressed
    np.testing.assert_array_equal(pixel_array(compressed, encoded), pixel_array(plain, original))


def test_shipped_deflated_sample_decodes():
    path = get_testdata_file("image_dfl.dcm")
    ds = pydicom.dcmread(path)
    assert ds.file_meta.TransferSyntaxUID == uid.DeflatedExplicitVRLittleEndian
    pixels = pixel_array(ds, "image_dfl.dcm")
    assert pixels.shape == (int(ds.Rows), int(ds.Columns)) and pixels.std() > 0


@requires_dcmtk
def test_a_patient_whose_ct_is_jpeg_lossless_is_ingested(tmp_path, monkeypatch):
    monkeypatch.setenv("COHORT_DOSIMETRY_PSEUDONYM_KEY", KEY)
    patient = factory.write_patient(tmp_path / "dicom", seed=12, hours=(24.0,))
    (ct_dir,) = patient.ct_dirs
    _dcmtk(["dcmcjpeg", "+e1"], ct_dir, tmp_path / "jpeg")
    shutil.rmtree(ct_dir)
    shutil.move(tmp_path / "jpeg", ct_dir)
    assert _syntaxes(ct_dir) == {uid.JPEGLosslessSV1}
    report = ingest(tmp_path / "dicom", tmp_path / "cohort", grid="ct")
    assert set(report.loc[report["timepoint"] != "", "status"]) == {"written"}, report["message"].tolist()
    assert not (report["severity"] == "error").any(), report["message"].tolist()
    cohort = open_cohort(tmp_path / "cohort")
    pseudonym = pseudonymise_patient_id(patient.patient_id, KEY)
    assert cohort.scans() == [(pseudonym, "tp1")]
    np.testing.assert_array_equal(cohort.scan(pseudonym, "tp1")["ct_hu"].values, patient.ct_hu)
