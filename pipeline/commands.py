"""``dmirec run``, ``dmirec compile-kfp`` and ``dmirec demo``: the pipeline's command-line commands.

Each ``add_*_command`` registers one top-level command; ``setup.py`` declares them as ``dmirec.commands``
entry points for the ``dmirec`` dispatcher (``pipeline/cli.py``). The runners and the demo are imported by
the handlers, so ``--help`` does not load TFX or TensorFlow. Both runners take one
:class:`~pipeline.configs.PipelineSettings`, built from the shared flags by :func:`pipeline_settings`.
"""

from __future__ import annotations

import argparse
from typing import Any

from pipeline import configs
from trainer import cli as trainer_cli


def _fraction(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text}")
    return value


def _add_common_arguments(parser: argparse.ArgumentParser) -> None:
    """Model, data and Beam arguments shared by ``run`` and ``compile-kfp``."""
    from trainer.config import servable_variants

    parser.add_argument(
        "--model",
        default=configs.DEFAULT_MODEL,
        choices=servable_variants(),
        help=f"model variant (default {configs.DEFAULT_MODEL})",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a ModelConfig field, e.g. --set max_steps=5000 (fields: see trainer/config.py)",
    )
    parser.add_argument("--split-seed", type=int, default=0, help="seed of the 8:1:1 user split (default 0)")
    trainer_cli.add_kcore_arguments(parser)
    trainer_cli.add_export_settings_arguments(parser)
    parser.add_argument(
        "--max-bad-fraction",
        type=_fraction,
        default=None,
        help="fail when a larger fraction of the log's rows is malformed (default 0.01)",
    )
    parser.add_argument(
        "--min-recall",
        type=_fraction,
        default=configs.DEFAULT_MIN_RECALL,
        help=f"least test Recall@50 to bless and push a model (default {configs.DEFAULT_MIN_RECALL})",
    )
    parser.add_argument(
        "--recall-tolerance",
        type=_fraction,
        default=configs.DEFAULT_RECALL_TOLERANCE,
        help="how far below the latest blessed model's test Recall@50 (re-measured on this run's test users) "
        f"a model may be and still be pushed (absolute, default {configs.DEFAULT_RECALL_TOLERANCE})",
    )
    parser.add_argument(
        "--beam-arg",
        action="append",
        default=[],
        metavar="OPTION",
        help="a Beam pipeline option, e.g. --beam-arg=--runner=DataflowRunner (repeatable; after the defaults "
        f"{' '.join(configs.LOCAL_BEAM_ARGS)}, so it wins over them)",
    )


def add_run_command(subparsers: argparse._SubParsersAction) -> None:
    """Registers ``dmirec run`` (the ``run`` entry point in ``setup.py``).

    Args:
      subparsers: what ``ArgumentParser.add_subparsers`` returned.
    """
    run = subparsers.add_parser(
        "run",
        help="run the TFX pipeline locally: log -> examples -> validation -> Trainer -> "
        "evaluation -> push",
        description="Run the whole TFX pipeline on this machine (LocalDagRunner, SQLite ML Metadata and the "
        "pipeline root under --out, Beam's DirectRunner on all cores). Re-running with unchanged inputs reuses "
        "every component's output. Prints the pushed version and its test metrics.",
    )
    run.add_argument("--log", required=True, help="interaction log CSV file, or a directory of them")
    run.add_argument("--out", required=True, help="output directory (ML Metadata, artifacts, serving)")
    run.add_argument("--serving-base", help="where blessed servables are pushed (default: <out>/serving)")
    run.add_argument("--no-cache", action="store_true", help="run every component even if its inputs are unchanged")
    _add_common_arguments(run)
    run.set_defaults(handler=run_pipeline)


def add_compile_kfp_command(subparsers: argparse._SubParsersAction) -> None:
    """Registers ``dmirec compile-kfp`` (the ``compile-kfp`` entry point in ``setup.py``).

    Args:
      subparsers: what ``ArgumentParser.add_subparsers`` returned.
    """
    compile_kfp = subparsers.add_parser(
        "compile-kfp",
        help="write the pipeline's Kubeflow Pipelines v2 spec (JSON)",
        description="Compile the pipeline for Kubeflow Pipelines v2 / Vertex AI Pipelines with "
        "KubeflowV2DagRunner: every component runs in --image (built from the Dockerfile).",
    )
    compile_kfp.add_argument("--out", required=True, help="directory to write <pipeline name>.json into")
    compile_kfp.add_argument(
        "--image", default=configs.DEFAULT_IMAGE, help=f"container image (default {configs.DEFAULT_IMAGE})"
    )
    compile_kfp.add_argument(
        "--pipeline-root",
        default=configs.KFP_PIPELINE_ROOT,
        help=f"artifact root (default {configs.KFP_PIPELINE_ROOT})",
    )
    compile_kfp.add_argument("--log", default=configs.KFP_LOG, help=f"interaction logs (default {configs.KFP_LOG})")
    compile_kfp.add_argument(
        "--serving-base", help="where blessed servables are pushed (default <pipeline root>/serving)"
    )
    _add_common_arguments(compile_kfp)
    compile_kfp.set_defaults(handler=compile_kfp_pipeline)


