"""Where the time of one Predict goes: a real servable in-process, through the server's Python handler,
through gRPC, and the serving floor, measured in one run.

For each servable of a real export (``dmi_exact``, ``dmi``) of a trained model (``--model-dir``, or a
short run trained here, as :mod:`bench.serving_latency` does) the same batch-1 requests go, in turns of
:data:`BLOCK` requests so that the machine's load moves all of them alike, to:

- ``in_process``: the loaded signature called with ready tensors, as ``bench.serving_latency`` times it;
- ``handler``: the server's ``PredictionService.Predict`` called in this process on the request message
  (registry, validation, decoding, the signature, the response), plus the response's serialization:
  the server's work without gRPC;
- ``grpc``: the request through ``dmirec serve`` in a child process on loopback (batching off), whose
  handler and signature calls are timed inside the server too (``in_server``);
- ``floor``: the same request through the serving floor (:func:`bench.serving_latency.serve_floor`).

Then the handler's pieces one by one (interleaved likewise), and a ``cProfile`` of handler calls. The
derived figures: ``handler - in_process`` is the server's Python work around the model (in this process),
``in_server_python_around_model`` the same inside the server, ``transport_on_real_server`` what the gRPC
path adds to the server's handler (compare with the floor: transport and a trivial handler).

    python -m bench.serving_profile --model-dir bench/work/serving_latency/model_500
    python -m bench.serving_profile --quick --data synthetic --train-steps 200   # a tiny model
"""

from __future__ import annotations

import contextlib
import cProfile
import dataclasses
import json
import os
import pstats
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from bench import arguments, run_record, serving_latency, summaries, timing

MODULE = "bench.serving_profile"
VARIANTS = ("in_process", "handler", "grpc", "floor")
BLOCK = 10
PIECES = ("acquire", "select_outputs", "prepare", "signature", "response", "serialize")


class _Aborted(Exception):
    pass


class _Context:
    """The part of ``grpc.ServicerContext`` a handler uses to refuse a request."""

    def abort(self, code: Any, message: str) -> None:
        raise _Aborted(f"{code}: {message}")


class TimedServerProcess(serving_latency.ServerProcess):
    """``dmirec serve`` with its Predict handler and signature calls timed (:func:`serve_timed`)."""

    def __init__(self, layout: Mapping[str, str], log_path: str, threads: tuple[int, int]):
        super().__init__(layout, log_path, threads)
        self.stats_path = os.path.join(os.path.dirname(log_path), "server_times.json")

    def command(self, port: int) -> list[str]:
        serve = super().command(port)
        return [sys.executable, "-m", MODULE, "--timed-server", self.stats_path, "--", *serve[4:]]

    def times(self) -> dict[str, dict[str, list[float]]]:
        """Once stopped: seconds of each handler and signature call the server answered, by model."""
        with open(self.stats_path, encoding="utf-8") as f:
            return json.load(f)


def serve_timed(stats_path: str, flags: Sequence[str]) -> int:
    """``dmirec serve FLAGS`` whose Predict handler and signature calls are timed, written to
    ``stats_path`` on exit: ``{model: {"handler": [s, ...], "signature": [s, ...]}}``."""
    import argparse
    import collections
    import threading

    from serving import cli
    from serving import server as server_lib
    from serving import signature as signature_lib

    times: dict[str, dict[str, list[float]]] = collections.defaultdict(
        lambda: {"handler": [], "signature": []}
    )
    local = threading.local()
    predict, call = server_lib.PredictionServicer.Predict, signature_lib.Signature.__call__

    def timed_predict(self: Any, request: Any, context: Any) -> Any:
        local.model = request.model_spec.name
        start = time.perf_counter()
        try:
            return predict(self, request, context)
        finally:
            times[local.model]["handler"].append(time.perf_counter() - start)

    def timed_call(self: Any, inputs: Any) -> Any:
        start = time.perf_counter()
        try:
            return call(self, inputs)
        finally:
            times[getattr(local, "model", "")]["signature"].append(time.perf_counter() - start)

    server_lib.PredictionServicer.Predict = timed_predict
    signature_lib.Signature.__call__ = timed_call
    parser = argparse.ArgumentParser()
    cli.add_serve_command(parser.add_subparsers())
    args = parser.parse_args(["serve", *flags])
    try:
        return args.handler(args)
    finally:
        with open(stats_path, "w", encoding="utf-8") as f:
            json.dump(times, f)


