"""Keyed pseudonyms: published HMAC vector, determinism, key dependence, key configuration, safe names."""

from __future__ import annotations

import logging
import stat

import pytest

from cohort_dosimetry.store import check_identifier, open_cohort, pseudonym_key, pseudonymise_patient_id


def test_pseudonym_is_the_truncated_hmac_sha256_of_the_published_vector():
    # RFC 4231 test case 1: key = 20 bytes 0x0b, data = "Hi There",
    # HMAC-SHA256 = b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7
    assert pseudonymise_patient_id("Hi There", b"\x0b" * 20) == "Pb0344c61d8db"


def test_pseudonyms_are_deterministic_key_dependent_and_safe(rng):
    key_a, key_b = rng.bytes(32), rng.bytes(32)
    ids = ["PAT-0001", "PAT-0002", "Doe^Jane 1961-04-02", "../../etc/passwd", "ÄÖÜ-émile"]
    under_a = [pseudonymise_patient_id(i, key_a) for i in ids]
    assert under_a == [pseudonymise_patient_id(i, key_a) for i in ids]
    assert len(set(under_a)) == len(ids)
    under_b = [pseudonymise_patient_id(i, key_b) for i in ids]
    assert all(a != b for a, b in zip(under_a, under_b))
    for pseudonym in under_a + under_b:
        assert check_identifier(pseudonym, "patient") == pseudonym
        assert len(pseudonym) == 13 and pseudonym[0] == "P"
    # DICOM pads values with spaces: the padded and unpadded identifier are one patient
    assert pseudonymise_patient_id(" PAT-0001  ", key_a) == under_a[0]


def test_bad_identifiers_and_keys_are_refused():
    with pytest.raises(ValueError, match="patient identifier is empty"):
        pseudonymise_patient_id("   ", b"k" * 32)
    with pytest.raises(ValueError, match="pseudonym key is 5 bytes, at least 16"):
        pseudonymise_patient_id("PAT-0001", b"short")


@pytest.mark.parametrize("value", ["../x", "a/b", "..", "", "a b", "x" * 65, "tp1\n", None, 7])
def test_check_identifier_rejects_unsafe_names(value):
    with pytest.raises(ValueError, match="not a safe store identifier"):
        check_identifier(value, "timepoint")


def test_key_from_environment_then_key_file_then_a_private_cohort_key(tmp_path, monkeypatch, caplog):
    monkeypatch.delenv("COHORT_DOSIMETRY_PSEUDONYM_KEY", raising=False)
    monkeypatch.delenv("COHORT_DOSIMETRY_PSEUDONYM_KEY_FILE", raising=False)
    cohort = open_cohort(tmp_path / "cohort", create=True)

    with caplog.at_level(logging.WARNING, logger="cohort_dosimetry.store"):
        generated = pseudonym_key(cohort.path)
    key_path = cohort.path / ".secrets" / "pseudonym.key"
    assert key_path.is_file() and stat.S_IMODE(key_path.stat().st_mode) == 0o600
    assert generated == key_path.read_bytes().strip() and len(generated) == 64
    assert "created a random per-cohort key" in caplog.text
    assert [p.name for p in key_path.parent.iterdir()] == ["pseudonym.key"]
    assert pseudonym_key(cohort.path) == generated  # reused, not regenerated
    assert not (cohort.store_path / ".secrets").exists() and not (cohort.tables_dir / ".secrets").exists()

    key_file = tmp_path / "site.key"
    key_file.write_text("site-wide-key-0123456789\n")
    monkeypatch.setenv("COHORT_DOSIMETRY_PSEUDONYM_KEY_FILE", str(key_file))
    assert pseudonym_key(cohort.path) == b"site-wide-key-0123456789"

    monkeypatch.setenv("COHORT_DOSIMETRY_PSEUDONYM_KEY", "env-key-abcdefghijklmnop")
    assert pseudonym_key(cohort.path) == b"env-key-abcdefghijklmnop"
    assert cohort.pseudonymise_patient_id("PAT-0001") == pseudonymise_patient_id(
        "PAT-0001", b"env-key-abcdefghijklmnop"
    )

    monkeypatch.setenv("COHORT_DOSIMETRY_PSEUDONYM_KEY", "")
    monkeypatch.setenv("COHORT_DOSIMETRY_PSEUDONYM_KEY_FILE", str(tmp_path / "missing.key"))
    with pytest.raises(FileNotFoundError, match="missing.key"):
        pseudonym_key(cohort.path)
