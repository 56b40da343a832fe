"""Tests of bench.serving_capacity's load generators against the serving floor (no model, no training)."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest

from bench import serving_capacity, serving_latency


@pytest.fixture(scope="module")
def floor(tmp_path_factory):
    ids = np.array([[f"B{i:06d}".encode() for i in range(serving_latency.TOP_N)]])
    log = str(tmp_path_factory.mktemp("floor") / "floor.log")
    with serving_latency.FloorServerProcess(serving_latency.floor_responses(ids, [1]), log) as server:
        yield server


REQUESTS = serving_latency.predict_requests("dmi_exact", [[["a", "b"]], [["c"]]])


def test_an_open_loop_sends_the_offered_rate_and_times_from_the_due_time(floor):
    probe = serving_capacity.paced_load(floor.address, REQUESTS, clients=4, rate=200.0, duration=0.5)
    assert probe["offered_per_s"] == 200.0
    assert 80 <= probe["requests"] <= 101  # 200/s for 0.5 s: 100 due (a loaded machine may lag a few)
    assert probe["latency"]["count"] == probe["requests"] and probe["latency"]["p50_ms"] > 0


def test_a_probe_is_within_the_bound_only_if_fast_enough_and_the_clients_kept_up():
    fast = {"offered_per_s": 100.0, "answered_per_s": 99.0, "latency": {"count": 50, "p99_ms": 5.0}}
    assert serving_capacity.within(fast, 20.0)
    assert not serving_capacity.within({**fast, "latency": {"count": 50, "p99_ms": 25.0}}, 20.0)
    assert not serving_capacity.within({**fast, "answered_per_s": 90.0}, 20.0)  # the clients fell behind
    assert not serving_capacity.within({**fast, "latency": {"count": 0}}, 20.0)


def test_max_rate_bisects_below_the_closed_loop_throughput(floor):
    figure = serving_capacity.max_rate(floor.address, REQUESTS, clients=2, p99_ms=1000.0, duration=0.3, probes=3)
    closed = figure["closed_loop"]["requests_per_s"]
    assert figure["probes"][0]["offered_per_s"] == pytest.approx(closed, abs=0.1)
    assert all(p["offered_per_s"] <= closed + 0.1 for p in figure["probes"])
    passing = [p["answered_per_s"] for p in figure["probes"] if p["within"]]
    assert figure["max_requests_per_s"] == (max(passing) if passing else None)
    tight = serving_capacity.max_rate(floor.address, REQUESTS, clients=2, p99_ms=1e-6, duration=0.3, probes=3)
    assert tight["max_requests_per_s"] is None and len(tight["probes"]) == 3  # nothing is within 1 ns
    offered = [p["offered_per_s"] for p in tight["probes"]]
    assert offered == sorted(offered, reverse=True)  # each miss halves the interval


def test_rows_and_plot(tmp_path, floor):
    figure = serving_capacity.max_rate(floor.address, REQUESTS, clients=2, p99_ms=1000.0, duration=0.2, probes=1)
    result = {
        "settings": {"clients": 2, "p99_ms": 1000.0},
        "capacity": {"floor": figure, "modes": {"unbatched": {"dmi": {**figure, "of_floor": 1.0}}}},
    }
    header, body = serving_capacity.rows(result)
    assert len(header) == len(body[0]) and [row[:2] for row in body] == [
        ["floor: trivial server", "-"],
        ["dmi", "unbatched"],
    ]
    path = serving_capacity.plot(result, str(tmp_path / "capacity.png"))
    assert os.path.getsize(path) > 0


def test_the_clients_start_together_and_a_failing_one_is_reported(floor):
    started = []

    def load(connection, index, release):
        started.append((time.perf_counter(), release))
        return [connection.predict(REQUESTS[0]) is not None and 0.001]

    latencies, release = serving_latency.run_clients(floor.address, REQUESTS, 3, load)
    assert latencies == [[0.001]] * 3
    assert all(at == release and now >= release for now, at in started) and len(started) == 3

    def failing(connection, index, release):
        if index == 1:
            raise ValueError("client 1 broke")
        return []

    with pytest.raises(RuntimeError, match="client 1 broke"):
        serving_latency.run_clients(floor.address, REQUESTS, 3, failing)
    with pytest.raises(RuntimeError, match="a client failed"):  # before the barrier: the others released
        serving_latency.run_clients("127.0.0.1:1", REQUESTS, 2, load, warmup=1)
