"""The training loop: one function, used by ``dmirec train`` and by the TFX Trainer's ``run_fn``.

``train(config, data, out_dir)`` trains one variant under the protocol (protocol.md): batches drawn in
the graph (:mod:`trainer.batches`), ``steps_per_call`` optimizer steps per compiled call, validation
Recall@50 every ``eval_every`` steps with early stopping after ``patience`` evaluations without
improvement, the best weights restored and evaluated on test users. With an ``out_dir`` it writes

- ``config.json``, ``vocabulary.tsv``: what the model needs to be rebuilt (:func:`load_model`);
- ``model/``: the best weights; ``metrics.json``: validation, test, speed and the evaluation history;
- ``logs/``: TensorBoard scalars (loss terms, validation metrics, examples/s and, for DMI, the
  refinement diagnostics of :mod:`trainer.diagnostics` with validation Recall@50 without refinement);
- ``checkpoints/``: the latest state (weights, optimizer, early-stopping state), so that an
  interrupted run started again with the same arguments resumes where it stopped.
"""

from __future__ import annotations

import dataclasses
import logging
import statistics
import sys
import time
from typing import Any

import numpy as np
import tensorflow as tf
import tf_keras as keras

from trainer import batches, optimizers
from trainer import filesystem as fs
from trainer.config import ModelConfig, without_diffusion
from trainer.diagnostics import refinement_diagnostics
from trainer.evaluation import Evaluator
from trainer.model import DMIModel, PopularityModel
from trainer.sequences import SequenceData, Vocabulary, evaluation_set

logger = logging.getLogger(__name__)

VALIDATION_METRIC = "recall@50"
CONFIG_FILE = "config.json"
VOCABULARY_FILE = "vocabulary.tsv"
TRAIN_COUNTS_FILE = "train_item_counts.json"  # pop's scores: counts over training users only
METRICS_FILE = "metrics.json"
MODEL_DIR = "model"
CHECKPOINT_DIR = "checkpoints"
STATE_FILE = "state.json"  # under CHECKPOINT_DIR: the early-stopping state and history of the run
LOG_DIR = "logs"


@dataclasses.dataclass
class TrainingResult:
    """What a training run produced.

    Attributes:
      config: the configuration trained.
      model: the trained model with its best weights.
      validation: validation metrics of the best evaluation.
      test: test metrics of the restored best model.
      best_step: the step of the best evaluation.
      steps: steps trained.
      examples_per_second: steady training throughput (median over evaluation periods after the first,
        evaluation time excluded); None for ``pop`` or a run of a single period.
      history: one entry per evaluation: step, validation metrics, loss terms, examples/s and, for DMI,
        ``val_coarse_recall@50`` (the same weights without refinement) and the refinement diagnostics.
      backbone: with ``refiner_schedule="two_stage"``, the first stage's run (the frozen ``remi``).
    """

    config: ModelConfig
    model: DMIModel | PopularityModel
    validation: dict[str, float]
    test: dict[str, float]
    best_step: int
    steps: int
    examples_per_second: float | None
    history: list[dict[str, Any]]
    backbone: TrainingResult | None = None

    def metrics(self) -> dict[str, Any]:
        backbone = self.backbone
        return {
            **(
                {
                    "backbone": {
                        "validation": backbone.validation,
                        "best_step": backbone.best_step,
                        "steps": backbone.steps,
                        "history": backbone.history,
                    }
                }
                if backbone is not None
                else {}
            ),
            "model": self.config.model,
            "validation": self.validation,
            "test": self.test,
            "best_step": self.best_step,
            "steps": self.steps,
            "examples_per_second": self.examples_per_second,
            "history": self.history,
            "ndcg": "rank order, IDCG over the number of hits (protocol.md)",
        }


