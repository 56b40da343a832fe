"""``dmirec bench``: the benchmark suite's command-line command (the ``bench`` entry point in ``setup.py``)."""

from __future__ import annotations

import argparse

from bench import run_all


def add_bench_command(subparsers: argparse._SubParsersAction) -> None:
    """Registers ``dmirec bench [--quick] [--only reproduce,serving,...]`` on the top-level parser."""
    bench = subparsers.add_parser(
        "bench",
        help="run the benchmark suite (reproduction, ablation, speed, serving), write docs/results.md",
        description=run_all.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run_all.add_arguments(bench)
    bench.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    return run_all.run(args)
