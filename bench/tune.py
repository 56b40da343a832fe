"""Hyperparameter search for ``dmi`` on validation users only (never test users).

Each trial is a variant plus config overrides, trained under the Beauty schedule (or ``--set`` values) with
:func:`bench.training.train_run` and ``evaluate_test=False``: only validation Recall@50 / HitRate@50 and the
step of the best evaluation are recorded, so nothing in the search can leak test users. The chosen
values are then trained and tested by ``bench.reproduce``.

Trials are written ``NAME=MODEL[:KEY=VALUE,KEY=VALUE...]`` (e.g. ``pre=dmi:denoiser_norm=pre``); without
``--trial`` the script runs :data:`DEFAULT_TRIALS`, the search recorded in ``docs/results.md``. Results
accumulate in ``bench/results/tuning.json``: a trial already there with the same model, overrides and seed
is not trained again, so an interrupted search resumes where it stopped, and several processes can share
the file (each write re-reads it under a lock and replaces only its own trial), e.g. one per core. A bar
plot ranks the trials.

    python -m bench.tune                                   # the recorded search (hours on 2 cores)
    python -m bench.tune --trial lr1=dmi:learning_rate=0.001 --trial eta6=dmi:eta=0.6
    python -m bench.tune --quick                           # two short trials, proves the script works
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import os
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any

from bench import arguments, datasets, plots, run_record, summaries, training

MODULE = "bench.tune"

# The recorded search, in the order it ran: the paper's setting (section 4.1) with the two denoiser
# layouts and two learning rates, then one factor at a time around the best of those (lambda, alpha_max /
# noise scale, T, eta, dropout), then a second seed of the closest contenders. Every trial spells out the
# paper's values it starts from, so a trial means the same config whatever the current defaults are.
_PAPER = (
    "denoiser_norm=post,learning_rate=0.002,eta=0.4,diffusion_weight=5,noise_scale=1,diffusion_steps=10,"
    "alpha_max=0.004,denoiser_dropout=0,refiner_schedule=joint,denoiser_query_residual=true,"
    "backbone_learning_rate=0"
)
_PRE = f"{_PAPER},denoiser_norm=pre"
_PRE_LR = f"{_PRE},learning_rate=0.001"
_JOINT = f"{_PRE_LR},noise_scale=4"  # the default before issue 10
_TS_NORES = "denoiser_query_residual=false,refiner_schedule=two_stage"
DEFAULT_TRIALS: tuple[str, ...] = (
    "remi=remi",
    f"paper=dmi:{_PAPER}",
    f"pre=dmi:{_PRE}",
    f"pre_lambda3=dmi:{_PRE},diffusion_weight=3",
    f"pre_amax8e-3=dmi:{_PRE},alpha_max=0.008",
    f"pre_eta0.6=dmi:{_PRE},eta=0.6",
    f"post_lr1e-3=dmi:{_PAPER},learning_rate=0.001",
    f"pre_lr1e-3=dmi:{_PRE_LR}",
    f"pre_lr1e-3_drop0.1=dmi:{_PRE_LR},denoiser_dropout=0.1",
    f"pre_lr1e-3_eta0.6=dmi:{_PRE_LR},eta=0.6",
    f"pre_lr1e-3_eta0.2=dmi:{_PRE_LR},eta=0.2",
    f"pre_lr1e-3_s2=dmi:{_PRE_LR},noise_scale=2",
    f"pre_lr1e-3_s4=dmi:{_PRE_LR},noise_scale=4",
    f"pre_lr1e-3_s8=dmi:{_PRE_LR},noise_scale=8",
    f"pre_lr1e-3_T20=dmi:{_PRE_LR},diffusion_steps=20",
    f"pre_lr1e-3_lambda3=dmi:{_PRE_LR},diffusion_weight=3",
    f"pre_lr1e-3_lambda0.5=dmi:{_PRE_LR},diffusion_weight=0.5",
    f"pre_lr1e-3_lambda0.04=dmi:{_PRE_LR},diffusion_weight=0.04",
    f"pre_lr1e-3_eta0.2_s2=dmi:{_PRE_LR},eta=0.2,noise_scale=2",
) + tuple(
    # Issue 10 (docs/refinement.md), from the then default (pre-norm, lr 1e-3, s = 4, joint training, the
    # query residual, a frozen backbone when two-stage), one hypothesis per option, in the order they ran.
    f"{name}=dmi:{_JOINT}{',' + changes if changes else ''}"
    for name, changes in (
        ("id5", "denoiser_input_dropout=0.5"),
        ("id5_coarse1", "denoiser_input_dropout=0.5,coarse_loss_weight=1"),
        ("id5_g0.2", "denoiser_input_dropout=0.5,gamma=0.2"),
        ("id5_sq", "denoiser_input_dropout=0.5,diffusion_loss=squared"),
        ("two_stage_id5", "denoiser_input_dropout=0.5,refiner_schedule=two_stage"),
        ("two_stage_id5_eta0.6", "denoiser_input_dropout=0.5,refiner_schedule=two_stage,eta=0.6"),
        ("nores", "denoiser_query_residual=false"),
        ("two_stage_nores", "denoiser_query_residual=false,refiner_schedule=two_stage"),
        ("id5_K8", "denoiser_input_dropout=0.5,num_interests=8"),
        ("id5_s8", "denoiser_input_dropout=0.5,noise_scale=8"),
        ("ts_id5_mse", "denoiser_input_dropout=0.5,refiner_schedule=two_stage,diffusion_loss=mse"),
        ("ts_id5_lambda1", "denoiser_input_dropout=0.5,refiner_schedule=two_stage,diffusion_weight=1"),
        ("ts_id5_chain", "denoiser_input_dropout=0.5,refiner_schedule=two_stage,diffusion_training=chain"),
        ("ts_id5_g0.2", "denoiser_input_dropout=0.5,refiner_schedule=two_stage,gamma=0.2"),
        ("ts_id5_eta1", "denoiser_input_dropout=0.5,refiner_schedule=two_stage,eta=1"),
        ("id5_rec", "denoiser_input_dropout=0.5,denoiser_recency=true"),
        ("id5_g0.2_rec", "denoiser_input_dropout=0.5,gamma=0.2,denoiser_recency=true"),
        ("id5_s8_ig", "denoiser_input_dropout=0.5,noise_scale=8,denoiser_input_gradient=true"),
        ("ts_nores_blr1e-4", f"{_TS_NORES},backbone_learning_rate=0.0001"),
        ("ts_nores_g0.2", f"{_TS_NORES},gamma=0.2"),
        ("ts_nores_g1", f"{_TS_NORES},gamma=1"),
        ("ts_blr1e-4_eta0", "refiner_schedule=two_stage,backbone_learning_rate=0.0001,eta=0"),
        ("ts_nores_blr3e-4", f"{_TS_NORES},backbone_learning_rate=0.0003"),
        ("ts_nores_blr3e-5", f"{_TS_NORES},backbone_learning_rate=0.00003"),
        ("ts_nores_blr1e-4_id5", f"{_TS_NORES},backbone_learning_rate=0.0001,denoiser_input_dropout=0.5"),
        ("ts_blr1e-4", "refiner_schedule=two_stage,backbone_learning_rate=0.0001"),
        ("ts_nores_blr1e-5", f"{_TS_NORES},backbone_learning_rate=0.00001"),
        ("ts_blr3e-5_eta0", "refiner_schedule=two_stage,backbone_learning_rate=0.00003,eta=0"),
    )
) + ("remi_K8=remi:num_interests=8",) + tuple(
    # Around the issue-10 default (two-stage, backbone rate 3e-5, no query residual), one option at a time,
    # two seeds each: the current defaults spelled as they are (`dmi` with no override is the default).
    f"{name}=dmi{':' + changes if changes else ''}"
    for name, changes in (
        ("dmi", ""),
        ("ts_mlp", "denoiser=mlp"),
        ("ts_g0.3", "gamma=0.3"),
        ("ts_g0.1", "gamma=0.1"),
        ("ts_drop0.1", "denoiser_dropout=0.1"),
        ("ts_drop0.3", "denoiser_dropout=0.3"),
        ("ts_K8", "num_interests=8"),
        ("ts_amax8e-3", "alpha_max=0.008"),
        ("ts_lambda1", "diffusion_weight=1"),
        ("ts_eta0.6", "eta=0.6"),
        ("ts_eta0.2", "eta=0.2"),
        ("ts_rlr3e-4", "refiner_learning_rate=0.0003"),
        ("ts_rlr1e-4", "refiner_learning_rate=0.0001"),
        ("ts_relnoise", "diffusion_noise=relative"),
        ("ts_amin1e-5", "alpha_min=0.00001"),
    )
)
# Early stopping of the search: 3 evaluations without improvement (the reproduction uses the protocol's
# schedule); the best validation Recall@50 of a run is what is compared.
SEARCH_PATIENCE = 3
QUICK_TRIALS: tuple[str, ...] = ("remi=remi", "dmi=dmi")


def parse_trial(text: str) -> tuple[str, str, dict[str, Any]]:
    """``NAME=MODEL[:KEY=VALUE,...]`` -> ``(name, model, overrides)``.

    Raises:
      argparse.ArgumentTypeError: a malformed trial, an unknown model or config field, or a bad value.
    """
    from trainer.config import VARIANTS, parse_overrides

    name, sep, spec = text.partition("=")
    model, _, assignments = spec.partition(":")
    if not sep or not name.strip() or not model.strip():
        raise argparse.ArgumentTypeError(f"expected NAME=MODEL[:KEY=VALUE,...], got {text!r}")
    if model not in VARIANTS:
        raise argparse.ArgumentTypeError(f"trial {name!r}: unknown model {model!r} ({', '.join(VARIANTS)})")
    try:
        overrides = parse_overrides([part for part in assignments.split(",") if part.strip()])
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"trial {name!r}: {error}") from None
    return name.strip(), model, overrides


def changes_from_paper(model: str, config: Mapping[str, Any]) -> dict[str, Any]:
    """The fields of a trial's full config that differ from the paper's DMI setting (:data:`_PAPER`).

    Args:
      model: the trial's variant (a ``remi`` trial is described by its preset alone: ``{}``).
      config: the trial's full config as recorded (:func:`bench.training.config_dict`).
    """
    if model != "dmi":
        return {}
    from trainer.config import parse_overrides

    paper = training.config_dict("dmi", parse_overrides(_PAPER.split(",")))
    schedule = ("max_steps", "eval_every", "patience")
    return {key: value for key, value in config.items() if paper.get(key) != value and key not in schedule}


@contextlib.contextmanager
def _locked(path: str) -> Any:
    """Holds an exclusive lock beside ``path`` (``path.lock``) for a read-modify-write."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path + ".lock", "w", encoding="utf-8") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def save_trial(path: str, metadata: Mapping[str, Any], name: str | None, entry: Any = None) -> dict[str, Any]:
    """Merges ``metadata`` and trial ``name`` into the result file at ``path`` and returns the result."""
    with _locked(path):
        result = run_record.read_json(path) or {"trials": {}}
        result.update(metadata)
        commands = result.setdefault("invocations", [])
        if metadata.get("command") and metadata["command"] not in commands:
            commands.append(metadata["command"])
        if name is not None:
            result["trials"][name] = entry
        run_record.write_json(path, result)
    return result


