"""What every benchmark script shares: run metadata, data sets, the one training function, summaries,
tables, latency statistics, the paper's reference numbers and plotting.

Conventions of the suite:

- every script takes ``--quick`` (a reduced run of a few minutes that proves the script works), ``--out``
  (where its JSON and PNG go, default ``bench/results``) and ``--work-dir`` (large artifacts such as trained
  models and exports, default ``bench/work``, ignored by git);
- a quick run writes ``<name>_quick.json`` so that it never overwrites the result of a full run;
- every JSON carries :func:`run_metadata` (commit, command, date, CPU count, load average) and the
  hyperparameters it ran with; models are trained only through :func:`train_run`, i.e. through
  :func:`trainer.train.train`, the same loop as ``dmirec train``.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import math
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import trainer  # noqa: F401  (Keras 2 before TensorFlow)

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS_DIR = os.path.join(REPO_ROOT, "bench", "results")
WORK_DIR = os.path.join(REPO_ROOT, "bench", "work")
DEFAULT_BEAUTY = os.environ.get(
    "DMIREC_BEAUTY", os.path.join(os.path.dirname(REPO_ROOT), "shared", "data", "beauty", "Beauty.txt")
)
DATASETS = ("beauty", "synthetic", "synthetic-long")

# Test metrics of the protocol, in the column order of the paper's Table 2.
METRICS = ("recall@20", "hit_rate@20", "ndcg@20", "recall@50", "hit_rate@50", "ndcg@50")
METRIC_LABELS = {
    "recall@20": "R@20",
    "hit_rate@20": "HR@20",
    "ndcg@20": "ND@20",
    "recall@50": "R@50",
    "hit_rate@50": "HR@50",
    "ndcg@50": "ND@50",
}
NDCG_NOTE = (
    "ND (NDCG) here is computed in rank order with IDCG over the number of hits (protocol.md); the paper's "
    "ND most likely comes from REMI's code, which enumerates hits in Python set order, so ND columns are "
    "not comparable with the paper's. Compare Recall and HitRate."
)

# Training schedules: "full" aims at a converged model on 2 cores, "quick" only proves the path works.
SCHEDULES: dict[str, dict[str, int]] = {
    "beauty": {"max_steps": 30_000, "eval_every": 1000, "patience": 5},
    "synthetic": {"max_steps": 10_000, "eval_every": 250, "patience": 5},
    # The long-history regime reads the last 40 items (its histories average 40).
    "synthetic-long": {"max_steps": 30_000, "eval_every": 1000, "patience": 3, "max_length": 40},
}
QUICK_SCHEDULES: dict[str, dict[str, int]] = {
    "beauty": {"max_steps": 1000, "eval_every": 500, "patience": 2},
    "synthetic": {"max_steps": 500, "eval_every": 250, "patience": 2},
    "synthetic-long": {"max_steps": 500, "eval_every": 250, "patience": 2, "max_length": 40},
}
# A second regime to check tuned settings on before they become defaults (nothing is tuned on it): longer
# histories than Beauty's (mean 40, L = 40) and a catalogue of 40k items in 400 topics.
SYNTHETIC_LONG = {
    "users": 30_000,
    "items": 40_000,
    "topics": 400,
    "min_length": 10,
    "mean_length": 40.0,
    "max_length": 120,
}

# ----- the paper's and the protocol's reference numbers ------------------------------------------------

# DMI paper, Table 2, Beauty (ND: most likely REMI's set-order NDCG, see NDCG_NOTE).
PAPER_TABLE2_BEAUTY: dict[str, dict[str, float]] = {
    "pop": dict(zip(METRICS, (0.0212, 0.0407, 0.0152, 0.0426, 0.0813, 0.0248))),
    "ydnn": dict(zip(METRICS, (0.0596, 0.1065, 0.0423, 0.0895, 0.1680, 0.0537))),
    "comirec": dict(zip(METRICS, (0.0581, 0.1046, 0.0396, 0.1043, 0.1699, 0.0501))),
    "remi": dict(zip(METRICS, (0.0876, 0.1537, 0.0591, 0.1448, 0.2369, 0.0680))),
    "dmi": dict(zip(METRICS, (0.1018, 0.1821, 0.0662, 0.1631, 0.2641, 0.0751))),
}
PAPER_TABLE2_BEAUTY_DMI_STD = dict(zip(METRICS, (0.0022, 0.0008, 0.0012, 0.0018, 0.0025, 0.0009)))
# REMI's own PyTorch code run on Beauty.txt with this protocol on the project's 2-core machines (protocol.md).
REMI_OWN_CODE_BEAUTY = {
    "recall@20": 0.0843,
    "hit_rate@20": 0.1498,
    "recall@50": 0.1440,
    "hit_rate@50": 0.2360,
}
# DMI paper, Table 3 (ablation), Book: metric@50 (the paper has no Beauty ablation).
PAPER_TABLE3_BOOK: dict[str, dict[str, float]] = {
    "dmi-diff": {"recall@50": 0.1189, "ndcg@50": 0.0657},
    "dmi-GD": {"recall@50": 0.02891, "ndcg@50": 0.0181},
    "dmi-T": {"recall@50": 0.1235, "ndcg@50": 0.0671},
    "dmi-IP": {"recall@50": 0.1352, "ndcg@50": 0.0733},
    "dmi": {"recall@50": 0.1402, "ndcg@50": 0.0751},
}
# DMI paper, Table 5, Beauty: metric@50 for K interests.
PAPER_TABLE5_BEAUTY: dict[int, dict[str, float]] = {
    2: {"recall@50": 0.1551, "ndcg@50": 0.0721},
    4: {"recall@50": 0.1631, "ndcg@50": 0.0751},
    6: {"recall@50": 0.1576, "ndcg@50": 0.0743},
    8: {"recall@50": 0.1665, "ndcg@50": 0.0764},
}
# The peer anchor quoted in the issue (not measured by this suite).
REMI_PYTORCH_EXAMPLES_PER_SECOND = 1300.0

# ----- run metadata ------------------------------------------------------------------------------------


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


# ----- result files ------------------------------------------------------------------------------------


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


# ----- arguments ---------------------------------------------------------------------------------------


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
    """``--model-dir`` / ``--train-steps``: the trained model a serving benchmark measures."""
    parser.add_argument(
        "--model-dir", help="a trained model directory (dmirec train --out) instead of training one"
    )
    parser.add_argument(
        "--train-steps", type=int, help="steps of the model trained here (default 2000; --quick 500)"
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


def schedule(dataset: str, quick: bool) -> dict[str, int]:
    """The default ``max_steps`` / ``eval_every`` / ``patience`` for a data set (and ``max_length`` where
    the data set's histories call for another L)."""
    return dict((QUICK_SCHEDULES if quick else SCHEDULES)[dataset])


def parse_int_list(text: str) -> list[int]:
    """``"1,2,5"`` -> ``[1, 2, 5]``."""
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def parse_name_list(choices: Sequence[str]) -> Any:
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


# ----- data --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Dataset:
    """A data set ready for the protocol.

    Attributes:
      name: ``beauty`` or ``synthetic``.
      data: the vocabulary and the train / eval / test users.
      source: where it came from, for the result file.
      sequences: every user's raw item ids in time order (what a served model is asked with).
    """

    name: str
    data: Any  # trainer.sequences.SequenceData
    source: str
    sequences: Mapping[str, list[str]] = dataclasses.field(default_factory=dict, repr=False)

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "source": self.source,
            "items": self.data.num_items,
            "users": {split: len(seqs) for split, seqs in self.data.splits.items()},
            "train_interactions": int(len(self.data.train.items)),
        }


