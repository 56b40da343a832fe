"""Steady-state training throughput of DMI, REMI and ComiRec at batch 128 on Beauty, in one run.

Each model trains through :func:`trainer.train.train` (the real ``BatchSampler`` dataset, compiled
``steps_per_call`` steps per call, as ``dmirec train``) for one warm-up period plus ``--periods`` measured
periods of ``--period`` steps. The first period (tracing, caches, the dataset pipeline filling up) is left
out; validation time is excluded (``train`` times each period between its evaluations). Throughput is the
measured examples over the measured time; the per-period median is recorded too. ``--repeats`` alternates
the models several times, so that a change in the shared machine's load hits every model alike.

Each model's **training floor** is measured in the same run, on the trained model: the same
``train_step`` (forward, backward and Adam update of the same variables) on one fixed batch, looped inside
one bare ``tf.function`` (no data pipeline, no Keras loop, no callbacks). The real step's time over the
floor's says what the training loop costs on top of the model's own computation.

``--catalogues`` adds a catalogue-size sweep: the same models on Beauty and on synthetic logs with Beauty's
sequence-length profile (:func:`catalogue_dataset`) of the given item counts, with the item table updated as
``item_table_update=auto`` picks it (:mod:`trainer.optimizers`) and, where auto picks the lazy update, with
the dense one too, so the table shows what the choice is worth. Validation uses a fixed subset of
validation users there (its time is excluded anyway; a full one at 400k items costs minutes per period).

Reported against a peer anchor quoted in the issue and NOT measured here: REMI's own PyTorch code trains
at about 1,300 examples/s on these 2-core machines. When a full ``reproduce.json`` exists, the wall time
of its DMI runs to a converged (early-stopped) model is reported as well; nothing is retrained for that.

    python -m bench.train_speed            # 1,000 measured steps per model
    python -m bench.train_speed --quick    # 300 measured steps per model
    python -m bench.train_speed --models dmi,remi --catalogues 100000,400000   # + the catalogue sweep
    python -m bench.train_speed --intra-op-threads 2 --inter-op-threads 2      # -> train_speed_threads2x2.json
    python -m bench.train_speed --tag threads1x1   # the same-conditions 1-thread baseline of a thread study
"""

from __future__ import annotations

import statistics
import os
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any

from bench import arguments, datasets, plots, references, run_record, summaries, training

MODULE = "bench.train_speed"
MODELS = ("dmi", "remi", "comirec")


# Beauty's sequence-length profile (the paper's file: 22,363 users, mean length 8.9, 5-core so at least 5).
BEAUTY_PROFILE = {"min_length": 5, "mean_length": 8.9, "max_length": 200}
# Validation users of a sweep catalogue (a fixed subset: validation time is not measured).
SWEEP_EVAL_USERS = 256


