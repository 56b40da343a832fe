"""Steady-state training throughput of DMI, REMI and ComiRec at batch 128 on Beauty, in one run.

Each model trains through :func:`trainer.train.train` (the real ``BatchSampler`` dataset, compiled
``steps_per_call`` steps per call, as ``dmirec train``) for one warm-up period plus ``--periods`` measured
periods of ``--period`` steps. The first period (tracing, caches, the dataset pipeline filling up) is left
out; validation time is excluded (``train`` times each period between its evaluations). Throughput is the
measured examples over the measured time; the per-period median is recorded too. ``--repeats`` alternates
the models several times, so that a change in the shared machine's load hits every model alike.

Reported against a peer anchor quoted in the issue and NOT measured here: REMI's own PyTorch code trains
at about 1,300 examples/s on these 2-core machines. When a full ``reproduce.json`` exists, the wall time
of its DMI runs to a converged (early-stopped) model is reported as well; nothing is retrained for that.

    python -m bench.train_speed            # 1,000 measured steps per model
    python -m bench.train_speed --quick    # 300 measured steps per model
"""

from __future__ import annotations

import statistics
import os
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any

from bench import common

MODULE = "bench.train_speed"
MODELS = ("dmi", "remi", "comirec")


def measure(model: str, data: Any, period: int, periods: int, overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Trains ``model`` for ``periods + 1`` periods and returns the throughput of the last ``periods``."""
    schedule = {**overrides, "max_steps": period * (periods + 1), "eval_every": period, "patience": 10**9}
    result, record = common.train_run(model, data, schedule, seed=0)
    batch = result.config.batch_size
    measured = record["history"][1:]
    seconds = [period * batch / entry["examples_per_second"] for entry in measured]
    rates = [entry["examples_per_second"] for entry in measured]
    examples = period * batch * len(measured)
    return {
        "model": model,
        "batch_size": batch,
        "steps_per_call": result.config.steps_per_call,
        "warmup_steps": period,
        "measured_steps": period * len(measured),
        "examples_per_second": examples / sum(seconds) if seconds else None,
        "median_period_examples_per_second": statistics.median(rates) if rates else None,
        "per_period_examples_per_second": [round(r, 1) for r in rates],
        "wall_time_s": record["wall_time_s"],
        "loadavg_start": record["loadavg_start"],
        "loadavg_end": record["loadavg_end"],
    }


def converged_wall_time(out_dir: str) -> dict[str, Any] | None:
    """Wall time of the DMI (and REMI) runs of an existing Beauty reproduce result, without retraining."""
    for quick in (False, True):
        previous = common.read_json(common.result_path(out_dir, "reproduce", quick))
        if not previous:
            continue
        found: dict[str, Any] = {
            "source": common.result_path(out_dir, "reproduce", quick),
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
    header = ["model", "examples/s", "steps/s", "median period", "vs REMI PyTorch anchor", "measured steps"]
    rows = []
    anchor = result["anchor"]["examples_per_second"]
    for model, entry in result["models"].items():
        rate = entry["examples_per_second"]
        rows.append(
            [
                model,
                f"{rate:,.0f}",
                f"{rate / entry['batch_size']:.1f}",
                f"{entry['median_period_examples_per_second']:,.0f}",
                f"{rate / anchor:.2f}x",
                entry["measured_steps"],
            ]
        )
    return header, rows


def plot(result: Mapping[str, Any], path: str) -> str:
    plt = common.pyplot()
    models = list(result["models"])
    rates = [result["models"][m]["examples_per_second"] for m in models]
    figure, axis = plt.subplots(figsize=(6, 3))
    axis.barh(models, rates, color="#4c72b0")
    for y, rate in enumerate(rates):
        axis.text(rate, y, f" {rate:,.0f}", va="center", fontsize=8)
    anchor = result["anchor"]["examples_per_second"]
    label = f"REMI PyTorch ~{anchor:,.0f} (issue, not measured)"
    axis.axvline(anchor, color="#c44e52", linestyle="--", label=label)
    axis.set_xlabel("training examples/s (batch 128, steady state)")
    axis.set_title(f"Training throughput on {result['data']['name']}, {result['cpu_count']} CPUs")
    axis.legend(loc="lower right", fontsize=8)
    axis.set_xlim(0, max(rates + [anchor]) * 1.25)
    return common.save_figure(figure, path)


def parse_args(argv: Sequence[str]) -> Any:
    parser = common.base_parser(MODULE, __doc__)
    common.add_data_arguments(parser)
    parser.add_argument(
        "--models",
        type=common.parse_name_list(MODELS),
        default=list(MODELS),
        help=f"comma-separated models (default: {','.join(MODELS)})",
    )
    parser.add_argument("--period", type=int, help="steps per timed period (default 250; --quick 100)")
    parser.add_argument(
        "--periods", type=int, help="measured periods after the warm-up one (default 4; --quick 3)"
    )
    parser.add_argument(
        "--repeats", type=int, default=1, help="alternate the models this many times (default 1)"
    )
    common.add_training_arguments(parser, jobs=False)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    started = time.perf_counter()
    threads = common.configure_threads(args)
    from trainer.config import parse_overrides

    period = args.period or (100 if args.quick else 250)
    periods = args.periods or (3 if args.quick else 4)
    overrides = parse_overrides(args.set)
    stem = "train_speed" if args.data == "beauty" else f"train_speed_{args.data}"
    path = common.result_path(args.out, stem, args.quick)
    dataset = common.load_dataset(args.data, args.beauty_path, args.split_seed)
    result: dict[str, Any] = {
        **common.run_metadata(MODULE, argv, args.quick),
        "data": dataset.describe(),
        "threads": threads,
        "period_steps": period,
        "measured_periods": periods,
        "repeats": args.repeats,
        "overrides": overrides,
        "anchor": {
            "examples_per_second": common.REMI_PYTORCH_EXAMPLES_PER_SECOND,
            "what": "REMI's own PyTorch code on these 2-core machines, batch 128",
            "source": "anchor from the issue, not measured here",
        },
    }
    repeats: dict[str, list[dict[str, Any]]] = {model: [] for model in args.models}
    for repeat in range(args.repeats):
        for model in args.models:
            common.log(f"== {model}: {period} warm-up + {periods} x {period} steps (repeat {repeat + 1})")
            repeats[model].append(measure(model, dataset.data, period, periods, overrides))
            common.log(f"   {model}: {repeats[model][-1]['examples_per_second']:,.0f} examples/s")
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
    result["vs_anchor"] = {m: r / common.REMI_PYTORCH_EXAMPLES_PER_SECOND for m, r in rates.items()}
    result["converged_wall_time"] = converged_wall_time(args.out)
    result["figure"] = os.path.basename(plot(result, common.result_path(args.out, stem, args.quick, ".png")))
    common.finish_metadata(result, started)
    common.write_json(path, result)

    batch = next(iter(result["models"].values()))["batch_size"]
    print(f"\nTraining throughput on {args.data}, batch {batch}")
    print(common.text_table(*summary_rows(result)))
    if "dmi_over_remi" in result:
        print(f"dmi / remi throughput: {result['dmi_over_remi']:.2f}")
    anchor = common.REMI_PYTORCH_EXAMPLES_PER_SECOND
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
