"""Tests for bench.serving_profile's measurement helpers (no model)."""

from __future__ import annotations

from bench import serving_profile


def test_interleaved_times_each_call_in_turns_and_skips_the_first_of_each_turn():
    order: list[tuple[str, int]] = []
    calls = {name: (lambda i, name=name: order.append((name, i))) for name in ("a", "b")}
    seconds = serving_profile.interleaved(calls, requests=18, block=10, warmup=1)
    assert {name: len(s) for name, s in seconds.items()} == {"a": 18, "b": 18}
    timed = order[2:]  # after the warm-up round
    assert [name for name, _ in timed[:20]] == ["a"] * 10 + ["b"] * 10
    assert [i for _, i in timed[:10]] == list(range(10))


def test_the_server_side_figures_come_from_the_last_requests():
    servable = {"latency": {"grpc": {"count": 2, "p50_ms": 5.0}}, "derived_p50_ms": {}}
    times = {"handler": [1.0, 0.004, 0.004], "signature": [1.0, 0.003, 0.003]}
    serving_profile.add_server_side(servable, times)
    assert servable["in_server"]["handler"]["p50_ms"] == 4.0
    assert servable["derived_p50_ms"] == {"in_server_python_around_model": 1.0, "transport_on_real_server": 1.0}


def test_the_timed_server_runs_the_real_servers_flags(tmp_path):
    layout = {"dmi": str(tmp_path / "dmi" / "1")}
    server = serving_profile.TimedServerProcess(layout, str(tmp_path / "server.log"), (1, 0))
    command = server.command(1234)
    assert command[1:5] == ["-m", serving_profile.MODULE, "--timed-server", server.stats_path]
    assert command[5] == "--" and command[6:10] == ["--host", "127.0.0.1", "--port", "1234"]