class _ValidationAndCheckpoint(keras.callbacks.Callback):
    """Evaluates every period, keeps the best weights, stops early and checkpoints the state."""

    def __init__(
        self,
        evaluator: Evaluator,
        config: ModelConfig,
        manager: tf.train.CheckpointManager | None,
        state: dict[str, Any],
        coarse_evaluator: Evaluator | None = None,
    ):
        super().__init__()
        self.evaluator = evaluator
        self.coarse_evaluator = coarse_evaluator
        self.config = config
        self.manager = manager
        self.state = state
        self.best_weights: list[np.ndarray] | None = None
        self._period_start = 0.0

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._period_start = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        logs = logs if logs is not None else {}
        seconds = time.perf_counter() - self._period_start
        period = self.params["steps"]  # this fit's steps per epoch: eval_every, or a shorter last period
        examples_per_second = period * self.config.batch_size / seconds
        metrics = self.evaluator()
        step = self.state["steps"] + period
        diagnostics: dict[str, Any] = {}
        if self.coarse_evaluator is not None:
            diagnostics = refinement_diagnostics(self.model, self.evaluator.evaluation_set.histories)
            diagnostics["val_coarse_recall@50"] = self.coarse_evaluator()[VALIDATION_METRIC]
        entry = {
            "step": step,
            "examples_per_second": examples_per_second,
            **{f"val_{k}": v for k, v in metrics.items()},
            **{k: float(v) for k, v in logs.items()},
            **diagnostics,
        }
        self.state["history"].append(entry)
        for key, value in metrics.items():
            logs[f"val_{key}"] = value
        logs.update({k: v for k, v in diagnostics.items() if not isinstance(v, list)})
        logs["examples_per_second"] = examples_per_second
        score = metrics[VALIDATION_METRIC]
        improved = score > self.state["best"]
        if improved:
            self.state.update(best=score, best_step=step, best_metrics=metrics, wait=0)
            self.best_weights = self.model.get_weights()
        else:
            self.state["wait"] += 1
        self.state["epoch"] = epoch + 1
        self.state["steps"] = step
        logger.info(
            "step %d: validation %s %.4f (best %.4f at step %d), %.0f examples/s",
            step,
            VALIDATION_METRIC,
            score,
            self.state["best"],
            self.state["best_step"],
            examples_per_second,
        )
        refinement = (
            f"; unrefined {diagnostics['val_coarse_recall@50']:.4f}, refinement size "
            f"{diagnostics['refinement_size']:.3f}"
            if diagnostics
            else ""
        )
        print(
            f"step {step}: val {VALIDATION_METRIC} {score:.4f} (best {self.state['best']:.4f} at step "
            f"{self.state['best_step']}){refinement}, {examples_per_second:,.0f} examples/s",
            file=sys.stderr,
            flush=True,
        )
        if self.state["wait"] >= self.config.patience:
            self.model.stop_training = True
        if self.manager is not None:
            # Crash-safe order: this step's files first, then the state that points at them, then the
            # files the state no longer needs. A run killed anywhere resumes from a consistent state.
            if improved:
                best = f"best-{step}"
                self.model.save_weights(fs.join(self.manager.directory, best, "weights"))
                self.state["best_weights"] = best
            self.manager.save(checkpoint_number=step)
            fs.write_json(fs.join(self.manager.directory, STATE_FILE), self.state)
            for name in fs.listdir(self.manager.directory):
                if name.startswith("best-") and name != self.state.get("best_weights"):
                    fs.rmtree(fs.join(self.manager.directory, name), ignore_errors=True)


def _item_counts(data: SequenceData) -> np.ndarray:
    return np.bincount(data.train.items, minlength=data.num_items + 1)[1:]


def build_model(
    config: ModelConfig, vocabulary: Vocabulary, item_counts: np.ndarray | None = None
) -> DMIModel | PopularityModel:
    """An untrained model of the config's variant for a vocabulary (``pop`` needs the item counts)."""
    if config.user_tower == "popularity":
        counts = np.asarray(vocabulary.counts if item_counts is None else item_counts)
        return PopularityModel(counts)
    model = DMIModel(config, len(vocabulary))
    model.build_for_inputs()
    return model


