"""Prefect flows for cohort-dosimetry: orchestration only (the work is in the cohort_dosimetry library)."""

import os

# The embedded default starts Prefect's temporary local API server when a flow is first called. Prefect gives it 20 s;
# on a 2-core machine, right after the demo had written its 42-scan DICOM cohort, the start took longer and `make demo`
# died before its first task (2026-12-02; an idle start takes 7 s). 120 s costs nothing when the server is quick. A
# value set by the user wins. Set before Prefect is imported: Prefect reads its settings once, at import.
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")

from flows._flows import absorbed_dose_flow, aggregate_flow, cohort_flow, dose_flow, ingest_flow  # noqa: E402
from flows._runtime import (  # noqa: E402
    SchedulerUnreachable,
    check_scheduler_security,
    cluster_workers,
    exit_on_termination_signals,
    prefect_api,
    use_tls_dir,
)

__all__ = [
    "SchedulerUnreachable",
    "absorbed_dose_flow",
    "aggregate_flow",
    "check_scheduler_security",
    "cluster_workers",
    "cohort_flow",
    "dose_flow",
    "exit_on_termination_signals",
    "ingest_flow",
    "prefect_api",
    "use_tls_dir",
]
