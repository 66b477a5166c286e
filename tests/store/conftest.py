"""Fixtures for the store tests."""

from __future__ import annotations

import pytest

from cohort_dosimetry.store import open_cohort


@pytest.fixture
def cohort(tmp_path, monkeypatch):
    """An empty cohort in a temporary directory, with a configured pseudonym key."""
    monkeypatch.setenv("COHORT_DOSIMETRY_PSEUDONYM_KEY", "test-key-0123456789abcdef")
    return open_cohort(tmp_path / "cohort", create=True)
