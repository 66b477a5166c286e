"""Wall-clock helpers shared by the benchmark scripts (run as ``python bench/NAME.py``: this folder is on sys.path)."""

import time


def timed(fn):
    """(fn(), seconds it took)."""
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def best_of(repeats: int, fn) -> float:
    """The shortest of ``repeats`` timings of ``fn()``, in seconds."""
    return min(timed(fn)[1] for _ in range(repeats))
