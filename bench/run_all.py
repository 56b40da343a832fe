"""Run the whole benchmark suite, then regenerate ``docs/results.md`` (``dmirec bench``, ``make bench``).

Each benchmark runs as its own process (``python -m bench.<script>``), one after the other, so that their
measurements do not share the CPUs or a TensorFlow runtime. A failing benchmark is reported and the others
still run; the exit status is 1 if any failed. The report is then rendered from every JSON present in the
result directory (see :mod:`bench.report`).

    dmirec bench --quick                          # every reduced run: about 20 min on a shared 2-core machine
    dmirec bench                                  # full runs: many hours (3-seed Beauty reproduction ...)
    dmirec bench --only serving,speed             # a subset
    dmirec bench --report-only                    # only rewrite docs/results.md

Benchmarks (in run order): tune (the hyperparameter search on validation users), reproduce (Table 2 on
Beauty), synthetic (all models on the synthetic log), ablation (Table 3), ddim (DDIM steps and K), speed
(training throughput), serving (gRPC latency), capacity (requests/s at a p99 bound under 32 clients),
reliability (hostile input, load, hot swaps, faults).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any

from bench import arguments, run_record

MODULE = "bench.run_all"
# name -> (module, extra arguments), in run order (speed after reproduce: it reads its wall times).
BENCHMARKS: dict[str, tuple[str, tuple[str, ...]]] = {
    "tune": ("bench.tune", ()),
    "reproduce": ("bench.reproduce", ()),
    "synthetic": ("bench.reproduce", ("--data", "synthetic")),
    "ablation": ("bench.ablation", ()),
    "ddim": ("bench.ddim_steps", ()),
    "speed": ("bench.train_speed", ()),
    "serving": ("bench.serving_latency", ()),
    "capacity": ("bench.serving_capacity", ()),
    "reliability": ("bench.reliability", ()),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``dmirec bench`` / ``python -m bench.run_all``."""
    parser.add_argument(
        "--quick", action="store_true", help="every script's reduced run (minutes, not converged)"
    )
    parser.add_argument(
        "--only",
        type=arguments.parse_name_list(tuple(BENCHMARKS)),
        help=f"comma-separated benchmarks to run (default all: {','.join(BENCHMARKS)})",
    )
    parser.add_argument(
        "--skip",
        type=arguments.parse_name_list(tuple(BENCHMARKS)),
        default=[],
        help="comma-separated benchmarks to leave out",
    )
    parser.add_argument(
        "--out", default=run_record.RESULTS_DIR, help=f"result directory (default {run_record.RESULTS_DIR})"
    )
    parser.add_argument(
        "--work-dir", default=run_record.WORK_DIR, help=f"large artifacts (default {run_record.WORK_DIR})"
    )
    parser.add_argument("--docs", default=None, help="markdown report to write (default docs/results.md)")
    parser.add_argument("--report-only", action="store_true", help="run nothing; only rewrite the report")


def run(args: argparse.Namespace) -> int:
    """Runs the selected benchmarks and rewrites the report; returns the exit status."""
    from bench import report

    names = [n for n in (args.only or BENCHMARKS) if n not in args.skip]
    names = [n for n in BENCHMARKS if n in names]  # run order
    failures = []
    steps: list[dict[str, Any]] = []
    if not args.report_only:
        for name in names:
            module, extra = BENCHMARKS[name]
            argv = [*extra, *(["--quick"] if args.quick else [])]
            if os.path.abspath(args.out) != run_record.RESULTS_DIR:
                argv += ["--out", args.out]
            if os.path.abspath(args.work_dir) != run_record.WORK_DIR:
                argv += ["--work-dir", args.work_dir]
            command = [sys.executable, "-m", module, *argv]
            run_record.log(f"\n===== {name}: {run_record.command_line(module, argv)}")
            started = time.perf_counter()
            returncode = subprocess.call(command, cwd=run_record.REPO_ROOT)
            seconds = time.perf_counter() - started
            steps.append(
                {"benchmark": name, "command": run_record.command_line(module, argv), "returncode": returncode,
                 "seconds": round(seconds, 1), "loadavg_end": run_record.loadavg()}
            )  # fmt: skip
            status = "ok" if returncode == 0 else f"FAILED ({returncode})"
            run_record.log(f"===== {name}: {status} in {seconds / 60:.1f} min")
            if returncode != 0:
                failures.append(name)
        # An operational log (what ran, how long), kept with the large artifacts rather than the results.
        run_record.write_json(
            run_record.result_path(args.work_dir, "run_all", args.quick),
            {
                "commit": run_record.git_commit(),
                "quick": args.quick,
                "cpu_count": os.cpu_count(),
                "steps": steps,
            },
        )
    path = report.write(args.out, args.docs or report.DOCS_PATH)
    print(f"wrote {path}")
    for step in steps:
        status = "ok" if step["returncode"] == 0 else "FAILED"
        print(f"  {step['benchmark']:<10} {status:<7} {step['seconds'] / 60:5.1f} min")
    if failures:
        print(f"failed: {', '.join(failures)}", file=sys.stderr)
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog=f"python -m {MODULE}", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