def beauty_log(source: str, cache_dir: str | None = None) -> str:
    """Converts ``Beauty.txt`` (read in place) to an interaction log CSV outside the repository, once.

    Returns:
      The CSV's path (under the system temporary directory unless ``cache_dir`` is given).
    """
    from trainer import interactions

    if not os.path.exists(source):
        raise FileNotFoundError(f"{source} not found (pass --beauty-path or set DMIREC_BEAUTY)")
    cache_dir = cache_dir or os.path.join(tempfile.gettempdir(), "dmirec-bench")
    target = os.path.join(cache_dir, "beauty.csv")
    if not os.path.exists(target) or os.path.getmtime(target) < os.path.getmtime(source):
        interactions.convert(source, target, fmt="sequences")
    return target


def load_dataset(
    name: str, beauty_path: str = DEFAULT_BEAUTY, split_seed: int = 0, vocabulary: Any = None
) -> Dataset:
    """Loads ``beauty`` (Beauty.txt, converted to a temporary CSV), ``synthetic`` (the default
    :class:`trainer.synthetic.SyntheticConfig`, generated in memory) or ``synthetic-long``
    (:data:`SYNTHETIC_LONG`) and splits its users.

    Args:
      name: the data set.
      beauty_path: Beauty.txt.
      split_seed: seed of the user split.
      vocabulary: encode with this vocabulary (a trained model's) instead of building one.
    """
    from trainer import interactions, synthetic
    from trainer.sequences import SequenceData, user_sequence

    def dataset(events: Any, source: str) -> Dataset:
        by_user = interactions.group_by_user(events)
        sequences = {user: user_sequence(user_events) for user, user_events in by_user.items()}
        data = SequenceData.from_sequences(sequences, seed=split_seed, vocabulary=vocabulary)
        return Dataset(name, data, source, sequences)

    if name == "beauty":
        log = beauty_log(beauty_path)
        return dataset(
            interactions.read_interactions(log), f"{beauty_path} (converted to {log}), split seed {split_seed}"
        )
    if name in ("synthetic", "synthetic-long"):
        config = synthetic.SyntheticConfig(**(SYNTHETIC_LONG if name == "synthetic-long" else {}))
        return dataset(synthetic.generate(config), f"trainer.synthetic.{config}, split seed {split_seed}")
    raise ValueError(f"unknown data set {name!r}; expected one of {', '.join(DATASETS)}")


