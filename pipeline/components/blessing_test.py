"""Tests of the blessing rule and of the ML Metadata query for the latest blessed model."""

from __future__ import annotations

import ml_metadata as mlmd
import pytest
from ml_metadata.proto import metadata_store_pb2

from pipeline.components import blessing
from pipeline.components.blessing import Baseline, decide

BASELINE = Baseline(blessing_id=5, model_id=4, model_uri="/root/Trainer/model/4", recall=0.30)


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


def _store() -> mlmd.MetadataStore:
    return mlmd.MetadataStore(
        metadata_store_pb2.ConnectionConfig(fake_database=metadata_store_pb2.FakeDatabaseConfig())
    )


def _add_blessings(store, pipeline_name, blessings):
    """Adds ModelBlessing artifacts in a pipeline's context: (blessed, recall or None, state, model_id)."""
    blessing_type = store.put_artifact_type(metadata_store_pb2.ArtifactType(name=blessing.MODEL_BLESSING_TYPE))
    context_type = store.put_context_type(metadata_store_pb2.ContextType(name=blessing.PIPELINE_CONTEXT_TYPE))
    context = store.get_context_by_type_and_name(blessing.PIPELINE_CONTEXT_TYPE, pipeline_name)
    context_id = context.id if context else store.put_contexts(
        [metadata_store_pb2.Context(type_id=context_type, name=pipeline_name)])[0]
    artifacts = []
    for blessed, recall, state, model_id in blessings:
        artifact = metadata_store_pb2.Artifact(type_id=blessing_type, state=state)
        artifact.custom_properties[blessing.BLESSED].int_value = blessed
        artifact.custom_properties[blessing.CURRENT_MODEL_ID].int_value = model_id
        artifact.custom_properties[blessing.CURRENT_MODEL].string_value = f"/model/{model_id}"
        if recall is not None:
            artifact.custom_properties[blessing.RECALL].double_value = recall
        artifacts.append(artifact)
    ids = store.put_artifacts(artifacts)
    store.put_attributions_and_associations(
        [metadata_store_pb2.Attribution(artifact_id=i, context_id=context_id) for i in ids], []
    )
    return ids


LIVE = metadata_store_pb2.Artifact.LIVE


def test_latest_blessed_baseline_is_the_newest_live_blessed_one_of_the_pipeline():
    store = _store()
    ids = _add_blessings(store, "dmi-rec", [
        (1, 0.30, LIVE, 1),
        (1, 0.40, LIVE, 2),  # <- the latest usable one
        (0, 0.50, LIVE, 3),  # not blessed
        (1, None, LIVE, 4),  # no recorded recall (e.g. TFX's Evaluator)
        (1, 0.60, metadata_store_pb2.Artifact.PENDING, 5),  # not published (failed execution)
    ])
    _add_blessings(store, "other-pipeline", [(1, 0.90, LIVE, 6)])
    assert blessing.latest_blessed_baseline(store, "dmi-rec") == Baseline(ids[1], 2, "/model/2", 0.40)
    assert blessing.latest_blessed_baseline(store, "other-pipeline").recall == 0.90


def test_latest_blessed_baseline_is_none_without_a_blessed_model():
    store = _store()
    assert blessing.latest_blessed_baseline(store, "dmi-rec") is None
    _add_blessings(store, "dmi-rec", [(0, 0.5, LIVE, 1)])
    assert blessing.latest_blessed_baseline(store, "dmi-rec") is None
    assert blessing.latest_blessed_baseline(store, 'quote"and\\backslash') is None
