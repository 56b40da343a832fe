"""Serving capacity: the most requests per second the server answers with p99 <= 20 ms under 32 clients.

Both servables (``dmi_exact``, ``dmi``) of a Beauty-trained model are served by ``dmirec serve`` in a child
process on 127.0.0.1, once without and once with server-side batching (``--enable_batching``, its
default batch size and timeout), and loaded by 32 concurrent clients (one thread and channel each, batch-1
``PredictRequest`` messages of test-user histories, the product's client):

1. **closed loop** (:func:`bench.serving_latency.grpc_throughput`): every client sends its next request
   as soon as the last is answered. That is the server's saturation throughput, and its latency is
   queueing: 32 requests in flight on 2 cores.
2. **open loop** (:func:`paced_load`): the clients send at a fixed total rate, each on its own schedule,
   and a request's latency counts from the moment it was due, not from when a busy client got round to
   it (no coordinated omission: a server that falls behind shows it). The highest rate whose p99 is
   within ``--p99-ms`` (20) while the clients kept up (at least 97 % of the offered rate answered) is
   found by bisection between 0 and the closed-loop throughput (:func:`max_rate`).

The serving floor (:class:`bench.serving_latency.FloorServerProcess`: the same API answering a
pre-built response) is measured the same way in the same run: its rate is what the 32 Python clients
and loopback allow on this machine, the ceiling of any server here, and each servable's rate is also
given as a share of it.

    python -m bench.serving_capacity --model-dir bench/work/serving_latency/model_2000
    python -m bench.serving_capacity --quick     # 8 clients, short probes
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from bench import arguments, plots, run_record, serving_latency, summaries, timing

if TYPE_CHECKING:
    import argparse

    import numpy as np

    from tensorflow_serving.apis.predict_pb2 import PredictRequest

    from serving.client import RetrievalClient

MODULE = "bench.serving_capacity"
MODES = {"unbatched": (), "batched": ("--enable_batching",)}
KEPT_UP = 0.97  # answered / offered below which the clients (not the server) set the pace


def paced_load(
    address: str, requests: Sequence[PredictRequest], clients: int, rate: float, duration: float
) -> dict[str, Any]:
    """``clients`` threads sending ``rate`` requests/s in all for ``duration`` seconds (an open loop).

    Client ``i`` sends at ``t0 + (i + k * clients) / rate`` for k = 0, 1, ...; a request's latency is
    measured from that due time, so a request a client sends late (waiting on its previous answer)
    carries its wait.

    Returns:
      ``offered_per_s``, ``answered_per_s``, ``requests`` and ``latency`` (a latency summary, ms).
    """
    period = clients / rate

    def scheduled(connection: RetrievalClient, index: int, release: float) -> list[float]:
        seconds = []
        due = release + index / rate
        end = release + duration
        k = index
        while due < end:
            pause = due - time.perf_counter()
            if pause > 0:
                time.sleep(pause)
            connection.predict(requests[k % len(requests)])
            seconds.append(time.perf_counter() - due)
            due += period
            k += clients
        return seconds

    latencies, release = serving_latency.run_clients(address, requests, clients, scheduled, warmup=1)
    elapsed = max(time.perf_counter() - release, duration)
    done = sum(len(x) for x in latencies)
    return {
        "offered_per_s": round(rate, 1),
        "answered_per_s": round(done / elapsed, 1),
        "requests": done,
        "latency": timing.latency_summary([s for x in latencies for s in x]),
    }


def within(probe: Mapping[str, Any], p99_ms: float) -> bool:
    """Whether an open-loop probe met the latency bound with the clients keeping up."""
    latency = probe["latency"]
    return (
        latency.get("count", 0) > 0
        and latency["p99_ms"] <= p99_ms
        and probe["answered_per_s"] >= KEPT_UP * probe["offered_per_s"]
    )


def max_rate(
    address: str,
    requests: Sequence[PredictRequest],
    clients: int,
    p99_ms: float,
    duration: float,
    probes: int,
) -> dict[str, Any]:
    """The closed-loop throughput, then the highest open-loop rate within ``p99_ms`` (bisection).

    Returns:
      ``closed_loop`` (:func:`bench.serving_latency.grpc_throughput`), ``probes`` (every open-loop probe,
      in order, with ``within``) and ``max_requests_per_s`` (the highest answered rate of a probe within
      the bound; None if none was).
    """
    closed = serving_latency.grpc_throughput(address, requests, clients, duration)
    low, high = 0.0, closed["requests_per_s"]
    tried: list[dict[str, Any]] = []
    rate = high
    for _ in range(probes):
        probe = paced_load(address, requests, clients, rate, duration)
        probe["within"] = within(probe, p99_ms)
        tried.append(probe)
        run_record.log(
            f"    {rate:7.1f}/s offered: {probe['answered_per_s']:7.1f}/s answered, "
            f"p99 {probe['latency'].get('p99_ms', float('nan')):.1f} ms{'' if probe['within'] else ' (over)'}"
        )
        if probe["within"]:
            low = rate
            if rate >= high:  # even the saturation throughput is within the bound
                break
        else:
            high = rate
        rate = (low + high) / 2
    passing = [p["answered_per_s"] for p in tried if p["within"]]
    return {"closed_loop": closed, "probes": tried, "max_requests_per_s": max(passing, default=None)}


def measure(
    layout: Mapping[str, str],
    requests: Mapping[str, Sequence[PredictRequest]],
    floor_ids: np.ndarray,
    args: argparse.Namespace,
    log_dir: str,
) -> dict[str, Any]:
    """Every servable in every mode, and the floor, as :func:`max_rate` figures."""
    out: dict[str, Any] = {"floor": {}, "modes": {}}
    threads = (args.intra_op_threads, args.inter_op_threads)
    responses = serving_latency.floor_responses(floor_ids, [1])
    with serving_latency.FloorServerProcess(responses, os.path.join(log_dir, "floor.log")) as floor:
        run_record.log(f"floor: {args.clients} clients")
        out["floor"] = max_rate(
            floor.address, requests["dmi_exact"], args.clients, args.p99_ms, args.duration, args.probes
        )
    for mode, flags in MODES.items():
        log_path = os.path.join(log_dir, f"server_{mode}.log")
        with serving_latency.ServerProcess(layout, log_path, threads, flags=flags) as server:
            out["modes"][mode] = {}
            for name in serving_latency.SERVABLE_NAMES:
                run_record.log(f"{name}, {mode}: {args.clients} clients")
                figure = max_rate(
                    server.address, requests[name], args.clients, args.p99_ms, args.duration, args.probes
                )
                floor_rate = out["floor"]["max_requests_per_s"]
                rate = figure["max_requests_per_s"]
                figure["of_floor"] = round(rate / floor_rate, 3) if rate and floor_rate else None
                out["modes"][mode][name] = figure
    return out


def rows(result: Mapping[str, Any]) -> tuple[list[str], list[list[str]]]:
    """The capacity table: one row per servable and mode, and the floor's."""
    header = [
        "servable",
        "batching",
        "max requests/s at p99 <= bound",
        "of the floor",
        "closed loop /s",
        "closed-loop p99 ms",
    ]
    body = []
    floor = result["capacity"]["floor"]
    figures = [("floor: trivial server", "-", floor)] + [
        (name, mode, figure)
        for mode, named in result["capacity"]["modes"].items()
        for name, figure in named.items()
    ]
    for name, mode, figure in figures:
        closed = figure["closed_loop"]
        body.append([
            name,
            mode,
            summaries.format_number(figure["max_requests_per_s"], 1),
            summaries.format_number(figure.get("of_floor"), 3) if "of_floor" in figure else "1",
            summaries.format_number(closed["requests_per_s"], 1),
            summaries.format_number(closed["latency"]["p99_ms"], 1),
        ])  # fmt: skip
    return header, body


