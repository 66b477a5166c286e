"""Keyed pseudonyms for patient identifiers (HMAC-SHA256), where their key comes from, and the key's fingerprint
that binds a store to the key it was written with."""

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
#: Root attribute of the store holding :func:`key_fingerprint` of the key its pseudonyms were made with.
FINGERPRINT_ATTR = "pseudonym_key_fingerprint"
_FINGERPRINT_MESSAGE = b"cohort-dosimetry pseudonym key fingerprint"


class PseudonymKeyMismatch(ValueError):
    """The pseudonym key configured now is not the key the cohort's store was written with."""


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
                KEY_ENV,
                KEY_FILE_ENV,
                path,
            )
        finally:
            tmp.unlink()
    return _checked(path.read_bytes().strip(), f"key file {path}")


def _checked(key: bytes, where: str) -> bytes:
    if len(key) < _MIN_KEY_BYTES:
        raise ValueError(f"pseudonym key from {where} is {len(key)} bytes, at least {_MIN_KEY_BYTES} are needed")
    return key


def key_fingerprint(key: bytes | str) -> str:
    """A fingerprint of a pseudonym key, safe to store beside its pseudonyms: the first 16 hex digits of
    HMAC-SHA256(key, b"cohort-dosimetry pseudonym key fingerprint").

    Equal keys give equal fingerprints; the key cannot be computed back from it (HMAC is a pseudorandom function:
    Bellare, CRYPTO 2006), and it reveals no more than the pseudonyms stored under the key already do. 64 bits: two
    different keys share a fingerprint with probability 2**-64.
    """
    key_bytes = key.encode() if isinstance(key, str) else bytes(key)
    return hmac.new(key_bytes, _FINGERPRINT_MESSAGE, hashlib.sha256).hexdigest()[:16]


def key_is_configured(cohort_dir: str | os.PathLike) -> bool:
    """Whether :func:`pseudonym_key` finds a key without creating the cohort's own key file."""
    configured = os.environ.get(KEY_ENV) or os.environ.get(KEY_FILE_ENV)
    return bool(configured) or (Path(cohort_dir) / COHORT_KEY_PATH).exists()


def key_mismatch_message(cohort_dir: str | os.PathLike, key_given: bool = False) -> str:
    """What :class:`PseudonymKeyMismatch` says: which key differs, and how to write with the original one."""
    cohort_dir = Path(cohort_dir)
    own = cohort_dir / COHORT_KEY_PATH
    fix = f"set {KEY_ENV} or {KEY_FILE_ENV} to the original key, or use a new cohort directory"
    if key_given:
        source = "the pseudonym key given"
    elif os.environ.get(KEY_ENV):
        source = f"the pseudonym key from {KEY_ENV}"
    elif os.environ.get(KEY_FILE_ENV):
        source = f"the pseudonym key from {KEY_FILE_ENV} ({os.environ[KEY_FILE_ENV]})"
    elif own.exists():
        source = f"the cohort's own pseudonym key ({own})"
    else:
        return (
            f"no pseudonym key is configured, but the cohort {cohort_dir} was written with one (its store "
            f"records the key's fingerprint): {fix}"
        )
    if own.exists() and not key_given and not source.startswith("the cohort's own"):
        fix = (
            f"set {KEY_ENV} or {KEY_FILE_ENV} to the original key (or unset both if that is the cohort's own "
            f"key, {own}), or use a new cohort directory"
        )
    return (
        f"{source} differs from the key the cohort {cohort_dir} was written with (its store records the key's "
        "fingerprint, never the key): pseudonyms made with it would not match the patients already stored; "
        f"{fix}"
    )
