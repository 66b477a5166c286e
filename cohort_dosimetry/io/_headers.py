"""Small readers of DICOM header fields shared by discovery and the image readers."""

from __future__ import annotations

import functools
import inspect
import struct
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import BytesLengthException, InvalidDicomError

from cohort_dosimetry.io._errors import IngestError

#: The largest volume ingest will allocate for one series, in voxels (rows x columns x frames or slices):
#: 2**30 voxels is 4 GiB as float32, several times a whole-body CT (512 x 512 x 2000 = 2**29). A header that
#: announces more is treated as implausible and rejected before any pixel data is read.
MAX_VOXELS_PER_SERIES = 2**30


@contextmanager
def malformed_header_is(subject: str) -> Iterator[None]:
    """Inside: a value that does not parse (pydicom raises ValueError, TypeError, ...) is bad input, not a defect:
    it becomes an IngestError naming ``subject``. pydicom parses sequences when first used, so a header cut off inside
    one fails only then (struct.error, EOFError, OSError "No tag to read", or BytesLengthException for a value cut
    to an odd length)."""
    try:
        yield
    except IngestError:
        raise
    except (
        ValueError,
        TypeError,
        AttributeError,
        KeyError,
        IndexError,
        OverflowError,
        struct.error,
        EOFError,
        OSError,
        BytesLengthException,
    ) as exc:
        raise IngestError(subject, f"malformed DICOM header ({type(exc).__name__}: {exc})") from None


def reader_of_input(read: Callable) -> Callable:
    """Decorate a public reader (first argument a path or a list of paths, optional ``subject``): a malformed
    header becomes an IngestError naming the subject (default: the first file) instead of a traceback."""
    signature = inspect.signature(read)

    @functools.wraps(read)
    def wrapper(*args, **kwargs):
        bound = signature.bind(*args, **kwargs)
        first = next(iter(bound.arguments.values()))
        subject = bound.arguments.get("subject") or str(first if isinstance(first, (str, Path)) else first[0])
        bound.arguments["subject"] = subject
        with malformed_header_is(subject):
            return read(*bound.args, **bound.kwargs)

    return wrapper


def read_header(path: Path, subject: str) -> Dataset:
    """The header of a DICOM file without its pixel data. Files lacking the Part-10 preamble (older exports) are
    accepted when they still parse into a dataset with a SOP Class UID and a Modality.

    Raises IngestError (a file that claims to be DICOM but is corrupt) or NotADicomFile.
    """
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
    except InvalidDicomError:
        ds = None
    except Exception as exc:  # a file with the DICOM preamble that does not parse: corrupt
        raise IngestError(subject, f"corrupt DICOM file ({type(exc).__name__}: {exc})") from None
    if ds is not None:
        missing = [k for k in ("SOPClassUID", "Modality") if not ds.get(k)]
        if missing:
            raise IngestError(subject, f"corrupt DICOM file: the header has no {' or '.join(missing)}")
        return ds
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
        if ds.get("SOPClassUID") and ds.get("Modality"):
            return ds
    except Exception:
        pass
    raise NotADicomFile(subject)


class NotADicomFile(Exception):
    """The file is not DICOM (reported at info level and ignored)."""


def read_full(path: Path, subject: str) -> Dataset:
    """The whole file, pixel data included; a truncated or undecodable file raises IngestError."""
    try:
        return pydicom.dcmread(path, force=True)
    except Exception as exc:
        raise IngestError(subject, f"cannot read DICOM file ({type(exc).__name__}: {exc})") from None


def pixel_array(ds: Dataset, subject: str) -> np.ndarray:
    """Stored pixel values (frames, rows, columns) or (rows, columns), decoded; a clear error if they cannot be."""
    try:
        return ds.pixel_array
    except Exception as exc:
        syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        name = getattr(syntax, "name", syntax)
        raise IngestError(
            subject,
            f"pixel data unreadable: truncated, corrupt or in an undecodable transfer syntax ({name}): "
            f"{type(exc).__name__}: {exc}",
        ) from None


def check_plausible_size(ds: Dataset, n_frames: int, subject: str) -> None:
    """Reject a series whose header announces an implausible size, before any pixel data is allocated."""
    rows, cols = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
    if rows < 1 or cols < 1 or n_frames < 1:
        raise IngestError(subject, f"implausible image size {rows} rows x {cols} columns x {n_frames} frames")
    voxels = rows * cols * n_frames
    if voxels > MAX_VOXELS_PER_SERIES:
        raise IngestError(
            subject,
            f"implausible image size {rows} rows x {cols} columns x {n_frames} frames = {voxels} voxels "
            f"(limit {MAX_VOXELS_PER_SERIES}); not read",
        )


def dicom_datetime(
    ds: Dataset, datetime_keyword: str | None, date_keyword: str | None, time_keyword: str | None
) -> datetime | None:
    """A naive datetime from a DT attribute or a DA + TM pair; None when absent."""
    if datetime_keyword and ds.get(datetime_keyword):
        value = pydicom.valuerep.DT(ds.get(datetime_keyword))
        return value.replace(tzinfo=None)
    if not (date_keyword and time_keyword):
        return None
    date, time = ds.get(date_keyword), ds.get(time_keyword)
    if date and time:
        d, t = pydicom.valuerep.DA(date), pydicom.valuerep.TM(time)
        return datetime.combine(d, t).replace(tzinfo=None)
    return None


def acquisition_datetime(ds: Dataset) -> datetime | None:
    """When the image was acquired: AcquisitionDateTime, else AcquisitionDate/Time, else SeriesDate/Time,
    else ContentDate/Time (RT objects carry only the latter)."""
    for dt_kw, date_kw, time_kw in (
        ("AcquisitionDateTime", "AcquisitionDate", "AcquisitionTime"),
        (None, "SeriesDate", "SeriesTime"),
        (None, "ContentDate", "ContentTime"),
    ):
        try:
            value = dicom_datetime(ds, dt_kw, date_kw, time_kw)
        except Exception:
            value = None
        if value is not None:
            return value
    return None


def frame_attribute(ds: Dataset, keyword: str, frame: int | None = None):
    """The value of ``keyword`` that applies to ``frame`` (0-based) of ``ds``, or None when absent.

    Looks where DICOM may put it (PS3.3 C.7.6.16, Multi-frame Functional Groups): the frame's item of the Per-frame
    Functional Groups Sequence, then the Shared Functional Groups Sequence, each at the level of the functional group
    item or inside one of its macros (e.g. Pixel Value Transformation Sequence > RescaleSlope), then the top level.
    ``frame`` None (a single-frame object) looks at the shared groups and the top level only.
    """
    groups = []
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    if frame is not None and per_frame and 0 <= frame < len(per_frame):
        groups.append(per_frame[frame])
    shared = ds.get("SharedFunctionalGroupsSequence")
    if shared:
        groups.append(shared[0])
    for group in groups:
        value = group.get(keyword)
        if value is not None:
            return value
        for element in group:
            if element.VR == "SQ" and element.value and keyword in element.value[0]:
                return element.value[0].get(keyword)
    return ds.get(keyword)


def float_triplets(value, count: int, subject: str, keyword: str) -> np.ndarray:
    """A multi-valued DS attribute as float64 numbers, with a clear error if it is missing or malformed."""
    try:
        numbers = np.asarray([float(v) for v in value], dtype=float)
    except Exception:
        raise IngestError(subject, f"{keyword} is missing or not numeric ({value!r})") from None
    if numbers.size != count or not np.all(np.isfinite(numbers)):
        raise IngestError(subject, f"{keyword} must hold {count} finite numbers, got {value!r}")
    return numbers
