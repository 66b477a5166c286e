"""The VOI vocabulary, as the virtual patients use it; it lives in :mod:`cohort_dosimetry.vocabulary` (shared by
ingest, the store checks and the statistics) and is re-exported here."""
from __future__ import annotations

from cohort_dosimetry.vocabulary import (  # noqa: F401 - re-exported
    LESION_LABEL_OFFSET,
    MAX_LESIONS,
    ORGAN_LABELS,
    VOI_NAMES,
    VOI_TYPES,
    label_of,
    name_of,
    voi_type,
)