def measure(model: str, data: Any, period: int, periods: int, overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Trains ``model`` for ``periods + 1`` periods; the throughput of the last ``periods`` and the floor.

    Returns:
      The record: examples/s of the measured periods (their total and median), ms per step, and the
      training floor's ms per step (:func:`floor_step_ms`) with the real step's ratio to it.
    """
    from trainer import batches

    schedule = {**overrides, "max_steps": period * (periods + 1), "eval_every": period, "patience": 10**9}
    result, record = training.train_run(model, data, schedule, seed=0, evaluate_test=False)
    config = result.config
    batch = config.batch_size
    measured = record["history"][1:]
    seconds = [period * batch / entry["examples_per_second"] for entry in measured]
    rates = [entry["examples_per_second"] for entry in measured]
    examples = period * batch * len(measured)
    sampler = batches.BatchSampler(data.train, batch, config.max_length, config.min_cut, config.seed)
    floor_ms = floor_step_ms(result.model, sampler.sample(0), period)
    step_ms = 1e3 * sum(seconds) / (period * len(measured)) if seconds else None
    return {
        "model": model,
        "batch_size": batch,
        "steps_per_call": config.steps_per_call,
        "item_table_update": result.model.item_table_update,
        "warmup_steps": period,
        "measured_steps": period * len(measured),
        "examples_per_second": examples / sum(seconds) if seconds else None,
        "median_period_examples_per_second": statistics.median(rates) if rates else None,
        "per_period_examples_per_second": [round(r, 1) for r in rates],
        "ms_per_step": step_ms,
        "floor_ms_per_step": floor_ms,
        "over_floor": step_ms / floor_ms if step_ms else None,
        "wall_time_s": record["wall_time_s"],
        "loadavg_start": record["loadavg_start"],
        "loadavg_end": record["loadavg_end"],
    }


def floor_step_ms(model: Any, batch: Mapping[str, Any], steps: int, repeats: int = 3) -> float:
    """The training floor: ms per ``model.train_step`` on one fixed batch, looped in one bare tf.function.

    The step is the model's own (forward, backward, the same optimizers' updates), so the floor differs
    from real training only by what surrounds it: the in-graph batch sampler and its ``tf.data`` pipeline,
    Keras's ``fit`` loop and callbacks. The weights it trains on are the trained model's (they keep
    training here; the model is not used afterwards). The best of ``repeats`` timings is kept.

    Args:
      model: a compiled, trained :class:`trainer.model.DMIModel`.
      batch: one batch of :meth:`trainer.batches.BatchSampler.sample`.
      steps: steps per timing.
      repeats: timings.
    """
    import tensorflow as tf

    @tf.function
    def run(count: tf.Tensor) -> None:
        for _ in tf.range(count):
            model.train_step(batch)

    run(tf.constant(2))  # trace and warm up
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        run(tf.constant(steps))
        best = min(best, time.perf_counter() - started)
    return 1e3 * best / steps


def catalogue_dataset(items: int, eval_users: int = SWEEP_EVAL_USERS) -> Any:
    """A synthetic log of about ``items`` items with Beauty's sequence-length profile, split by the protocol.

    As many users as items (Beauty: 1.8 per item), so that nearly every item occurs (the vocabulary holds
    only items of the log); topics of about 100 items, popularity Zipf(0.5) within a topic. Validation is
    cut to the first ``eval_users`` validation users (:data:`SWEEP_EVAL_USERS`).

    Returns:
      A :class:`bench.datasets.Dataset`.
    """
    from trainer import interactions, synthetic
    from trainer.sequences import EncodedSequences, SequenceData, user_sequence

    config = synthetic.SyntheticConfig(
        users=items, items=items, topics=max(4, items // 100), zipf_exponent=0.5, **BEAUTY_PROFILE
    )
    by_user = interactions.group_by_user(synthetic.generate(config))
    data = SequenceData.from_sequences({user: user_sequence(events) for user, events in by_user.items()})
    held = data.splits["eval"]
    kept = [held.sequence(user) for user in range(min(eval_users, len(held)))]
    splits = {**data.splits, "eval": EncodedSequences.from_index_lists(held.user_ids[: len(kept)], kept)}
    source = f"trainer.synthetic.{config} ({len(kept)} validation users)"
    return datasets.Dataset(f"synthetic-{items}", SequenceData(data.vocabulary, splits), source)


def sweep_catalogues(
    sizes: Sequence[int],
    beauty: Mapping[str, Any],
    period: int,
    periods: int,
    overrides: Mapping[str, Any],
) -> list[dict[str, Any]]:
    """Throughput per catalogue size: Beauty's row (already measured), then each synthetic size.

    At every synthetic size the item table is updated as ``auto`` picks it; where that is the lazy update,
    the dense one is measured too.

    Args:
      sizes: synthetic catalogue sizes (items).
      beauty: ``{"data": ..., "models": {model: record}}``, the run's Beauty measurements (``auto``).
      period: steps per timed period.
      periods: measured periods.
      overrides: config fields for every model.

    Returns:
      One row per catalogue: ``{"data": ..., "models": {model: {update: record}}}``, each record with its
      throughput relative to the same model's on Beauty (``vs_beauty``).
    """
    from trainer import optimizers

    models = list(beauty["models"])
    rows = [{"data": beauty["data"], "models": {m: {"auto": r} for m, r in beauty["models"].items()}}]
    for size in sizes:
        run_record.log(f"== generating a synthetic log of {size:,} items (Beauty's length profile)")
        dataset = catalogue_dataset(size)
        entry: dict[str, Any] = {"data": dataset.describe(), "models": {}}
        for model in models:
            updates = ["auto"]
            if optimizers.item_table_update("auto", dataset.data.num_items) == "lazy":
                updates.append("dense")
            for update in updates:
                run_record.log(f"== {dataset.data.num_items:,} items: {model}, item_table_update={update}")
                settings = {**overrides, "item_table_update": update}
                record = measure(model, dataset.data, period, periods, settings)
                entry["models"].setdefault(model, {})[update] = record
                rate = record["examples_per_second"]
                run_record.log(f"   {rate:,.0f} examples/s ({record['item_table_update']})")
        rows.append(entry)
    for entry in rows:
        for model, by_update in entry["models"].items():
            base = rows[0]["models"][model]["auto"]["examples_per_second"]
            for record in by_update.values():
                record["vs_beauty"] = record["examples_per_second"] / base
    return rows


def converged_wall_time(out_dir: str) -> dict[str, Any] | None:
    """Wall time of the DMI (and REMI) runs of an existing Beauty reproduce result, without retraining."""
    for quick in (False, True):
        previous = run_record.read_json(run_record.result_path(out_dir, "reproduce", quick))
        if not previous:
            continue
        found: dict[str, Any] = {
            "source": run_record.result_path(out_dir, "reproduce", quick),
            "quick": quick,
            "commit": previous.get("commit"),
            "note": "quick run: a short schedule, NOT a converged model" if quick else "full schedule",
            "models": {},
        }
        for model in ("dmi", "remi"):
            entry = previous.get("models", {}).get(model)
            if entry:
                found["models"][model] = [
                    {
                        "seed": run["seed"],
                        "wall_time_s": run["wall_time_s"],
                        "best_step": run["best_step"],
                        "steps": run["steps"],
                        "test_recall@50": run["test"]["recall@50"],
                    }
                    for run in entry["runs"]
                ]
        return found
    return None


def summary_rows(result: Mapping[str, Any]) -> tuple[list[str], list[list[str]]]:
    header = [
        "model", "examples/s", "steps/s", "median period", "ms/step", "floor ms/step", "step / floor",
        "vs REMI PyTorch anchor", "measured steps",
    ]  # fmt: skip
    rows = []
    anchor = result["anchor"]["examples_per_second"]
    for model, entry in result["models"].items():
        rate = entry["examples_per_second"]
        floor = entry.get("floor_ms_per_step")
        rows.append(
            [
                model,
                f"{rate:,.0f}",
                f"{rate / entry['batch_size']:.1f}",
                f"{entry['median_period_examples_per_second']:,.0f}",
                f"{entry['ms_per_step']:.2f}" if entry.get("ms_per_step") else "-",
                f"{floor:.2f}" if floor else "not measured",
                f"{entry['over_floor']:.2f}x" if entry.get("over_floor") else "-",
                f"{rate / anchor:.2f}x",
                entry["measured_steps"],
            ]
        )
    return header, rows


def catalogue_rows(result: Mapping[str, Any]) -> tuple[list[str], list[list[str]]]:
    """The catalogue sweep: one row per size, model and item-table update."""
    header = ["items", "model", "item table", "examples/s", "ms/step", "floor ms/step", "vs Beauty"]
    rows = []
    for entry in result.get("catalogues", []):
        for model, by_update in entry["models"].items():
            for record in by_update.values():
                rows.append(
                    [
                        f"{entry['data']['items']:,}",
                        model,
                        record["item_table_update"],
                        f"{record['examples_per_second']:,.0f}",
                        f"{record['ms_per_step']:.2f}",
                        f"{record['floor_ms_per_step']:.2f}",
                        f"{record['vs_beauty']:.2f}x",
                    ]
                )
    return header, rows


def plot(result: Mapping[str, Any], path: str) -> str:
    """Bars of examples/s per model with each model's floor; with a sweep, examples/s against items."""
    plt = plots.pyplot()
    models = list(result["models"])
    rates = [result["models"][m]["examples_per_second"] for m in models]
    sweep = result.get("catalogues") or []
    figure, axes = plt.subplots(1, 2 if sweep else 1, figsize=(11 if sweep else 6, 3.2), squeeze=False)
    axis = axes[0][0]
    axis.barh(models, rates, color="#4c72b0", label="real training (fit, data pipeline)")
    floors = [
        entry["batch_size"] * 1e3 / entry["floor_ms_per_step"] if entry.get("floor_ms_per_step") else 0.0
        for entry in (result["models"][m] for m in models)
    ]
    axis.scatter(floors, range(len(models)), color="#dd8452", marker="|", s=300, zorder=3, label="floor")
    for y, rate in enumerate(rates):
        axis.text(rate, y, f" {rate:,.0f}", va="center", fontsize=8)
    anchor = result["anchor"]["examples_per_second"]
    label = f"REMI PyTorch ~{anchor:,.0f} (issue, not measured)"
    axis.axvline(anchor, color="#c44e52", linestyle="--", label=label)
    axis.set_xlabel("training examples/s (batch 128, steady state)")
    axis.set_title(f"Training throughput on {result['data']['name']}, {result['cpu_count']} CPUs")
    axis.legend(loc="lower right", fontsize=7)
    axis.set_xlim(0, max(rates + floors + [anchor]) * 1.3)
    if sweep:
        axis = axes[0][1]
        for model in models:
            for update, style in (("auto", "-o"), ("dense", "--x")):
                points = [
                    (entry["data"]["items"], entry["models"][model][update]["examples_per_second"])
                    for entry in sweep
                    if update in entry["models"].get(model, {})
                ]
                if update == "dense":  # Beauty's auto is dense: the dense line starts there
                    beauty = sweep[0]["models"][model]["auto"]["examples_per_second"]
                    points = [(sweep[0]["data"]["items"], beauty)] + points
                if len(points) > 1 or update == "auto":
                    axis.plot(*zip(*points), style, label=f"{model}, item table {update}")
        axis.set_xscale("log")
        axis.set_xlabel("items in the catalogue")
        axis.set_ylabel("examples/s")
        axis.set_ylim(bottom=0)
        axis.set_title("Throughput by catalogue size")
        axis.legend(fontsize=7)
    return plots.save_figure(figure, path)