# ----- training ----------------------------------------------------------------------------------------


def train_run(
    model: str,
    data: Any,
    overrides: Mapping[str, Any],
    seed: int = 0,
    out_dir: str | None = None,
    verbose: int | str | None = None,
    evaluate_test: bool = True,
) -> tuple[Any, dict[str, Any]]:
    """Trains and tests one model with :func:`trainer.train.train` and records the run.

    Args:
      model: a variant of :data:`trainer.config.VARIANTS`.
      data: the :class:`trainer.sequences.SequenceData`.
      overrides: config fields on top of the variant's preset (schedule, ``--set`` values, ...).
      seed: the config's seed (initialisation, batches, diffusion noise).
      out_dir: where :func:`trainer.train.train` writes the model (None: in memory only).
      verbose: Keras progress verbosity; None: a progress bar on a terminal, one line per period otherwise.
      evaluate_test: False never touches test users (``test`` is then empty): for tuning.

    Returns:
      ``(result, record)``: the :class:`trainer.train.TrainingResult` and a JSON-ready record of the run
      (seed, validation and test metrics, best step, steps, examples/s, wall time, load average and a
      compact validation history).
    """
    from trainer import config as config_lib
    from trainer import train as train_lib

    config = config_lib.variant_config(model, {**dict(overrides), "seed": seed})
    load_before = loadavg()
    started = time.perf_counter()
    if verbose is None:
        verbose = 1 if sys.stderr.isatty() else 2
    result = train_lib.train(
        config,
        data,
        out_dir,
        verbose=verbose,
        evaluate_test=evaluate_test,
        backbone_dir=backbone_dir(config, data),
    )
    wall = time.perf_counter() - started
    best = next((e for e in result.history if e["step"] == result.best_step), {})
    record = {
        "seed": seed,
        "commit": git_commit(),
        "test": result.test,
        "validation": result.validation,
        "best_step": result.best_step,
        "steps": result.steps,
        "examples_per_second": result.examples_per_second,
        "wall_time_s": round(wall, 1),
        "loadavg_start": load_before,
        "loadavg_end": loadavg(),
        # The refinement at the best evaluation (trainer.diagnostics): validation Recall@50 of the same
        # weights without refinement, and how far the refinement moves the interests.
        "refinement": {key: best[key] for key in REFINEMENT_KEYS if key in best},
        "history": [
            {
                "step": entry["step"],
                "val_recall@50": entry.get("val_recall@50"),
                "examples_per_second": entry.get("examples_per_second"),
                "loss": entry.get("loss"),
                **{key: entry[key] for key in REFINEMENT_KEYS[:3] if key in entry},
            }
            for entry in result.history
        ],
    }
    if result.backbone is not None:
        record["backbone"] = {
            "validation": result.backbone.validation,
            "best_step": result.backbone.best_step,
            "steps": result.backbone.steps,
        }
    return result, record


REFINEMENT_KEYS = (
    "val_coarse_recall@50",
    "refinement_size",
    "refinement_cosine",
    "refinement_size_by_step",
    "refinement_cosine_by_step",
    "interest_norm",
    "item_norm",
)


