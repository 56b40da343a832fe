"""``dmirec data ...``, ``dmirec train``, ``dmirec export`` and ``dmirec evaluate``: the trainer's command-line commands.

Each ``add_*_command`` function registers one top-level command; ``setup.py`` declares them as
``dmirec.commands`` entry points, which the ``dmirec`` dispatcher (``pipeline/cli.py``) loads by name, so
the trainer's commands need nothing outside ``trainer/``. Nothing here imports TensorFlow at module level:
``dmirec data ...`` never loads it. Handlers raise ordinary exceptions; the top-level
``main`` turns the expected ones (bad input, bad arguments) into a one-line message and exit status 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from typing import TYPE_CHECKING

from trainer import interactions, synthetic
from trainer.export_settings import ExportSettings

if TYPE_CHECKING:  # TensorFlow: not at import time (``dmirec data`` never loads it)
    from trainer.model import DMIModel
    from trainer.sequences import Vocabulary

# Where ``dmirec train`` writes the servables, under its output directory (``dmirec export``'s default too).
EXPORT_DIR = "export"


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text}")
    return value


def add_kcore_arguments(parser: argparse.ArgumentParser) -> None:
    """``--min-user`` / ``--min-item``: iterative k-core thresholds (shared with ``dmirec run``)."""
    parser.add_argument(
        "--min-user",
        type=_non_negative_int,
        default=0,
        help="iterative k-core: drop users with fewer events (default: no filter)",
    )
    parser.add_argument(
        "--min-item",
        type=_non_negative_int,
        default=0,
        help="iterative k-core: drop items with fewer events (default: no filter)",
    )


def _add_skip_bad_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--skip-bad",
        action="store_true",
        help="count and report malformed lines instead of stopping at the first one",
    )


def _report_bad_lines(report: interactions.ReadReport) -> None:
    if report.bad_lines:
        print(f"skipped {report.bad_lines} malformed line(s) in {report.path}", file=sys.stderr)
        for example in report.bad_examples:
            print(f"  {example}", file=sys.stderr)


def _convert(args: argparse.Namespace) -> int:
    report = interactions.convert(
        args.input,
        args.output,
        fmt=args.format,
        min_user=args.min_user,
        min_item=args.min_item,
        skip_bad=args.skip_bad,
    )
    _report_bad_lines(report)
    stats = interactions.log_stats(interactions.read_interactions(args.output))
    print(
        f"wrote {args.output}: {stats.users:,} users, {stats.items:,} items, "
        f"{stats.interactions:,} interactions (read {report.interactions:,} from {args.input})"
    )
    return 0


def _synth(args: argparse.Namespace) -> int:
    fields = {f.name for f in dataclasses.fields(synthetic.SyntheticConfig)}
    config = synthetic.SyntheticConfig(
        **{k: v for k, v in vars(args).items() if k in fields and v is not None}
    )
    count = interactions.write_log(args.out, synthetic.generate(config))
    print(f"wrote {args.out}: {count:,} interactions ({config})")
    return 0


def _stats(args: argparse.Namespace) -> int:
    report = interactions.ReadReport(args.log)
    events = interactions.read_interactions(args.log, args.format, skip_bad=args.skip_bad, report=report)
    if args.min_user > 1 or args.min_item > 1:
        events = interactions.k_core(list(events), min_user=args.min_user, min_item=args.min_item)
    stats = interactions.log_stats(events)
    print(stats.to_json() if args.json else stats.to_text())
    _report_bad_lines(report)
    return 0


def add_data_command(subparsers: argparse._SubParsersAction) -> None:
    """Registers ``dmirec data convert|synth|stats`` (the ``data`` entry point in ``setup.py``)."""
    data = subparsers.add_parser(
        "data",
        help="interaction-log tooling: convert, synth, stats",
        description="Tools for interaction logs (CSV user_id,item_id,timestamp).",
    )
    commands = data.add_subparsers(dest="data_command", required=True, metavar="COMMAND")

    convert = commands.add_parser(
        "convert",
        help="convert sequences / ComiRec / Amazon JSON files into an interaction log",
        description="Convert INPUT into an interaction log CSV at OUTPUT (written atomically).",
    )
    convert.add_argument("input", help="input file")
    convert.add_argument("output", help="interaction log CSV to write")
    convert.add_argument(
        "--format",
        default="auto",
        choices=("auto",) + interactions.FORMATS,
        help="input format: sequences ('user item item ...', timestamp = position), comirec "
        "('user,item,index[,timestamp]'), amazon-json (reviewerID/asin/unixReviewTime), log "
        "(already a log: re-filter it); auto detects it from the first line (default)",
    )
    add_kcore_arguments(convert)
    _add_skip_bad_argument(convert)
    convert.set_defaults(handler=_convert)

    synth = commands.add_parser(
        "synth",
        help="write a deterministic synthetic log with planted multi-interest structure",
        description=synthetic.__doc__.split("\n\n")[0],
    )
    synth.add_argument("--out", required=True, help="interaction log CSV to write")
    defaults = synthetic.SyntheticConfig()
    for field in dataclasses.fields(synthetic.SyntheticConfig):
        default = getattr(defaults, field.name)
        synth.add_argument(
            f"--{field.name.replace('_', '-')}",
            dest=field.name,
            type=type(default),
            default=None,
            help=f"default {default}",
        )
    synth.set_defaults(handler=_synth)

    stats = commands.add_parser(
        "stats",
        help="users, items, interactions and the sequence-length distribution of a log",
        description="Print the size and sequence-length distribution of an interaction log.",
    )
    stats.add_argument("log", help="interaction log CSV (or another format with --format)")
    stats.add_argument(
        "--format",
        default="log",
        choices=("auto",) + interactions.FORMATS,
        help="input format (default: log)",
    )
    stats.add_argument("--json", action="store_true", help="print JSON instead of text")
    add_kcore_arguments(stats)
    _add_skip_bad_argument(stats)
    stats.set_defaults(handler=_stats)


def _load_sequences(args: argparse.Namespace, vocabulary=None):
    from trainer.sequences import SequenceData

    log, fmt, skip_bad, min_user, min_item = (
        args.log,
        args.format,
        args.skip_bad,
        args.min_user,
        args.min_item,
    )
    report = interactions.ReadReport(log)
    events = interactions.read_interactions(log, fmt, skip_bad=skip_bad, report=report)
    if min_user > 1 or min_item > 1:
        events = interactions.k_core(list(events), min_user=min_user, min_item=min_item)
    data = SequenceData.from_interactions(events, seed=args.split_seed, vocabulary=vocabulary)
    _report_bad_lines(report)
    return data


def _configure_threads(args: argparse.Namespace) -> None:
    from trainer import runtime

    runtime.configure_threads(args.intra_op_threads, args.inter_op_threads)


def _print_metrics(title: str, metrics: dict, ndcg: str) -> None:
    label = {
        "rank": "rank order",
        "standard": "standard IDCG",
        "remi": "REMI set order, not a ranking metric",
    }[ndcg]
    names = sorted(metrics, key=lambda key: (int(key.split("@")[1]), key))
    print(f"{title} ({label} NDCG): " + "  ".join(f"{name} {metrics[name]:.4f}" for name in names))


def _add_export_arguments(parser: argparse.ArgumentParser) -> None:
    """How the servables are exported and where they are pushed (``dmirec train`` and ``dmirec export``)."""
    parser.add_argument(
        "--serving-base",
        help="also push the exported servables (dmi, dmi_exact) to DIR/<name>/<next version> for serving",
    )
    add_export_settings_arguments(parser)


def add_export_settings_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of :class:`~trainer.export_settings.ExportSettings` (shared with ``dmirec run``)."""
    parser.add_argument(
        "--xla",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="compile the exported user tower (and exact scoring) with XLA (default); --no-xla for a TF "
        "Serving run without --xla_cpu_compilation_enabled (serving/deploy/README.md)",
    )
    parser.add_argument(
        "--scann-leaves",
        type=int,  # ExportSettings checks the range, naming the setting
        help="partitions of the dmi servable's ScaNN index, at least 2 (default: about sqrt(items))",
    )
    parser.add_argument(
        "--scann-leaves-to-search",
        type=int,  # ExportSettings checks the range, naming the setting
        help="partitions searched per query (default: two fifths of the leaves; a catalogue with structure "
        "can search fewer: the recall/latency curve of `dmirec bench --only serving`, docs/performance.md)",
    )
    parser.add_argument(
        "--sampling-steps",
        type=int,  # ExportSettings and the model's T check the range
        help="DDIM steps S of the servables' refinement, 1..T (default: the model's own, T unless trained "
        "with --set sampling_steps=S); fewer steps serve faster, as the paper's online deployment does: "
        "what each S serves is measured by `dmirec bench --only ddim`",
    )


