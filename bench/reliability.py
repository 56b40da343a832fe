"""Reliability of the model server under hostile input, load, hot swaps and injected faults.

A DMI model (trained on Beauty here, or ``--model-dir``) is exported as ``dmi_exact`` and served by
``dmirec serve`` in a child process on 127.0.0.1 (polling its base path every 0.5 s). Then, in order:

1. **Fuzz**: ``--requests`` seeded hostile requests (``serving/fuzzing.py``: every category of issue 11,
   including ``[2147483648, -1]``, ``[100000, 0]`` with no value and ``[30000, 1]`` with one value), the
   status of each recorded per category; after every 100, a good request must get the answer it got
   before the fuzzing. The server's resident memory is sampled throughout (``VmRSS``, peak ``VmHWM``).
2. **Batch sizes**: every batch size 1..``--max-rows`` once, in a shuffled order, then again: the first
   call of a size must not pay a compilation (its latency against the repeat's), and memory stays flat.
3. **Load**: ``--clients`` concurrent clients (one channel each) for ``--duration`` seconds at batch 1.
4. **Hot swap under load**: 8 clients while a new version is pushed with ``trainer.push.push_servables``;
   every request must succeed, through the load of the new version and the unloading of the old one.
5. **Faults**: a version copied non-atomically (``saved_model.pb`` first, the rest 3 s later) must be
   served once complete; a corrupt version must be reported with a code and leave the served version
   alone, and be forgotten once removed; a pusher killed with ``kill -9`` at random points must never
   leave a version the server would load half; the server killed with ``kill -9`` during a version's load
   must serve the newest version after a restart. (Training killed with ``kill -9`` and resumed is tested
   in ``tests/test_faults.py``.)

    python -m bench.reliability            # writes bench/results/reliability.json
    python -m bench.reliability --quick    # fewer requests, shorter load
"""

from __future__ import annotations

import collections
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from bench import arguments, run_record, serving_latency, timing

if TYPE_CHECKING:
    from tensorflow_serving.apis.predict_pb2 import PredictRequest

    from serving.client import RetrievalClient

MODULE = "bench.reliability"
NAME = "dmi_exact"
SWAP_CLIENTS = 8
_BLAMELESS = ("INTERNAL", "UNKNOWN")


class MemoryWatch:
    """Samples a process's resident memory every 50 ms in a thread: start, end, peak (MB)."""

    def __init__(self, pid: int):
        from serving.testing import resident_memory_mb

        self._read = lambda: resident_memory_mb(pid)
        self.start_mb = self.peak_mb = self._read()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.wait(0.05):
            try:
                self.peak_mb = max(self.peak_mb, self._read())
            except OSError:  # the process is gone
                return

    def stop(self) -> dict[str, float]:
        self._stop.set()
        self._thread.join()
        end = self._read()
        return {
            "start_mb": round(self.start_mb, 1),
            "end_mb": round(end, 1),
            "peak_mb": round(max(self.peak_mb, end), 1),
            "growth_mb": round(end - self.start_mb, 1),
        }


def _channel(address: str) -> Any:
    import grpc

    return grpc.insecure_channel(address)


def _answer(client: RetrievalClient, request: PredictRequest) -> list[str]:
    from serving.client import top_items

    return [item for row in top_items(client.predict(request)) for item, _ in row]


def fuzz(server: Any, item_ids: list[str], count: int, seed: int, good: Any) -> dict[str, Any]:
    """Phase 1: hostile requests, a correctness check after every 100."""
    from serving import fuzzing

    channel = _channel(server.address)  # hostile bytes go out raw; correctness checks through the client
    client = serving_latency.client_for(server.address)
    expected = _answer(client, good)
    watch = MemoryWatch(server.pid)
    codes: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    checks = failed_checks = 0
    started = time.perf_counter()
    for index, (category, method, payload) in enumerate(
        fuzzing.hostile_requests(seed, count, NAME, item_ids)
    ):
        codes[category][fuzzing.send(channel, method, payload, timeout_s=60).name] += 1
        if index % 100 == 99:
            checks += 1
            failed_checks += _answer(client, good) != expected
    seconds = time.perf_counter() - started
    memory = watch.stop()
    channel.close()
    client.close()
    blameless = sum(c[code] for c in codes.values() for code in _BLAMELESS)
    return {
        "requests": count,
        "seconds": round(seconds, 1),
        "codes_per_category": {category: dict(counter) for category, counter in codes.items()},
        "internal_or_unknown": blameless,
        "correctness_checks": checks,
        "failed_correctness_checks": failed_checks,
        "server_memory": memory,
    }