def backbone_dir(config: Any, data: Any) -> str | None:
    """Where a two-stage run's first stage (:func:`trainer.train.backbone_config`) is kept, so that every
    refiner trained on the same backbone and data reuses it; None for other runs.

    The directory is ``$DMIREC_BACKBONE_CACHE`` (default ``bench/work/backbones``) / a digest of the
    backbone's config (without the diffusion fields, all at their defaults in a backbone, so that adding a
    refiner option does not orphan earlier backbones), of the training and validation data and of the
    trainer's source files (a changed model or training loop never loads a stale backbone).
    """
    import hashlib

    import numpy as np

    from trainer import train as train_lib
    from trainer.config import DIFFUSION_FIELDS

    if not config.diffusion or config.refiner_schedule != "two_stage":
        return None
    fields = dataclasses.asdict(train_lib.backbone_config(config))
    shared = {key: value for key, value in fields.items() if key not in DIFFUSION_FIELDS}
    digest = hashlib.sha256(json.dumps(shared, sort_keys=True).encode())
    for split in (data.train, data.eval):
        digest.update(np.ascontiguousarray(split.items).tobytes())
    digest.update(_trainer_source_digest())
    cache = os.environ.get("DMIREC_BACKBONE_CACHE") or os.path.join(WORK_DIR, "backbones")
    return os.path.join(cache, digest.hexdigest()[:16])


def _trainer_source_digest() -> bytes:
    """A digest of ``trainer/``'s non-test Python sources."""
    import hashlib

    import trainer as trainer_package

    digest = hashlib.sha256()
    root = os.path.dirname(os.path.abspath(trainer_package.__file__))
    for folder, _, files in sorted(os.walk(root)):
        for name in sorted(files):
            if name.endswith(".py") and not name.endswith("_test.py"):
                with open(os.path.join(folder, name), "rb") as f:
                    digest.update(name.encode() + f.read())
    return digest.digest()


def _worker_init(threads: Mapping[str, int], data: Any) -> None:
    """Initialises a :func:`parallel_runs` worker: thread counts first, then the shared data."""
    import tensorflow as tf

    from trainer import runtime

    tf.get_logger().setLevel("ERROR")
    runtime.configure_threads(threads.get("intra_op", 1), threads.get("inter_op", 1))
    global _WORKER_DATA
    _WORKER_DATA = data


_WORKER_DATA: Any = None  # the data of a parallel_runs worker process, set once by _worker_init


def _worker_run(
    task: tuple[Any, int, str, Mapping[str, Any]], verbose: int
) -> tuple[Any, int, dict[str, Any]]:
    key, seed, model, overrides = task
    log(f"== {model} {dict(overrides)} seed {seed} (worker {os.getpid()})")
    _, record = train_run(model, _WORKER_DATA, overrides, seed=seed, verbose=verbose)
    return key, seed, record


def parallel_runs(
    tasks: Sequence[tuple[Any, int, str, Mapping[str, Any]]],
    data: Any,
    jobs: int,
    threads: Mapping[str, int],
) -> Iterable[tuple[Any, int, dict[str, Any]]]:
    """Trains ``(key, seed, model, overrides)`` tasks in ``jobs`` worker processes.

    Each worker (a fresh ``spawn`` process: TensorFlow does not survive ``fork``) receives ``data`` once,
    sets the TensorFlow thread counts ``threads`` (``{"intra_op": n, "inter_op": m}``) and trains tasks
    with :func:`train_run` (one summary line per evaluation, no progress bars interleaving on stderr).

    Yields:
      ``(key, seed, record)`` in the order the runs finish.
    """
    import concurrent.futures
    import functools
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(
        max_workers=jobs, mp_context=context, initializer=_worker_init, initargs=(dict(threads), data)
    ) as pool:
        futures = [pool.submit(functools.partial(_worker_run, verbose=2), task) for task in tasks]
        for future in concurrent.futures.as_completed(futures):
            yield future.result()


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


def config_dict(model: str, overrides: Mapping[str, Any]) -> dict[str, Any]:
    """The full config a variant trains with (seed left out: it varies per run)."""
    from trainer import config as config_lib

    values = dataclasses.asdict(config_lib.variant_config(model, overrides))
    values.pop("seed")
    return json.loads(json.dumps(values))  # as a result file holds it (tuples as lists), for comparisons


# Fields added to trainer.config.ModelConfig after results were recorded, with the value those runs used.
ADDED_FIELDS: dict[str, Any] = {
    "denoiser_dropout": 0.0,
    "denoiser_input_dropout": 0.0,
    "denoiser_query_residual": True,
    "denoiser_recency": False,
    "denoiser_input_gradient": False,
    "diffusion_loss": "norm",
    "diffusion_noise": "absolute",
    "diffusion_training": "one_step",
    "refiner_schedule": "joint",
    "backbone_learning_rate": 0.0,
    "refiner_learning_rate": 0.0,
    "coarse_loss_weight": 0.0,
    # Every recorded catalogue was below trainer.optimizers.LAZY_MIN_ITEMS: `auto` trained them densely.
    "item_table_update": "auto",
}


