"""Interleaved timing shared by the benchmarks: every model timed in rotating batches over many rounds.

Each round runs a batch of invokes per model, the order rotated by one each round, so a drift of the
machine (clock, cache, neighbours) spreads over every model instead of landing on whichever ran last.
Standard library only: the callers' children import their interpreters themselves.
"""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable, Sequence


def rotating_rounds(
    invokes: Sequence[Callable[[], object]], rounds: int, batch: int
) -> tuple[list[list[float]], list[list[float]]]:
    """(every invoke's ms, per-round median ms) for each callable, timed in rotating order."""
    timings: list[list[float]] = [[] for _ in invokes]
    round_medians: list[list[float]] = [[] for _ in invokes]
    clock = time.perf_counter_ns
    gc.disable()
    try:
        for r in range(rounds):
            order = list(range(len(invokes)))
            order = order[r % len(order) :] + order[: r % len(order)]
            for k in order:
                invoke = invokes[k]
                batch_times = []
                for _ in range(batch):
                    t0 = clock()
                    invoke()
                    batch_times.append((clock() - t0) / 1e6)
                timings[k].extend(batch_times)
                round_medians[k].append(statistics.median(batch_times))
    finally:
        gc.enable()
    return timings, round_medians
