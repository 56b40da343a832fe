"""Sampled softmax loss over the item table (DMI Eq. 15-16, trained as ComiRec / REMI do).

Eq. 15 is a softmax of ``z_u . e_t`` over every item; like ComiRec and REMI, training approximates it
with ``S`` negatives drawn once per batch and shared by every example (``S = 10 x batch size`` in the
protocol). For one example with user vector ``u`` and target ``t``:

    logit_t = u . e_t - log Q(t)
    logit_s = u . e_s - log Q(s)            for each sampled id s (-inf-like if s == t, an accidental hit)
    loss    = logsumexp([logit_t, logit_s ...]) - logit_t

``Q(x)`` is the sampler's expected count of ``x`` among the ``S`` draws; subtracting ``log Q`` is the
standard sampled-softmax correction (``tf.nn.sampled_softmax_loss`` with ``subtract_log_q=True``).

Item ids: 0 is padding and never sampled; real items are ``1..num_items``, re-indexed by descending
frequency, so the log-uniform (Zipfian) sampler -- which favours small class ids -- samples popular
items more often. TensorFlow's samplers draw classes ``0..range_max-1``, so they run on ``id - 1`` and
1 is added back.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import tensorflow as tf

from trainer.choices import SAMPLERS


def _probabilities(classes: tf.Tensor, range_max: int, sampler: str) -> tf.Tensor:
    """P(class) of one draw, for classes ``0..range_max-1`` (TensorFlow's samplers' distributions)."""
    classes = tf.cast(classes, tf.float64)
    if sampler == "uniform":
        return tf.fill(tf.shape(classes), tf.constant(1.0 / range_max, tf.float64))
    return tf.math.log((classes + 2.0) / (classes + 1.0)) / np.log(range_max + 1.0)


def _draws(seed: tf.Tensor, count: int, range_max: int, sampler: str) -> tf.Tensor:
    """``count`` independent draws (with replacement) of classes ``0..range_max-1``, by inverse CDF."""
    unit = tf.random.stateless_uniform([count], seed, dtype=tf.float64)
    if sampler == "uniform":
        classes = tf.floor(unit * range_max)
    else:  # log-uniform: P(x) = log((x + 2) / (x + 1)) / log(range_max + 1), CDF(x) = log(x + 2) / log(R + 1)
        classes = tf.floor(tf.exp(unit * np.log(range_max + 1.0))) - 1.0
    return tf.clip_by_value(tf.cast(classes, tf.int64), 0, range_max - 1)


def stateless_candidates(
    seed: tf.Tensor, num_sampled: int, range_max: int, sampler: str, unique: bool
) -> tuple[tf.Tensor, tf.Tensor]:
    """TensorFlow's candidate samplers, as a pure function of a seed.

    ``tf.random.*_candidate_sampler`` keep a hidden per-op state, so a run restarted from a checkpoint
    draws other negatives than an uninterrupted one. This draws from the same distributions with the same
    procedure: with ``unique``, draws with replacement until ``num_sampled`` distinct classes are found
    (in order of first appearance; ``num_tries`` counts the draws), as TensorFlow's ``RangeSampler`` does,
    so the expected counts are the same formula (:func:`expected_count`).

    Args:
      seed: ``(2,)`` integer stateless seed.
      num_sampled: S, the classes to return.
      range_max: classes are ``0..range_max-1``.
      sampler: ``"log_uniform"`` or ``"uniform"``.
      unique: sample without replacement.

    Returns:
      ``(sampled, num_tries)``: ``(S,)`` int64 classes and the scalar int64 number of draws.
    """
    seed = tf.cast(seed, tf.int64)
    if not unique:
        return _draws(seed, num_sampled, range_max, sampler), tf.constant(num_sampled, tf.int64)
    chunk = max(64, 2 * num_sampled)

    def body(i, seen, taken, count, tries):
        draws = _draws(tf.random.experimental.stateless_fold_in(seed, i), chunk, range_max, sampler)
        distinct, where = tf.unique(draws)  # in order of first appearance
        first = tf.math.unsorted_segment_min(tf.range(chunk, dtype=tf.int64), where, tf.size(distinct))
        new = tf.logical_not(tf.gather(seen, distinct))
        values, positions = tf.boolean_mask(distinct, new), tf.boolean_mask(first, new)
        needed = num_sampled - count
        k = tf.minimum(needed, tf.size(values, out_type=tf.int64))
        values, positions = values[:k], positions[:k]
        taken = tf.tensor_scatter_nd_update(taken, (count + tf.range(k, dtype=tf.int64))[:, None], values)
        seen = tf.tensor_scatter_nd_update(seen, values[:, None], tf.ones([k], tf.bool))
        used = tf.cond(
            tf.logical_and(k == needed, k > 0), lambda: positions[k - 1] + 1, lambda: tf.constant(chunk, tf.int64)
        )
        return i + 1, seen, taken, count + k, tries + used

    _, _, taken, _, tries = tf.while_loop(
        lambda i, seen, taken, count, tries: count < num_sampled,
        body,
        (
            tf.constant(0, tf.int64),
            tf.zeros([range_max], tf.bool),
            tf.zeros([num_sampled], tf.int64),
            tf.constant(0, tf.int64),
            tf.constant(0, tf.int64),
        ),
    )
    return taken, tries


def expected_count(
    classes: tf.Tensor, num_tries: tf.Tensor, num_sampled: int, range_max: int, sampler: str
) -> tf.Tensor:
    """Expected count of each class among the draws, as TensorFlow's samplers report it.

    ``num_tries == num_sampled`` (with replacement): ``S * p``; otherwise (unique sampling, ``n`` draws):
    ``1 - (1 - p) ** n``, the probability of appearing at least once.
    """
    p = _probabilities(classes, range_max, sampler)
    tries = tf.cast(num_tries, tf.float64)
    counts = tf.where(
        tf.equal(num_tries, num_sampled), p * num_sampled, -tf.math.expm1(tries * tf.math.log1p(-p))
    )
    return tf.cast(counts, tf.float32)


class CandidateSample(NamedTuple):
    """One batch's shared negatives and the sampler's expected counts (the sampled-softmax triple).

    Attributes:
      sampled_ids: ``(S,)`` int64 item ids in ``1..num_items``.
      true_expected_count: ``(B, 1)`` float32, expected count of each target among the ``S`` draws.
      sampled_expected_count: ``(S,)`` float32, expected count of each sampled id.
    """

    sampled_ids: tf.Tensor
    true_expected_count: tf.Tensor
    sampled_expected_count: tf.Tensor


def sampled_softmax_loss(
    user_vectors: tf.Tensor,
    target_ids: tf.Tensor,
    item_embeddings: tf.Tensor,
    candidates: CandidateSample,
    remove_accidental_hits: bool = True,
    subtract_log_q: bool = True,
) -> tf.Tensor:
    """Per-example sampled softmax loss for given negatives.

    One ``(B, d) x (d, S)`` matmul, a gather of ``S + B`` embedding rows, and a fused softmax
    cross-entropy with the positive in column 0.

    Args:
      user_vectors: ``(B, d)`` float tensor (for DMI: the interest selected for the target).
      target_ids: ``(B,)`` integer tensor of target item ids.
      item_embeddings: ``(num_items + 1, d)`` table (tensor or variable), row 0 = padding.
      candidates: The shared negatives and expected counts, e.g. from ``SampledSoftmax.sample``.
      remove_accidental_hits: If True a sampled id equal to the example's target gets a logit of the
        dtype's lowest value, so it adds nothing to the loss nor to the gradients.
      subtract_log_q: If True subtract ``log`` of the expected counts from the logits.

    Returns:
      ``(B,)`` float tensor of losses.

    Raises:
      ValueError: On wrong ranks or mismatched static shapes.
    """
    user_vectors = tf.convert_to_tensor(user_vectors)
    if not isinstance(item_embeddings, (tf.Tensor, tf.Variable)):
        # Variables are left as they are: gathering from them yields sparse (IndexedSlices) gradients.
        item_embeddings = tf.convert_to_tensor(item_embeddings, dtype=user_vectors.dtype)
    target_ids = tf.convert_to_tensor(target_ids)
    sampled_ids = tf.convert_to_tensor(candidates.sampled_ids)
    if user_vectors.shape.rank != 2:
        raise ValueError(f"user_vectors must have shape (batch, dim); got {user_vectors.shape}.")
    if target_ids.shape.rank != 1:
        raise ValueError(f"target_ids must have shape (batch,); got {target_ids.shape}.")
    if not target_ids.dtype.is_integer:
        raise ValueError(f"target_ids must be integer item ids; got dtype {target_ids.dtype}.")
    if sampled_ids.shape.rank != 1:
        raise ValueError(f"candidates.sampled_ids must have shape (num_sampled,); got {sampled_ids.shape}.")
    if item_embeddings.shape.rank != 2:
        raise ValueError(
            f"item_embeddings must have shape (num_items + 1, dim); got {item_embeddings.shape}."
        )
    if not user_vectors.shape[1:].is_compatible_with(item_embeddings.shape[1:]):
        raise ValueError(
            f"user_vectors dim {user_vectors.shape[1]} != item_embeddings dim {item_embeddings.shape[1]}."
        )
    if not user_vectors.shape[:1].is_compatible_with(target_ids.shape):
        raise ValueError(
            f"user_vectors has batch size {user_vectors.shape[0]} but target_ids has {target_ids.shape[0]}."
        )

    target_ids = tf.cast(target_ids, tf.int64)
    sampled_ids = tf.cast(sampled_ids, tf.int64)
    target_embeddings = tf.gather(item_embeddings, target_ids)  # (B, d)
    sampled_embeddings = tf.gather(item_embeddings, sampled_ids)  # (S, d)
    true_logits = tf.reduce_sum(user_vectors * target_embeddings, axis=1, keepdims=True)  # (B, 1)
    sampled_logits = tf.linalg.matmul(user_vectors, sampled_embeddings, transpose_b=True)  # (B, S)

    if subtract_log_q:
        dtype = user_vectors.dtype
        true_logits -= tf.math.log(tf.cast(candidates.true_expected_count, dtype))
        sampled_logits -= tf.math.log(tf.cast(candidates.sampled_expected_count, dtype))[None, :]
    if remove_accidental_hits:
        accidental = tf.equal(target_ids[:, None], sampled_ids[None, :])  # (B, S)
        sampled_logits = tf.where(
            accidental, tf.constant(user_vectors.dtype.min, user_vectors.dtype), sampled_logits
        )

    logits = tf.concat([true_logits, sampled_logits], axis=1)  # (B, 1 + S), positive in column 0.
    labels = tf.zeros_like(target_ids, dtype=tf.int32)
    return tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)


class SampledSoftmax:
    """Sampled softmax over items ``1..num_items`` with negatives shared across the batch.

    Example:
      >>> loss_fn = SampledSoftmax(num_items=12101, num_sampled=1280)
      >>> per_example = loss_fn(user_vectors, target_ids, item_table)   # (B,)
    """

    def __init__(
        self,
        num_items: int,
        num_sampled: int,
        sampler: str = "log_uniform",
        remove_accidental_hits: bool = True,
        *,
        unique: bool = True,
        subtract_log_q: bool = True,
    ) -> None:
        """Configures the loss.

        Args:
          num_items: Number of real items; ids ``1..num_items`` (the table has ``num_items + 1`` rows).
          num_sampled: Negatives ``S`` drawn per batch (the protocol: 10 x batch size = 1280).
          sampler: ``"log_uniform"`` (``tf.random.log_uniform_candidate_sampler``: P(id) proportional to
            ``log((id + 1) / id)``, popularity-like on frequency-sorted ids; ComiRec) or ``"uniform"``
            (``tf.random.uniform_candidate_sampler``).
          remove_accidental_hits: Whether a negative equal to the target is ignored.
          unique: Sample without replacement (True, as ComiRec via ``tf.nn.sampled_softmax_loss``) or
            with replacement (False; REMI draws uniformly with replacement).
          subtract_log_q: Whether to apply the ``-log Q`` correction to the logits.

        Raises:
          ValueError: If ``num_items`` or ``num_sampled`` is not a positive int, ``unique`` and
            ``num_sampled > num_items``, or ``sampler`` is unknown.
        """
        for name, value in (("num_items", num_items), ("num_sampled", num_sampled)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{name} must be a positive int; got {value!r}.")
        if sampler not in SAMPLERS:
            raise ValueError(f"Unknown sampler {sampler!r}; expected one of {SAMPLERS}.")
        if unique and num_sampled > num_items:
            raise ValueError(
                f"num_sampled={num_sampled} > num_items={num_items}: cannot draw that many distinct "
                "negatives (pass unique=False to sample with replacement)."
            )
        self.num_items = int(num_items)
        self.num_sampled = int(num_sampled)
        self.sampler = sampler
        self.remove_accidental_hits = remove_accidental_hits
        self.unique = unique
        self.subtract_log_q = subtract_log_q

    def sample(self, target_ids: tf.Tensor, seed: tf.Tensor | int | None = None) -> CandidateSample:
        """Draws the batch's shared negatives.

        Args:
          target_ids: ``(B,)`` integer target ids in ``1..num_items`` (checked at run time).
          seed: a ``(2,)`` integer tensor: a stateless draw (:func:`stateless_candidates`), a pure
            function of the seed, so that a training run resumed from a checkpoint draws what an
            uninterrupted run draws; or an int op-level seed / None: TensorFlow's stateful sampler.

        Returns:
          A ``CandidateSample`` with ``sampled_ids`` in ``1..num_items`` (never the padding id 0).

        Raises:
          ValueError: If ``target_ids`` is not a rank-1 integer tensor.
        """
        target_ids = tf.convert_to_tensor(target_ids)
        if target_ids.shape.rank != 1 or not target_ids.dtype.is_integer:
            raise ValueError(
                f"target_ids must be a (batch,) integer tensor; got shape {target_ids.shape}, "
                f"dtype {target_ids.dtype}."
            )
        target_ids = tf.cast(target_ids, tf.int64)
        tf.debugging.assert_greater_equal(
            target_ids, tf.constant(1, tf.int64), message="target id < 1 (0 is the padding id)."
        )
        tf.debugging.assert_less_equal(
            target_ids, tf.constant(self.num_items, tf.int64), message="target id > num_items."
        )
        if seed is not None and not isinstance(seed, (int, np.integer)):
            sampled, tries = stateless_candidates(
                seed, self.num_sampled, self.num_items, self.sampler, self.unique
            )
            true_expected = expected_count(target_ids - 1, tries, self.num_sampled, self.num_items, self.sampler)
            sampled_expected = expected_count(sampled, tries, self.num_sampled, self.num_items, self.sampler)
            return CandidateSample(
                sampled_ids=tf.stop_gradient(sampled + 1),
                true_expected_count=tf.stop_gradient(true_expected[:, None]),
                sampled_expected_count=tf.stop_gradient(sampled_expected),
            )
        sampler_fn = (
            tf.random.log_uniform_candidate_sampler
            if self.sampler == "log_uniform"
            else tf.random.uniform_candidate_sampler
        )
        sampled, true_expected, sampled_expected = sampler_fn(
            true_classes=(target_ids - 1)[:, None],
            num_true=1,
            num_sampled=self.num_sampled,
            unique=self.unique,
            range_max=self.num_items,
            seed=seed,
        )
        return CandidateSample(
            sampled_ids=tf.stop_gradient(sampled + 1),
            true_expected_count=tf.stop_gradient(true_expected),
            sampled_expected_count=tf.stop_gradient(sampled_expected),
        )

    def __call__(
        self,
        user_vectors: tf.Tensor,
        target_ids: tf.Tensor,
        item_embeddings: tf.Tensor,
        seed: tf.Tensor | int | None = None,
    ) -> tf.Tensor:
        """Samples negatives and returns the per-example loss.

        Args:
          user_vectors: ``(B, d)`` float tensor.
          target_ids: ``(B,)`` integer target ids in ``1..num_items``.
          item_embeddings: ``(num_items + 1, d)`` table, row 0 = padding.
          seed: the sampler's seed (see :meth:`sample`).

        Returns:
          ``(B,)`` float tensor of losses.

        Raises:
          ValueError: On wrong ranks, mismatched shapes, or a table whose static row count is not
            ``num_items + 1``.
        """
        if not isinstance(item_embeddings, (tf.Tensor, tf.Variable)):
            item_embeddings = tf.convert_to_tensor(item_embeddings, dtype=tf.float32)
        rows = item_embeddings.shape[0] if item_embeddings.shape.rank else None
        if rows is not None and rows != self.num_items + 1:
            raise ValueError(
                f"item_embeddings has {rows} rows; expected num_items + 1 = {self.num_items + 1} "
                "(row 0 is padding)."
            )
        candidates = self.sample(target_ids, seed=seed)
        return sampled_softmax_loss(
            user_vectors,
            target_ids,
            item_embeddings,
            candidates,
            remove_accidental_hits=self.remove_accidental_hits,
            subtract_log_q=self.subtract_log_q,
        )
