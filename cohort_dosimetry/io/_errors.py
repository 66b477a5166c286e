"""What goes wrong with input, said so that a person can find the file or series and fix it."""

from __future__ import annotations

from dataclasses import dataclass

#: Report severities. "error": a scan (or series) was not ingested; "warning": ingested or skipped with a caveat the
#: reader should know; "info": noted only (non-DICOM files, modalities this pipeline does not use).
SEVERITIES = ("error", "warning", "info")


class IngestError(Exception):
    """Bad input: ``subject`` names the file or series (a path relative to the DICOM folder, or a series label)."""

    def __init__(self, subject: str, problem: str):
        super().__init__(f"{subject}: {problem}")
        self.subject = subject
        self.problem = problem


@dataclass(frozen=True)
class Problem:
    """One row of the ingest report. ``patient_id`` is the DICOM PatientID (never written; ingest pseudonymises it)."""

    severity: str
    subject: str
    problem: str
    patient_id: str = ""

    def __post_init__(self) -> None:
        if self.severity not in SEVERITIES:
            raise ValueError(f"severity must be one of {SEVERITIES}, got {self.severity!r}")