def batch_sizes(server: Any, histories: list[list[str]], max_rows: int, seed: int) -> dict[str, Any]:
    """Phase 2: each batch size 1..max_rows twice (shuffled); first call against the repeat."""
    client = serving_latency.client_for(server.address)
    sizes = list(range(1, max_rows + 1))
    np.random.default_rng(seed).shuffle(sizes)
    requests = {
        n: serving_latency.predict_requests(NAME, [[histories[i % len(histories)] for i in range(n)]])[0]
        for n in sizes
    }
    watch = MemoryWatch(server.pid)
    first, repeat = {}, {}
    for timings in (first, repeat):
        for n in sizes:
            start = time.perf_counter()
            client.predict(requests[n])
            timings[n] = time.perf_counter() - start
    memory = watch.stop()
    client.close()
    ratios = [first[n] / repeat[n] for n in sizes]
    worst = max(sizes, key=lambda n: first[n] - repeat[n])
    return {
        "sizes": f"1..{max_rows}",
        "first_call": timing.latency_summary(list(first.values())),
        "repeat_call": timing.latency_summary(list(repeat.values())),
        "max_first_over_repeat": round(max(ratios), 2),
        "worst_size": {
            "rows": worst,
            "first_ms": round(first[worst] * 1e3, 2),
            "repeat_ms": round(repeat[worst] * 1e3, 2),
        },
        "server_memory": memory,
    }


def _clients_while(
    address: str, requests: Sequence[Any], clients: int, until: Callable[[], bool], max_s: float
) -> dict[str, Any]:
    """``clients`` threads sending back-to-back until ``until()`` holds (or ``max_s``); every outcome kept."""
    from serving.client import ServingError

    latencies: list[float] = []
    failures: collections.Counter = collections.Counter()
    versions: collections.Counter = collections.Counter()
    lock = threading.Lock()
    stop = threading.Event()

    def client(index: int) -> None:
        connection = serving_latency.client_for(address)
        k = index
        while not stop.is_set():
            start = time.perf_counter()
            try:
                response = connection.predict(requests[k % len(requests)])
            except ServingError as e:
                with lock:
                    failures[e.code_name] += 1
            else:
                with lock:
                    latencies.append(time.perf_counter() - start)
                    versions[response.model_spec.version.value] += 1
            k += clients
        connection.close()

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    while not until() and time.perf_counter() - started < max_s:
        time.sleep(0.05)
    stop.set()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    return {
        "clients": clients,
        "seconds": round(elapsed, 1),
        "requests": len(latencies) + sum(failures.values()),
        "failed": sum(failures.values()),
        "failures": dict(failures),
        "requests_per_s": round((len(latencies) + sum(failures.values())) / elapsed, 1),
        "latency": timing.latency_summary(latencies),
        "answered_by_version": {str(v): n for v, n in sorted(versions.items())},
    }


def _statuses(address: str) -> dict[int, tuple[str, int]]:
    """Version -> (state, error code) as the server reports them (GetModelStatus)."""
    import grpc
    from tensorflow_serving.apis import get_model_status_pb2, model_service_pb2_grpc

    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = NAME
    with _channel(address) as channel:
        try:
            response = model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus(request, timeout=5)
        except grpc.RpcError:
            return {}
    states = get_model_status_pb2.ModelVersionStatus.State
    return {s.version: (states.Name(s.state), s.status.error_code) for s in response.model_version_status}


