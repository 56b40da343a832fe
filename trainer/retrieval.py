"""Multi-interest retrieval: DMI Eq. 1 / Eq. 20, ``f(u, i) = max_k z_k . e_i``, and its top-N lists.

A user is represented by ``K`` interest vectors ``Z`` (``(K, d)``); an item's score is its best inner
product over the interests. This module is the one implementation of "rank every item by that score, leave
out the user's history, keep the first N" (:func:`top_n`), which the evaluator (through
``DMIModel.recommend``) and the exact servable (``trainer/export.py``) both run, and of the merge of
per-interest candidate lists that an approximate index returns (:func:`merge_candidates`, the ScaNN
servable's); both leave items out with the same step, :func:`exclude_items`. Ranking every item by the
max over interests is what the evaluation protocol's per-interest retrieval computes (each interest
retrieves its own top-N, the ``K * N`` candidates are merged by score, duplicates and the padding id
dropped, the first N kept); ``trainer/retrieval_test.py`` holds a plain numpy reference of that merge.

Item id 0 is the padding id of the item table (row 0 of the embeddings); real items are ``1..N-1``, and
only they are ever ranked.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf


ITEM_MAJOR_MAX_COLUMNS = 32
"""The most query vectors (batch x interests) scored item-major by :func:`score_items`.

With few query vectors, ``(N, d) x (d, B*K)`` (one pass over the item table, a thin output per item) is
1.6-2.2x faster on CPU than the batched ``(B, K, d) x (d, N)`` (measured under XLA at one thread: 12,101
items, batch 1: 1.5 vs 2.8 ms with ranking; 1M items: 43 vs 97 ms); from about 64 query vectors the
batched product is faster (batch 32: 10.5 vs 15.0 ms). See docs/performance.md, "Exact scoring".
"""


PER_QUERY_MAX_COLUMNS = 4
"""The most query vectors scored by :func:`score_items` as one matrix-vector product each."""

PER_QUERY_MAX_TABLE_BYTES = 4 * 2**20
"""The largest item table (``N x d x`` bytes per value) scored one query vector at a time.

A matrix-vector product compiles (under XLA on CPU) to a streaming loop over the table, where the thin
product ``(N, d) x (d, K)`` calls a general matrix product (Eigen's, which packs its operands into blocks
first: our reading of the gap, not measured). While the table stays in cache, ``K`` passes over it cost
less than the one product (measured under XLA
at one thread, 4 query vectors, p50 net of a call: 12,101 x 64 items 0.40 vs 0.65 ms, 25,000 items 1.1 vs
1.5 ms); once it must come from memory each pass costs what the one product does (35,000 items: 3.7 vs
2.4 ms; 1M: 110 vs 54 ms), and with 8 query vectors the product wins already at 12,101 items. 4 MiB keeps
the choice well inside the 6-9 MiB crossover measured on a 32 MiB-L3 machine. See docs/performance.md.
"""


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

    The same numbers come from one of three layouts, by the number of query vectors ``B * K`` and the
    table's size (all three measured on CPU under XLA; see the constants): one matrix-vector product per
    query vector (at most ``PER_QUERY_MAX_COLUMNS`` of them, a table of at most
    ``PER_QUERY_MAX_TABLE_BYTES``), item-major (at most ``ITEM_MAJOR_MAX_COLUMNS``), or user-major.
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
    batch, interests = user_interests.shape[0], user_interests.shape[1]
    table_bytes = None
    if item_embeddings.shape.is_fully_defined():
        table_bytes = item_embeddings.shape.num_elements() * item_embeddings.dtype.size
    small_table = table_bytes is not None and table_bytes <= PER_QUERY_MAX_TABLE_BYTES
    if batch is not None and interests is not None:
        columns = batch * interests
        if small_table and columns <= PER_QUERY_MAX_COLUMNS:
            return _per_query(user_interests, item_embeddings)
        layout = _item_major if columns <= ITEM_MAJOR_MAX_COLUMNS else _user_major
        return layout(user_interests, item_embeddings)
    # Batch unknown while tracing: the layout is chosen at run time. Under XLA every executable has a static
    # batch and the predicates are constants, so only the chosen branch runs; every branch is still
    # converted at every batch size, so each must be valid at any.
    columns = tf.shape(user_interests)[0] * tf.shape(user_interests)[1]

    def matrix_product() -> tf.Tensor:
        return tf.cond(
            columns <= ITEM_MAJOR_MAX_COLUMNS,
            lambda: _item_major(user_interests, item_embeddings),
            lambda: _user_major(user_interests, item_embeddings),
        )

    if not (small_table and interests is not None and interests <= PER_QUERY_MAX_COLUMNS):
        return matrix_product()
    def one_user() -> tf.Tensor:  # a batch-1 request: its K products one by one
        # A gather, not a reshape: XLA compiles both branches at every batch size, so this one must be
        # valid at any (it is taken at batch 1 only).
        return _per_query(tf.gather(user_interests, [0]), item_embeddings)

    return tf.cond(tf.shape(user_interests)[0] == 1, one_user, matrix_product)


def _item_major(user_interests: tf.Tensor, item_embeddings: tf.Tensor) -> tf.Tensor:
    """``score_items`` as ``(N, d) x (d, B*K)``, the max over each user's ``K`` columns, transposed."""
    batch, interests = tf.shape(user_interests)[0], tf.shape(user_interests)[1]
    queries = tf.reshape(user_interests, [batch * interests, tf.shape(user_interests)[2]])
    per_item = tf.linalg.matmul(item_embeddings, queries, transpose_b=True)  # (N, B*K)
    best = tf.reduce_max(tf.reshape(per_item, [-1, batch, interests]), axis=2)  # (N, B)
    return tf.transpose(best)