def add_demo_command(subparsers: argparse._SubParsersAction) -> None:
    """Registers ``dmirec demo`` (the ``demo`` entry point in ``setup.py``).

    Args:
      subparsers: what ``ArgumentParser.add_subparsers`` returned.
    """
    from trainer.config import servable_variants

    parser = subparsers.add_parser(
        "demo",
        help="the main job on the default synthetic data: log -> trained DMI -> gRPC top-10",
        description="The main job end to end on the default synthetic data, from raw log to served "
        "top-N: writes the log, runs the TFX pipeline on it, serves the pushed model and asks it for the "
        "top items of a few held-out users over gRPC.",
    )
    parser.add_argument("--out", default="demo_out", help="output directory (default demo_out)")
    parser.add_argument("--model", default="dmi", choices=servable_variants(), help="variant (default dmi)")
    parser.set_defaults(handler=run_demo)


def pipeline_settings(args: argparse.Namespace, **settings: Any) -> configs.PipelineSettings:
    """The run's :class:`~pipeline.configs.PipelineSettings` from the shared flags (and ``settings``).

    Raises:
      ValueError: a bad ``--set`` or an invalid setting.
    """
    from trainer.config import parse_overrides

    if args.max_bad_fraction is not None:
        settings["max_bad_fraction"] = args.max_bad_fraction
    return configs.PipelineSettings(
        model=args.model,
        overrides=parse_overrides(args.set),
        export=trainer_cli.export_settings(args),
        beam_args=(*configs.LOCAL_BEAM_ARGS, *args.beam_arg),
        split_seed=args.split_seed,
        min_user=args.min_user,
        min_item=args.min_item,
        min_recall=args.min_recall,
        **settings,
    )


def run_pipeline(args: argparse.Namespace) -> int:
    """Handler of ``dmirec run``: runs the pipeline and prints what it pushed.

    Args:
      args: the parsed ``run`` arguments.

    Returns:
      Exit status: 0 when the run completed (pushed or not).
    """
    from pipeline import local_runner

    settings = pipeline_settings(args, recall_tolerance=args.recall_tolerance, enable_cache=not args.no_cache)
    summary = local_runner.run(log=args.log, out_dir=args.out, settings=settings, serving_base=args.serving_base)
    cached = sum(state == "CACHED" for state in summary.states.values())
    print(f"run {summary.run_id}: {len(summary.states)} components, {cached} from the cache")
    if summary.metrics:
        names = sorted(summary.metrics, key=lambda key: (int(key.split("@")[1]), key))
        print("test metrics (dmi_exact, rank-order NDCG): "
              + "  ".join(f"{name} {summary.metrics[name]:.4f}" for name in names))
    print(f"{'blessed' if summary.blessed else 'not blessed'}: {summary.reason}")
    if summary.pushed:
        print(f"pushed version {summary.version}:")
        for name, path in sorted(summary.servables.items()):
            print(f"  {name}: {path}")
    else:
        print("nothing pushed")
    return 0


def compile_kfp_pipeline(args: argparse.Namespace) -> int:
    """Handler of ``dmirec compile-kfp``: writes the Kubeflow Pipelines v2 spec.

    Args:
      args: the parsed ``compile-kfp`` arguments.

    Returns:
      Exit status 0.
    """
    from pipeline import kubeflow_runner

    path = kubeflow_runner.compile_pipeline(
        out_dir=args.out,
        pipeline_root=args.pipeline_root,
        log=args.log,
        image=args.image,
        settings=pipeline_settings(args, recall_tolerance=args.recall_tolerance),
        serving_base=args.serving_base,
    )
    print(f"wrote {path} (image {args.image})")
    return 0


def run_demo(args: argparse.Namespace) -> int:
    """Handler of ``dmirec demo``: the demo into ``--out``."""
    from pipeline import demo

    demo.run_demo(args.out, args.model)
    return 0
