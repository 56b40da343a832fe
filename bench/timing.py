"""Latency statistics (count, mean, percentiles in milliseconds) and timing of repeated calls."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

T = TypeVar("T")


def latency_summary(seconds: Sequence[float]) -> dict[str, Any]:
    """Count, mean and percentiles (p50 / p95 / p99 / max) of latencies, in milliseconds."""
    import numpy as np

    if not len(seconds):
        return {"count": 0}
    ms = np.asarray(seconds, dtype=np.float64) * 1e3
    return {
        "count": int(ms.size),
        "mean_ms": round(float(ms.mean()), 3),
        "p50_ms": round(float(np.percentile(ms, 50)), 3),
        "p95_ms": round(float(np.percentile(ms, 95)), 3),
        "p99_ms": round(float(np.percentile(ms, 99)), 3),
        "max_ms": round(float(ms.max()), 3),
    }


def time_calls(
    function: Callable[[T], object],
    inputs: Sequence[T],
    count: int,
    warmup: int = 10,
    desc: str | None = None,
) -> list[float]:
    """Calls ``function(x)`` ``count`` times, cycling through ``inputs``; returns each call's seconds.

    The first ``warmup`` calls (tracing, caches) are not timed. A result with a ``numpy`` method is
    converted, so that the time covers the computation and not only its dispatch.
    """
    from tqdm import tqdm

    def call(x: T) -> None:
        out = function(x)
        for value in out.values() if isinstance(out, dict) else (out,):
            if hasattr(value, "numpy"):
                value.numpy()

    for i in range(warmup):
        call(inputs[i % len(inputs)])
    seconds = []
    for i in tqdm(range(count), desc=desc, unit="call", file=sys.stderr, disable=desc is None, leave=False):
        start = time.perf_counter()
        call(inputs[i % len(inputs)])
        seconds.append(time.perf_counter() - start)
    return seconds
