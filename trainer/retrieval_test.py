"""Tests for trainer.retrieval (Eq. 1 / Eq. 20 scoring, top-N, the merge of per-interest candidates)."""

import trainer  # noqa: F401  (selects Keras 2 before TensorFlow is imported)

import numpy as np
import pytest
import tensorflow as tf

from trainer import retrieval
from trainer.retrieval import exclude_items, merge_candidates, score_items, top_n


def _random_case(seed: int, batch: int = 6, interests: int = 4, dim: int = 8, items: int = 300):
    rng = np.random.default_rng(seed)
    user_interests = rng.normal(size=(batch, interests, dim)).astype(np.float32)
    item_embeddings = rng.normal(size=(items, dim)).astype(np.float32)
    return user_interests, item_embeddings


def merge_per_interest_top_n(
    user_interests: np.ndarray, item_embeddings: np.ndarray, n: int, exclude: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Reference (numpy, loops) of the protocol's per-interest retrieval and merge.

    For each user, each interest ``k`` retrieves its own top-``n`` items by ``z_k . e_i`` from an index
    that holds every retrievable item (all ids except 0 and the excluded ones); the ``K * n`` (id, score)
    candidates are sorted by score (descending, stable), duplicate ids dropped (keeping the first, i.e.
    best, score), and the first ``n`` kept. This is what ComiRec/REMI's evaluation does with a faiss
    inner-product index, except that their index also holds row 0 and they drop id 0 after merging, which
    gives the same list unless row 0 is in some interest's top-``n``. The result equals ``top_n`` (Eq. 20):
    that identity is what this reference is for.

    Args:
      user_interests: ``(B, K, d)`` array.
      item_embeddings: ``(N, d)`` array, row 0 = padding.
      n: Items per user.
      exclude: Optional ``(B, M)`` int ids removed from user ``b``'s index; 0 is padding (no-op).

    Returns:
      ``(scores, ids)``: ``(B, n)`` float64 merged scores (descending) and ``(B, n)`` int64 ids. If fewer
      than ``n`` items are retrievable the tail is filled with id -1 and score -inf.
    """
    user_interests = np.asarray(user_interests, dtype=np.float64)
    item_embeddings = np.asarray(item_embeddings, dtype=np.float64)
    batch = user_interests.shape[0]
    out_scores = np.full((batch, n), -np.inf)
    out_ids = np.full((batch, n), -1, dtype=np.int64)
    for b in range(batch):
        retrievable = np.ones(len(item_embeddings), dtype=bool)
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
        seen: set[int] = set()
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


def test_score_items_by_hand():
    # One user, two interests; three items.
    user = np.array([[[1.0, 0.0], [0.0, 2.0]]], dtype=np.float32)
    items = np.array([[3.0, 1.0], [-1.0, -1.0], [0.5, 4.0]], dtype=np.float32)
    # item 0: max(3, 2) = 3; item 1: max(-1, -2) = -1; item 2: max(0.5, 8) = 8.
    np.testing.assert_allclose(score_items(user, items).numpy(), [[3.0, -1.0, 8.0]])


# Every layout: one product per query vector (1 x 4, 2 x 2 columns), item-major (6 x 4), and past
# ITEM_MAJOR_MAX_COLUMNS the batched product (40 x 4).
@pytest.mark.parametrize("batch, interests", [(1, 4), (2, 2), (6, 4), (40, 4)])
def test_score_items_matches_numpy(batch, interests):
    rng = np.random.default_rng(batch)
    user_interests = rng.standard_normal((batch, interests, 8)).astype(np.float32)
    item_embeddings = rng.standard_normal((300, 8)).astype(np.float32)
    expected = np.einsum("bkd,nd->bkn", user_interests, item_embeddings).max(axis=1)
    np.testing.assert_allclose(
        score_items(user_interests, item_embeddings).numpy(), expected, rtol=1e-5, atol=1e-5
    )
    # Traced with an unknown batch (the exported functions' signature), eagerly and under XLA.
    for jit_compile in (False, True):
        traced = tf.function(
            score_items,
            input_signature=[
                tf.TensorSpec([None, interests, 8], tf.float32),
                tf.TensorSpec([300, 8], tf.float32),
            ],
            jit_compile=jit_compile,
        )
        np.testing.assert_allclose(
            traced(user_interests, item_embeddings).numpy(), expected, rtol=1e-5, atol=1e-5
        )


def _scores_per_query(batch: int | None, interests: int, items: int) -> bool:
    """Whether ``score_items`` traced at these shapes (d = 64) holds a matrix-vector product."""
    specs = [tf.TensorSpec([batch, interests, 64], tf.float32), tf.TensorSpec([items, 64], tf.float32)]
    graph = tf.function(score_items).get_concrete_function(*specs).graph
    functions = [graph, *(f.graph for f in graph._functions.values() if hasattr(f, "graph"))]
    return any("MatVec" in op.name for g in functions for op in g.get_operations())


def test_score_items_takes_one_product_per_query_for_few_queries_on_a_small_table():
    # The largest table scored per query: PER_QUERY_MAX_TABLE_BYTES of float32 rows of 64.
    largest = retrieval.PER_QUERY_MAX_TABLE_BYTES // (64 * 4)
    assert _scores_per_query(1, 4, largest) and _scores_per_query(2, 2, 12_101)
    assert _scores_per_query(None, 4, 12_101)  # the batch-1 branch of an unknown batch
    assert not _scores_per_query(1, 4, largest + 1)  # a table past the limit
    assert not _scores_per_query(2, 4, 12_101)  # 8 query vectors
    assert not _scores_per_query(None, 8, 12_101)  # unknown batch, 8 interests: never 4 columns or fewer
    assert not _scores_per_query(1, 4, None)  # a table of unknown size


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_top_n_equals_the_per_interest_merge(seed):
    user_interests, item_embeddings = _random_case(seed)
    scores, ids = top_n(user_interests, item_embeddings, n=25)
    ref_scores, ref_ids = merge_per_interest_top_n(user_interests, item_embeddings, n=25)
    assert ids.dtype == tf.int32 and ids.shape == (6, 25)
    np.testing.assert_array_equal(ids.numpy(), ref_ids)
    np.testing.assert_allclose(scores.numpy(), ref_scores, rtol=1e-5, atol=1e-5)


def test_top_n_equals_the_merge_with_exclusion():
    user_interests, item_embeddings = _random_case(4)
    rng = np.random.default_rng(4)
    # Exclude the 5 best items of each user plus random ones; 0 entries are padding.
    _, best = top_n(user_interests, item_embeddings, n=5)
    exclude = np.concatenate(
        [best.numpy(), rng.integers(1, 300, size=(6, 7)), np.zeros((6, 3), np.int64)], axis=1
    )
    scores, ids = top_n(user_interests, item_embeddings, n=20, exclude=exclude)
    ref_scores, ref_ids = merge_per_interest_top_n(user_interests, item_embeddings, 20, exclude=exclude)
    np.testing.assert_array_equal(ids.numpy(), ref_ids)
    np.testing.assert_allclose(scores.numpy(), ref_scores, rtol=1e-5, atol=1e-5)
    for row, excluded in zip(ids.numpy(), exclude):
        assert not set(row.tolist()) & set(excluded[excluded > 0].tolist())


def test_padding_id_is_never_returned():
    user_interests, item_embeddings = _random_case(5, items=30)
    item_embeddings[0] = 100.0 * np.abs(user_interests).sum(axis=(0, 1))  # Best item by far.
    _, ids = top_n(user_interests, item_embeddings, n=29)  # Every real item.
    assert not np.any(ids.numpy() == 0)
    assert all(sorted(row) == list(range(1, 30)) for row in ids.numpy().tolist())
    # Unmasked, padding would rank first for every user.
    np.testing.assert_array_equal(np.argmax(score_items(user_interests, item_embeddings), axis=1), 0)


def test_exclude_zero_is_a_no_op_and_excluded_items_fill_the_tail_at_minus_inf():
    user = np.array([[[1.0]]], dtype=np.float32)
    items = np.array([[9.0], [1.0], [3.0], [2.0], [5.0]], dtype=np.float32)  # Ids 0..4, 0 = padding.
    scores, ids = top_n(user, items, n=4, exclude=np.array([[0, 0]]))
    np.testing.assert_array_equal(ids.numpy(), [[4, 2, 3, 1]])
    np.testing.assert_allclose(scores.numpy(), [[5.0, 3.0, 2.0, 1.0]])
    scores, ids = top_n(user, items, n=4, exclude=np.array([[4, 0, 2]]))
    np.testing.assert_array_equal(ids.numpy()[0, :2], [3, 1])
    assert np.all(np.isneginf(scores.numpy()[0, 2:]))
    np.testing.assert_array_equal(ids.numpy()[0, 2:], [2, 4])  # The excluded items, by id.


def test_single_interest_is_plain_dot_product_ranking():
    user_interests, item_embeddings = _random_case(6, interests=1)
    scores, ids = top_n(user_interests, item_embeddings, n=10)
    dots = user_interests[:, 0, :] @ item_embeddings.T
    expected_ids = np.argsort(-dots[:, 1:], axis=1, kind="stable")[:, :10] + 1
    np.testing.assert_array_equal(ids.numpy(), expected_ids)
    np.testing.assert_allclose(
        scores.numpy(), np.take_along_axis(dots, expected_ids, axis=1), rtol=1e-5, atol=1e-5
    )


def test_works_in_tf_function_with_unknown_batch_and_item_count():
    user_interests, item_embeddings = _random_case(7)

    @tf.function(
        input_signature=[
            tf.TensorSpec([None, 4, 8], tf.float32),
            tf.TensorSpec([None, 8], tf.float32),
            tf.TensorSpec([None, None], tf.int64),
        ]
    )
    def retrieve(interests, items, exclude):
        return top_n(interests, items, n=15, exclude=exclude)

    exclude = np.array([[3, 0], [7, 9], [0, 0], [1, 2], [5, 5], [299, 0]])
    scores, ids = retrieve(user_interests, item_embeddings, exclude)
    eager_scores, eager_ids = top_n(user_interests, item_embeddings, n=15, exclude=exclude)
    np.testing.assert_array_equal(ids.numpy(), eager_ids.numpy())
    np.testing.assert_allclose(scores.numpy(), eager_scores.numpy())
    _, ids = retrieve(user_interests[:2], item_embeddings, exclude[:2])  # Another batch size.
    assert ids.shape == (2, 15)
    with pytest.raises(tf.errors.InvalidArgumentError, match="n exceeds"):
        retrieve(user_interests, item_embeddings[:10], np.zeros_like(exclude))


def test_shape_errors():
    user_interests, item_embeddings = _random_case(8, items=20)
    with pytest.raises(ValueError, match="user_interests must have rank 3"):
        top_n(user_interests[:, 0], item_embeddings, n=5)
    with pytest.raises(ValueError, match="item_embeddings must have rank 2"):
        score_items(user_interests, item_embeddings[None])
    with pytest.raises(ValueError, match="Embedding sizes differ"):
        score_items(user_interests, item_embeddings[:, :4])
    with pytest.raises(ValueError, match="n=20 exceeds the 19 retrievable items"):
        top_n(user_interests, item_embeddings, n=20)
    top_n(user_interests, item_embeddings, n=19)  # Every real item.
    with pytest.raises(ValueError, match="positive int"):
        top_n(user_interests, item_embeddings, n=0)
    with pytest.raises(ValueError, match="exclude must have rank 2"):
        top_n(user_interests, item_embeddings, n=5, exclude=np.array([1, 2]))
    with pytest.raises(ValueError, match="exclude has batch size 2"):
        top_n(user_interests, item_embeddings, n=5, exclude=np.ones((2, 3), np.int32))
    with pytest.raises(tf.errors.InvalidArgumentError, match="id >= num_items"):
        top_n(user_interests, item_embeddings, n=5, exclude=np.full((6, 1), 20))


def test_a_compiled_caller_can_leave_out_the_exclusion_checks():
    user_interests, item_embeddings = _random_case(8, items=20)
    exclude = np.array([[3, 0]] * 6, np.int32)
    spec = tf.TensorSpec([None, 2], tf.int32)

    def retrieve(check: bool):
        return lambda x: top_n(user_interests, item_embeddings, n=5, exclude=x, check_exclude=check)

    def graph_ops(check: bool) -> set[str]:
        graph = tf.function(retrieve(check)).get_concrete_function(spec).graph
        return {op.type for op in graph.get_operations()}

    assert "Assert" in graph_ops(True) and "Assert" not in graph_ops(False)
    compiled = tf.function(retrieve(False), jit_compile=True)
    for got, want in zip(compiled(exclude), top_n(user_interests, item_embeddings, n=5, exclude=exclude)):
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-6)


def test_merge_candidates_keeps_best_score_and_drops_excluded():
    scores = tf.constant([[5.0, 4.0, 3.0, 4.5, 2.0, 1.0]])
    indices = tf.constant([[7, 3, 9, 7, 0, 4]])
    values, ids = merge_candidates(scores, indices, tf.constant([[9, 0]]), 3)
    np.testing.assert_array_equal(ids, [[7, 3, 4]])
    np.testing.assert_array_equal(values, [[5.0, 4.0, 1.0]])


@pytest.mark.parametrize("per_interest", [299, 40])
def test_merge_of_per_interest_lists_equals_top_n(per_interest):
    """Each interest's best ``n + M`` candidates are enough: after exclusion ``n`` distinct ones remain."""
    user_interests, item_embeddings = _random_case(9)
    rng = np.random.default_rng(9)
    exclude = np.concatenate([rng.integers(1, 300, size=(6, 8)), np.zeros((6, 2), np.int64)], axis=1)
    per_item = tf.linalg.matmul(user_interests, item_embeddings[1:], transpose_b=True)  # (B, K, N - 1)
    candidates, positions = tf.math.top_k(per_item, k=per_interest)
    scores, ids = tf.reshape(candidates, [6, -1]), tf.reshape(positions + 1, [6, -1])
    values, ids = merge_candidates(scores, ids, tf.constant(exclude, tf.int32), 30)
    expected_values, expected_ids = top_n(user_interests, item_embeddings, 30, exclude=exclude)
    np.testing.assert_array_equal(ids.numpy(), expected_ids.numpy())
    np.testing.assert_allclose(values.numpy(), expected_values.numpy(), rtol=1e-6)


def test_exclude_items_by_column_and_in_sorted_candidates():
    scores = tf.constant([[1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 8.0]])
    # Column c is item id c + 1; 0 excludes nothing.
    out = exclude_items(scores, tf.constant([[3, 0], [4, 4]])).numpy()
    np.testing.assert_array_equal(out, [[1.0, 2.0, -np.inf, 4.0], [5.0, 6.0, 7.0, -np.inf]])
    # Candidate ids ascending per row; the first column of a repeated id; ids not present are no-ops.
    ids = tf.constant([[2, 5, 5, 9], [1, 4, 6, 8]])
    out = exclude_items(scores, tf.constant([[5, 7], [8, 10]]), ids=ids).numpy()
    np.testing.assert_array_equal(out, [[1.0, -np.inf, 3.0, 4.0], [5.0, 6.0, 7.0, -np.inf]])
