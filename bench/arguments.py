"""The command-line options the benchmark scripts share (``--quick``, ``--out``, ``--work-dir``, threads,
data, model, ``--set``, ``--jobs``, ``--models`` / ``--variants``, ``--resume``) and the parsers of their
list values."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence

from bench.datasets import DATASETS, DEFAULT_BEAUTY
from bench.run_record import RESULTS_DIR, WORK_DIR


def base_parser(module: str, description: str) -> argparse.ArgumentParser:
    """A parser with the options every benchmark script has."""
    parser = argparse.ArgumentParser(
        prog=f"python -m {module}",
        description=description,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--quick", action="store_true", help="reduced run (a few minutes) writing <name>_quick.json"
    )
    parser.add_argument("--out", default=RESULTS_DIR, help=f"result directory (default: {RESULTS_DIR})")
    parser.add_argument(
        "--work-dir",
        default=WORK_DIR,
        help=f"directory for large artifacts: models, exports, logs (default: {WORK_DIR})",
    )
    return parser


def add_thread_arguments(parser: argparse.ArgumentParser, default: int) -> None:
    """``--intra-op-threads`` / ``--inter-op-threads`` (0 = TensorFlow's default)."""
    parser.add_argument(
        "--intra-op-threads",
        type=int,
        default=default,
        help=f"TensorFlow intra-op threads (default {default}; 0 = TensorFlow's choice)",
    )
    parser.add_argument(
        "--inter-op-threads",
        type=int,
        default=default,
        help=f"TensorFlow inter-op threads (default {default}; 0 = TensorFlow's choice)",
    )


def add_data_arguments(parser: argparse.ArgumentParser, default: str = "beauty") -> None:
    """``--data``, ``--beauty-path`` and ``--split-seed``."""
    parser.add_argument("--data", choices=DATASETS, default=default, help=f"data set (default {default})")
    parser.add_argument(
        "--beauty-path",
        default=DEFAULT_BEAUTY,
        help=f"Beauty.txt, read in place (default: {DEFAULT_BEAUTY}; env DMIREC_BEAUTY)",
    )
    parser.add_argument("--split-seed", type=int, default=0, help="seed of the 8:1:1 user split (default 0)")


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """``--model-dir`` / ``--train-steps`` / ``--sampling-steps``: the trained model a serving benchmark
    measures, and the DDIM steps it serves with."""
    parser.add_argument(
        "--model-dir", help="a trained model directory (dmirec train --out) instead of training one"
    )
    parser.add_argument(
        "--train-steps", type=int, help="steps of the model trained here (default 2000; --quick 500)"
    )
    parser.add_argument(
        "--sampling-steps",
        type=int,  # DMIModel.with_sampling_steps checks the range against the model's T
        help="DDIM steps S the servables refine with (dmirec export --sampling-steps; default: the model's "
        "own, S = T); serving_latency's Beauty targets are defined at the default, and their names say "
        "when S differs",
    )


def add_set_argument(parser: argparse.ArgumentParser) -> None:
    """``--set key=value`` config overrides, passed to every model trained."""
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a ModelConfig field for every model (e.g. --set max_steps=5000); "
        "overrides the schedule too",
    )


def configure_threads(args: argparse.Namespace) -> dict[str, int]:
    """Applies the thread flags (before TensorFlow runs an op) and returns them for the result file."""
    import tensorflow as tf

    from trainer import runtime

    tf.get_logger().setLevel("ERROR")  # e.g. retracing warnings of one Evaluator per model
    runtime.configure_threads(args.intra_op_threads, args.inter_op_threads)
    return {"intra_op": args.intra_op_threads, "inter_op": args.inter_op_threads}


def parse_int_list(text: str) -> list[int]:
    """``"1,2,5"`` -> ``[1, 2, 5]``."""
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def parse_name_list(choices: Sequence[str]) -> Callable[[str], list[str]]:
    """An argparse type: comma-separated names, each one of ``choices``."""

    def parse(text: str) -> list[str]:
        names = [part.strip() for part in text.split(",") if part.strip()]
        unknown = [name for name in names if name not in choices]
        if unknown or not names:
            raise argparse.ArgumentTypeError(
                f"expected comma-separated names from {', '.join(choices)}, got {text!r}"
            )
        return names

    return parse


def add_names_argument(parser: argparse.ArgumentParser, flag: str, choices: Sequence[str]) -> None:
    """``--models a,b`` / ``--variants a,b``: which of ``choices`` to run, all of them by default."""
    parser.add_argument(
        flag,
        type=parse_name_list(tuple(choices)),
        default=list(choices),
        help=f"comma-separated {flag.lstrip('-')} (default: {','.join(choices)})",
    )


def add_resume_argument(parser: argparse.ArgumentParser) -> None:
    """``--resume``: keep the runs of an existing result file whose config matches."""
    parser.add_argument(
        "--resume", action="store_true", help="keep the runs of an existing result file with the same config"
    )


def add_training_arguments(parser: argparse.ArgumentParser, jobs: bool = True) -> None:
    """What every script that trains takes: ``--set``, the thread counts (one each by default) and,
    when its runs are independent, ``--jobs``."""
    add_set_argument(parser)
    add_thread_arguments(parser, default=1)
    if jobs:
        _add_jobs_argument(parser)


def _add_jobs_argument(parser: argparse.ArgumentParser) -> None:
    """``--jobs N``: training runs in parallel worker processes."""
    parser.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="training runs in parallel, one worker process each (default 1; use at most one per core "
        "with --intra-op-threads 1)",
    )