def _newest_available(address: str) -> int:
    available = [v for v, (state, _) in _statuses(address).items() if state == "AVAILABLE"]
    return max(available, default=0)


def _wait(condition: Callable[[], bool], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.2)
    return False


def hot_swap(server: Any, export_dir: str, serving_base: str, requests: Sequence[Any]) -> dict[str, Any]:
    """Phase 4: a new version pushed while 8 clients send requests."""
    from trainer import push as push_lib

    version = {"pushed": 0}

    def push() -> None:
        time.sleep(1.0)
        version["pushed"] = push_lib.push_servables(export_dir, serving_base)

    pusher = threading.Thread(target=push, daemon=True)
    pusher.start()

    def swapped() -> bool:
        if not version["pushed"]:
            return False
        statuses = _statuses(server.address)
        return statuses.get(version["pushed"], ("",))[0] == "AVAILABLE" and all(
            state == "END" for v, (state, _) in statuses.items() if v != version["pushed"]
        )

    result = _clients_while(server.address, requests, SWAP_CLIENTS, swapped, max_s=600)
    pusher.join()
    result["version_pushed"] = version["pushed"]
    result["swapped"] = swapped()
    return result


def faults(server: Any, version_dir: str, serving_base: str, export_dir: str, seed: int) -> dict[str, Any]:
    """Phase 5 (without the server kill): non-atomic copy, corrupt version, killed pushes."""
    from serving.model_manager import scan_versions
    from serving.servable import Servable
    from trainer import push

    base = os.path.join(serving_base, NAME)
    results = {}
    # A version copied file by file, saved_model.pb first.
    version = push.latest_version(base) + 1
    target = os.path.join(base, str(version))
    os.makedirs(target)
    shutil.copy(os.path.join(version_dir, "saved_model.pb"), target)
    time.sleep(3.0)
    for name in sorted(os.listdir(version_dir)):
        source = os.path.join(version_dir, name)
        if name != "saved_model.pb":
            (shutil.copytree if os.path.isdir(source) else shutil.copy)(source, os.path.join(target, name))
    picked_up = _wait(lambda: _newest_available(server.address) == version, 300)
    results["non_atomic_copy"] = {"version": version, "served_once_complete": picked_up}

    # A corrupt version: reported, never served, forgotten once removed.
    broken = version + 1
    os.makedirs(os.path.join(base, str(broken)))
    with open(os.path.join(base, str(broken), "saved_model.pb"), "wb") as f:
        f.write(b"not a SavedModel")
    reported = _wait(lambda: _statuses(server.address).get(broken, ("", 0))[1] != 0, 60)
    code = _statuses(server.address).get(broken, ("", 0))[1]
    still = _newest_available(server.address) == version
    shutil.rmtree(os.path.join(base, str(broken)))
    forgotten = _wait(lambda: broken not in _statuses(server.address), 60)
    results["corrupt_version"] = {
        "version": broken,
        "reported_with_code": code,
        "previous_kept_serving": still,
        "forgotten_once_removed": forgotten,
    }

    # Pushes killed with kill -9 at random points: only complete versions ever appear.
    rng = np.random.default_rng(seed)
    kills = 0
    pushes = f"from trainer.push import push_servables\nwhile True: push_servables({export_dir!r}, {serving_base!r})\n"
    for _ in range(4):
        before = len(scan_versions(base))
        process = subprocess.Popen(
            [sys.executable, "-c", pushes], cwd=run_record.REPO_ROOT, stderr=subprocess.DEVNULL
        )
        _wait(lambda: len(scan_versions(base)) > before, 300)
        time.sleep(float(rng.uniform(0.0, 0.5)))
        process.send_signal(signal.SIGKILL)
        process.wait()
        kills += 1
    versions = scan_versions(base)
    incomplete = []
    for number, path in sorted(versions.items()):
        try:
            Servable.load(NAME, number, path)
        except Exception as e:  # recorded: a half-written version would be a failure of this check
            incomplete.append(f"{number}: {type(e).__name__}")
    newest = max(versions)
    served = _wait(lambda: _newest_available(server.address) == newest, 600)
    results["killed_pushes"] = {
        "kills": kills,
        "versions_on_disk": len(versions),
        "versions_that_fail_to_load": incomplete,
        "newest_served": served,
    }
    return results


