"""Multi-interest retrieval scoring: DMI Eq. 1 / Eq. 20, ``f(u, i) = max_k z_k . e_i``.

A user is represented by ``K`` interest vectors ``Z`` (``(K, d)``); an item's score is its best inner
product over the interests. Ranking every item by that score is what the evaluation protocol's
per-interest retrieval computes (each interest retrieves its own top-N, the ``K * N`` candidates are
merged by score, duplicates and the padding id dropped, the first N kept); ``merge_per_interest_top_n``
is a plain numpy implementation of that merge, kept as the reference the TensorFlow path is tested
against.

Item id 0 is the padding id of the item table (row 0 of the embeddings); real items are ``1..N-1``.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf


def _check_rank(tensor: tf.Tensor, rank: int, name: str, layout: str) -> None:
    """Raises ValueError unless ``tensor`` has the static rank ``rank``."""
    if tensor.shape.rank is None:
        raise ValueError(f"{name} must have a known rank {rank} {layout}; got unknown rank.")
    if tensor.shape.rank != rank:
        raise ValueError(f"{name} must have rank {rank} {layout}; got shape {tensor.shape}.")


def score_items(user_interests: tf.Tensor, item_embeddings: tf.Tensor) -> tf.Tensor:
    """Scores every item for every user by its best-matching interest (Eq. 1 / Eq. 20).

    Args:
      user_interests: ``(B, K, d)`` float tensor, ``K`` interest vectors per user.
      item_embeddings: ``(N, d)`` float tensor, one row per item (row 0 = padding, scored like any other).

    Returns:
      ``(B, N)`` tensor, ``scores[b, i] = max_k user_interests[b, k] . item_embeddings[i]``.

    Raises:
      ValueError: If the ranks are not 3 and 2, or the static embedding sizes differ.
    """
    user_interests = tf.convert_to_tensor(user_interests)
    item_embeddings = tf.convert_to_tensor(item_embeddings, dtype=user_interests.dtype)
    _check_rank(user_interests, 3, "user_interests", "(batch, num_interests, dim)")
    _check_rank(item_embeddings, 2, "item_embeddings", "(num_items, dim)")
    dim, item_dim = user_interests.shape[-1], item_embeddings.shape[-1]
    if dim is not None and item_dim is not None and dim != item_dim:
        raise ValueError(
            f"Embedding sizes differ: user_interests has dim {dim} (shape {user_interests.shape}) "
            f"but item_embeddings has dim {item_dim} (shape {item_embeddings.shape})."
        )
    # (B, K, d) x (N, d)^T -> (B, K, N): one batched matmul, then the max over interests.
    per_interest = tf.linalg.matmul(user_interests, item_embeddings, transpose_b=True)
    return tf.reduce_max(per_interest, axis=1)


def top_n(
    user_interests: tf.Tensor,
    item_embeddings: tf.Tensor,
    n: int,
    exclude: tf.Tensor | None = None,
    mask_padding_id: bool = True,
) -> tuple[tf.Tensor, tf.Tensor]:
    """Retrieves each user's top-``n`` items ranked by ``max_k z_k . e_i`` (Eq. 20).

    Ties are broken towards the lower item id (``tf.math.top_k``). Works inside ``tf.function`` with
    an unknown batch size.

    Args:
      user_interests: ``(B, K, d)`` float tensor.
      item_embeddings: ``(N, d)`` float tensor; row ``i`` embeds item id ``i``, row 0 is padding.
      n: How many items to return per user, ``1 <= n <= N`` (``<= N - 1`` when ``mask_padding_id``).
      exclude: Optional ``(B, M)`` integer tensor of item ids to leave out per user (e.g. history
        items), in ``[0, N)``; the value 0 is padding of this tensor and excludes nothing. Excluded
        items score ``-inf``; they are only returned (with score ``-inf``, after every other item) if
        ``n`` exceeds the number of items left.
      mask_padding_id: If True (default) item id 0 is never scored nor returned.

    Returns:
      ``(scores, ids)``: ``(B, n)`` scores in descending order and the matching ``(B, n)`` int32
      item ids.

    Raises:
      ValueError: On a wrong rank, mismatched static embedding sizes or batch sizes, or an ``n``
        outside the valid range (checked statically when ``N`` is known, else at run time).
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n must be a positive int; got {n!r}.")
    n = int(n)
    user_interests = tf.convert_to_tensor(user_interests)
    item_embeddings = tf.convert_to_tensor(item_embeddings, dtype=user_interests.dtype)
    _check_rank(item_embeddings, 2, "item_embeddings", "(num_items, dim)")
    num_rows = item_embeddings.shape[0]
    offset = 1 if mask_padding_id else 0
    if num_rows is not None and n > num_rows - offset:
        raise ValueError(
            f"n={n} exceeds the {num_rows - offset} retrievable items (item_embeddings has {num_rows} "
            f"rows{', row 0 is padding and masked' if mask_padding_id else ''})."
        )

    # Masking the padding id by not scoring row 0 at all: column j of `scores` is item id j + offset.
    scores = score_items(user_interests, item_embeddings[1:] if mask_padding_id else item_embeddings)

    if exclude is not None:
        exclude = tf.convert_to_tensor(exclude)
        _check_rank(exclude, 2, "exclude", "(batch, num_excluded)")
        if not exclude.dtype.is_integer:
            raise ValueError(f"exclude must hold integer item ids; got dtype {exclude.dtype}.")
        batch, exclude_batch = user_interests.shape[0], exclude.shape[0]
        if batch is not None and exclude_batch is not None and batch != exclude_batch:
            raise ValueError(f"exclude has batch size {exclude_batch} but user_interests has {batch}.")
        scores = _exclude_items(scores, tf.cast(exclude, tf.int32), offset, tf.shape(item_embeddings)[0])

    if num_rows is None:
        # A control dependency, so that the check fails before top_k's own, less helpful error (in a
        # tf.function an assertion is otherwise unordered with respect to the ops after it).
        check = tf.debugging.assert_less_equal(
            n,
            tf.shape(scores)[1],
            message="top_n: n exceeds the number of retrievable items.",
        )
        with tf.control_dependencies([check]):
            scores = tf.identity(scores)
    values, indices = tf.math.top_k(scores, k=n, sorted=True)
    return values, indices + offset


