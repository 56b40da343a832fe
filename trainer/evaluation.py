"""Protocol evaluation of a trained model on cut validation or test users (protocol.md).

Every interest retrieves over all items and the candidates are merged by score, which equals ranking all
items by ``max_k Z_k . e_i`` (Eq. 20, :func:`trainer.retrieval.top_n`); history items are not removed.
The metrics (:mod:`trainer.metrics`) are Recall, HitRate and NDCG at 20 and 50, NDCG in rank order
unless ``ndcg="remi"`` asks for REMI's set-order variant (labelled as such in every report).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

import numpy as np
import tensorflow as tf

from trainer import data_schema, export
from trainer.metrics import MetricsAccumulator
from trainer.model import DMIModel, PopularityModel
from trainer.sequences import EncodedSequences, EvaluationSet, Vocabulary, evaluation_set

DEFAULT_CUTOFFS = (20, 50)


class Recommender(Protocol):
    """What :class:`Evaluator` evaluates: a trained model, the popularity baseline, or a servable."""

    num_items: int

    def recommend(self, history: tf.Tensor, n: int) -> tuple[tf.Tensor, tf.Tensor]:
        """The top-``n`` items of each (batch, L) history of indices: ``(scores, indices)``, (batch, n)."""
        ...


class Evaluator:
    """Evaluates a model on one :class:`EvaluationSet`, reusing one compiled retrieval function.

    Args:
      model: a :class:`DMIModel`, a :class:`PopularityModel` or another :class:`Recommender` (e.g.
        :class:`SavedModelRecommender`).
      evaluation_set: the cut users.
      cutoffs: list lengths N to report.
      ndcg: ``rank`` (default), ``standard`` or ``remi`` (see :mod:`trainer.metrics`).
      batch_size: users per retrieval call.
      refine: False ranks by a DMI model's coarse interests, without the diffusion refinement (the same
        weights; for diagnostics).
    """

    def __init__(
        self,
        model: Recommender,
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


class SavedModelRecommender:
    """An exported servable (raw ids in, raw ids out) as a :class:`Recommender` of a vocabulary's indices.

    The metrics count hits by index, so the evaluated users' items are indexed by ``vocabulary``; the
    servable sees raw ids only: each history goes to it as ids (index 0 as "", which it ignores, like any
    id it does not know), and the ids it answers are indexed again.

    Args:
      saved_model_dir: a servable written by :func:`trainer.export.export_servables`.
      vocabulary: indexes every item of the evaluated users and every item the servable may answer.
      num_items: how many items the servable ranks (its catalogue).
    """

    def __init__(self, saved_model_dir: str, vocabulary: Vocabulary, num_items: int):
        self.num_items = num_items
        self._loaded = tf.saved_model.load(saved_model_dir)  # the signature needs the object alive
        self._serve = self._loaded.signatures[export.RETRIEVAL_SIGNATURE]
        self._item_ids = tf.constant(("",) + vocabulary.item_ids)
        self._indices = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(self._item_ids[1:], tf.range(1, len(vocabulary) + 1)),
            default_value=data_schema.PADDING_INDEX,
        )

    def recommend(self, history: tf.Tensor, n: int) -> tuple[tf.Tensor, tf.Tensor]:
        """The servable's top-``n`` items of each history: ``(scores, indices)``, each (batch, n)."""
        outputs = self._serve(
            **{
                export.HISTORY_INPUT: tf.gather(self._item_ids, history),
                export.TOP_N_INPUT: tf.constant(n, tf.int32),
                export.EXCLUDE_HISTORY_INPUT: tf.constant(False),
            }
        )
        return outputs[export.SCORES_OUTPUT], self._indices.lookup(outputs[export.ITEM_IDS_OUTPUT])


def evaluate_saved_model(
    saved_model_dir: str, users: Mapping[str, Sequence[str]], ndcg: str = "rank"
) -> tuple[dict[str, float], int]:
    """Protocol metrics of an exported servable on users given by raw item ids.

    Each user is cut as the protocol says (:func:`trainer.sequences.evaluation_set`) and the servable is
    asked for the top items of the whole history (it keeps the last L itself, as the protocol's cut does).
    Items are indexed for the hit count by the servable's own vocabulary (its asset) followed by the
    users' items it does not know: those count as targets it can never retrieve, so a servable trained on
    another catalogue (an earlier blessed model) is scored fairly on the same users.

    Args:
      saved_model_dir: the servable.
      users: user id -> raw item ids in time order.
      ndcg: the NDCG variant (see :mod:`trainer.metrics`).

    Returns:
      ``(metrics, users evaluated)``: Recall/HitRate/NDCG at 20 and 50.

    Raises:
      ValueError: no user has a sequence the protocol can cut.
    """
    served = export.servable_item_ids(saved_model_dir)
    unknown = sorted({item for items in users.values() for item in items} - set(served))
    vocabulary = Vocabulary(served + tuple(unknown), (0,) * (len(served) + len(unknown)))
    encoded = EncodedSequences.from_index_lists(list(users), [vocabulary.lookup(items) for items in users.values()])
    cut = evaluation_set(encoded, max_length=int(encoded.lengths.max(initial=1)))
    recommender = SavedModelRecommender(saved_model_dir, vocabulary, num_items=len(served))
    return Evaluator(recommender, cut, ndcg=ndcg)(), len(cut)
