"""The record of a benchmark run: where results go, the metadata every result file carries (commit,
command, date, machine, load), atomic JSON files and the progress log.

Conventions of the suite (see also ``bench/__init__.py``):

- every script takes ``--quick`` (a reduced run of a few minutes that proves the script works), ``--out``
  (where its JSON and PNG go, default ``bench/results``) and ``--work-dir`` (large artifacts such as trained
  models and exports, default ``bench/work``, ignored by git): :mod:`bench.arguments`;
- a quick run writes ``<name>_quick.json`` (:func:`result_path`), so that it never overwrites the result of a
  full run;
- every JSON carries :func:`run_metadata` and the hyperparameters it ran with; models are trained only
  through :func:`bench.training.train_run`, i.e. through :func:`trainer.train.train`, the loop of
  ``dmirec train``.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any


REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


RESULTS_DIR = os.path.join(REPO_ROOT, "bench", "results")


WORK_DIR = os.path.join(REPO_ROOT, "bench", "work")


def git_commit(repo: str = REPO_ROOT) -> str:
    """``git rev-parse HEAD``, with ``-dirty`` when the working tree has uncommitted changes."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain"],
            cwd=repo,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{head}-dirty" if dirty else head


def loadavg() -> list[float]:
    """The 1, 5 and 15 minute load averages (the machine is shared: numbers are read against them)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def command_line(module: str, argv: Sequence[str]) -> str:
    """The command that reproduces a run: ``python -m <module> <args>``, quoted for a shell."""
    return " ".join(["python", "-m", module, *(shlex.quote(a) for a in argv)])


def run_metadata(module: str, argv: Sequence[str], quick: bool) -> dict[str, Any]:
    """Commit, command, date and machine of a run, recorded in every result file."""
    import numpy as np
    import tensorflow as tf

    return {
        "commit": git_commit(),
        "command": command_line(module, argv),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "quick": quick,
        "cpu_count": os.cpu_count(),
        "loadavg": loadavg(),
        "machine": platform.platform(),
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "numpy": np.__version__,
    }


def finish_metadata(result: dict[str, Any], started: float) -> dict[str, Any]:
    """Adds the end-of-run load average and the run's duration to a result."""
    result["loadavg_end"] = loadavg()
    result["duration_s"] = round(time.perf_counter() - started, 1)
    return result


def result_stem(name: str, data: str) -> str:
    """A benchmark's result name for a data set: ``name`` for Beauty (the committed results), else
    ``<name>_<data>``, so that a run on other data never replaces them."""
    return name if data == "beauty" else f"{name}_{data}"


def result_path(out_dir: str, stem: str, quick: bool, suffix: str = ".json") -> str:
    """``<out_dir>/<stem>.json``, or ``<stem>_quick.json`` for a quick run (never overwrites a full one)."""
    return os.path.join(out_dir, f"{stem}{'_quick' if quick else ''}{suffix}")


def write_json(path: str, value: Any) -> None:
    """Writes JSON atomically (a temporary file renamed into place)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(value, f, indent=1, sort_keys=False, default=_json_default)
        f.write("\n")
    os.replace(tmp, path)


def read_json(path: str) -> dict[str, Any] | None:
    """The JSON at ``path``, or None when there is no such file."""
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    if isinstance(value, (tuple, set, frozenset)):
        return list(value)
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def log(message: str) -> None:
    """Progress messages go to stderr, results to stdout."""
    print(message, file=sys.stderr, flush=True)