def _per_query(user_interests: tf.Tensor, item_embeddings: tf.Tensor) -> tf.Tensor:
    """``score_items`` as one ``(N, d) x (d,)`` product per query vector, the running max over each user's."""
    users = []
    for user in tf.unstack(user_interests):  # static batch and interests (PER_QUERY_MAX_COLUMNS at most)
        queries = tf.unstack(user)
        best = tf.linalg.matvec(item_embeddings, queries[0])
        for query in queries[1:]:
            best = tf.maximum(best, tf.linalg.matvec(item_embeddings, query))
        users.append(best)
    return tf.stack(users)


def _user_major(user_interests: tf.Tensor, item_embeddings: tf.Tensor) -> tf.Tensor:
    """``score_items`` as the batched ``(B, K, d) x (N, d)^T -> (B, K, N)``, then the max over interests."""
    per_interest = tf.linalg.matmul(user_interests, item_embeddings, transpose_b=True)
    return tf.reduce_max(per_interest, axis=1)


def top_n(
    user_interests: tf.Tensor,
    item_embeddings: tf.Tensor,
    n: int,
    exclude: tf.Tensor | None = None,
    check_exclude: bool = True,
) -> tuple[tf.Tensor, tf.Tensor]:
    """Retrieves each user's top-``n`` items ranked by ``max_k z_k . e_i`` (Eq. 20); id 0 is never ranked.

    Ties are broken towards the lower item id (``tf.math.top_k``). Works inside ``tf.function`` with
    an unknown batch size, and compiles with XLA (static shapes only: every ``exclude`` slot scatters).

    Args:
      user_interests: ``(B, K, d)`` float tensor.
      item_embeddings: ``(N, d)`` float tensor; row ``i`` embeds item id ``i``, row 0 is padding.
      n: How many items to return per user, ``1 <= n <= N - 1``.
      exclude: Optional ``(B, M)`` integer tensor of item ids to leave out per user (e.g. history
        items), in ``[0, N)``; the value 0 is padding of this tensor and excludes nothing. Excluded
        items score ``-inf``; they are only returned (with score ``-inf``, after every other item) if
        ``n`` exceeds the number of items left.
      check_exclude: Check at run time that ``exclude``'s ids are in ``[0, N)`` (assertions). XLA drops
        assertions, logging a warning for each one at every compilation, so a caller that compiles this
        with ids valid by construction (the serving graph, whose ids come from its own vocabulary lookup)
        passes False.

    Returns:
      ``(scores, ids)``: ``(B, n)`` scores in descending order and the matching ``(B, n)`` int32
      item ids, in ``[1, N)``.

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
    if num_rows is not None and n > num_rows - 1:
        raise ValueError(
            f"n={n} exceeds the {num_rows - 1} retrievable items (item_embeddings has {num_rows} "
            "rows, row 0 is padding and masked)."
        )

    # The padding id is never ranked: column j of `scores` is item id j + 1. The scores are sliced, not the
    # table: under XLA a slice of the table is a copy of it per call (at 1M items 3.7x the whole retrieval).
    scores = score_items(user_interests, item_embeddings)[:, 1:]
    if exclude is not None:
        exclude = tf.convert_to_tensor(exclude)
        _check_rank(exclude, 2, "exclude", "(batch, num_excluded)")
        if not exclude.dtype.is_integer:
            raise ValueError(f"exclude must hold integer item ids; got dtype {exclude.dtype}.")
        batch, exclude_batch = user_interests.shape[0], exclude.shape[0]
        if batch is not None and exclude_batch is not None and batch != exclude_batch:
            raise ValueError(f"exclude has batch size {exclude_batch} but user_interests has {batch}.")
        exclude = tf.cast(exclude, tf.int32)
        if check_exclude:
            tf.debugging.assert_non_negative(exclude, message="top_n: exclude holds a negative item id.")
            tf.debugging.assert_less(
                exclude, tf.shape(item_embeddings)[0], message="top_n: exclude holds an id >= num_items."
            )
        scores = exclude_items(scores, exclude)

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
    return values, indices + 1


def merge_candidates(
    scores: tf.Tensor, ids: tf.Tensor, exclude: tf.Tensor, n: int | tf.Tensor
) -> tuple[tf.Tensor, tf.Tensor]:
    """Merges per-interest candidate lists into one top-``n`` list (the protocol's merge; = Eq. 20).

    What an approximate index (the ScaNN servable's) returns is, per user, ``K`` lists of candidates, one
    per interest. Duplicates keep their best score; excluded ids and the padding id 0 are dropped. Given
    every interest's full ranking, the result is :func:`top_n`'s.

    Args:
      scores: ``(B, C)`` float candidate scores, the ``K`` per-interest lists concatenated.
      ids: ``(B, C)`` int32 candidate item ids.
      exclude: ``(B, M)`` int32 item ids to drop per user (0 = nothing).
      n: list length, at most ``C``.

    Returns:
      ``(scores, ids)`` of shape ``(B, n)``, best first; if fewer than ``n`` distinct candidates are left,
      the tail holds dropped candidates at score ``-inf``.
    """
    # Sort by score (best first), then stably by id: each run of equal ids starts with its best score.
    by_score = tf.argsort(scores, axis=1, direction="DESCENDING", stable=True)
    scores = tf.gather(scores, by_score, batch_dims=1)
    ids = tf.gather(ids, by_score, batch_dims=1)
    by_id = tf.argsort(ids, axis=1, stable=True)
    scores = tf.gather(scores, by_id, batch_dims=1)
    ids = tf.gather(ids, by_id, batch_dims=1)
    repeated = tf.concat([tf.zeros_like(ids[:, :1], tf.bool), ids[:, 1:] == ids[:, :-1]], axis=1)
    scores = tf.where(repeated | (ids == 0), tf.constant(-np.inf, scores.dtype), scores)
    scores = exclude_items(scores, tf.cast(exclude, ids.dtype), ids=ids)
    values, positions = tf.math.top_k(scores, k=n)
    return values, tf.gather(ids, positions, batch_dims=1)


def exclude_items(scores: tf.Tensor, exclude: tf.Tensor, ids: tf.Tensor | None = None) -> tf.Tensor:
    """The exclusion step of :func:`top_n` and :func:`merge_candidates`: excluded items score ``-inf``.

    Static shapes only, so that XLA compiles it: every slot of ``exclude`` scatters a minimum into some
    column, ``-inf`` where it excludes an item and ``+inf`` (no change) where it does not.

    Args:
      scores: ``(B, C)`` float scores.
      exclude: ``(B, M)`` int ids to exclude in each row; 0 is padding and excludes nothing. ``ids`` None:
        each in ``[0, C]``.
      ids: Optional ``(B, C)`` item id of each column, ascending in each row (candidates sorted by id,
        dtype of ``exclude``). None: column ``c`` is item id ``c + 1`` (the whole catalogue but padding).

    Returns:
      ``(B, C)`` ``scores`` with the column of every non-zero id in ``exclude[b]`` set to ``-inf`` in row
      ``b`` (with ``ids``: the first column holding the id; an id no column holds changes nothing).
    """
    if ids is None:
        columns, hit = tf.maximum(exclude - 1, 0), exclude > 0
    else:
        columns = tf.searchsorted(ids, exclude, side="left")  # (B, M): the first column >= each id.
        columns = tf.minimum(columns, tf.shape(scores)[1] - 1)
        hit = (exclude > 0) & (tf.gather(ids, columns, batch_dims=1) == exclude)
    rows = tf.repeat(tf.range(tf.shape(exclude)[0]), tf.shape(exclude)[1])
    slots = tf.stack([rows, tf.reshape(tf.cast(columns, tf.int32), [-1])], axis=1)
    infinity = tf.constant(np.inf, scores.dtype)
    return tf.tensor_scatter_nd_min(scores, slots, tf.where(tf.reshape(hit, [-1]), -infinity, infinity))