def plot_trials(trials: Mapping[str, Any], path: str) -> str:
    """Horizontal bars of the best validation Recall@50 per trial (mean over its seeds), best on top."""
    plt = plots.pyplot()
    ranked = sorted(trials.items(), key=lambda item: item[1]["val_recall@50"]["mean"])
    figure, axis = plt.subplots(figsize=(7, 0.35 * len(ranked) + 1.5))
    names = [name for name, _ in ranked]
    means = [entry["val_recall@50"]["mean"] for _, entry in ranked]
    stds = [entry["val_recall@50"]["std"] or 0.0 for _, entry in ranked]
    colors = ["tab:gray" if entry["model"] != "dmi" else "tab:blue" for _, entry in ranked]
    axis.barh(names, means, xerr=stds, color=colors)
    low = min(means) if means else 0.0
    axis.set_xlim(max(0.0, low - 0.02), max(means, default=1.0) + 0.01)
    axis.set_xlabel("best validation Recall@50 (validation users only)")
    axis.set_title("bench.tune: search on validation users (gray: baselines)")
    axis.grid(axis="x", alpha=0.3)
    return plots.save_figure(figure, path)


def refinement_summary(entry: Mapping[str, Any]) -> dict[str, float | None]:
    """Means over a trial's runs of the refinement diagnostics at the best evaluation (None where the
    runs predate them or the model has no refiner): unrefined validation Recall@50 and refinement size."""
    summary: dict[str, float | None] = {}
    for key in ("val_coarse_recall@50", "refinement_size", "refinement_cosine"):
        values = [run["refinement"][key] for run in entry["runs"] if key in run.get("refinement", {})]
        summary[key] = sum(values) / len(values) if values else None
    return summary