def _exclude_items(scores: tf.Tensor, exclude: tf.Tensor, offset: int, num_rows: tf.Tensor) -> tf.Tensor:
    """Sets ``scores[b, id - offset] = -inf`` for every non-zero ``id`` in ``exclude[b]``.

    Args:
      scores: ``(B, N - offset)`` scores; column ``j`` is item id ``j + offset``.
      exclude: ``(B, M)`` int32 ids, 0 = nothing.
      offset: 1 if row 0 (padding) was dropped from ``scores``, else 0.
      num_rows: ``N``, the number of item ids.

    Returns:
      ``scores`` with the excluded entries set to ``-inf``.
    """
    tf.debugging.assert_non_negative(exclude, message="top_n: exclude holds a negative item id.")
    tf.debugging.assert_less(exclude, num_rows, message="top_n: exclude holds an id >= num_items.")
    rows = tf.broadcast_to(tf.range(tf.shape(exclude)[0])[:, None], tf.shape(exclude))
    keep = exclude > 0
    indices = tf.stack([tf.boolean_mask(rows, keep), tf.boolean_mask(exclude, keep) - offset], axis=1)
    updates = tf.fill(tf.shape(indices)[:1], tf.constant(-np.inf, dtype=scores.dtype))
    return tf.tensor_scatter_nd_update(scores, indices, updates)


def merge_per_interest_top_n(
    user_interests: np.ndarray,
    item_embeddings: np.ndarray,
    n: int,
    exclude: np.ndarray | None = None,
    mask_padding_id: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Reference (numpy, loops) of the protocol's per-interest retrieval and merge.

    For each user, each interest ``k`` retrieves its own top-``n`` items by ``z_k . e_i`` from an index
    that holds every retrievable item (all ids except the excluded ones, and except 0 when
    ``mask_padding_id``); the ``K * n`` (id, score) candidates are sorted by score (descending, stable),
    duplicate ids dropped (keeping the first, i.e. best, score), and the first ``n`` kept. This is what
    ComiRec/REMI's evaluation does with a faiss inner-product index, except that their index also holds
    row 0 and they drop id 0 after merging, which gives the same list unless row 0 is in some
    interest's top-``n``. The result equals ``top_n`` (Eq. 20) — that identity is what this function is
    for; it is slow and meant for tests and benchmarks.

    Args:
      user_interests: ``(B, K, d)`` array.
      item_embeddings: ``(N, d)`` array, row 0 = padding.
      n: Items per user.
      exclude: Optional ``(B, M)`` int ids removed from user ``b``'s index; 0 is padding (no-op).
      mask_padding_id: If True id 0 is not retrievable.

    Returns:
      ``(scores, ids)``: ``(B, n)`` float64 merged scores (descending) and ``(B, n)`` int64 ids. If fewer
      than ``n`` items are retrievable the tail is filled with id -1 and score -inf.

    Raises:
      ValueError: On wrong ranks or mismatched shapes.
    """
    user_interests = np.asarray(user_interests, dtype=np.float64)
    item_embeddings = np.asarray(item_embeddings, dtype=np.float64)
    if user_interests.ndim != 3:
        raise ValueError(f"user_interests must be (B, K, d); got shape {user_interests.shape}.")
    if item_embeddings.ndim != 2 or item_embeddings.shape[1] != user_interests.shape[2]:
        raise ValueError(
            f"item_embeddings must be (N, {user_interests.shape[2]}); got shape {item_embeddings.shape}."
        )
    if exclude is not None:
        exclude = np.asarray(exclude)
        if exclude.ndim != 2 or exclude.shape[0] != user_interests.shape[0]:
            raise ValueError(f"exclude must be ({user_interests.shape[0]}, M); got shape {exclude.shape}.")
    batch = user_interests.shape[0]
    num_items = item_embeddings.shape[0]
    out_scores = np.full((batch, n), -np.inf)
    out_ids = np.full((batch, n), -1, dtype=np.int64)
    for b in range(batch):
        retrievable = np.ones(num_items, dtype=bool)
        if mask_padding_id:
            retrievable[0] = False
        if exclude is not None:
            retrievable[exclude[b][exclude[b] != 0]] = False
        index_ids = np.flatnonzero(retrievable)
        index = item_embeddings[index_ids]
        candidates = []
        for interest in user_interests[b]:
            scores = index @ interest
            best = np.argsort(-scores, kind="stable")[:n]
            candidates.extend(zip(scores[best].tolist(), index_ids[best].tolist()))
        candidates.sort(key=lambda pair: -pair[0])  # Stable: equal scores keep retrieval order.
        seen: set = set()
        kept = 0
        for score, item in candidates:
            if item in seen:
                continue
            seen.add(item)
            out_scores[b, kept] = score
            out_ids[b, kept] = item
            kept += 1
            if kept == n:
                break
    return out_scores, out_ids
