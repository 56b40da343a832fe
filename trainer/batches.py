"""Training batches sampled inside the TensorFlow graph, as the ComiRec/REMI protocol draws them.

Each step draws ``batch_size`` training users uniformly (with replacement); for each user a cut ``k`` is
drawn uniformly in ``[min_cut, len - 1]`` (protocol: ``[4, len - 1]``); the target is item ``k`` and the
history the last ``<= L`` items before it, left-aligned and padded with 0.

The batch of step ``s`` is a pure function of ``(seed, s)`` (stateless random ops), so a run resumed from
a checkpoint at step ``s`` continues with exactly the batches it would have seen, and two runs with the
same seed see the same data. Each batch also carries a per-step ``seed`` for the model's own randomness
(the diffusion step and noise).
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from trainer.sequences import EncodedSequences

HISTORY = "history"
TARGET = "target"
STEP_SEED = "seed"


class BatchSampler:
    """Draws protocol training batches from one split's sequences, in the graph.

    Args:
      sequences: the training users' encoded sequences.
      batch_size: users per batch.
      max_length: L, the longest history.
      min_cut: smallest cut position (protocol: 4). Users too short for it are cut at ``len - 1``
        instead (the protocol's data are 5-core, so this only matters for other logs); users with a
        single item cannot form an example and are never drawn.
      seed: random seed.

    Raises:
      ValueError: no user has two or more items.
    """

    def __init__(
        self, sequences: EncodedSequences, batch_size: int, max_length: int, min_cut: int, seed: int
    ):
        lengths = sequences.lengths
        usable = np.flatnonzero(lengths >= 2)
        if usable.size == 0:
            raise ValueError("no training user has two or more items; nothing to train on")
        self.batch_size = batch_size
        self.max_length = max_length
        self.seed = seed
        self._items = tf.constant(sequences.items, dtype=tf.int32)
        self._starts = tf.constant(sequences.offsets[usable], dtype=tf.int64)
        self._lengths = tf.constant(lengths[usable], dtype=tf.int64)
        self._min_cut = tf.constant(min_cut, dtype=tf.int64)
        self.num_users = int(usable.size)

    def sample(self, step: tf.Tensor) -> dict[str, tf.Tensor]:
        """The batch of training step ``step``.

        Returns:
          ``history`` (batch, L) int32 item indices, left-aligned, 0-padded; ``target`` (batch,) int32;
          ``seed`` (2,) int64, a stateless seed for the model's randomness in this step.
        """
        step = tf.cast(step, tf.int64)
        seeds = tf.random.experimental.stateless_split(tf.stack([tf.constant(self.seed, tf.int64), step]), 4)
        rows = tf.random.stateless_uniform(
            [self.batch_size], seeds[0], minval=0, maxval=self.num_users, dtype=tf.int64
        )
        lengths = tf.gather(self._lengths, rows)
        starts = tf.gather(self._starts, rows)
        low = tf.minimum(self._min_cut, lengths - 1)
        # Uniform integer in [low, len - 1]: floor(u * (len - low)) + low with u in [0, 1).
        unit = tf.random.stateless_uniform([self.batch_size], seeds[1], dtype=tf.float64)
        cuts = low + tf.cast(tf.floor(unit * tf.cast(lengths - low, tf.float64)), tf.int64)
        cuts = tf.minimum(cuts, lengths - 1)
        targets = tf.gather(self._items, starts + cuts)
        # History positions cut - n_hist .. cut - 1, left-aligned: column j holds position first + j.
        history_length = tf.minimum(cuts, self.max_length)
        first = cuts - history_length
        columns = tf.range(self.max_length, dtype=tf.int64)[tf.newaxis, :]
        valid = columns < history_length[:, tf.newaxis]
        positions = starts[:, tf.newaxis] + first[:, tf.newaxis] + columns
        positions = tf.where(valid, positions, tf.zeros_like(positions))
        history = tf.where(valid, tf.gather(self._items, positions), tf.zeros_like(positions, tf.int32))
        return {HISTORY: history, TARGET: targets, STEP_SEED: seeds[2]}

    def dataset(self, start_step: int = 0) -> tf.data.Dataset:
        """An endless dataset of batches from step ``start_step`` on (for ``Model.fit``)."""
        return (
            tf.data.Dataset.range(start_step, np.iinfo(np.int64).max)
            .map(self.sample, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
            .prefetch(tf.data.AUTOTUNE)
        )