def handler_pieces(registry: Any, request: Any, limits: Any) -> dict[str, float]:
    """Seconds of each step of ``PredictionServicer.Predict`` (batching off), run one after another."""
    from tensorflow_serving.apis import predict_pb2

    from serving import server as server_lib
    from serving import tensor_proto

    encode = getattr(tensor_proto, "encode", None)  # absent before issue 13: tf.make_tensor_proto
    times = {}
    clock = time.perf_counter
    start = clock()
    with registry.acquire(request.model_spec) as servable:
        signature = servable.signature(request.model_spec.signature_name)
        t1 = clock()
        wanted = signature.select_outputs(request.output_filter)
        t2 = clock()
        inputs = signature.prepare(request.inputs, limits)
        t3 = clock()
        outputs = signature(inputs)
        t4 = clock()
        arrays = [outputs[alias] for alias in wanted]
        server_lib._response_bytes(arrays if encode else dict(zip(wanted, arrays)))
        response = predict_pb2.PredictResponse()
        server_lib._fill_model_spec(response.model_spec, servable, signature.name)
        for alias in wanted:
            if encode:
                encode(outputs[alias], response.outputs[alias])
            else:
                import tensorflow as tf

                response.outputs[alias].CopyFrom(tf.make_tensor_proto(outputs[alias]))
        t5 = clock()
    response.SerializeToString()
    t6 = clock()
    for name, (a, b) in zip(PIECES, [(start, t1), (t1, t2), (t2, t3), (t3, t4), (t4, t5), (t5, t6)]):
        times[name] = b - a
    return times


def interleaved(
    calls: Mapping[str, Callable[[int], Any]], requests: int, block: int = BLOCK, warmup: int = 20
) -> dict[str, list[float]]:
    """Seconds of ``requests`` calls of each kind, taken in turns of ``block`` calls (the first of each
    turn untimed), so that every kind sees the same load on the machine while each runs back to back as
    a benchmark of it alone would (a server idle for a while answers its next request slower)."""
    for i in range(warmup):
        for call in calls.values():
            call(i)
    seconds: dict[str, list[float]] = {name: [] for name in calls}
    i = 0
    while len(next(iter(seconds.values()))) < requests:
        for name, call in calls.items():
            call(i)
            for k in range(1, block):
                start = time.perf_counter()
                call(i + k)
                seconds[name].append(time.perf_counter() - start)
        i += block
    return seconds


def profile_handler(
    servicer: Any, requests: Sequence[Any], calls: int, top: int = 15
) -> list[dict[str, Any]]:
    """The functions taking the most time (own time) over ``calls`` handler calls, per call."""
    context = _Context()
    profiler = cProfile.Profile()
    profiler.enable()
    for i in range(calls):
        servicer.Predict(requests[i % len(requests)], context).SerializeToString()
    profiler.disable()
    stats = pstats.Stats(profiler)
    rows = []
    for (path, line, function), (_, ncalls, tottime, cumtime, _) in stats.stats.items():  # type: ignore
        rows.append(
            {
                "function": f"{_short_path(path)}:{line}({function})",
                "calls_per_request": round(ncalls / calls, 2),
                "own_us_per_request": round(tottime / calls * 1e6, 1),
                "cumulative_us_per_request": round(cumtime / calls * 1e6, 1),
            }
        )
    rows.sort(key=lambda r: r["own_us_per_request"], reverse=True)
    return rows[:top]


def _short_path(path: str) -> str:
    for marker in ("site-packages/", run_record.REPO_ROOT + "/"):
        if marker in path:
            return path.split(marker, 1)[1]
    return path