def export_settings(args: argparse.Namespace) -> ExportSettings:
    """The flags of :func:`add_export_settings_arguments` as settings (ValueError: out of range)."""
    return ExportSettings(args.scann_leaves, args.scann_leaves_to_search, args.xla, args.sampling_steps)


def _export_and_push(
    args: argparse.Namespace,
    settings: ExportSettings,
    model: DMIModel,
    vocabulary: Vocabulary,
    export_dir: str,
) -> None:
    """Exports ``dmi`` and ``dmi_exact`` under ``export_dir``; pushes them to ``--serving-base`` if given."""
    from trainer import export, push

    paths = export.export_servables(model, vocabulary, export_dir, settings)
    print("exported " + ", ".join(f"{name}: {path}" for name, path in paths.items()))
    if args.serving_base:
        version = push.push_servables(export_dir, args.serving_base)
        print(f"pushed version {version} to {args.serving_base}")


def _train(args: argparse.Namespace) -> int:
    _configure_threads(args)
    import os

    from trainer import config as config_lib
    from trainer import train as train_lib
    from trainer.model import PopularityModel

    config = config_lib.variant_config(args.model, config_lib.parse_overrides(args.set))
    settings = export_settings(args)
    settings.check_config(config)  # before reading the log
    data = _load_sequences(args)
    print(
        f"{args.log}: {data.num_items:,} items; users train {len(data.train):,} / "
        f"eval {len(data.eval):,} / test {len(data.test):,}"
    )
    if config_lib.has_servable(config):
        settings.check_model(config, data.num_items)
    result = train_lib.train(config, data, args.out, ndcg=args.ndcg)
    _print_metrics(f"validation (step {result.best_step})", result.validation, args.ndcg)
    _print_metrics("test", result.test, args.ndcg)
    if result.examples_per_second:
        print(
            f"training speed: {result.examples_per_second:,.0f} examples/s "
            f"({result.examples_per_second / config.batch_size:,.1f} steps/s)"
        )
    if not isinstance(result.model, PopularityModel):
        _export_and_push(args, settings, result.model, data.vocabulary, os.path.join(args.out, EXPORT_DIR))
    print(f"wrote {args.out}")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    _configure_threads(args)
    import json
    import os

    from trainer import evaluation, sequences, train as train_lib

    config, vocabulary, model = train_lib.load_model(args.model_dir)
    # Ids are encoded with the trained model's vocabulary (items it never saw become padding).
    data = _load_sequences(args, vocabulary=vocabulary)
    evaluation_users = sequences.evaluation_set(data.splits[args.split], config.max_length)
    evaluator = evaluation.Evaluator(model, evaluation_users, ndcg=args.ndcg)
    metrics = evaluator()
    _print_metrics(f"{args.split} ({len(evaluator.evaluation_set):,} users)", metrics, args.ndcg)
    path = os.path.join(args.model_dir, f"evaluation_{args.split}_{args.ndcg}.json")
    with interactions.atomic_writer(path) as f:
        json.dump({"split": args.split, "ndcg": args.ndcg, "metrics": metrics}, f, indent=2)
    print(f"wrote {path}")
    return 0


