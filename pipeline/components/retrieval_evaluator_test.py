"""Tests of RetrievalEvaluator's settings (its metrics: trainer/evaluation_test.py; end to end: tests/)."""

from __future__ import annotations

import pytest
from tfx import v1 as tfx
from tfx.types import Channel

from pipeline.components import retrieval_evaluator
from pipeline.components.retrieval_evaluator import RetrievalEvaluator


def _channels():
    return {
        "model": Channel(type=tfx.types.standard_artifacts.Model),
        "examples": Channel(type=tfx.types.standard_artifacts.Examples),
        "schema": Channel(type=tfx.types.standard_artifacts.Schema),
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