def same_config(recorded: Mapping[str, Any], config: Mapping[str, Any]) -> bool:
    """Whether a recorded run's config trains the same model as ``config`` (so it need not be rerun).

    Fields added to :class:`trainer.config.ModelConfig` later count with the value the recorded runs
    used (:data:`ADDED_FIELDS`), and without diffusion the diffusion fields are irrelevant.
    """
    from trainer.config import DIFFUSION_FIELDS

    recorded = {**ADDED_FIELDS, **recorded}
    if not config.get("diffusion", True):
        recorded = {k: v for k, v in recorded.items() if k not in DIFFUSION_FIELDS}
        config = {k: v for k, v in config.items() if k not in DIFFUSION_FIELDS}
    return dict(recorded) == dict(config)


# ----- summaries and tables ----------------------------------------------------------------------------


def summarize(values: Sequence[float]) -> dict[str, Any]:
    """Mean, sample standard deviation (None for a single run) and the values."""
    values = [float(v) for v in values]
    return {
        "mean": statistics.fmean(values) if values else None,
        "std": statistics.stdev(values) if len(values) > 1 else None,
        "runs": values,
    }


def summarize_metrics(records: Sequence[Mapping[str, Any]], metrics: Sequence[str] = METRICS) -> dict:
    """``{metric: summarize(test metric over the runs)}``."""
    return {metric: summarize([r["test"][metric] for r in records]) for metric in metrics}


def format_stat(stat: Mapping[str, Any] | None, digits: int = 4) -> str:
    """``0.1234 ± 0.0012`` (or ``0.1234`` for one run, ``-`` for nothing)."""
    if not stat or stat.get("mean") is None:
        return "-"
    text = f"{stat['mean']:.{digits}f}"
    if stat.get("std") is not None:
        text += f" ± {stat['std']:.{digits}f}"
    return text


def format_number(value: float | None, digits: int = 4) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def format_percent(value: float | None) -> str:
    return "-" if value is None else f"{value:+.1%}"


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A GitHub-flavoured markdown table."""
    lines = ["| " + " | ".join(map(str, header)) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(map(str, row)) + " |" for row in rows]
    return "\n".join(lines)


def text_table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A plain aligned table for the terminal."""
    rows = [list(map(str, row)) for row in rows]
    widths = [max([len(str(h)), *(len(r[i]) for r in rows)]) for i, h in enumerate(header)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    lines = [fmt.format(*header), fmt.format(*("-" * w for w in widths))]
    lines += [fmt.format(*row) for row in rows]
    return "\n".join(lines)


def latency_summary(seconds: Sequence[float]) -> dict[str, Any]:
    """Count, mean and percentiles (p50 / p95 / p99 / max) of latencies, in milliseconds."""
    import numpy as np

    if not len(seconds):
        return {"count": 0}
    ms = np.asarray(seconds, dtype=np.float64) * 1e3
    return {
        "count": int(ms.size),
        "mean_ms": round(float(ms.mean()), 3),
        "p50_ms": round(float(np.percentile(ms, 50)), 3),
        "p95_ms": round(float(np.percentile(ms, 95)), 3),
        "p99_ms": round(float(np.percentile(ms, 99)), 3),
        "max_ms": round(float(ms.max()), 3),
    }


def time_calls(
    function: Any, inputs: Sequence[Any], count: int, warmup: int = 10, desc: str | None = None
) -> list[float]:
    """Calls ``function(x)`` ``count`` times, cycling through ``inputs``; returns each call's seconds.

    The first ``warmup`` calls (tracing, caches) are not timed. A result with a ``numpy`` method is
    converted, so that the time covers the computation and not only its dispatch.
    """
    from tqdm import tqdm

    def call(x: Any) -> None:
        out = function(x)
        for value in out.values() if isinstance(out, dict) else (out,):
            if hasattr(value, "numpy"):
                value.numpy()

    for i in range(warmup):
        call(inputs[i % len(inputs)])
    seconds = []
    for i in tqdm(range(count), desc=desc, unit="call", file=sys.stderr, disable=desc is None, leave=False):
        start = time.perf_counter()
        call(inputs[i % len(inputs)])
        seconds.append(time.perf_counter() - start)
    return seconds


# ----- plots -------------------------------------------------------------------------------------------


def pyplot() -> Any:
    """matplotlib.pyplot on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(figure: Any, path: str) -> str:
    """Saves a figure as a small PNG and closes it; returns the path."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    figure.savefig(path, dpi=100, bbox_inches="tight")
    pyplot().close(figure)
    return path


def log(message: str) -> None:
    """Progress messages go to stderr, results to stdout."""
    print(message, file=sys.stderr, flush=True)