def plot_refinement(trials: Mapping[str, Any], path: str) -> str:
    """Validation Recall@50 against the refinement size ``||Z - v|| / ||v||`` at the best evaluation, one
    point per trial with diagnostics, and the gain of the refinement (arrow from the same weights'
    unrefined Recall@50); horizontal lines: the baselines."""
    plt = plots.pyplot()
    figure, axis = plt.subplots(figsize=(7.5, 5))
    for name, entry in trials.items():
        if entry["model"] != "dmi":
            axis.axhline(entry["val_recall@50"]["mean"], color="gray", ls="--", lw=0.8)
            axis.text(0.0, entry["val_recall@50"]["mean"], f" {name}", color="gray", fontsize=7, va="bottom")
            continue
        summary = refinement_summary(entry)
        if summary["refinement_size"] is None:
            continue
        size, refined = summary["refinement_size"], entry["val_recall@50"]["mean"]
        axis.annotate(
            "", xy=(size, refined), xytext=(size, summary["val_coarse_recall@50"]),
            arrowprops={"arrowstyle": "->", "color": "tab:blue", "alpha": 0.4},
        )
        axis.plot(size, refined, "o", color="tab:blue")
        axis.text(size, refined, f" {name}", fontsize=7, va="center")
    axis.set_xlabel("refinement size ||Z - v|| / ||v|| (validation users, best evaluation)")
    axis.set_ylabel("best validation Recall@50")
    axis.set_title("bench.tune: what the refinement adds (arrow: from the same weights unrefined)")
    axis.grid(alpha=0.3)
    return plots.save_figure(figure, path)


