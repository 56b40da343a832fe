"""Reproduce the DMI paper's Table 2 (Beauty): train and test PopRec, Y-DNN, ComiRec-SA, REMI and DMI.

Every model is trained with :func:`trainer.train.train` under the protocol (protocol.md): 8:1:1 user
split, validation Recall@50 every ``eval_every`` steps with early stopping after ``patience`` evaluations
without improvement, the best weights tested on the test users. Each model runs for ``--seeds`` seeds and
the table reports mean ± sample std beside the paper's numbers.

    python -m bench.reproduce                       # Beauty, full schedule, 3 seeds for remi and dmi
    python -m bench.reproduce --quick               # 1 seed, 1,000 steps: proves the path (minutes)
    python -m bench.reproduce --data synthetic --seeds 1

Writes ``reproduce.json`` (``reproduce_synthetic.json`` for ``--data synthetic``; ``*_quick.json`` with
``--quick``) and ``reproduce*.png`` (validation Recall@50 during training). The JSON is rewritten after
every run, and ``--resume`` keeps the runs of an earlier file whose config matches, so an interrupted
multi-hour run loses at most one model.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from bench import arguments, datasets, plots, references, run_record, summaries, training

MODULE = "bench.reproduce"
MODELS = ("pop", "ydnn", "comirec", "remi", "dmi-paper", "dmi")
PAPER_NAMES = {
    "pop": "PopRec",
    "ydnn": "Y-DNN",
    "comirec": "ComiRec-SA",
    "remi": "REMI",
    "dmi-paper": "DMI (paper's setting)",
    "dmi": "DMI",
}
MULTI_SEED_MODELS = ("remi", "dmi")


@dataclasses.dataclass(frozen=True)
class RunSpec:
    """One row of a results table: a variant with its overrides, trained once per seed.

    Attributes:
      label: the row's name (``dmi``, ``dmi-diff``, ``K=2``, ...).
      model: the variant (:data:`trainer.config.VARIANTS`).
      overrides: config fields on top of the variant's preset (schedule included).
      seeds: the seeds to train.
    """

    label: str
    model: str
    overrides: Mapping[str, Any]
    seeds: tuple[int, ...]


def reusable_runs(
    reproduced: Mapping[str, Any] | None, spec: RunSpec, data: Mapping[str, Any]
) -> dict[str, Any] | None:
    """The runs of a reproduction result that this row would repeat exactly, or None.

    A ``bench.reproduce`` run of the same variant, full config, data and seed is the same computation
    (training is a pure function of them), so the ablation takes it over instead of training it again;
    the entry records where it came from.
    """
    if not reproduced or reproduced.get("data") != data:
        return None
    entry = reproduced.get("models", {}).get(spec.model)
    if not entry or not training.same_config(
        entry.get("config", {}), training.config_dict(spec.model, spec.overrides)
    ):
        return None
    runs = [run for run in entry["runs"] if run["seed"] in spec.seeds]
    if not runs:
        return None
    return {
        "model": spec.model,
        "config": entry["config"],
        "runs": runs,
        "reused_from": f"{reproduced.get('command')} (commit {reproduced.get('commit')})",
    }


def train_and_test(
    specs: Sequence[RunSpec],
    data: Any,
    results: dict[str, dict[str, Any]],
    save: Callable[[], None] | None = None,
    metrics: Sequence[str] = references.METRICS,
    verbose: int | str | None = None,
    jobs: int = 1,
    threads: Mapping[str, int] | None = None,
) -> dict[str, dict[str, Any]]:
    """Trains and tests every spec for every seed; the suite's one driver of training runs.

    ``results`` is updated in place, one entry per label: ``model``, ``config`` (the full config without
    the seed), ``runs`` (one record of :func:`bench.training.train_run` per seed) and, per metric,
    ``{"mean", "std", "runs"}`` over the seeds. Runs already in ``results`` with the same config are kept
    and not trained again (resuming); ``save`` is called after every run.

    With ``jobs > 1`` the runs are spread over that many worker processes (each with the TensorFlow thread
    counts ``threads``, e.g. one core each), which changes nothing in a run but its wall time: every run is
    a pure function of its config and seed. Records are saved as runs finish.

    Returns:
      ``results``.
    """
    from tqdm import tqdm

    todo = []
    for spec in specs:
        config = training.config_dict(spec.model, spec.overrides)
        entry = results.get(spec.label)
        if (
            not entry
            or not training.same_config(entry.get("config", {}), config)
            or entry.get("model") != spec.model
        ):
            entry = results[spec.label] = {"model": spec.model, "config": config, "runs": []}
        entry["config"] = config  # a matching record's config, spelled out with the fields added since
        done = {run["seed"] for run in entry["runs"]}
        todo += [(spec, seed) for seed in spec.seeds if seed not in done]
    progress = tqdm(total=len(todo), desc="training runs", unit="run", file=sys.stderr, disable=not todo)

    def record_run(spec: RunSpec, seed: int, record: dict[str, Any]) -> None:
        entry = results[spec.label]
        entry["runs"] = sorted([*entry["runs"], record], key=lambda run: run["seed"])
        entry.update(summaries.summarize_metrics(entry["runs"], metrics))
        run_record.log(
            f"   {spec.label} seed {seed}: test "
            + "  ".join(f"{m} {record['test'][m]:.4f}" for m in metrics)
            + f"  (best step {record['best_step']}, {record['wall_time_s']:.0f} s)"
        )
        progress.update()
        if save is not None:
            save()

    if jobs > 1 and len(todo) > 1:
        for spec, seed, record in training.parallel_runs(
            [(spec, seed, spec.model, spec.overrides) for spec, seed in todo], data, jobs, threads or {}
        ):
            record_run(spec, seed, record)
    else:
        for spec, seed in todo:
            progress.set_postfix_str(f"{spec.label} seed {seed}")
            run_record.log(f"== {spec.label} ({spec.model}), seed {seed}")
            _, record = training.train_run(spec.model, data, spec.overrides, seed=seed, verbose=verbose)
            record_run(spec, seed, record)
    progress.close()
    for spec in specs:
        entry = results[spec.label]
        entry["runs"] = [run for run in entry["runs"] if run["seed"] in spec.seeds]
        entry.update(summaries.summarize_metrics(entry["runs"], metrics))
    return results


def table_rows(result: Mapping[str, Any], paper: bool) -> tuple[list[str], list[list[str]]]:
    """Table 2's layout: one row per metric, per model our mean ± std (and the paper's number)."""
    models = [m for m in MODELS if m in result["models"]] + [m for m in result["models"] if m not in MODELS]
    header = ["metric"]
    for model in models:
        name = PAPER_NAMES.get(model, model)
        header += (
            [f"{name}", f"{name} paper"] if paper and model in references.PAPER_TABLE2_BEAUTY else [name]
        )
    if paper:
        header.append("REMI own code†")
    rows = []
    for metric in references.METRICS:
        row = [references.METRIC_LABELS[metric]]
        for model in models:
            row.append(summaries.format_stat(result["models"][model].get(metric)))
            if paper and model in references.PAPER_TABLE2_BEAUTY:
                value = references.PAPER_TABLE2_BEAUTY[model][metric]
                std = references.PAPER_TABLE2_BEAUTY_DMI_STD.get(metric) if model == "dmi" else None
                row.append(f"{value:.4f}" + (f" ± {std:.4f}" if std is not None else ""))
        if paper:
            row.append(summaries.format_number(references.REMI_OWN_CODE_BEAUTY.get(metric)))
        rows.append(row)
    return header, rows


def run_rows(result: Mapping[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Per-run details: seed, best step, steps, wall time, examples/s."""
    header = ["model", "seed", "best step", "steps", "wall time", "examples/s", "test R@50"]
    rows = []
    for model, entry in result["models"].items():
        for run in entry["runs"]:
            speed = run.get("examples_per_second")
            rows.append(
                [
                    PAPER_NAMES.get(model, model),
                    run["seed"],
                    run["best_step"],
                    run["steps"],
                    f"{run['wall_time_s'] / 60:.1f} min",
                    f"{speed:,.0f}" if speed else "-",
                    f"{run['test']['recall@50']:.4f}",
                ]
            )
    return header, rows


