"""Protocol evaluation of a trained model on cut validation or test users (protocol.md).

Every interest retrieves over all items and the candidates are merged by score, which equals ranking all
items by ``max_k Z_k . e_i`` (Eq. 20, :func:`trainer.retrieval.top_n`); history items are not removed.
The metrics (:mod:`trainer.metrics`) are Recall, HitRate and NDCG at 20 and 50, NDCG in rank order
unless ``ndcg="remi"`` asks for REMI's set-order variant (labelled as such in every report).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from trainer.metrics import MetricsAccumulator
from trainer.model import DMIModel, PopularityModel
from trainer.sequences import EvaluationSet

DEFAULT_CUTOFFS = (20, 50)


class Evaluator:
    """Evaluates a model on one :class:`EvaluationSet`, reusing one compiled retrieval function.

    Args:
      model: a :class:`DMIModel` or a :class:`PopularityModel`.
      evaluation_set: the cut users.
      cutoffs: list lengths N to report.
      ndcg: ``rank`` (default), ``standard`` or ``remi`` (see :mod:`trainer.metrics`).
      batch_size: users per retrieval call.
      refine: False ranks by a DMI model's coarse interests, without the diffusion refinement (the same
        weights; for diagnostics).
    """

    def __init__(
        self,
        model: DMIModel | PopularityModel,
        evaluation_set: EvaluationSet,
        cutoffs: Sequence[int] = DEFAULT_CUTOFFS,
        ndcg: str = "rank",
        batch_size: int = 512,
        refine: bool = True,
    ):
        if len(evaluation_set) == 0:
            raise ValueError("the evaluation set has no users (too few users in this split?)")
        self.evaluation_set = evaluation_set
        self.cutoffs = tuple(cutoffs)
        self.ndcg = ndcg
        self.batch_size = batch_size
        self.list_length = max(self.cutoffs)
        # A catalogue smaller than the longest list retrieves every item; the lists are then padded with
        # distinct negative ids, which are never targets (see `__call__`).
        n = min(self.list_length, model.num_items)
        if isinstance(model, PopularityModel):
            self._recommend = lambda history: model.recommend(history, n)[1]
        else:
            spec = tf.TensorSpec([None, evaluation_set.histories.shape[1]], tf.int32)
            # Only a DMIModel takes `refine`; other recommenders (e.g. an exported servable) rank as served.
            options = {} if refine else {"refine": False}
            self._recommend = tf.function(
                lambda history: model.recommend(history, n, **options)[1],
                input_signature=[spec],
                autograph=False,
            )

    def __call__(self) -> dict[str, float]:
        """The metrics over every user of the set, e.g. ``{"recall@50": ..., "ndcg@20": ...}``."""
        accumulator = MetricsAccumulator(self.cutoffs, ndcg=self.ndcg)
        histories, targets = self.evaluation_set.histories, self.evaluation_set.targets
        for start in range(0, len(histories), self.batch_size):
            top = np.asarray(self._recommend(histories[start : start + self.batch_size]))
            if top.shape[1] < self.list_length:
                fill = -np.arange(1, self.list_length - top.shape[1] + 1, dtype=top.dtype)
                top = np.concatenate([top, np.broadcast_to(fill, (len(top), len(fill)))], axis=1)
            accumulator.update(top, targets[start : start + self.batch_size])
        return accumulator.result()
