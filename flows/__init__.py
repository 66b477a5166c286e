"""Prefect flows for cohort-dosimetry: orchestration only (the work is in the cohort_dosimetry library)."""
from flows._flows import aggregate_flow, cohort_flow, dose_flow, ingest_flow

__all__ = ["aggregate_flow", "cohort_flow", "dose_flow", "ingest_flow"]
