"""``dmirec demo``: the main job end to end on the default synthetic data, from raw log to served top-N.

1. writes the default synthetic interaction log (``trainer.synthetic``);
2. trains DMI on it and pushes the blessed servables (``dmi``, ``dmi_exact``) to a serving directory;
3. starts the local model server (TF Serving's gRPC API) on loopback, asks it for the top-10 items of a
   few held-out users through gRPC, prints them with the latency of each call, and stops the server.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

from serving.client import RetrievalClient
from serving.config import ModelConfig, ServerOptions
from serving.server import ModelServer
from trainer import config as config_lib
from trainer import export, interactions, synthetic
from trainer import train as train_lib
from trainer.sequences import SequenceData, evaluation_set

# Small enough to train in about a minute on 2 cores, long enough to separate the models clearly.
DEMO_OVERRIDES = {"max_steps": 2000, "eval_every": 500, "patience": 3}
DEMO_USERS = 3


def run_demo(out_dir: str, model: str = "dmi", top_n: int = 10) -> None:
    """Runs the demo into ``out_dir`` (log, model, serving directory)."""
    log = os.path.join(out_dir, "log.csv")
    interactions.write_log(log, synthetic.generate(synthetic.SyntheticConfig()))
    print(interactions.log_stats(interactions.read_interactions(log)).to_text())

    data = SequenceData.from_interactions(interactions.read_interactions(log))
    result = train_lib.train(
        config_lib.variant_config(model, DEMO_OVERRIDES), data, os.path.join(out_dir, "model")
    )
    print(f"test metrics: " + "  ".join(f"{k} {v:.4f}" for k, v in sorted(result.test.items())))
    export_dir = os.path.join(out_dir, "model", "export")
    export.export_servables(result.model, data.vocabulary, export_dir)
    serving_base = os.path.join(out_dir, "serving")
    version = export.push_servables(export_dir, serving_base)
    print(f"pushed version {version} of {', '.join(export.SERVABLES)} to {serving_base}")

    users = evaluation_set(data.test, result.config.max_length)
    options = ServerOptions(
        models=tuple(ModelConfig(name, os.path.join(serving_base, name)) for name in export.SERVABLES), port=0
    )
    with ModelServer(options) as server:
        print(f"model server on {server.address}")
        for name in export.SERVABLES:
            with RetrievalClient(server.address, name) as client:
                latencies = []
                for row in range(DEMO_USERS):
                    history = [data.vocabulary.item_ids[i - 1] for i in users.histories[row] if i]
                    start = time.perf_counter()
                    items = client.retrieve([history], top_n=top_n)[0]
                    latencies.append(1000 * (time.perf_counter() - start))
                    targets = {data.vocabulary.item_ids[i - 1] for i in users.targets[row]}
                    hits = sum(item in targets for item, _ in items)
                    print(f"[{name}] user {users.user_ids[row]} history {' '.join(history[-5:])} ...")
                    print(f"  top-{top_n}: " + " ".join(f"{item}({score:.2f})" for item, score in items))
                    print(f"  {hits} of {len(targets)} held-out items in the list")
                print(f"[{name}] gRPC latency per call: median {statistics.median(latencies):.1f} ms")


def _handle(args: argparse.Namespace) -> int:
    run_demo(args.out, args.model)
    return 0


def add_demo_command(subparsers: argparse._SubParsersAction) -> None:
    """Registers ``dmirec demo``."""
    parser = subparsers.add_parser(
        "demo",
        help="the main job on the default synthetic data: log -> trained DMI -> gRPC top-10",
        description=__doc__.split("\n\n")[0],
    )
    parser.add_argument("--out", default="demo_out", help="output directory (default demo_out)")
    neural = tuple(name for name in config_lib.VARIANTS if name != "pop")
    parser.add_argument("--model", default="dmi", choices=neural, help="variant (default dmi)")
    parser.set_defaults(handler=_handle)
