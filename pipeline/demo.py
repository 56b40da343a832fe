"""``dmirec demo``: the main job end to end on the default synthetic data, from raw log to served top-N.

1. writes the default synthetic interaction log (``trainer.synthetic``);
2. runs the TFX pipeline on it (``pipeline.local_runner``: ExampleGen -> validation ->
   Trainer -> evaluator -> pusher), which trains DMI and pushes the blessed servables (``dmi``,
   ``dmi_exact``) to ``<out>/serving``;
3. starts the local model server (TF Serving's gRPC API) on loopback, asks it for the top-10 items of a
   few held-out users through gRPC, prints them with the latency of each call, and stops the server.
"""

from __future__ import annotations

import os
import statistics
import time

from pipeline import configs, local_runner
from serving.client import RetrievalClient
from serving.server_config import ServedModel, ServerOptions
from serving.server import ModelServer
from trainer import data_schema, export, interactions, push, synthetic
from trainer.sequences import cut_users, user_sequence

# Small enough to train in about a minute on 2 cores, long enough to separate the models clearly.
DEMO_OVERRIDES = {"max_steps": 2000, "eval_every": 500, "patience": 3}
DEMO_USERS = 3


def run_demo(out_dir: str, model: str = "dmi", top_n: int = 10) -> None:
    """Runs the demo into ``out_dir`` (log, pipeline outputs and metadata, serving directory)."""
    log = os.path.join(out_dir, "log.csv")
    interactions.write_log(log, synthetic.generate(synthetic.SyntheticConfig()))
    print(interactions.log_stats(interactions.read_interactions(log)).to_text())

    summary = local_runner.run(
        log=log,
        out_dir=os.path.join(out_dir, "pipeline"),
        settings=configs.PipelineSettings(
            model=model, overrides=DEMO_OVERRIDES, beam_args=configs.IN_PROCESS_BEAM_ARGS
        ),
        serving_base=os.path.join(out_dir, "serving"),
    )
    cached = sum(state == "CACHED" for state in summary.states.values())
    print(f"pipeline run {summary.run_id}: {len(summary.states)} components ({cached} from the cache)")
    print("test metrics: " + "  ".join(f"{k} {v:.4f}" for k, v in sorted(summary.metrics.items())))
    print(f"{'blessed' if summary.blessed else 'not blessed'}: {summary.reason}")
    serving_base = os.path.join(out_dir, "serving")
    if not all(push.latest_version(os.path.join(serving_base, name)) for name in export.SERVABLES):
        raise RuntimeError(f"no blessed model was ever pushed to {serving_base}; nothing to serve")
    if summary.pushed:
        print(f"pushed version {summary.version} to {serving_base}")

    # Held-out (test) users of the same seeded split the pipeline used, cut as the protocol cuts them: raw
    # ids all the way (the servable takes and returns ids; it keeps the last L of a history itself).
    by_user = interactions.group_by_user(interactions.read_interactions(log))
    sequences = {user: user_sequence(events) for user, events in by_user.items()}
    users = cut_users(sequences, data_schema.TEST)[:DEMO_USERS]
    options = ServerOptions(
        models=tuple(ServedModel(name, os.path.join(serving_base, name)) for name in export.SERVABLES), port=0
    )
    with ModelServer(options) as server:
        print(f"model server on {server.address}")
        for name in export.SERVABLES:
            with RetrievalClient(server.address, name) as client:
                latencies = []
                for user, history, targets in users:
                    held_out = set(targets)
                    start = time.perf_counter()
                    items = client.retrieve([history], top_n=top_n)[0]
                    latencies.append(1000 * (time.perf_counter() - start))
                    hits = sum(item in held_out for item, _ in items)
                    print(f"[{name}] user {user}, last items {' '.join(history[-5:])}")
                    print(f"  top-{top_n}: " + " ".join(f"{item}({score:.2f})" for item, score in items))
                    print(f"  {hits} of {len(held_out)} held-out items in the list")
                print(f"[{name}] gRPC latency per call: median {statistics.median(latencies):.1f} ms")
