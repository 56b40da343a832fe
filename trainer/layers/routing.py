"""REMI's routing regularization of multi-interest attention (Xie et al., RecSys 2023)."""

from __future__ import annotations

import tensorflow as tf


def routing_regularization(attention: tf.Tensor, embedding_dim: int) -> tf.Tensor:
    """Routing regularization ``RR`` of REMI, unweighted (the model multiplies it by ``rlambda``).

    Per user ``b`` with attention ``A_b`` of shape ``(K, L)``::

        C_b = A_b - mean_L(A_b)          # each row centred by its mean over the L positions
        S_b = C_b C_b^T / d              # (K, K)
        RR  = sum_b ||diag(S_b)||^2      # = sum_b sum_k S_b[k, k]^2

    ``diag(S_b)[k]`` is (up to ``L / d``) the variance of interest ``k``'s attention over positions, so RR
    penalizes attention concentrated on a few items (routing collapse).

    Choice: the mean runs over all ``L`` positions, padding included (REMI's ``attention.mean(-1)``, which
    the paper's numbers come from), not over the valid positions only. Padding entries of ``attention``
    must already be 0 (as `MultiInterestExtractor` produces them); this function applies no mask.

    Args:
      attention: Attention weights ``A``, float32 ``(batch, K, L)``, zero at padding positions.
      embedding_dim: Embedding size ``d`` (the divisor of ``S``).

    Returns:
      A float32 scalar: the sum over the batch (not the mean).

    Raises:
      ValueError: If ``attention`` does not have rank 3 or ``embedding_dim`` is not positive.
    """
    attention = tf.convert_to_tensor(attention, tf.float32)
    if attention.shape.rank != 3:
        raise ValueError(
            f"`attention` must have rank 3 (batch, num_interests, length), got shape {attention.shape}"
        )
    if embedding_dim < 1:
        raise ValueError(f"`embedding_dim` must be >= 1, got {embedding_dim}")
    centred = attention - tf.reduce_mean(attention, axis=-1, keepdims=True)
    # diag(C C^T)[k] is the squared norm of row k, so the (K, K) product is never formed.
    diagonal = tf.reduce_sum(tf.square(centred), axis=-1) / float(embedding_dim)  # (B, K)
    return tf.reduce_sum(tf.square(diagonal))