def plot(result: Mapping[str, Any], path: str) -> str:
    """p99 against the offered rate of every open-loop probe, the bound as a line."""
    plt = plots.pyplot()
    figure, axis = plt.subplots(figsize=(7, 4.5))
    series = [("floor", result["capacity"]["floor"])] + [
        (f"{name} {mode}", figure_)
        for mode, named in result["capacity"]["modes"].items()
        for name, figure_ in named.items()
    ]
    for label, figure_ in series:
        probes = sorted(figure_["probes"], key=lambda p: p["offered_per_s"])
        axis.plot(
            [p["offered_per_s"] for p in probes], [p["latency"]["p99_ms"] for p in probes], "o-", label=label
        )
    axis.axhline(result["settings"]["p99_ms"], color="grey", linestyle="--", label="p99 bound")
    from matplotlib.ticker import LogLocator, NullFormatter, ScalarFormatter

    axis.set_xscale("log")
    axis.set_yscale("log")
    for scale in (axis.xaxis, axis.yaxis):
        scale.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        scale.set_major_formatter(ScalarFormatter())
        scale.set_minor_formatter(NullFormatter())
    axis.set_xlabel("offered requests/s (open loop, batch 1)")
    axis.set_ylabel("p99 latency, ms (from the due time)")
    axis.set_title(f"{result['settings']['clients']} clients on loopback")
    axis.legend(fontsize=8)
    return plots.save_figure(figure, path)


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = arguments.base_parser(MODULE, __doc__)
    arguments.add_data_arguments(parser)
    arguments.add_model_arguments(parser)
    add = parser.add_argument
    add("--clients", type=int, help="concurrent clients (default 32; --quick 8)")
    add("--p99-ms", type=float, default=20.0, help="the latency bound (default 20 ms)")
    add("--duration", type=float, help="seconds per probe (default 5; --quick 1.5)")
    add("--probes", type=int, help="open-loop probes per figure (default 6; --quick 3)")
    add("--max-top-n", type=int, default=200, help="max_top_n of the export (default 200, as dmirec train)")
    add(
        "--intra-op-threads", type=int, default=1, help="the server's TensorFlow intra-op threads (default 1)"
    )
    add(
        "--inter-op-threads",
        type=int,
        default=0,
        help="its inter-op threads (default 0: TensorFlow's choice)",
    )
    args = parser.parse_args(argv)
    args.clients = args.clients or (8 if args.quick else 32)
    args.duration = args.duration or (1.5 if args.quick else 5.0)
    args.probes = args.probes or (3 if args.quick else 6)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    started = time.perf_counter()
    arguments.configure_threads(args)
    path = run_record.result_path(args.out, "serving_capacity", args.quick)
    dataset, _, vocabulary, model, model_info, histories = serving_latency.model_and_test_histories(args)
    work = os.path.join(args.work_dir, "serving_capacity")
    layout, export_info = serving_latency.export_layout(
        model, vocabulary, work, min(args.max_top_n, model.num_items), None, None
    )
    requests = {
        name: serving_latency.predict_requests(name, [[h] for h in histories[:2000]])
        for name in serving_latency.SERVABLE_NAMES
    }
    loaded, function = serving_latency.saved_model_function(layout["dmi_exact"])  # a real answer's ids
    floor_ids = serving_latency.top_ids(function, [serving_latency.string_tensor(histories[:32])])[0]
    del loaded, function
    result: dict[str, Any] = {
        **run_record.run_metadata(MODULE, argv, args.quick),
        "data": dataset.describe(),
        "model": {**model_info, "export": export_info},
        "settings": {
            "clients": args.clients,
            "p99_ms": args.p99_ms,
            "duration_s": args.duration,
            "probes": args.probes,
            "kept_up": KEPT_UP,
            "server": "dmirec serve in a child process on 127.0.0.1, TensorFlow threads intra-op "
            f"{args.intra_op_threads} / inter-op {args.inter_op_threads}; batched: --enable_batching "
            "with its defaults",
            "requests": "batch-1 PredictRequest (serving_default, top_n=50) of test-user histories",
        },
    }
    log_dir = os.path.join(work, "logs")
    os.makedirs(log_dir, exist_ok=True)
    result["capacity"] = measure(layout, requests, floor_ids, args, log_dir)
    result["figure"] = os.path.basename(
        plot(result, run_record.result_path(args.out, "serving_capacity", args.quick, ".png"))
    )
    run_record.write_json(path, run_record.finish_metadata(result, started))
    print(summaries.text_table(*rows(result)))
    run_record.log(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
