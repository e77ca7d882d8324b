"""The one way npu_ep times a call: one warm-up call, then the median of `repeat` timed calls."""
from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def median_ms(fn: Callable[[], object], repeat: int, before: Callable[[], object] | None = None,
              excluded_seconds: Callable[[], float] | None = None,
              clock: Callable[[], float] = time.perf_counter) -> float:
    """Median time of `fn()` in ms on `clock` (wall time; `time.process_time` for the process's CPU
    time), after one untimed warm-up call (caches, buffers, first-run work).

    `before` runs ahead of each timed call, untimed (e.g. to write an input afresh); `excluded_seconds`
    is a running total of time that is not `fn`'s own (e.g. the emulated device's run time), whose
    growth during a call is subtracted from it.
    """
    fn()
    times = []
    for _ in range(repeat):
        if before is not None:
            before()
        excluded = excluded_seconds() if excluded_seconds is not None else 0.0
        start = clock()
        fn()
        elapsed = clock() - start
        if excluded_seconds is not None:
            elapsed -= excluded_seconds() - excluded
        times.append(elapsed * 1e3)
    return statistics.median(times)
