"""The DMI paper's ablation (Table 3) on Beauty: DMI-diff (= REMI), DMI-T, DMI-IP, DMI-GD and DMI.

- DMI-diff: no diffusion module, the coarse interests alone: the ``remi`` variant (its learning rate is
  REMI's 1e-3, as in :mod:`bench.reproduce`);
- DMI-T: an MLP denoiser instead of the cross-attention transformer (``dmi-T``);
- DMI-IP: no item pruning, the denoiser attends to every history item (``dmi-IP``, gamma = 1);
- DMI-GD: no stop-gradient, the denoised vector alone is the interest (``dmi-GD``);
- DMI: the full model;
- dmi-eta0 (a control of ours, not in the paper): the default's two-stage schedule with eta = 0, i.e. the
  ``remi`` backbone trained on at the backbone rate with the refiner unused: what the schedule gives
  without any refinement.

Reports Recall@50 and NDCG@50 (rank order) and the relative improvement of Recall@50 over DMI-diff, beside
the paper's Table 3, which has Book and Gowalla only (its Book column is shown for reference).
Training goes through :func:`bench.reproduce.train_and_test`.

    python -m bench.ablation             # full schedule, 1 seed each
    python -m bench.ablation --quick     # 500 steps each (minutes)
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any

from bench import arguments, datasets, plots, references, run_record, summaries
from bench.reproduce import RunSpec, reusable_runs, train_and_test

MODULE = "bench.ablation"
# Row label -> trainer variant.
VARIANTS = {
    "dmi-diff": "remi",
    "dmi-T": "dmi-T",
    "dmi-IP": "dmi-IP",
    "dmi-GD": "dmi-GD",
    "dmi-eta0": "dmi-eta0",
    "dmi": "dmi",
}
BASELINE = "dmi-diff"
QUICK_STEPS = {"max_steps": 500, "eval_every": 250, "patience": 2}


def table_rows(result: Mapping[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Variant, our Recall@50 / NDCG@50 / improvement, the paper's Book numbers."""
    header = ["variant", "R@50", "ND@50", "Improv. (R@50)", "paper Book R@50", "ND@50", "Improv."]
    variants = result["variants"]
    base = variants.get(BASELINE, {}).get("recall@50", {}).get("mean")
    paper_base = references.PAPER_TABLE3_BOOK[BASELINE]["recall@50"]
    rows = []
    for label in VARIANTS:
        if label not in variants:
            continue
        entry = variants[label]
        mean = entry["recall@50"]["mean"]
        paper = references.PAPER_TABLE3_BOOK.get(label, {})
        rows.append(
            [
                label,
                summaries.format_stat(entry["recall@50"]),
                summaries.format_stat(entry["ndcg@50"]),
                "—" if label == BASELINE or not base else summaries.format_percent(mean / base - 1),
                summaries.format_number(paper.get("recall@50")),
                summaries.format_number(paper.get("ndcg@50")),
                (
                    "—"
                    if label == BASELINE or not paper
                    else summaries.format_percent(paper["recall@50"] / paper_base - 1)
                ),
            ]
        )
    return header, rows


def plot(result: Mapping[str, Any], path: str) -> str:
    """Recall@50 per variant (error bars: std over seeds when there are several)."""
    plt = plots.pyplot()
    labels = [label for label in VARIANTS if label in result["variants"]]
    means = [result["variants"][label]["recall@50"]["mean"] for label in labels]
    stds = [result["variants"][label]["recall@50"]["std"] or 0.0 for label in labels]
    figure, axis = plt.subplots(figsize=(6, 3.5))
    axis.bar(labels, means, yerr=stds, color=["#999999"] + ["#4c72b0"] * (len(labels) - 1), capsize=4)
    for x, value in enumerate(means):
        axis.text(x, value, f"{value:.4f}", ha="center", va="bottom", fontsize=8)
    axis.set_ylabel("test Recall@50")
    mode = "quick" if result["quick"] else "full"
    axis.set_title(f"Ablation on {result['data']['name']} ({mode} schedule)")
    axis.grid(axis="y", alpha=0.3)
    return plots.save_figure(figure, path)


def parse_args(argv: Sequence[str]) -> Any:
    parser = arguments.base_parser(MODULE, __doc__)
    arguments.add_data_arguments(parser)
    arguments.add_names_argument(parser, "--variants", tuple(VARIANTS))
    parser.add_argument("--seeds", type=int, default=1, help="seeds per variant (default 1)")
    arguments.add_resume_argument(parser)
    arguments.add_training_arguments(parser)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    started = time.perf_counter()
    threads = arguments.configure_threads(args)
    from trainer.config import parse_overrides

    base_schedule = dict(QUICK_STEPS) if args.quick else datasets.schedule(args.data, False)
    overrides = {**base_schedule, **parse_overrides(args.set)}
    stem = run_record.result_stem("ablation", args.data)
    path = run_record.result_path(args.out, stem, args.quick)
    dataset = datasets.load_dataset(args.data, args.beauty_path, args.split_seed)
    result: dict[str, Any] = {
        **run_record.run_metadata(MODULE, argv, args.quick),
        "data": dataset.describe(),
        "schedule_and_overrides": overrides,
        "threads": threads,
        "variant_of": {label: VARIANTS[label] for label in args.variants},
        "ndcg": "rank order, IDCG over the number of hits (protocol.md)",
        "variants": {},
    }
    previous = run_record.read_json(path) if args.resume else None
    if previous:
        result["variants"] = {k: v for k, v in previous.get("variants", {}).items() if k in args.variants}
    seeds = tuple(range(args.seeds))
    specs = [RunSpec(label, VARIANTS[label], overrides, seeds) for label in args.variants]
    reproduced = run_record.read_json(run_record.result_path(args.out, "reproduce", args.quick))
    for spec in specs:
        reused = reusable_runs(reproduced, spec, result["data"])
        if reused and spec.label not in result["variants"]:
            result["variants"][spec.label] = reused
            run_record.log(
                f"{spec.label}: reusing {len(reused['runs'])} run(s) of the reproduction (same config)"
            )
    train_and_test(
        specs,
        dataset.data,
        result["variants"],
        save=lambda: run_record.write_json(path, result),
        jobs=args.jobs,
        threads=threads,
    )
    result["variants"] = {label: result["variants"][label] for label in args.variants}
    result["figure"] = os.path.basename(
        plot(result, run_record.result_path(args.out, stem, args.quick, ".png"))
    )
    run_record.finish_metadata(result, started)
    run_record.write_json(path, result)

    print(f"\nAblation on {args.data} ({overrides}); NDCG in rank order")
    print(summaries.text_table(*table_rows(result)))
    print("The paper's Table 3 has no Beauty column; its Book numbers are shown for reference.")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