def plot_history(result: Mapping[str, Any], path: str) -> str:
    """Validation Recall@50 against training steps (first seed of each model)."""
    plt = plots.pyplot()
    figure, axis = plt.subplots(figsize=(6.5, 4))
    for model, entry in result["models"].items():
        if not entry["runs"]:
            continue
        if not entry["runs"][0]["history"]:  # pop: nothing trained, its validation score as a line
            validation = entry["runs"][0]["validation"].get("recall@50")
            if validation is not None:
                axis.axhline(validation, color="#999999", linestyle="--", label=f"{model} (untrained)")
            continue
        history = entry["runs"][0]["history"]
        steps, values = [h["step"] for h in history], [h["val_recall@50"] for h in history]
        axis.plot(steps, values, marker=".", label=model)
    axis.set_xlabel("training step")
    axis.set_ylabel("validation Recall@50")
    axis.set_title(f"{result['data']['name']}: validation Recall@50 during training (seed 0)")
    axis.grid(alpha=0.3)
    axis.legend()
    return plots.save_figure(figure, path)


def parse_args(argv: Sequence[str]) -> Any:
    parser = arguments.base_parser(MODULE, __doc__)
    arguments.add_data_arguments(parser)
    arguments.add_names_argument(parser, "--models", MODELS)
    parser.add_argument(
        "--seeds",
        type=int,
        help="seeds per model (default: 3 for remi and dmi, 1 for the others; --quick: 1)",
    )
    arguments.add_resume_argument(parser)
    arguments.add_training_arguments(parser)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    started = time.perf_counter()
    threads = arguments.configure_threads(args)
    from trainer.config import parse_overrides

    overrides = {**datasets.schedule(args.data, args.quick), **parse_overrides(args.set)}
    stem = run_record.result_stem("reproduce", args.data)
    path = run_record.result_path(args.out, stem, args.quick)
    dataset = datasets.load_dataset(args.data, args.beauty_path, args.split_seed)
    run_record.log(f"{args.data}: {dataset.describe()}")

    def seeds(model: str) -> tuple[int, ...]:
        count = args.seeds or (1 if args.quick or model not in MULTI_SEED_MODELS else 3)
        return tuple(range(count))

    result: dict[str, Any] = {
        **run_record.run_metadata(MODULE, argv, args.quick),
        "data": dataset.describe(),
        "schedule_and_overrides": overrides,
        "threads": threads,
        "ndcg": "rank order, IDCG over the number of hits (protocol.md)",
        "models": {},
    }
    previous = run_record.read_json(path) if args.resume else None
    if previous:
        result["models"] = {m: e for m, e in previous.get("models", {}).items() if m in args.models}
    specs = [RunSpec(model, model, overrides, seeds(model)) for model in args.models]
    train_and_test(
        specs,
        dataset.data,
        result["models"],
        save=lambda: run_record.write_json(path, result),
        jobs=args.jobs,
        threads=threads,
    )
    result["models"] = {model: result["models"][model] for model in args.models}
    figure = plot_history(result, run_record.result_path(args.out, stem, args.quick, ".png"))
    result["figure"] = os.path.basename(figure)
    run_record.finish_metadata(result, started)
    run_record.write_json(path, result)

    paper = args.data == "beauty"
    kind = "quick run" if args.quick else "full schedule"
    print(f"\nTest metrics on {args.data} ({kind}: {overrides}), mean ± std over seeds")
    print(summaries.text_table(*table_rows(result, paper)))
    if paper:
        print("† REMI's own PyTorch code on this file with this protocol (protocol.md).")
    print(references.NDCG_NOTE)
    print()
    print(summaries.text_table(*run_rows(result)))
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
