"""Tests for bench.timing: latency statistics."""

import pytest

from bench import timing


def test_latency_summary_in_milliseconds():
    summary = timing.latency_summary([0.001] * 98 + [0.010, 0.020])
    assert summary["count"] == 100
    assert summary["p50_ms"] == pytest.approx(1.0)
    assert summary["max_ms"] == pytest.approx(20.0)
    assert timing.latency_summary([]) == {"count": 0}
