"""The decay-correction rules of single slices (the ingest's use of them is in test_spect_clinical.py)."""

from datetime import datetime, timedelta

import numpy as np

from cohort_dosimetry.io._decay import SliceDecay, undo_decay_correction

LU177_HALF_LIFE_S = 6.647 * 86400  # ICRP-107


def test_a_decay_factor_beside_correction_none_is_a_note_not_a_crash():
    """NONE means the values are the activity during acquisition: a Decay Factor of 1.5 beside it contradicts the
    header; the times are used (factor exp(rate * (acquired - start)) = 1 here) and the note says so."""
    start = datetime(2026, 1, 5, 10, 0)
    undone = undo_decay_correction(
        [SliceDecay("NONE", 1.5, None, None, start)], start, start - timedelta(hours=24), LU177_HALF_LIFE_S
    )
    assert np.allclose(undone.factors, 1.0)
    assert any(
        "Decay Factor 1.5 in the file disagrees with the 1 implied by Decay Correction NONE (no reference" in note
        for note in undone.notes
    )
