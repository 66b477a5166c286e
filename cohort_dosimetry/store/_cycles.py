"""Therapy cycles: a patient's injections, in time order, numbered 1, 2, ...

A patient treated with Lu-177 DOTATATE gets several cycles of about 7.4 GBq, 8 weeks apart (NETTER-1: four cycles
every 8 weeks, Strosberg et al., N Engl J Med 376:125, 2017; EANM procedure guideline, Zaknun et al., Eur J Nucl Med
Mol Imaging 40:800, 2013). Each SPECT of a cycle carries that cycle's injection in its Radiopharmaceutical Information
Sequence (RadiopharmaceuticalStartDateTime, DICOM PS3.3 C.8.4.10), so the scans of one cycle name one injection, the
scans of the next one another, weeks later. Injections less than :data:`CYCLE_SEPARATION` apart are taken as one
cycle (the same injection written slightly differently by two workstations, or a split administration); two days
lie far below the weeks between cycles and far above clock or rounding differences of one injection.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

#: Injections closer than this are one cycle.
CYCLE_SEPARATION = timedelta(days=2)


def parse_injection(value: str | datetime) -> datetime:
    """An ``injection_datetime`` attr (ISO 8601) as a naive datetime; an offset, if any, is dropped (wall-clock time
    kept): at most hours of error, against a separation of days."""
    when = value if isinstance(value, datetime) else datetime.fromisoformat(value)
    return when.replace(tzinfo=None)


def number_cycles(injections: Sequence[str | datetime]) -> list[int]:
    """The cycle (1, 2, ...) of each injection: in time order, a new cycle starts at an injection
    :data:`CYCLE_SEPARATION` or more after the one before it. Returned in the order given."""
    times = [parse_injection(v) for v in injections]
    order = sorted(range(len(times)), key=times.__getitem__)
    cycles = [0] * len(times)
    cycle, previous = 0, None
    for i in order:
        if previous is None or times[i] - previous >= CYCLE_SEPARATION:
            cycle += 1
        cycles[i] = cycle
        previous = times[i]
    return cycles
