"""Tests of the blessing rule, and that TFX's latest-blessed-model Resolver reads our blessings."""

from __future__ import annotations

import pytest
from tfx.dsl.input_resolution.strategies.latest_blessed_model_strategy import LatestBlessedModelStrategy
from tfx.types import standard_artifacts

from pipeline.components import blessing, retrieval_evaluator
from pipeline.components.blessing import Baseline, decide

BASELINE = Baseline(model_id=4, model_uri="/root/Trainer/model/4", recall=0.30)


@pytest.mark.parametrize(
    "recall, min_recall, tolerance, baseline, blessed, reason",
    [
        (0.20, 0.10, 0.0, None, True, "no blessed model to compare with"),
        (0.10, 0.10, 0.0, None, True, ">= threshold"),  # the threshold itself passes
        (0.09, 0.10, 0.0, None, False, "below the threshold 0.1000"),
        (0.35, 0.10, 0.0, BASELINE, True, "not worse than the latest blessed model's 0.3000"),
        (0.30, 0.10, 0.0, BASELINE, True, "not worse"),  # equal to the baseline
        (0.29, 0.10, 0.0, BASELINE, False, "worse than the latest blessed model's 0.3000 (model id 4"),
        (0.29, 0.10, 0.02, BASELINE, True, "with tolerance 0.0200"),  # within the tolerance
        (0.27, 0.10, 0.02, BASELINE, False, "worse than"),  # beyond it
        (0.35, 0.40, 0.0, BASELINE, False, "below the threshold"),  # better than baseline, under threshold
    ],
)
def test_decide(recall, min_recall, tolerance, baseline, blessed, reason):
    decision = decide(recall, min_recall, tolerance, baseline)
    assert decision.blessed is blessed
    assert reason in decision.reason


def test_decide_rejects_negative_settings():
    with pytest.raises(ValueError, match="must be >= 0"):
        decide(0.5, -0.1, 0.0, None)


def test_the_candidate_as_its_own_baseline_is_blessed_above_the_threshold():
    itself = Baseline(model_id=4, model_uri="/root/Trainer/model/4", recall=0.30, is_candidate=True)
    decision = decide(0.30, 0.10, 0.0, itself)
    assert decision.blessed and "the latest blessed model itself (model id 4" in decision.reason
    assert not decide(0.30, 0.40, 0.0, itself).blessed  # the threshold still applies


def test_latest_blessed_model_strategy_reads_our_blessings():
    """TFX's LatestBlessedModelStrategy (the pipeline's Resolver) finds what RetrievalEvaluator records."""
    models = []
    for model_id in (1, 2, 3):
        model = standard_artifacts.Model()
        model.id, model.uri = model_id, f"/model/{model_id}"
        models.append(model)
    blessings = []
    for model, blessed in zip(models, (True, True, False)):
        artifact = standard_artifacts.ModelBlessing()
        retrieval_evaluator._record_blessing(
            artifact, model, 0.3, blessing.Decision(blessed, "test"), baseline=None
        )
        blessings.append(artifact)
    resolved = LatestBlessedModelStrategy()._resolve(
        {"model": models, "model_blessing": blessings}, "model", "model_blessing"
    )
    assert [m.id for m in resolved["model"]] == [2]  # model 3 is newer but was not blessed
    assert resolved["model_blessing"] == [blessings[1]]