def _periods(steps: int, config: ModelConfig) -> tuple[int, int]:
    """``(period, count)``: the next validation periods after ``steps`` trained steps, as one Keras fit.

    Validation runs every ``eval_every`` steps and after step ``max_steps``, so a run trains exactly
    ``max_steps`` steps (e.g. 2,500 with ``eval_every=1000``: periods of 1,000, 1,000 and 500). The full
    periods run as one fit of ``count`` epochs; a shorter one (the last, or the rest of a period when a run
    resumes off the grid after its ``max_steps`` was raised) as a fit of its own.
    """
    boundary = min((steps // config.eval_every + 1) * config.eval_every, config.max_steps)
    period = boundary - steps
    if period < config.eval_every:
        return period, 1
    return period, (config.max_steps - steps) // config.eval_every


def _resume_state(out_dir: str | None, config: ModelConfig) -> dict[str, Any]:
    """The early-stopping state to start from: a fresh one, or the one an interrupted run left in ``out_dir``.

    Raises:
      ValueError: ``out_dir`` holds a run of another model config (only the schedule may change).
    """
    state: dict[str, Any] = {
        "epoch": 0,
        "steps": 0,
        "best": -1.0,
        "best_step": 0,
        "best_metrics": {},
        "wait": 0,
        "history": [],
    }
    if out_dir is None:
        return state
    config_path = fs.join(out_dir, CONFIG_FILE)
    if fs.exists(config_path):
        previous = ModelConfig.from_json(fs.read_text(config_path))
        # The schedule's length may change between runs (train longer, be more patient); the model may not.
        if dataclasses.replace(previous, max_steps=config.max_steps, patience=config.patience) != config:
            raise ValueError(
                f"{out_dir} holds a run with a different config; use another output directory or remove it"
            )
    state_path = fs.join(out_dir, CHECKPOINT_DIR, STATE_FILE)
    if fs.exists(state_path):
        state = fs.read_json(state_path)
        state.setdefault("steps", state["epoch"] * config.eval_every)  # written before "steps" was kept
    return state


def train(
    config: ModelConfig,
    data: SequenceData,
    out_dir: str | None = None,
    verbose: int | str = "auto",
    ndcg: str = "rank",
    evaluate_test: bool = True,
    backbone_dir: str | None = None,
) -> TrainingResult:
    """Trains one model under the protocol and evaluates its best weights on test users.

    With ``refiner_schedule="two_stage"`` the run has two stages, each with its own validation and early
    stopping: first the config's ``remi`` model (:func:`backbone_config`), then the DMI model initialised
    from it with the item table and the extractor frozen, so that only the refiner trains (or, with
    ``backbone_learning_rate > 0``, training on at that rate with an Adam of their own); the refiner trains
    at ``refiner_learning_rate`` when it is set.

    Args:
      config: the model and schedule (:func:`trainer.config.variant_config`).
      data: the vocabulary and the train / eval / test users (:class:`trainer.sequences.SequenceData`).
      out_dir: where to write the model, metrics, logs and checkpoints, a local directory or a TensorFlow
        file system URI (``gs://...``, through :mod:`trainer.filesystem`); None keeps everything in memory.
      verbose: Keras progress-bar verbosity (``auto``: a bar on a terminal, a line per period otherwise).
      ndcg: NDCG variant of the reported metrics (``rank``, ``standard`` or ``remi``).
      evaluate_test: evaluate the best weights on test users; False leaves ``test`` empty, for
        hyperparameter searches that must see validation users only.
      backbone_dir: where a two-stage run's first stage is written (default ``out_dir/backbone``; None with
        no ``out_dir``: in memory). Runs whose :func:`backbone_config` is the same can share one: a
        finished first stage is loaded, not trained again.

    Returns:
      The :class:`TrainingResult`.
    """
    keras.utils.set_random_seed(config.seed)
    validation_set = evaluation_set(data.eval, config.max_length)
    test_set = evaluation_set(data.test, config.max_length) if evaluate_test else None
    if out_dir is not None:
        fs.makedirs(out_dir)
    state = _resume_state(out_dir, config)
    if out_dir is not None:
        fs.write_text(fs.join(out_dir, CONFIG_FILE), config.to_json())
        data.vocabulary.save(fs.join(out_dir, VOCABULARY_FILE))
        fs.write_json(fs.join(out_dir, TRAIN_COUNTS_FILE), _item_counts(data).tolist())

    backbone = None
    if config.diffusion and config.refiner_schedule == "two_stage":
        if backbone_dir is None and out_dir is not None:
            backbone_dir = fs.join(out_dir, "backbone")
        backbone = train(backbone_config(config), data, backbone_dir, verbose, ndcg, evaluate_test=False)
        keras.utils.set_random_seed(config.seed)

    model = build_model(config, data.vocabulary, _item_counts(data))
    if backbone is not None:
        for name in ("item_embeddings", "extractor"):
            layer = getattr(model, name)
            layer.set_weights(getattr(backbone.model, name).get_weights())
            layer.trainable = config.backbone_learning_rate > 0
        if config.backbone_learning_rate > 0:
            model.backbone_optimizer = optimizers.LazyAdam(config.backbone_learning_rate)
    if isinstance(model, PopularityModel):
        validation = Evaluator(model, validation_set, ndcg=ndcg, batch_size=config.eval_batch_size)()
        test = Evaluator(model, test_set, ndcg=ndcg)() if test_set is not None else {}
        result = TrainingResult(config, model, validation, test, 0, 0, None, [])
        _save(result, data.vocabulary, out_dir)
        return result

    rate = config.learning_rate
    if backbone is not None and config.refiner_learning_rate:
        rate = config.refiner_learning_rate
    model.compile(
        optimizer=optimizers.LazyAdam(rate),
        steps_per_execution=config.steps_per_call,
    )
    manager = resumed = None
    if out_dir is not None:
        checkpoint = tf.train.Checkpoint(
            model=model,
            optimizer=model.optimizer,
            **({"backbone_optimizer": model.backbone_optimizer} if model.backbone_optimizer else {}),
        )
        # Two kept: a run killed after writing a checkpoint but before its state resumes from the one before.
        manager = tf.train.CheckpointManager(checkpoint, fs.join(out_dir, CHECKPOINT_DIR), max_to_keep=2)
        if manager.latest_checkpoint and state["steps"]:
            resumed = fs.join(manager.directory, f"ckpt-{state['steps']}")
            checkpoint.restore(resumed)
            print(f"resuming from step {state['steps']} ({resumed})", file=sys.stderr)
    evaluator = Evaluator(model, validation_set, ndcg=ndcg, batch_size=config.eval_batch_size)
    coarse_evaluator = None
    if config.diffusion:
        coarse_evaluator = Evaluator(
            model, validation_set, ndcg=ndcg, batch_size=config.eval_batch_size, refine=False
        )
    validation = _ValidationAndCheckpoint(evaluator, config, manager, state, coarse_evaluator)
    if manager is not None and state["best_step"]:
        best = state.get("best_weights", "best")
        model.load_weights(fs.join(manager.directory, best, "weights")).expect_partial()
        validation.best_weights = model.get_weights()
        if resumed is not None:
            checkpoint.restore(resumed)
    callbacks: list[keras.callbacks.Callback] = [validation]
    if out_dir is not None:
        callbacks.append(
            keras.callbacks.TensorBoard(fs.join(out_dir, LOG_DIR), write_graph=False, profile_batch=0)
        )

    sampler = batches.BatchSampler(
        data.train, config.batch_size, config.max_length, config.min_cut, config.seed
    )
    while state["wait"] < config.patience and state["steps"] < config.max_steps:
        steps, period, periods = state["steps"], *_periods(state["steps"], config)
        model.fit(
            sampler.dataset(start_step=steps),
            epochs=state["epoch"] + periods,
            initial_epoch=state["epoch"],
            steps_per_epoch=period,
            callbacks=callbacks,
            verbose=verbose,
        )
        if state["steps"] == steps:  # nothing trained (cannot happen with a finite max_steps): no loop
            break
    if validation.best_weights is not None:
        model.set_weights(validation.best_weights)
    speeds = [entry["examples_per_second"] for entry in state["history"][1:]]
    result = TrainingResult(
        config=config,
        model=model,
        validation=state["best_metrics"],
        test=(
            Evaluator(model, test_set, ndcg=ndcg, batch_size=config.eval_batch_size)()
            if test_set is not None
            else {}
        ),
        best_step=state["best_step"],
        steps=state["steps"],
        examples_per_second=statistics.median(speeds) if speeds else None,
        history=state["history"],
        backbone=backbone,
    )
    _save(result, data.vocabulary, out_dir)
    return result


def backbone_config(config: ModelConfig) -> ModelConfig:
    """The first stage of a two-stage run: the config's ``remi`` model (no refiner, same extractor)."""
    return without_diffusion(config, "remi")


def _save(result: TrainingResult, vocabulary: Vocabulary, out_dir: str | None) -> None:
    if out_dir is None:
        return
    if isinstance(result.model, DMIModel):
        result.model.save_weights(fs.join(out_dir, MODEL_DIR, "weights"))
    fs.write_json(fs.join(out_dir, METRICS_FILE), result.metrics())


def load_model(out_dir: str) -> tuple[ModelConfig, Vocabulary, DMIModel | PopularityModel]:
    """Rebuilds a model written by :func:`train` from its directory.

    ``pop`` ranks by the training users' item counts, as in training (the vocabulary's counts include the
    evaluation and test users: ranking by them would leak).

    Args:
      out_dir: the directory :func:`train` wrote, local or a TensorFlow file system URI.

    Returns:
      ``(config, vocabulary, model)`` with the best weights loaded.
    """
    config = ModelConfig.from_json(fs.read_text(fs.join(out_dir, CONFIG_FILE)))
    vocabulary = Vocabulary.load(fs.join(out_dir, VOCABULARY_FILE))
    counts = None
    counts_path = fs.join(out_dir, TRAIN_COUNTS_FILE)
    if fs.exists(counts_path):  # runs written before it existed rank pop by the vocabulary's counts
        counts = np.asarray(fs.read_json(counts_path), dtype=np.int64)
        if len(counts) != len(vocabulary):
            raise ValueError(f"{counts_path} has {len(counts)} counts for {len(vocabulary)} items")
    model = build_model(config, vocabulary, counts)
    if isinstance(model, DMIModel):
        model.load_weights(fs.join(out_dir, MODEL_DIR, "weights")).expect_partial()
    return config, vocabulary, model