def parse_args(argv: Sequence[str]) -> Any:
    parser = arguments.base_parser(MODULE, __doc__)
    arguments.add_data_arguments(parser)
    parser.add_argument(
        "--trial",
        action="append",
        type=parse_trial,
        default=[],
        metavar="NAME=MODEL[:KEY=VALUE,...]",
        help="a trial to run (repeatable; default: the recorded search, DEFAULT_TRIALS)",
    )
    parser.add_argument("--seeds", type=int, default=1, help="seeds per trial (default 1)")
    arguments.add_training_arguments(parser, jobs=False)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    started = time.perf_counter()
    threads = arguments.configure_threads(args)
    from trainer.config import parse_overrides

    trials = args.trial or [parse_trial(text) for text in (QUICK_TRIALS if args.quick else DEFAULT_TRIALS)]
    shared = {
        **datasets.schedule(args.data, args.quick),
        **({} if args.quick else {"patience": SEARCH_PATIENCE}),
        **parse_overrides(args.set),
    }
    stem = run_record.result_stem("tuning", args.data)
    path = run_record.result_path(args.out, stem, args.quick)
    dataset = datasets.load_dataset(args.data, args.beauty_path, args.split_seed)
    run_record.log(f"{args.data}: {dataset.describe()}")
    metadata = {
        **run_record.run_metadata(MODULE, argv, args.quick),
        "data": dataset.describe(),
        "threads": threads,
        "note": "validation users only: test users are never evaluated by this script",
    }
    for name, model, overrides in trials:
        config = training.config_dict(model, {**shared, **overrides})
        entry = save_trial(path, metadata, None)["trials"].get(name)
        if entry is None or entry["model"] != model or not training.same_config(entry["config"], config):
            entry = {"model": model, "overrides": overrides, "config": config, "runs": []}
        done = {run["seed"] for run in entry["runs"]}
        for seed in range(args.seeds):
            if seed in done:
                run_record.log(f"{name} seed {seed}: already in {path}")
                continue
            run_record.log(f"{name} seed {seed}: {model} {overrides}")
            _, record = training.train_run(
                model, dataset.data, {**shared, **overrides}, seed, evaluate_test=False
            )
            record.pop("test")
            entry["runs"].append(record)
            entry["val_recall@50"] = summaries.summarize(
                [run["validation"]["recall@50"] for run in entry["runs"]]
            )
            entry["val_hit_rate@50"] = summaries.summarize(
                [run["validation"]["hit_rate@50"] for run in entry["runs"]]
            )
            save_trial(path, metadata, name, entry)
            run_record.log(
                f"{name} seed {seed}: best validation R@50 {record['validation']['recall@50']:.4f} "
                f"at step {record['best_step']} ({record['wall_time_s']:.0f} s)"
            )
    result = save_trial(path, metadata, None)
    figure = plot_trials(result["trials"], run_record.result_path(args.out, stem, args.quick, ".png"))
    metadata["figure"] = os.path.basename(figure)
    refinement = plot_refinement(
        result["trials"], run_record.result_path(args.out, f"{stem}_refinement", args.quick, ".png")
    )
    metadata["refinement_figure"] = os.path.basename(refinement)
    result = save_trial(path, run_record.finish_metadata(metadata, started), None)

    rows = sorted(result["trials"].items(), key=lambda item: -item[1]["val_recall@50"]["mean"])
    print(f"\nSearch on {args.data} validation users ({shared}); best first")
    print(
        summaries.text_table(
            ["trial", "model", "overrides", "val R@50", "val HR@50", "best step", "runs"],
            [
                [
                    name,
                    entry["model"],
                    ",".join(f"{k}={v}" for k, v in entry["overrides"].items()) or "-",
                    summaries.format_stat(entry["val_recall@50"]),
                    summaries.format_stat(entry["val_hit_rate@50"]),
                    ",".join(str(run["best_step"]) for run in entry["runs"]),
                    len(entry["runs"]),
                ]
                for name, entry in rows
            ],
        )
    )
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