def killed_server(layout: dict[str, str], log_path: str, threads: tuple[int, int]) -> dict[str, Any]:
    """Phase 5, last fault: ``kill -9`` while a version loads, then a restart."""
    from trainer import push

    base = os.path.dirname(layout[NAME])
    with serving_latency.ServerProcess(layout, log_path, threads, poll_s=0.5) as server:
        version = push.latest_version(base) + 1
        staging = os.path.join(base, f".copy-{version}")
        shutil.copytree(layout[NAME], staging)
        os.replace(staging, os.path.join(base, str(version)))
        loading = _wait(lambda: f"version {version}: loading" in open(log_path, encoding="utf-8").read(), 120)
        server.kill()
        loaded_before_kill = f"version {version} loaded" in open(log_path, encoding="utf-8").read()
    started = time.perf_counter()
    with serving_latency.ServerProcess(layout, log_path + ".restart", threads, poll_s=0.5) as server:
        served = _wait(lambda: _newest_available(server.address) == version, 600)
        restart_s = time.perf_counter() - started
    return {
        "killed_during_load": loading and not loaded_before_kill,
        "version": version,
        "newest_served_after_restart": served,
        "restart_to_serving_s": round(restart_s, 1),
    }


def parse_args(argv: Sequence[str]) -> Any:
    parser = arguments.base_parser(MODULE, __doc__)
    arguments.add_data_arguments(parser)
    add = parser.add_argument
    arguments.add_model_arguments(parser)
    add("--requests", type=int, help="hostile requests (default 1800; --quick 600)")
    add("--max-rows", type=int, help="largest batch size of phase 2 (default 130; --quick 40)")
    add("--clients", type=int, default=32, help="concurrent clients of the load phase (default 32)")
    add("--duration", type=float, help="seconds of the load phase (default 20; --quick 5)")
    add("--max-top-n", type=int, default=200, help="max_top_n of the export (default 200)")
    add("--seed", type=int, default=0, help="seed of the hostile requests and the fault timings")
    args = parser.parse_args(argv)
    args.requests = args.requests or (600 if args.quick else 1800)
    args.max_rows = args.max_rows or (40 if args.quick else 130)
    args.duration = args.duration or (5.0 if args.quick else 20.0)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    started = time.perf_counter()
    path = run_record.result_path(args.out, "reliability", args.quick)
    dataset, _, vocabulary, model, model_info, histories = serving_latency.model_and_test_histories(args)
    histories = histories[:2000]
    work = os.path.join(args.work_dir, "reliability")
    shutil.rmtree(work, ignore_errors=True)
    layout, export_info = serving_latency.export_layout(model, vocabulary, work, args.max_top_n, None, None)
    shutil.rmtree(os.path.dirname(layout["dmi"]), ignore_errors=True)  # dmi_exact only: stock TF ops
    layout = {NAME: layout[NAME]}
    serving_base = os.path.dirname(os.path.dirname(layout[NAME]))
    pristine = os.path.join(work, "pristine")  # an export directory to push from (push_servables' input)
    shutil.copytree(layout[NAME], os.path.join(pristine, NAME))
    result: dict[str, Any] = {
        **run_record.run_metadata(MODULE, argv, args.quick),
        "data": dataset.describe(),
        "model": {**model_info, "export": export_info},
        "server": "dmirec serve in a child process on 127.0.0.1, default request limits, polling every "
        "0.5 s, TensorFlow intra-op threads 1",
        "phases": {},
    }
    threads = (1, 0)
    single = serving_latency.predict_requests(NAME, [[h] for h in histories[:256]])
    log_dir = os.path.join(work, "logs")
    os.makedirs(log_dir)
    with serving_latency.ServerProcess(
        layout, os.path.join(log_dir, "server.log"), threads, poll_s=0.5
    ) as server:
        result["startup_s"] = round(server.startup_seconds, 1)
        phases = result["phases"]
        run_record.log(f"fuzz: {args.requests} hostile requests")
        phases["fuzz"] = fuzz(server, list(vocabulary.item_ids[:200]), args.requests, args.seed, single[0])
        run_record.write_json(path, result)
        run_record.log(f"batch sizes 1..{args.max_rows}")
        phases["batch_sizes"] = batch_sizes(server, histories, args.max_rows, args.seed)
        run_record.log(f"load: {args.clients} clients for {args.duration:.0f} s")
        deadline = time.perf_counter() + args.duration
        phases["load"] = _clients_while(
            server.address, single, args.clients, lambda: time.perf_counter() > deadline, args.duration + 5
        )
        run_record.write_json(path, result)
        run_record.log("hot swap under load")
        phases["hot_swap"] = hot_swap(server, pristine, serving_base, single)
        run_record.log("faults")
        phases["faults"] = faults(server, layout[NAME], serving_base, pristine, args.seed)
        run_record.write_json(path, result)
    run_record.log("kill -9 of the server during a load")
    phases["faults"]["killed_server"] = killed_server(layout, os.path.join(log_dir, "killed.log"), threads)
    result["summary"] = summary(result)
    run_record.finish_metadata(result, started)
    run_record.write_json(path, result)
    for line in summary_lines(result):
        print(line)
    print(f"wrote {path}")
    return 0


