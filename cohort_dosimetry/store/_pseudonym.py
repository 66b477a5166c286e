"""Keyed pseudonyms for patient identifiers (HMAC-SHA256) and where their key comes from."""
from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
from pathlib import Path

log = logging.getLogger(__name__)

KEY_ENV = "COHORT_DOSIMETRY_PSEUDONYM_KEY"
KEY_FILE_ENV = "COHORT_DOSIMETRY_PSEUDONYM_KEY_FILE"
COHORT_KEY_PATH = Path(".secrets") / "pseudonym.key"
_MIN_KEY_BYTES = 16


def pseudonymise_patient_id(patient_id: str, key: bytes | str) -> str:
    """The pseudonym of a DICOM PatientID: ``"P"`` + the first 12 hex digits of HMAC-SHA256(key, id).

    Deterministic for one key (re-ingest finds the same patient), unlinkable without the key.
    Surrounding whitespace of the identifier is ignored (DICOM pads values with spaces).
    12 hex digits = 48 bits: the chance of any collision among 10 000 patients is about 2e-7.
    """
    if not isinstance(patient_id, str) or not patient_id.strip():
        raise ValueError("patient identifier is empty: cannot pseudonymise it")
    key_bytes = key.encode() if isinstance(key, str) else bytes(key)
    if len(key_bytes) < _MIN_KEY_BYTES:
        raise ValueError(f"pseudonym key is {len(key_bytes)} bytes, at least {_MIN_KEY_BYTES} are needed")
    digest = hmac.new(key_bytes, patient_id.strip().encode("utf-8"), hashlib.sha256).hexdigest()
    return "P" + digest[:12]


def pseudonym_key(cohort_dir: str | os.PathLike) -> bytes:
    """The pseudonym key for a cohort, from configuration, in this order:

    1. env ``COHORT_DOSIMETRY_PSEUDONYM_KEY`` (the key itself, at least 16 characters);
    2. env ``COHORT_DOSIMETRY_PSEUDONYM_KEY_FILE`` (a file holding the key);
    3. ``COHORT_DIR/.secrets/pseudonym.key``, created with 32 random bytes (hex) and mode 0600 on first use,
       with a warning: pseudonyms then differ between cohorts and the key must be kept with the cohort.
    """
    if os.environ.get(KEY_ENV):
        return _checked(os.environ[KEY_ENV].encode(), f"environment variable {KEY_ENV}")
    if os.environ.get(KEY_FILE_ENV):
        path = Path(os.environ[KEY_FILE_ENV])
        if not path.is_file():
            raise FileNotFoundError(f"pseudonym key file {path} (from {KEY_FILE_ENV}) does not exist")
        return _checked(path.read_bytes().strip(), f"key file {path}")
    path = Path(cohort_dir) / COHORT_KEY_PATH
    if not path.exists():
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        # Write the key to a private temporary file, then link it into place: another process either sees
        # no key file or a complete one, and of two racing creators exactly one key wins.
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32))
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
        else:
            log.warning(
                "no pseudonym key configured (%s or %s): created a random per-cohort key in %s; "
                "keep it with the cohort, pseudonyms cannot be reproduced without it",
                KEY_ENV, KEY_FILE_ENV, path,
            )
        finally:
            tmp.unlink()
    return _checked(path.read_bytes().strip(), f"key file {path}")


def _checked(key: bytes, where: str) -> bytes:
    if len(key) < _MIN_KEY_BYTES:
        raise ValueError(f"pseudonym key from {where} is {len(key)} bytes, at least {_MIN_KEY_BYTES} are needed")
    return key
