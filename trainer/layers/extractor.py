"""Self-attentive multi-interest extraction (ComiRec-SA; DMI Eq. 4-5)."""

from __future__ import annotations

from typing import Any

import tensorflow as tf
import tf_keras as keras


@keras.saving.register_keras_serializable(package="dmi_rec")
class MultiInterestExtractor(keras.layers.Layer):
    """Extracts ``K`` interest vectors from a user's history by self-attention.

    Computes, per user (Eq. 4-5 of DMI, i.e. ComiRec-SA)::

        A = softmax_valid(W2 tanh(W1 (H + P)^T))    # (K, L)
        V = A H                                     # (K, d)

    where ``H`` holds the history embeddings, ``P`` learned position embeddings (added for the attention
    only; ``V`` aggregates ``H`` without positions), ``W1`` is ``d_a x d`` and ``W2`` is ``K x d_a``.

    Choices:
      * ``W1`` and ``W2`` have no biases, as in Eq. 4 and REMI's PyTorch ComiRec-SA, the backbone DMI is
        combined with by default.
      * The softmax runs over valid positions only, and padding positions get exactly zero attention:
        their logits are replaced by a large negative number before the softmax and the result is
        multiplied by the mask. A history with no valid position therefore gets an all-zero attention row
        and a zero interest vector (REMI's code would give it uniform weights over the padding).

    Args:
      num_interests: Number of interests ``K``.
      max_length: History length ``L``; inputs must have exactly this length (one position embedding
        per position).
      attention_units: Hidden size ``d_a`` of the attention MLP; ``None`` gives ``4 * d`` (ComiRec-SA).
      **kwargs: Passed to `keras.layers.Layer`.
    """

    def __init__(
        self,
        num_interests: int,
        max_length: int,
        attention_units: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if num_interests < 1:
            raise ValueError(f"`num_interests` must be >= 1, got {num_interests}")
        if max_length < 1:
            raise ValueError(f"`max_length` must be >= 1, got {max_length}")
        if attention_units is not None and attention_units < 1:
            raise ValueError(f"`attention_units` must be >= 1 or None, got {attention_units}")
        self.num_interests = num_interests
        self.max_length = max_length
        self.attention_units = attention_units

    def build(self, input_shape: tf.TensorShape) -> None:
        """Creates the position embeddings and the attention projections.

        Args:
          input_shape: Shape of ``history_embeddings``, ``(batch, max_length, dim)`` with a known ``dim``.
        """
        shape = tf.TensorShape(input_shape)
        self._check_history_shape(shape)
        dim = int(shape[-1])
        units = self.attention_units or 4 * dim
        self.position_embeddings = self.add_weight(
            name="position_embeddings",
            shape=(self.max_length, dim),
            initializer="glorot_uniform",
            trainable=True,
        )
        self.attention_hidden = keras.layers.Dense(units, activation="tanh", use_bias=False, name="w1")
        self.attention_logits = keras.layers.Dense(self.num_interests, use_bias=False, name="w2")
        self.attention_hidden.build(shape)
        self.attention_logits.build(shape[:-1].concatenate([units]))
        super().build(input_shape)

    def call(self, history_embeddings: tf.Tensor, mask: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """Computes the interests and their attention over the history.

        Args:
          history_embeddings: Item embeddings ``H``, float32 ``(batch, max_length, dim)``.
          mask: Valid positions, boolean or 0/1 ``(batch, max_length)``; padding is ``False``/0.

        Returns:
          A tuple ``(interests, attention)``: ``V`` of shape ``(batch, K, dim)`` and ``A`` of shape
          ``(batch, K, max_length)`` whose rows sum to 1 over the valid positions (0 for empty histories)
          and are exactly 0 at padding positions.
        """
        mask = tf.convert_to_tensor(mask)
        self._check_history_shape(history_embeddings.shape)
        _check_mask_shape(mask.shape, history_embeddings.shape)
        valid = tf.cast(mask, tf.bool)[:, tf.newaxis, :]  # (B, 1, L)

        # The attention MLP runs over the valid positions only (gathered, then scattered back): it is the
        # most expensive part of the tower and short histories are mostly padding.
        positions = tf.where(valid[:, 0, :])  # (M, 2) indices of the valid (user, position) pairs
        inputs = tf.gather_nd(history_embeddings + self.position_embeddings, positions)  # (M, d)
        valid_logits = self.attention_logits(self.attention_hidden(inputs))  # (M, K)
        shape = tf.stack(
            [tf.shape(history_embeddings, out_type=tf.int64)[0], self.max_length, self.num_interests]
        )
        logits = tf.transpose(tf.scatter_nd(positions, valid_logits, shape), [0, 2, 1])  # (B, K, L)
        logits = tf.where(valid, logits, tf.constant(-1e9, logits.dtype))
        attention = tf.nn.softmax(logits, axis=-1) * tf.cast(valid, logits.dtype)
        interests = tf.matmul(attention, history_embeddings)  # (B, K, d)
        return interests, attention

    def _check_history_shape(self, shape: tf.TensorShape) -> None:
        """Raises ValueError unless ``shape`` is ``(batch, max_length, dim)`` with a known ``dim``."""
        shape = tf.TensorShape(shape)
        if shape.rank != 3:
            raise ValueError(f"`history_embeddings` must have rank 3 (batch, length, dim), got shape {shape}")
        if shape[-1] is None:
            raise ValueError(
                f"`history_embeddings` must have a known last dimension (dim), got shape {shape}"
            )
        if shape[1] is not None and shape[1] != self.max_length:
            raise ValueError(
                f"`history_embeddings` must have length max_length={self.max_length}, got shape {shape}"
            )

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            {
                "num_interests": self.num_interests,
                "max_length": self.max_length,
                "attention_units": self.attention_units,
            }
        )
        return config


def _check_mask_shape(mask_shape: tf.TensorShape, history_shape: tf.TensorShape) -> None:
    """Raises ValueError unless the mask is ``(batch, length)`` and compatible with the history."""
    mask_shape = tf.TensorShape(mask_shape)
    if mask_shape.rank != 2 or not mask_shape.is_compatible_with(tf.TensorShape(history_shape)[:2]):
        raise ValueError(
            f"`mask` must have shape (batch, length) = {tf.TensorShape(history_shape)[:2]}, got shape {mask_shape}"
        )