def measure_servable(
    name: str, path: str, address: str, floor_address: str, histories: Sequence[Sequence[str]], args: Any
) -> dict[str, Any]:
    """The four variants of one servable's batch-1 requests, its handler's pieces and a profile."""
    from serving import server_config
    from serving import contract
    from serving.model_manager import ModelRegistry
    from serving.server import PredictionServicer

    single = [[h] for h in histories]
    requests = serving_latency.predict_requests(name, single)
    tensors = [serving_latency.string_tensor(h) for h in single]
    loaded, function = serving_latency.saved_model_function(path)
    registry = ModelRegistry(0, 0, 1.0)
    registry.apply([server_config.ServedModel(name, os.path.dirname(path))])
    limits = server_config.RequestLimits()
    servicer = PredictionServicer(registry, None, limits)
    context = _Context()
    client = serving_latency.client_for(address)
    floor_client = serving_latency.client_for(floor_address)
    n = len(requests)
    try:
        calls = {
            "in_process": lambda i: function(tensors[i % n])[contract.ITEM_IDS_OUTPUT].numpy(),
            "handler": lambda i: servicer.Predict(requests[i % n], context).SerializeToString(),
            "grpc": lambda i: client.predict(requests[i % n]),
            "floor": lambda i: floor_client.predict(requests[i % n]),
        }
        run_record.log(f"  {name}: {args.rounds} requests of each of {', '.join(calls)} in turns of {BLOCK}")
        seconds = interleaved(calls, args.rounds)
        run_record.log(f"  {name}: the handler's pieces, {args.rounds} requests")
        pieces: dict[str, list[float]] = {piece: [] for piece in PIECES}
        for i in range(args.rounds):
            function(tensors[i % n])  # the same neighbourhood as above: a model call between handler calls
            for piece, value in handler_pieces(registry, requests[i % n], limits).items():
                pieces[piece].append(value)
        run_record.log(f"  {name}: cProfile of {args.profile_calls} handler calls")
        profile = profile_handler(servicer, requests, args.profile_calls)
    finally:
        client.close()
        floor_client.close()
        registry.stop()
        del loaded
    summary = {variant: timing.latency_summary(s) for variant, s in seconds.items()}
    p50 = {variant: summary[variant]["p50_ms"] for variant in VARIANTS}
    return {
        "latency": summary,
        "p50_over_floor": {variant: round(p50[variant] / p50["floor"], 2) for variant in VARIANTS},
        "derived_p50_ms": {
            "server_python_around_model": round(p50["handler"] - p50["in_process"], 3),
            "grpc_minus_handler": round(p50["grpc"] - p50["handler"], 3),
            "transport_on_floor": p50["floor"],
            "grpc_minus_in_process": round(p50["grpc"] - p50["in_process"], 3),
        },
        "handler_pieces_p50_us": {piece: round(float(np.median(s)) * 1e6, 1) for piece, s in pieces.items()},
        "handler_pieces_sum_of_p50_us": round(sum(float(np.median(s)) for s in pieces.values()) * 1e6, 1),
        "profile_top_own_time": profile,
    }


def add_server_side(servable: dict[str, Any], times: Mapping[str, list[float]]) -> None:
    """The server's own timing of the gRPC variant's requests (the last ``requests`` it answered)."""
    count = servable["latency"]["grpc"]["count"]
    inside = {kind: timing.latency_summary(seconds[-count:]) for kind, seconds in times.items()}
    servable["in_server"] = inside
    derived = servable["derived_p50_ms"]
    handler, signature = inside["handler"]["p50_ms"], inside["signature"]["p50_ms"]
    derived["in_server_python_around_model"] = round(handler - signature, 3)
    derived["transport_on_real_server"] = round(servable["latency"]["grpc"]["p50_ms"] - handler, 3)


def rows(result: Mapping[str, Any]) -> tuple[list[str], list[list[Any]]]:
    header = ["servable", "variant", "p50 ms", "p50 / floor", "p95 ms", "p99 ms", "requests"]
    out = []
    for name, servable in result["servables"].items():
        for variant in VARIANTS:
            s = servable["latency"][variant]
            out.append(
                [name, variant, f"{s['p50_ms']:.3f}", f"{servable['p50_over_floor'][variant]:.2f}x",
                 f"{s['p95_ms']:.3f}", f"{s['p99_ms']:.3f}", s["count"]]
            )  # fmt: skip
    return header, out


