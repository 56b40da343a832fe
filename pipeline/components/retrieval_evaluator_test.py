"""Tests of RetrievalEvaluator: the servable's metrics equal the model's, and the component's settings."""

from __future__ import annotations

import numpy as np
import pytest
from tfx import v1 as tfx
from tfx.types import Channel

from pipeline.components import retrieval_evaluator
from pipeline.components.retrieval_evaluator import RetrievalEvaluator
from trainer import config as config_lib
from trainer import export, train
from trainer.evaluation import Evaluator
from trainer.sequences import EncodedSequences, Vocabulary, evaluation_set


def test_servable_metrics_equal_the_trained_models(tmp_path):
    """The exported dmi_exact servable, fed raw ids, scores test users exactly as the model does."""
    config = config_lib.variant_config(
        "dmi", {"embedding_dim": 8, "max_length": 5, "diffusion_steps": 2, "num_negatives": 8}
    )
    vocabulary = Vocabulary(tuple(f"item {i}" for i in range(60)), tuple(range(60, 0, -1)))
    model = train.build_model(config, vocabulary)
    path = export.export_servables(model, vocabulary, str(tmp_path), scann=False)[export.EXACT]
    rng = np.random.default_rng(0)
    # Histories longer than L = 5 (the servable must keep the last L, as the protocol's cut does).
    test = EncodedSequences.from_index_lists(
        [f"u{i}" for i in range(40)], [rng.integers(1, 61, size=rng.integers(4, 16)) for _ in range(40)]
    )
    metrics, users = retrieval_evaluator.evaluate_servable(path, vocabulary, test)
    expected = Evaluator(model, evaluation_set(test, config.max_length))()
    assert users == 40
    assert metrics == pytest.approx(expected)
    assert set(metrics) == {f"{name}@{n}" for name in ("recall", "hit_rate", "ndcg") for n in (20, 50)}


def _channels():
    return {
        "model": Channel(type=tfx.types.standard_artifacts.Model),
        "examples": Channel(type=tfx.types.standard_artifacts.Examples),
        "transform_graph": Channel(type=tfx.types.standard_artifacts.TransformGraph),
    }


def test_component_declares_inputs_parameters_and_outputs():
    evaluator = RetrievalEvaluator(**_channels(), min_recall=0.1, recall_tolerance=0.02)
    assert evaluator.exec_properties[retrieval_evaluator.MIN_RECALL_KEY] == 0.1
    assert evaluator.exec_properties[retrieval_evaluator.RECALL_TOLERANCE_KEY] == 0.02
    assert evaluator.outputs["blessing"].type is tfx.types.standard_artifacts.ModelBlessing
    assert evaluator.outputs["evaluation"].type is tfx.types.standard_artifacts.ModelEvaluation


@pytest.mark.parametrize("setting", [{"min_recall": 1.5}, {"recall_tolerance": -0.1}])
def test_component_rejects_settings_outside_0_1(setting):
    with pytest.raises(ValueError, match=r"must be in \[0, 1\]"):
        RetrievalEvaluator(**_channels(), **setting)
