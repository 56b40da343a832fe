"""``dmirec data ...``, ``dmirec train`` and ``dmirec evaluate``: the trainer's command-line commands.

Each ``add_*`` function registers its sub-commands on the top-level parser (``pipeline/cli.py``), so the
trainer's commands need nothing outside ``trainer/``. Handlers raise ordinary exceptions; the top-level
``main`` turns the expected ones (bad input, bad arguments) into a one-line message and exit status 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys

from trainer import interactions, synthetic


def _positive_int(text: str) -> int:
  value = int(text)
  if value < 0:
    raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text}")
  return value


def _add_kcore_arguments(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("--min-user", type=_positive_int, default=0,
                      help="iterative k-core: drop users with fewer events (default: no filter)")
  parser.add_argument("--min-item", type=_positive_int, default=0,
                      help="iterative k-core: drop items with fewer events (default: no filter)")


def _add_skip_bad_argument(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("--skip-bad", action="store_true",
                      help="count and report malformed lines instead of stopping at the first one")


def _report_bad_lines(report: interactions.ReadReport) -> None:
  if report.bad_lines:
    print(f"skipped {report.bad_lines} malformed line(s) in {report.path}", file=sys.stderr)
    for example in report.bad_examples:
      print(f"  {example}", file=sys.stderr)


def _convert(args: argparse.Namespace) -> int:
  report = interactions.convert(
      args.input, args.output, fmt=args.format, min_user=args.min_user, min_item=args.min_item,
      skip_bad=args.skip_bad)
  _report_bad_lines(report)
  stats = interactions.log_stats(interactions.read_interactions(args.output))
  print(f"wrote {args.output}: {stats.users:,} users, {stats.items:,} items, "
        f"{stats.interactions:,} interactions (read {report.interactions:,} from {args.input})")
  return 0


def _synth(args: argparse.Namespace) -> int:
  fields = {f.name for f in dataclasses.fields(synthetic.SyntheticConfig)}
  config = synthetic.SyntheticConfig(**{k: v for k, v in vars(args).items() if k in fields and v is not None})
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


def add_data_commands(subparsers: argparse._SubParsersAction) -> None:
  """Registers ``dmirec data convert|synth|stats``."""
  data = subparsers.add_parser("data", help="interaction-log tooling: convert, synth, stats",
                               description="Tools for interaction logs (CSV user_id,item_id,timestamp).")
  commands = data.add_subparsers(dest="data_command", required=True, metavar="COMMAND")

  convert = commands.add_parser(
      "convert", help="convert sequences / ComiRec / Amazon JSON files into an interaction log",
      description="Convert INPUT into an interaction log CSV at OUTPUT (written atomically).")
  convert.add_argument("input", help="input file")
  convert.add_argument("output", help="interaction log CSV to write")
  convert.add_argument(
      "--format", default="auto", choices=("auto",) + interactions.FORMATS,
      help="input format: sequences ('user item item ...', timestamp = position), comirec "
           "('user,item,index[,timestamp]'), amazon-json (reviewerID/asin/unixReviewTime), log "
           "(already a log: re-filter it); auto detects it from the first line (default)")
  _add_kcore_arguments(convert)
  _add_skip_bad_argument(convert)
  convert.set_defaults(handler=_convert)

  synth = commands.add_parser(
      "synth", help="write a deterministic synthetic log with planted multi-interest structure",
      description=synthetic.__doc__.split("\n\n")[0])
  synth.add_argument("--out", required=True, help="interaction log CSV to write")
  defaults = synthetic.SyntheticConfig()
  for field in dataclasses.fields(synthetic.SyntheticConfig):
    default = getattr(defaults, field.name)
    synth.add_argument(f"--{field.name.replace('_', '-')}", dest=field.name, type=type(default),
                       default=None, help=f"default {default}")
  synth.set_defaults(handler=_synth)

  stats = commands.add_parser(
      "stats", help="users, items, interactions and the sequence-length distribution of a log",
      description="Print the size and sequence-length distribution of an interaction log.")
  stats.add_argument("log", help="interaction log CSV (or another format with --format)")
  stats.add_argument("--format", default="log", choices=("auto",) + interactions.FORMATS,
                     help="input format (default: log)")
  stats.add_argument("--json", action="store_true", help="print JSON instead of text")
  _add_kcore_arguments(stats)
  _add_skip_bad_argument(stats)
  stats.set_defaults(handler=_stats)
