"""How a benchmark trains: :func:`train_run` (through :func:`trainer.train.train`, the loop of ``dmirec
train``), several runs in parallel processes (:func:`parallel_runs`), the reuse of a two-stage run's
backbone, and the comparison of a recorded config with a current one."""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from collections.abc import Hashable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from bench.run_record import WORK_DIR, git_commit, loadavg, log

if TYPE_CHECKING:
    from trainer.config import ModelConfig
    from trainer.sequences import SequenceData
    from trainer.train import TrainingResult

Task = tuple[Hashable, int, str, Mapping[str, Any]]
"""A run of :func:`parallel_runs`: ``(key, seed, model, overrides)``; the key names it in the results."""


def train_run(
    model: str,
    data: SequenceData,
    overrides: Mapping[str, Any],
    seed: int = 0,
    out_dir: str | None = None,
    verbose: int | str | None = None,
    evaluate_test: bool = True,
) -> tuple[TrainingResult, dict[str, Any]]:
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


def backbone_dir(config: ModelConfig, data: SequenceData) -> str | None:
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


def _worker_init(threads: Mapping[str, int], data: SequenceData) -> None:
    """Initialises a :func:`parallel_runs` worker: thread counts first, then the shared data."""
    import tensorflow as tf

    from trainer import runtime

    tf.get_logger().setLevel("ERROR")
    runtime.configure_threads(threads.get("intra_op", 1), threads.get("inter_op", 1))
    global _WORKER_DATA
    _WORKER_DATA = data


_WORKER_DATA: SequenceData | None = (
    None  # the data of a parallel_runs worker process, set once by _worker_init
)


def _worker_run(task: Task, verbose: int) -> tuple[Hashable, int, dict[str, Any]]:
    key, seed, model, overrides = task
    log(f"== {model} {dict(overrides)} seed {seed} (worker {os.getpid()})")
    _, record = train_run(model, _WORKER_DATA, overrides, seed=seed, verbose=verbose)
    return key, seed, record


def parallel_runs(
    tasks: Sequence[Task],
    data: SequenceData,
    jobs: int,
    threads: Mapping[str, int],
) -> Iterable[tuple[Hashable, int, dict[str, Any]]]:
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
