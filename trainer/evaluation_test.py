"""Tests of evaluating an exported servable on users given by raw ids (what the pipeline's evaluator does)."""

from __future__ import annotations

import numpy as np
import pytest

from trainer import config as config_lib
from trainer import export, train
from trainer.evaluation import Evaluator, evaluate_saved_model
from trainer.sequences import EncodedSequences, Vocabulary, evaluation_set

CONFIG = {"embedding_dim": 8, "max_length": 5, "diffusion_steps": 2, "num_negatives": 8}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    config = config_lib.variant_config("dmi", CONFIG)
    vocabulary = Vocabulary(tuple(f"item {i}" for i in range(60)), tuple(range(60, 0, -1)))
    model = train.build_model(config, vocabulary)
    path = export.export_servables(model, vocabulary, str(tmp_path_factory.mktemp("export")), scann=False)
    return config, vocabulary, model, path[export.EXACT]


def _users(vocabulary: Vocabulary, count: int, seed: int = 0) -> EncodedSequences:
    rng = np.random.default_rng(seed)
    # Histories longer than L = 5 (the servable must keep the last L, as the protocol's cut does).
    return EncodedSequences.from_index_lists(
        [f"u{i}" for i in range(count)],
        [rng.integers(1, len(vocabulary) + 1, size=rng.integers(4, 16)) for _ in range(count)],
    )


def test_servable_metrics_equal_the_trained_models(exported):
    """The exported dmi_exact servable, fed raw ids, scores test users exactly as the model does."""
    config, vocabulary, model, path = exported
    test = _users(vocabulary, 40)
    raw = {user: [vocabulary.item_ids[i - 1] for i in test.sequence(row)] for row, user in enumerate(test.user_ids)}
    metrics, users = evaluate_saved_model(path, raw)
    expected = Evaluator(model, evaluation_set(test, config.max_length))()
    assert users == 40
    assert metrics == pytest.approx(expected)
    assert set(metrics) == {f"{name}@{n}" for name in ("recall", "hit_rate", "ndcg") for n in (20, 50)}


def test_items_the_servable_does_not_know_count_as_targets_it_cannot_retrieve(exported):
    config, vocabulary, model, path = exported
    test = _users(vocabulary, 40, seed=1)
    # Each user's last item (always a target) becomes one the servable never saw: index 61 below.
    sequences = [np.append(test.sequence(row)[:-1], len(vocabulary) + 1) for row in range(len(test))]
    widened = EncodedSequences.from_index_lists(list(test.user_ids), sequences)
    names = ("",) + vocabulary.item_ids + ("never trained on",)
    raw = {user: [names[i] for i in widened.sequence(row)] for row, user in enumerate(widened.user_ids)}
    metrics, users = evaluate_saved_model(path, raw)
    # The model ranks indices 1..60 only, so index 61 is a target it can never hit, as for the servable.
    expected = Evaluator(model, evaluation_set(widened, config.max_length))()
    assert users == 40
    assert metrics == pytest.approx(expected)


def test_the_servable_carries_its_vocabulary_as_an_asset(exported):
    _, vocabulary, _, path = exported
    assert export.servable_item_ids(path) == vocabulary.item_ids