def parse_args(argv: Sequence[str]) -> Any:
    parser = arguments.base_parser(MODULE, __doc__)
    arguments.add_data_arguments(parser)
    add = parser.add_argument
    arguments.add_model_arguments(parser)
    add("--servables", default="dmi_exact,dmi", help="servables to profile (default dmi_exact,dmi)")
    add("--rounds", type=int, help="timed requests per variant and servable (default 1000; --quick 300)")
    add("--profile-calls", type=int, default=300, help="handler calls under cProfile (default 300)")
    add("--intra-op-threads", type=int, default=1, help="as bench.serving_latency (default 1)")
    add("--inter-op-threads", type=int, default=0, help="as bench.serving_latency (default 0)")
    args = parser.parse_args(argv)
    args.rounds = args.rounds or (300 if args.quick else 1000)
    args.servables = [s for s in args.servables.split(",") if s]
    return args


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--timed-server"]:
        return serve_timed(argv[1], argv[3:])
    args = parse_args(argv)
    started = time.perf_counter()
    threads = arguments.configure_threads(args)
    import scann  # noqa: F401  (before any SavedModel with a ScaNN index is loaded)

    path = run_record.result_path(args.out, "serving_profile", args.quick)
    _, config, vocabulary, model, model_info, histories = serving_latency.model_and_test_histories(args)
    directory = os.path.join(args.work_dir, "serving_profile")
    os.makedirs(directory, exist_ok=True)
    max_top_n = min(200, model.num_items)
    run_record.log(f"exporting {model.num_items:,} items")
    layout, _ = serving_latency.export_layout(model, vocabulary, directory, max_top_n, None, None)
    layout = {name: layout[name] for name in args.servables}
    histories = histories[:200]
    loaded, exact = serving_latency.saved_model_function(next(iter(layout.values())))
    floor_ids = np.asarray(exact(serving_latency.string_tensor(histories[:1]))["item_ids"])
    del loaded, exact
    result: dict[str, Any] = {
        **run_record.run_metadata(MODULE, argv, args.quick),
        "model": {**model_info, "config": dataclasses.asdict(config)},
        "items": model.num_items,
        "threads": threads,
        "rounds": args.rounds,
        "requests": "batch 1, top_n 50, the test users' histories (raw ids), the same per variant and round",
        "serving_floor": serving_latency.SERVING_FLOOR_NOTE,
        "servables": {},
    }
    thread_flags = (args.intra_op_threads, args.inter_op_threads)
    with contextlib.ExitStack() as stack:
        log_path = os.path.join(directory, "server.log")
        server = stack.enter_context(TimedServerProcess(layout, log_path, thread_flags))
        floor = stack.enter_context(
            serving_latency.FloorServerProcess(
                serving_latency.floor_responses(floor_ids, [1]), os.path.join(directory, "floor_server.log")
            )
        )
        for name, servable_path in layout.items():
            result["servables"][name] = measure_servable(
                name, servable_path, server.address, floor.address, histories, args
            )
        server.__exit__()
        for name, times in server.times().items():
            if name in result["servables"]:
                add_server_side(result["servables"][name], times)
    run_record.finish_metadata(result, started)
    run_record.write_json(path, result)
    print(f"\nOne batch-1 Predict, the variants in turns of {BLOCK} requests")
    print(summaries.text_table(*rows(result)))
    for name, servable in result["servables"].items():
        inside = servable.get("in_server", {})
        server_side = ", ".join(f"{k} {v['p50_ms']:.3f}" for k, v in inside.items())
        derived = ", ".join(f"{k} {v:.3f}" for k, v in servable["derived_p50_ms"].items())
        pieces = ", ".join(f"{k} {v:.0f}" for k, v in servable["handler_pieces_p50_us"].items())
        print(f"{name}: in the server p50 ms: {server_side}\n  derived p50 ms: {derived}")
        print(f"  handler pieces p50 us: {pieces}")
        for row in servable["profile_top_own_time"][:8]:
            own, calls = row["own_us_per_request"], row["calls_per_request"]
            print(f"    {own:8.1f} us own  {calls:5.1f}x  {row['function']}")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
