"""Tests for trainer.train: early stopping keeps the best step's weights, and what a run writes."""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np
import pytest

import trainer  # noqa: F401  (selects Keras 2 before TensorFlow is imported)
from trainer import config, train
from trainer.evaluation import Evaluator
from trainer.sequences import SequenceData, evaluation_set

# Validation Recall@50 of each evaluation, scripted: best at the second one, then two without improvement.
SCRIPT = (0.2, 0.5, 0.4, 0.45, 0.9, 0.9)
PATIENCE = 2
EVAL_EVERY = 10
BEST_STEP = 2 * EVAL_EVERY  # the second evaluation
LAST_STEP = 4 * EVAL_EVERY  # stopped after PATIENCE evaluations without improvement


def _log(users: int = 60, items: int = 24, length: int = 10) -> SequenceData:
    """Users walking through the items in steps of their own size: a small log with a learnable order."""
    sequences = {
        f"user{user}": [f"item{(user + k * (1 + user % 3)) % items}" for k in range(length)]
        for user in range(users)
    }
    return SequenceData.from_sequences(sequences, seed=1)


class _ScriptedValidation:
    """Stands in for `trainer.evaluation.Evaluator`: scripted validation metrics, real test metrics.

    The first instance a run builds evaluates validation users; it returns the next value of `SCRIPT` as
    ``recall@50`` and keeps a copy of the model's weights at each call. Later instances (the test users)
    evaluate for real.
    """

    instances: list[_ScriptedValidation] = []

    def __init__(self, model: Any, evaluation_set: Any, **kwargs: Any) -> None:
        self.model = model
        self.evaluation_set = evaluation_set
        self.real = Evaluator(model, evaluation_set, **kwargs)
        self.weights: list[list[np.ndarray]] = []
        self.validation = not self.instances
        self.instances.append(self)

    def __call__(self) -> dict[str, float]:
        if not self.validation:
            return self.real()
        self.weights.append(self.model.get_weights())
        score = SCRIPT[len(self.weights) - 1]
        return {"recall@20": score / 2, train.VALIDATION_METRIC: score}


def test_early_stopping_restores_the_best_steps_weights_and_writes_the_run(tmp_path, monkeypatch):
    monkeypatch.setattr(_ScriptedValidation, "instances", [])
    monkeypatch.setattr(train, "Evaluator", _ScriptedValidation)
    data = _log()
    model_config = config.variant_config(
        "remi",
        {
            "embedding_dim": 8,
            "num_interests": 2,
            "max_length": 5,
            "batch_size": 16,
            "num_negatives": 8,
            "max_steps": 10 * EVAL_EVERY,
            "eval_every": EVAL_EVERY,
            "steps_per_call": 5,
            "patience": PATIENCE,
            "learning_rate": 0.01,
        },
    )
    out = str(tmp_path / "run")
    result = train.train(model_config, data, out, verbose=0)

    validation = _ScriptedValidation.instances[0]
    assert len(validation.weights) == LAST_STEP // EVAL_EVERY
    assert (result.best_step, result.steps) == (BEST_STEP, LAST_STEP)
    assert result.validation == {"recall@20": SCRIPT[1] / 2, "recall@50": SCRIPT[1]}
    assert [entry["step"] for entry in result.history] == [10, 20, 30, 40]
    assert [entry["val_recall@50"] for entry in result.history] == list(SCRIPT[:4])
    best, last = validation.weights[BEST_STEP // EVAL_EVERY - 1], validation.weights[-1]
    assert any(not np.array_equal(b, w) for b, w in zip(best, last))  # training went on after the best step
    for restored, kept in zip(result.model.get_weights(), best):
        np.testing.assert_array_equal(restored, kept)

    # The directory rebuilds the best model: config, vocabulary and weights.
    loaded_config, vocabulary, loaded = train.load_model(out)
    assert loaded_config == model_config
    assert vocabulary == data.vocabulary
    for restored, kept in zip(loaded.get_weights(), best):
        np.testing.assert_array_equal(restored, kept)
    # Test metrics are those of the best weights, and metrics.json holds what the result says.
    test_set = evaluation_set(data.test, model_config.max_length)
    assert result.test == pytest.approx(Evaluator(loaded, test_set)(), abs=1e-6)
    with open(os.path.join(out, train.METRICS_FILE)) as file:
        written = json.load(file)
    assert written["best_step"] == BEST_STEP and written["steps"] == LAST_STEP
    assert written["validation"] == result.validation
    assert written["test"] == pytest.approx(result.test)
    assert written["model"] == "remi"
    # Only the best step's weights are kept beside the checkpoints.
    checkpoints = os.path.join(out, train.CHECKPOINT_DIR)
    assert [name for name in os.listdir(checkpoints) if name.startswith("best-")] == [f"best-{BEST_STEP}"]


def test_a_run_trains_exactly_max_steps_and_resumes_to_a_raised_one(tmp_path, monkeypatch):
    """max_steps need not be a multiple of eval_every: the last period is shorter (and validated)."""
    monkeypatch.setattr(_ScriptedValidation, "instances", [])
    monkeypatch.setattr(train, "Evaluator", _ScriptedValidation)
    data = _log()
    schedule = {"max_steps": 25, "eval_every": EVAL_EVERY, "steps_per_call": 4, "patience": 100}
    tiny = {"embedding_dim": 8, "num_interests": 2, "max_length": 5, "batch_size": 16, "num_negatives": 8}
    out = str(tmp_path / "run")
    result = train.train(config.variant_config("remi", {**tiny, **schedule}), data, out, verbose=0)
    assert result.steps == 25
    assert [entry["step"] for entry in result.history] == [10, 20, 25]
    assert int(result.model.optimizer.iterations.numpy()) == 25

    # Raised, the run goes on from step 25: to the next multiple of eval_every, then to the new end.
    monkeypatch.setattr(_ScriptedValidation, "instances", [])
    raised = config.variant_config("remi", {**tiny, **schedule, "max_steps": 32})
    resumed = train.train(raised, data, out, verbose=0)
    assert resumed.steps == 32
    assert [entry["step"] for entry in resumed.history] == [10, 20, 25, 30, 32]
    assert int(resumed.model.optimizer.iterations.numpy()) == 32

    # Fewer steps than one period: one period of max_steps.
    monkeypatch.setattr(_ScriptedValidation, "instances", [])
    short = train.train(config.variant_config("remi", {**tiny, **schedule, "max_steps": 7}), data, verbose=0)
    assert short.steps == 7 and [entry["step"] for entry in short.history] == [7]