def _add_log_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--log", required=True, help="interaction log CSV (or another format with --format)")
    parser.add_argument(
        "--format",
        default="log",
        choices=("auto",) + interactions.FORMATS,
        help="input format (default: log)",
    )
    parser.add_argument("--split-seed", type=int, default=0, help="seed of the 8:1:1 user split (default 0)")
    parser.add_argument(
        "--ndcg",
        default="rank",
        choices=("rank", "standard", "remi"),
        help="NDCG variant: rank order (default), standard IDCG, or REMI's set-order variant "
        "(for comparison with published numbers only)",
    )
    parser.add_argument(
        "--intra-op-threads",
        type=int,
        default=1,
        help="TensorFlow intra-op threads (default 1: fastest for this model on 2 cores)",
    )
    parser.add_argument(
        "--inter-op-threads", type=int, default=1, help="TensorFlow inter-op threads (default 1)"
    )
    add_kcore_arguments(parser)
    _add_skip_bad_argument(parser)


def add_train_command(subparsers: argparse._SubParsersAction) -> None:
    """Registers ``dmirec train`` (the ``train`` entry point in ``setup.py``)."""
    from trainer.config import VARIANTS

    train = subparsers.add_parser(
        "train",
        help="train DMI or a baseline on an interaction log under the ComiRec/REMI protocol",
        description="Train one model variant: 8:1:1 user split, validation Recall@50 with early stopping, "
        "test metrics of the best model. Writes the model, metrics.json and TensorBoard logs.",
    )
    train.add_argument("--model", default="dmi", choices=tuple(VARIANTS), help="model variant (default dmi)")
    train.add_argument(
        "--out", required=True, help="output directory (re-running resumes an interrupted run)"
    )
    _add_export_arguments(train)
    train.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config field, e.g. --set max_steps=5000 --set alpha_max=0.008 "
        "(fields: see trainer/config.py)",
    )
    _add_log_arguments(train)
    train.set_defaults(handler=_train)