def parse_args(argv: Sequence[str]) -> Any:
    parser = arguments.base_parser(MODULE, __doc__)
    arguments.add_data_arguments(parser)
    arguments.add_names_argument(parser, "--models", MODELS)
    parser.add_argument("--period", type=int, help="steps per timed period (default 250; --quick 100)")
    parser.add_argument(
        "--periods", type=int, help="measured periods after the warm-up one (default 4; --quick 3)"
    )
    parser.add_argument(
        "--repeats", type=int, default=1, help="alternate the models this many times (default 1)"
    )
    parser.add_argument(
        "--catalogues",
        type=arguments.parse_int_list,
        default=[],
        help="also sweep these synthetic catalogue sizes (items, Beauty's length profile), e.g. 100000,400000",
    )
    parser.add_argument(
        "--tag",
        default="",
        help="appended to the result file's name (e.g. threads1x1: a same-conditions baseline for a thread "
        "study that must not replace the committed train_speed.json)",
    )
    arguments.add_training_arguments(parser, jobs=False)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    started = time.perf_counter()
    threads = arguments.configure_threads(args)
    from trainer.config import parse_overrides

    period = args.period or (100 if args.quick else 250)
    periods = args.periods or (3 if args.quick else 4)
    overrides = parse_overrides(args.set)
    stem = run_record.result_stem("train_speed", args.data)
    if (args.intra_op_threads, args.inter_op_threads) != (1, 1):  # the default; others compare with it
        stem += f"_threads{args.intra_op_threads}x{args.inter_op_threads}"
    if args.tag:
        stem += f"_{args.tag}"
    path = run_record.result_path(args.out, stem, args.quick)
    dataset = datasets.load_dataset(args.data, args.beauty_path, args.split_seed)
    result: dict[str, Any] = {
        **run_record.run_metadata(MODULE, argv, args.quick),
        "data": dataset.describe(),
        "threads": threads,
        "period_steps": period,
        "measured_periods": periods,
        "repeats": args.repeats,
        "overrides": overrides,
        "anchor": {
            "examples_per_second": references.REMI_PYTORCH_EXAMPLES_PER_SECOND,
            "what": "REMI's own PyTorch code on these 2-core machines, batch 128",
            "source": "anchor from the issue, not measured here",
        },
    }
    repeats: dict[str, list[dict[str, Any]]] = {model: [] for model in args.models}
    for repeat in range(args.repeats):
        for model in args.models:
            run_record.log(f"== {model}: {period} warm-up + {periods} x {period} steps (repeat {repeat + 1})")
            repeats[model].append(measure(model, dataset.data, period, periods, overrides))
            run_record.log(f"   {model}: {repeats[model][-1]['examples_per_second']:,.0f} examples/s")
    result["models"] = {}
    for model, runs in repeats.items():
        best = dict(runs[0])
        best["examples_per_second"] = statistics.median(r["examples_per_second"] for r in runs)
        best["median_period_examples_per_second"] = statistics.median(
            r["median_period_examples_per_second"] for r in runs
        )
        best["repeats"] = runs
        result["models"][model] = best
    rates = {m: e["examples_per_second"] for m, e in result["models"].items()}
    if "dmi" in rates and "remi" in rates:
        result["dmi_over_remi"] = rates["dmi"] / rates["remi"]
    result["vs_anchor"] = {m: r / references.REMI_PYTORCH_EXAMPLES_PER_SECOND for m, r in rates.items()}
    if args.catalogues:
        beauty = {"data": result["data"], "models": {m: result["models"][m] for m in args.models}}
        result["catalogues"] = sweep_catalogues(args.catalogues, beauty, period, periods, overrides)
    result["converged_wall_time"] = converged_wall_time(args.out)
    result["figure"] = os.path.basename(
        plot(result, run_record.result_path(args.out, stem, args.quick, ".png"))
    )
    run_record.finish_metadata(result, started)
    run_record.write_json(path, result)

    batch = next(iter(result["models"].values()))["batch_size"]
    print(f"\nTraining throughput on {args.data}, batch {batch}")
    print(summaries.text_table(*summary_rows(result)))
    if args.catalogues:
        print("\nBy catalogue size")
        print(summaries.text_table(*catalogue_rows(result)))
    if "dmi_over_remi" in result:
        print(f"dmi / remi throughput: {result['dmi_over_remi']:.2f}")
    anchor = references.REMI_PYTORCH_EXAMPLES_PER_SECOND
    print(f"anchor: REMI PyTorch ~{anchor:,.0f} examples/s (from the issue, not measured here)")
    converged = result["converged_wall_time"]
    if converged:
        for model, runs in converged["models"].items():
            for run in runs:
                print(
                    f"{model} seed {run['seed']}: {run['wall_time_s'] / 60:.1f} min, best step "
                    f"{run['best_step']} (stopped at {run['steps']}; {converged['note']})"
                )
    else:
        print("no reproduce.json yet: wall time to a converged DMI not reported")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
