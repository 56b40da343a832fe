"""The ``dmirec`` command line: one entry point composing the trainer's, pipeline's and server's commands.

Sub-commands are registered by the package that owns them; this module only builds the parser and turns
expected failures (malformed input files, bad arguments) into a one-line message with exit status 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import trainer  # noqa: F401  (selects Keras 2 before anything imports TensorFlow)
from trainer import cli as trainer_cli
from trainer.interactions import LogFormatError
from pipeline import commands as pipeline_commands
from bench import cli as bench_cli
from pipeline import demo
from serving import cli as serving_cli


def build_parser() -> argparse.ArgumentParser:
    """The ``dmirec`` parser with every sub-command."""
    parser = argparse.ArgumentParser(
        prog="dmirec",
        description="DMI-Rec: Diffusion Multi-Interest retrieval (Le et al., SIGIR 2025) on TFX.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    trainer_cli.add_data_commands(commands)
    trainer_cli.add_train_commands(commands)
    pipeline_commands.add_pipeline_commands(commands)
    serving_cli.add_serving_commands(commands)
    demo.add_demo_command(commands)
    bench_cli.add_bench_command(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Runs one ``dmirec`` command; returns its exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except (LogFormatError, FileNotFoundError, ValueError) as e:
        print(f"dmirec {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"dmirec {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
