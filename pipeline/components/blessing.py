"""The blessing rule of RetrievalEvaluator, and the baseline it compares with, found in ML Metadata.

A model is blessed when its test Recall@50 is at least ``min_recall`` and not more than ``tolerance``
(absolute) below the Recall@50 recorded on the latest blessed model of the same pipeline. The baseline is
the latest (highest id) live ``ModelBlessing`` artifact of the pipeline's context with ``blessed = 1``
and a recorded ``recall_at_50``: RetrievalEvaluator writes those properties, beside the
``current_model`` / ``current_model_id`` ones TFX's own Evaluator writes (so TFX's
``LatestBlessedModelStrategy`` also finds its blessings).
"""

from __future__ import annotations

import dataclasses

import ml_metadata as mlmd

# Custom properties of the ModelBlessing artifact.
BLESSED = "blessed"  # int, 1 or 0 (the name TFX's Pusher and resolvers read)
RECALL = "recall_at_50"  # float, the test Recall@50 the decision used
REASON = "reason"  # str, why the model was (not) blessed
CURRENT_MODEL = "current_model"  # str, the evaluated Model artifact's uri
CURRENT_MODEL_ID = "current_model_id"  # int, its MLMD id
BASELINE_MODEL = "baseline_model"  # str, the baseline's model uri (when there was one)
BASELINE_MODEL_ID = "baseline_model_id"  # int
BASELINE_RECALL = "baseline_recall_at_50"  # float

# TFX's MLMD names: the artifact type and the context type of a pipeline.
MODEL_BLESSING_TYPE = "ModelBlessing"
PIPELINE_CONTEXT_TYPE = "pipeline"


@dataclasses.dataclass(frozen=True)
class Baseline:
    """The latest blessed model of a pipeline, as its ModelBlessing recorded it.

    Attributes:
      blessing_id: MLMD id of the ModelBlessing artifact.
      model_id: MLMD id of the blessed Model artifact (0 when not recorded).
      model_uri: its uri ("" when not recorded).
      recall: the test Recall@50 recorded when it was blessed.
    """

    blessing_id: int
    model_id: int
    model_uri: str
    recall: float


@dataclasses.dataclass(frozen=True)
class Decision:
    """A blessing decision and its reason, in words."""

    blessed: bool
    reason: str


def decide(recall: float, min_recall: float, tolerance: float, baseline: Baseline | None) -> Decision:
    """Applies the blessing rule.

    Args:
      recall: the candidate's test Recall@50.
      min_recall: the least Recall@50 to bless.
      tolerance: how far (absolute) below the baseline's Recall@50 the candidate may be.
      baseline: the latest blessed model, or None (the first model, or no ML Metadata to ask).

    Returns:
      The decision with its reason.

    Raises:
      ValueError: a negative ``min_recall`` or ``tolerance``.
    """
    if min_recall < 0 or tolerance < 0:
        raise ValueError(f"min_recall and tolerance must be >= 0, got {min_recall} and {tolerance}")
    if recall < min_recall:
        return Decision(False, f"recall@50 {recall:.4f} is below the threshold {min_recall:.4f}")
    if baseline is None:
        return Decision(True, f"recall@50 {recall:.4f} >= threshold {min_recall:.4f}; no blessed model to compare with")
    against = (f"the latest blessed model's {baseline.recall:.4f} (model id {baseline.model_id}, "
               f"blessing id {baseline.blessing_id}) with tolerance {tolerance:.4f}")
    if recall < baseline.recall - tolerance:
        return Decision(False, f"recall@50 {recall:.4f} is worse than {against}")
    return Decision(True, f"recall@50 {recall:.4f} >= threshold {min_recall:.4f} and not worse than {against}")


def latest_blessed_baseline(store: mlmd.MetadataStore, pipeline_name: str) -> Baseline | None:
    """The latest blessed model of a pipeline with a recorded Recall@50.

    Args:
      store: the pipeline's ML Metadata store.
      pipeline_name: the pipeline (its MLMD context of type ``pipeline``).

    Returns:
      The baseline, or None when the pipeline has no such blessing yet.
    """
    query = (
        f'type = "{MODEL_BLESSING_TYPE}" AND state = LIVE'
        f' AND contexts_p.type = "{PIPELINE_CONTEXT_TYPE}" AND contexts_p.name = "{_quoted(pipeline_name)}"'
        f" AND custom_properties.{BLESSED}.int_value = 1"
        f" AND custom_properties.{RECALL}.double_value >= 0"
    )
    found = store.get_artifacts(
        list_options=mlmd.ListOptions(
            limit=1, order_by=mlmd.OrderByField.ID, is_asc=False, filter_query=query
        )
    )
    if not found:
        return None
    properties = found[0].custom_properties
    return Baseline(
        blessing_id=found[0].id,
        model_id=properties[CURRENT_MODEL_ID].int_value if CURRENT_MODEL_ID in properties else 0,
        model_uri=properties[CURRENT_MODEL].string_value if CURRENT_MODEL in properties else "",
        recall=properties[RECALL].double_value,
    )


def _quoted(text: str) -> str:
    """``text`` escaped for a double-quoted MLMD filter-query string literal."""
    return text.replace("\\", "\\\\").replace('"', '\\"')
