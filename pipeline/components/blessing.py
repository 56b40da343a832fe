"""The blessing rule of RetrievalEvaluator.

A model is blessed when its test Recall@50 is at least ``min_recall`` and not more than ``tolerance``
(absolute) below the Recall@50 of the latest blessed model of the same pipeline, measured on the same test
users. The pipeline hands that baseline to the evaluator as an input (a TFX ``Resolver`` with
``LatestBlessedModelStrategy``, as the TFX templates do), so the rule works on every orchestrator. The
strategy finds blessings by the ``blessed`` and ``current_model_id`` custom properties, the names TFX's
own Evaluator writes; RetrievalEvaluator writes them too.
"""

from __future__ import annotations

import dataclasses

# Custom properties of the ModelBlessing artifact.
BLESSED = "blessed"  # int, 1 or 0 (the name TFX's Pusher and resolvers read)
RECALL = "recall_at_50"  # float, the test Recall@50 the decision used
REASON = "reason"  # str, why the model was (not) blessed
CURRENT_MODEL = "current_model"  # str, the evaluated Model artifact's uri
CURRENT_MODEL_ID = "current_model_id"  # int, its MLMD id
BASELINE_MODEL = "baseline_model"  # str, the baseline's model uri (when there was one)
BASELINE_MODEL_ID = "baseline_model_id"  # int
BASELINE_RECALL = "baseline_recall_at_50"  # float



@dataclasses.dataclass(frozen=True)
class Baseline:
    """The latest blessed model of a pipeline, measured on the candidate's test users.

    Attributes:
      model_id: MLMD id of the blessed Model artifact.
      model_uri: its uri.
      recall: its test Recall@50 on the same users as the candidate's.
      is_candidate: the baseline is the candidate itself (a re-run whose Trainer came from the cache).
    """

    model_id: int
    model_uri: str
    recall: float
    is_candidate: bool = False


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
      baseline: the latest blessed model, or None (the pipeline's first model).

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
    if baseline.is_candidate:
        return Decision(
            True,
            f"recall@50 {recall:.4f} >= threshold {min_recall:.4f}; the model is the latest blessed model "
            f"itself (model id {baseline.model_id}: the Trainer's output came from the cache)",
        )
    against = (f"the latest blessed model's {baseline.recall:.4f} (model id {baseline.model_id}, on the same "
               f"test users) with tolerance {tolerance:.4f}")
    if recall < baseline.recall - tolerance:
        return Decision(False, f"recall@50 {recall:.4f} is worse than {against}")
    return Decision(True, f"recall@50 {recall:.4f} >= threshold {min_recall:.4f} and not worse than {against}")
