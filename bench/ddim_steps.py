"""DDIM sampling steps at serving (the paper's Figure 4) and the number of interests K (its Table 5).

Part 1, one trained DMI model (trained here, or ``--model-dir`` written by ``dmirec train``): the model is
rebuilt with ``sampling_steps = S`` for S in ``--steps`` (default 1, 2, 5, 10 and T) and the trained
weights copied in (the refiner's DDIM time steps are fixed when it is constructed; its weights do not
depend on S). For each S: test metrics (Recall@50, ...) and the latency of ``user_interests`` for one
user per call (batch 1, in-process ``tf.function``). Row ``S = 0`` is the same weights without any
refinement (the extractor's coarse interests), i.e. what the diffusion module adds at serving.

Part 2: one DMI model trained per K in ``--interests`` (default 2, 4, 6, 8) under the same schedule,
compared with the paper's Table 5 (Beauty). The K = 4 model of part 1 is reused when it was trained here
with the same schedule.

    python -m bench.ddim_steps                     # full schedule (about an hour on 2 cores)
    python -m bench.ddim_steps --quick             # 500 steps per model (minutes)
    python -m bench.ddim_steps --model-dir runs/dmi --skip-k-sweep
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any

from bench import arguments, datasets, plots, references, run_record, summaries, timing, training
from bench.reproduce import RunSpec, train_and_test

MODULE = "bench.ddim_steps"
DEFAULT_STEPS = (1, 2, 5, 10)
DEFAULT_INTERESTS = (2, 4, 6, 8)
QUICK_SCHEDULE = {"max_steps": 500, "eval_every": 250, "patience": 2}


def sweep_sampling_steps(
    model: Any, test_set: Any, steps: Sequence[int], requests: int, rounds: int = 5
) -> list[dict[str, Any]]:
    """Test metrics and batch-1 latency of ``user_interests`` for each S (0 = no refinement).

    Latency is measured in ``rounds`` interleaved rounds (every S timed in each round), so that a change in
    the shared machine's load during the sweep affects every S alike.
    """
    import tensorflow as tf

    from trainer.evaluation import Evaluator

    histories = [test_set.histories[i : i + 1] for i in range(min(len(test_set), 1000))]
    spec = tf.TensorSpec([None, model.config.max_length], tf.int32)
    rows, functions = [], []
    for s in [0, *steps]:
        if s == 0:
            metrics = Evaluator(model, test_set, refine=False)()
            interests = tf.function(lambda h: model.extract(h)[0], input_signature=[spec], autograph=False)
        else:
            clone = model.with_sampling_steps(s)
            metrics = Evaluator(clone, test_set)()
            interests = tf.function(
                lambda h, m=clone: m.user_interests(h), input_signature=[spec], autograph=False
            )
        label = "no refinement" if s == 0 else f"S={s}"
        run_record.log(f"{label}: test recall@50 {metrics['recall@50']:.4f}")
        rows.append({"sampling_steps": s, "label": label, "test": metrics})
        functions.append(interests)
    seconds: list[list[float]] = [[] for _ in rows]
    per_round = max(1, requests // rounds)
    for round_ in range(rounds):
        for row, function, samples in zip(rows, functions, seconds):
            inputs = histories[round_ * per_round :] or histories
            samples += timing.time_calls(function, inputs, per_round, warmup=2 if round_ else 20)
    for row, samples in zip(rows, seconds):
        row["latency_batch1"] = timing.latency_summary(samples)
        run_record.log(f"{row['label']}: p50 {row['latency_batch1']['p50_ms']:.2f} ms")
    return rows


def steps_rows(result: Mapping[str, Any]) -> tuple[list[str], list[list[str]]]:
    header = ["S (DDIM steps)", "R@50", "HR@50", "ND@50", "p50 ms", "p99 ms", "mean ms"]
    rows = []
    steps_t = result["model"]["config"]["diffusion_steps"]
    for row in result["sampling_steps"]:
        latency = row["latency_batch1"]
        rows.append(
            [
                row["label"] + (" (= T)" if row["sampling_steps"] == steps_t else ""),
                f"{row['test']['recall@50']:.4f}",
                f"{row['test']['hit_rate@50']:.4f}",
                f"{row['test']['ndcg@50']:.4f}",
                f"{latency['p50_ms']:.2f}",
                f"{latency['p99_ms']:.2f}",
                f"{latency['mean_ms']:.2f}",
            ]
        )
    return header, rows


def interests_rows(result: Mapping[str, Any]) -> tuple[list[str], list[list[str]]]:
    header = ["K", "R@50", "ND@50", "best step", "paper Beauty R@50", "ND@50"]
    rows = []
    for label, entry in result.get("num_interests", {}).items():
        k = int(label.split("=")[1])
        paper = references.PAPER_TABLE5_BEAUTY.get(k, {})
        rows.append(
            [
                k,
                summaries.format_stat(entry["recall@50"]),
                summaries.format_stat(entry["ndcg@50"]),
                ",".join(str(run["best_step"]) for run in entry["runs"]),
                summaries.format_number(paper.get("recall@50")),
                summaries.format_number(paper.get("ndcg@50")),
            ]
        )
    return header, rows


def plot(result: Mapping[str, Any], path: str) -> str:
    """Left: Recall@50 and batch-1 latency against S. Right: Recall@50 against K, with the paper's."""
    plt = plots.pyplot()
    has_k = bool(result.get("num_interests"))
    figure, axes = plt.subplots(1, 2 if has_k else 1, figsize=(11 if has_k else 6, 3.8), squeeze=False)
    axis = axes[0][0]
    rows = result["sampling_steps"]
    labels = [str(r["sampling_steps"]) if r["sampling_steps"] else "none" for r in rows]
    recalls = [r["test"]["recall@50"] for r in rows]
    axis.bar(labels, recalls, color="#4c72b0", alpha=0.8, label="test Recall@50")
    low, high = min(recalls), max(recalls)
    axis.set_ylim(max(0.0, low - 2 * (high - low + 1e-3)), high + (high - low + 1e-3))
    axis.set_xlabel("DDIM sampling steps S at serving (none = coarse interests)")
    axis.set_ylabel("test Recall@50")
    twin = axis.twinx()
    latencies = [r["latency_batch1"]["p50_ms"] for r in rows]
    twin.plot(labels, latencies, "o-", color="#dd8452", label="p50 latency")
    twin.set_ylabel("user_interests latency, batch 1, p50 (ms)")
    twin.set_ylim(bottom=0)
    axis.set_title("Figure 4 analogue: steps vs quality and cost")
    if has_k:
        axis = axes[0][1]
        ks = [int(label.split("=")[1]) for label in result["num_interests"]]
        ours = [entry["recall@50"]["mean"] for entry in result["num_interests"].values()]
        axis.plot(ks, ours, "o-", label="ours (test)")
        paper_ks = sorted(references.PAPER_TABLE5_BEAUTY)
        paper = [references.PAPER_TABLE5_BEAUTY[k]["recall@50"] for k in paper_ks]
        axis.plot(paper_ks, paper, "s--", label="paper (Beauty)")
        axis.set_xlabel("number of interests K")
        axis.set_ylabel("Recall@50")
        axis.set_xticks(ks)
        axis.set_title("Table 5 analogue: K")
        axis.grid(alpha=0.3)
        axis.legend()
    figure.tight_layout()
    return plots.save_figure(figure, path)


