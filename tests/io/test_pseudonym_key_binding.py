"""A cohort is bound to the pseudonym key it was first written with: another key is refused before any write.

All patients are synthetic virtual patients written by tests/io/dicom_factory.py (no patient data).
"""

from __future__ import annotations

import hashlib
import hmac
import json

import pytest

from cohort_dosimetry.cli import main as cli_main
from cohort_dosimetry.io import ingest
from cohort_dosimetry.store import PseudonymKeyMismatch, open_cohort, pseudonymise_patient_id, validate_cohort
from tests.io import dicom_factory as factory

KEY_A = "pseudonym-key-A-0123456789abcdef"
KEY_B = "pseudonym-key-B-0123456789abcdef"


@pytest.fixture
def no_key(monkeypatch):
    monkeypatch.delenv("COHORT_DOSIMETRY_PSEUDONYM_KEY", raising=False)
    monkeypatch.delenv("COHORT_DOSIMETRY_PSEUDONYM_KEY_FILE", raising=False)
    return monkeypatch


def _snapshot(folder) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_another_key_is_refused_and_the_store_left_as_it_was(tmp_path, no_key):
    patient = factory.write_patient(tmp_path / "dicom", seed=31)
    no_key.setenv("COHORT_DOSIMETRY_PSEUDONYM_KEY", KEY_A)
    first = ingest(tmp_path / "dicom", tmp_path / "cohort", grid="ct")
    assert set(first.loc[first["timepoint"] != "", "status"]) == {"written"}
    root_attrs = json.loads((tmp_path / "cohort" / "store.zarr" / "zarr.json").read_text())["attributes"]
    expected = hmac.new(KEY_A.encode(), b"cohort-dosimetry pseudonym key fingerprint", hashlib.sha256).hexdigest()
    assert root_attrs["pseudonym_key_fingerprint"] == expected[:16]
    assert KEY_A not in (tmp_path / "cohort" / "store.zarr" / "zarr.json").read_text()
    assert validate_cohort(tmp_path / "cohort") == []
    before = _snapshot(tmp_path / "cohort")

    no_key.setenv("COHORT_DOSIMETRY_PSEUDONYM_KEY", KEY_B)
    with pytest.raises(PseudonymKeyMismatch) as refused:
        ingest(tmp_path / "dicom", tmp_path / "cohort", grid="ct")
    message = str(refused.value)
    assert "differs from the key the cohort" in message
    assert "COHORT_DOSIMETRY_PSEUDONYM_KEY " in message and "COHORT_DOSIMETRY_PSEUDONYM_KEY_FILE" in message
    assert "new cohort directory" in message and KEY_B not in message and KEY_A not in message
    assert _snapshot(tmp_path / "cohort") == before
    with pytest.raises(PseudonymKeyMismatch):
        open_cohort(tmp_path / "cohort").pseudonymise_patient_id(patient.patient_id)

    no_key.setenv("COHORT_DOSIMETRY_PSEUDONYM_KEY", KEY_A)
    again = ingest(tmp_path / "dicom", tmp_path / "cohort", grid="ct")
    assert set(again.loc[again["timepoint"] != "", "status"]) == {"unchanged"}
    cohort = open_cohort(tmp_path / "cohort")
    assert [p for p, _ in cohort.scans()] == [pseudonymise_patient_id(patient.patient_id, KEY_A)]
    assert cohort.pseudonymise_patient_id(patient.patient_id) == pseudonymise_patient_id(patient.patient_id, KEY_A)


def test_without_a_configured_key_a_bound_cohort_is_refused_and_no_key_file_made(tmp_path, no_key):
    factory.write_patient(tmp_path / "dicom", seed=32)
    no_key.setenv("COHORT_DOSIMETRY_PSEUDONYM_KEY", KEY_A)
    ingest(tmp_path / "dicom", tmp_path / "cohort", grid="ct")
    before = _snapshot(tmp_path / "cohort")
    no_key.delenv("COHORT_DOSIMETRY_PSEUDONYM_KEY")
    with pytest.raises(PseudonymKeyMismatch, match="no pseudonym key is configured"):
        ingest(tmp_path / "dicom", tmp_path / "cohort", grid="ct")
    assert not (tmp_path / "cohort" / ".secrets").exists()
    assert _snapshot(tmp_path / "cohort") == before


def test_the_cohorts_own_key_file_binds_it_too(tmp_path, no_key):
    factory.write_patient(tmp_path / "dicom", seed=33)
    ingest(tmp_path / "dicom", tmp_path / "cohort", grid="ct")  # no key configured: the cohort makes its own
    own_key = (tmp_path / "cohort" / ".secrets" / "pseudonym.key").read_bytes().strip()
    expected = hmac.new(own_key, b"cohort-dosimetry pseudonym key fingerprint", hashlib.sha256).hexdigest()[:16]
    assert open_cohort(tmp_path / "cohort").attrs["pseudonym_key_fingerprint"] == expected
    key_file = tmp_path / "site.key"
    key_file.write_text(KEY_B + "\n")
    no_key.setenv("COHORT_DOSIMETRY_PSEUDONYM_KEY_FILE", str(key_file))
    with pytest.raises(PseudonymKeyMismatch, match="unset both") as refused:
        ingest(tmp_path / "dicom", tmp_path / "cohort", grid="ct")
    assert str(key_file) in str(refused.value)


def test_cli_says_the_key_differs_and_exits_non_zero(tmp_path, no_key, capsys):
    factory.write_patient(tmp_path / "dicom", seed=34)
    no_key.setenv("COHORT_DOSIMETRY_PSEUDONYM_KEY", KEY_A)
    assert cli_main(["ingest", str(tmp_path / "dicom"), str(tmp_path / "cohort")]) == 0
    capsys.readouterr()
    no_key.setenv("COHORT_DOSIMETRY_PSEUDONYM_KEY", KEY_B)
    code = cli_main(["ingest", str(tmp_path / "dicom"), str(tmp_path / "cohort")])
    out, err = capsys.readouterr()
    assert code == 2
    assert "differs from the key the cohort" in err and "COHORT_DOSIMETRY_PSEUDONYM_KEY" in err
    assert "Traceback" not in err + out and "written" not in out
    code = cli_main(["run", str(tmp_path / "dicom"), str(tmp_path / "cohort"), "--methods", "dvk"])
    out, err = capsys.readouterr()
    assert code == 2 and "differs from the key the cohort" in err and "Traceback" not in err + out


def test_validate_checks_the_fingerprint_attribute(tmp_path, no_key):
    factory.write_patient(tmp_path / "dicom", seed=35)
    no_key.setenv("COHORT_DOSIMETRY_PSEUDONYM_KEY", KEY_A)
    ingest(tmp_path / "dicom", tmp_path / "cohort", grid="ct")
    root_json = tmp_path / "cohort" / "store.zarr" / "zarr.json"
    meta = json.loads(root_json.read_text())
    meta["attributes"]["pseudonym_key_fingerprint"] = KEY_A  # a key where its fingerprint belongs
    root_json.write_text(json.dumps(meta))
    problems = validate_cohort(tmp_path / "cohort")
    assert len(problems) == 1 and "pseudonym_key_fingerprint" in problems[0]