def summary(result: dict[str, Any]) -> dict[str, Any]:
    """The issue's 'done when' checks, each True or False."""
    phases = result["phases"]
    fuzzed, sizes, swap, faults_ = phases["fuzz"], phases["batch_sizes"], phases["hot_swap"], phases["faults"]
    return {
        "fuzz_requests": fuzzed["requests"],
        "no_internal_or_unknown": fuzzed["internal_or_unknown"] == 0,
        "correct_after_every_100": fuzzed["failed_correctness_checks"] == 0,
        "fuzz_memory_growth_mb": fuzzed["server_memory"]["growth_mb"],
        "batch_sizes_memory_growth_mb": sizes["server_memory"]["growth_mb"],
        "no_compilation_after_warmup": sizes["max_first_over_repeat"] < 5.0,
        "load_errors": phases["load"]["failed"],
        "hot_swap_failed_requests": swap["failed"],
        "hot_swap_done": swap["swapped"],
        "faults_survived": all(
            [
                faults_["non_atomic_copy"]["served_once_complete"],
                faults_["corrupt_version"]["previous_kept_serving"],
                faults_["corrupt_version"]["forgotten_once_removed"],
                not faults_["killed_pushes"]["versions_that_fail_to_load"],
                faults_["killed_pushes"]["newest_served"],
                faults_["killed_server"]["newest_served_after_restart"],
            ]
        ),
    }


def summary_lines(result: dict[str, Any]) -> list[str]:
    phases = result["phases"]
    load = phases["load"]
    return [
        f"fuzz: {phases['fuzz']['requests']} requests, {phases['fuzz']['internal_or_unknown']} INTERNAL/UNKNOWN, "
        f"memory {phases['fuzz']['server_memory']}",
        f"batch sizes: first/repeat max x{phases['batch_sizes']['max_first_over_repeat']}, memory "
        f"{phases['batch_sizes']['server_memory']}",
        f"load: {load['clients']} clients, {load['requests']} requests, {load['failed']} failed, p50 "
        f"{load['latency'].get('p50_ms')} ms, p99 {load['latency'].get('p99_ms')} ms",
        f"hot swap: {phases['hot_swap']['requests']} requests, {phases['hot_swap']['failed']} failed",
        f"summary: {result['summary']}",
    ]


if __name__ == "__main__":
    sys.exit(main())