def parse_args(argv: Sequence[str]) -> Any:
    parser = arguments.base_parser(MODULE, __doc__)
    arguments.add_data_arguments(parser)
    parser.add_argument("--model-dir", help="a trained dmi model directory (dmirec train --out) for part 1")
    parser.add_argument(
        "--steps",
        type=arguments.parse_int_list,
        default=list(DEFAULT_STEPS),
        help="DDIM sampling steps S to try; T (the model's diffusion_steps) is always added "
        "(default 1,2,5,10)",
    )
    parser.add_argument(
        "--interests",
        type=arguments.parse_int_list,
        default=list(DEFAULT_INTERESTS),
        help="K values of part 2 (default 2,4,6,8)",
    )
    parser.add_argument("--skip-k-sweep", action="store_true", help="run part 1 only")
    parser.add_argument("--requests", type=int, help="timed batch-1 calls per S (default 500; --quick: 200)")
    arguments.add_training_arguments(parser)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    started = time.perf_counter()
    threads = arguments.configure_threads(args)
    from trainer import sequences
    from trainer import train as train_lib
    from trainer.config import parse_overrides

    overrides = {
        **(dict(QUICK_SCHEDULE) if args.quick else datasets.schedule(args.data, False)),
        **parse_overrides(args.set),
    }
    stem = run_record.result_stem("ddim_steps", args.data)
    path = run_record.result_path(args.out, stem, args.quick)
    result: dict[str, Any] = {
        **run_record.run_metadata(MODULE, argv, args.quick),
        "threads": threads,
        "schedule_and_overrides": overrides,
        "ndcg": "rank order, IDCG over the number of hits (protocol.md)",
    }

    k_results: dict[str, Any] = {}
    if args.model_dir:
        config, vocabulary, model = train_lib.load_model(args.model_dir)
        dataset = datasets.load_dataset(args.data, args.beauty_path, args.split_seed, vocabulary=vocabulary)
        result["model"] = {"source": os.path.abspath(args.model_dir), "config": dataclasses.asdict(config)}
    else:
        dataset = datasets.load_dataset(args.data, args.beauty_path, args.split_seed)
        out_dir = os.path.join(args.work_dir, f"{stem}{'_quick' if args.quick else ''}", "dmi")
        run_record.log(f"training dmi ({overrides}) into {out_dir}")
        trained, record = training.train_run("dmi", dataset.data, overrides, seed=0, out_dir=out_dir)
        model, vocabulary, config = trained.model, dataset.data.vocabulary, trained.config
        result["model"] = {
            "source": f"trained here ({out_dir})",
            "config": dataclasses.asdict(config),
            "run": record,
        }
        if config.num_interests in args.interests:
            k_results[f"K={config.num_interests}"] = {
                "model": "dmi",
                "config": training.config_dict("dmi", overrides),
                "runs": [record],
            }
    if not getattr(getattr(model, "config", None), "diffusion", False):
        raise ValueError("part 1 needs a model with the diffusion refiner (a dmi variant)")
    result["data"] = dataset.describe()
    test_set = sequences.evaluation_set(dataset.data.test, config.max_length)
    steps = sorted({s for s in args.steps if 1 <= s <= config.diffusion_steps} | {config.diffusion_steps})
    requests = args.requests or (200 if args.quick else 500)
    result["latency_note"] = (
        f"in-process tf.function of user_interests, one test user per call, {requests} timed calls per S "
        "in 5 interleaved rounds, after 20 warm-up calls"
    )
    result["sampling_steps"] = sweep_sampling_steps(model, test_set, steps, requests)
    run_record.write_json(path, result)

    if not args.skip_k_sweep:
        specs = [RunSpec(f"K={k}", "dmi", {**overrides, "num_interests": k}, (0,)) for k in args.interests]
        result["num_interests"] = k_results
        train_and_test(
            specs,
            dataset.data,
            k_results,
            save=lambda: run_record.write_json(path, result),
            jobs=args.jobs,
            threads=threads,
        )
        result["num_interests"] = {spec.label: k_results[spec.label] for spec in specs}
        result["paper_table5_beauty"] = references.PAPER_TABLE5_BEAUTY
    result["figure"] = os.path.basename(
        plot(result, run_record.result_path(args.out, stem, args.quick, ".png"))
    )
    run_record.finish_metadata(result, started)
    run_record.write_json(path, result)

    print(f"\nDDIM sampling steps at serving ({result['model']['source']}); NDCG in rank order")
    print(summaries.text_table(*steps_rows(result)))
    if result.get("num_interests"):
        print(f"\nNumber of interests K ({overrides})")
        print(summaries.text_table(*interests_rows(result)))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