def add_export_command(subparsers: argparse._SubParsersAction) -> None:
    """Registers ``dmirec export`` (the ``export`` entry point in ``setup.py``)."""
    export = subparsers.add_parser(
        "export",
        help="export a trained model directory again as servables, e.g. with other ScaNN settings",
        description="Write the dmi (ScaNN) and dmi_exact SavedModels of a model written by 'dmirec train', "
        "without training again: an index setting chosen from a measured recall/latency curve, or a build "
        "without XLA.",
    )
    export.add_argument("--model-dir", required=True, help="directory written by dmirec train")
    export.add_argument(
        "--out", help=f"directory to write dmi/ and dmi_exact/ into (default: <model-dir>/{EXPORT_DIR})"
    )
    _add_export_arguments(export)
    export.set_defaults(handler=_export)


def _export(args: argparse.Namespace) -> int:
    import os

    from trainer import train as train_lib
    from trainer.model import PopularityModel

    settings = export_settings(args)
    config, vocabulary, model = train_lib.load_model(args.model_dir)
    if isinstance(model, PopularityModel):
        raise ValueError(f"{args.model_dir} holds the {config.model!r} model, which has no servable")
    settings.check_model(config, model.num_items)
    _export_and_push(args, settings, model, vocabulary, args.out or os.path.join(args.model_dir, EXPORT_DIR))
    return 0


def add_evaluate_command(subparsers: argparse._SubParsersAction) -> None:
    """Registers ``dmirec evaluate`` (the ``evaluate`` entry point in ``setup.py``)."""
    evaluate = subparsers.add_parser(
        "evaluate",
        help="evaluate a trained model directory on the eval or test users of a log",
        description="Evaluate a model written by 'dmirec train' (Recall/HitRate/NDCG at 20 and 50).",
    )
    evaluate.add_argument("--model-dir", required=True, help="directory written by dmirec train")
    evaluate.add_argument(
        "--split", default="test", choices=("eval", "test"), help="users to evaluate (default test)"
    )
    _add_log_arguments(evaluate)
    evaluate.set_defaults(handler=_evaluate)
