"""Tests for trainer.retrieval (Eq. 1 / Eq. 20 scoring and top-N)."""

import trainer  # noqa: F401  (selects Keras 2 before TensorFlow is imported)

import numpy as np
import pytest
import tensorflow as tf

from trainer.retrieval import merge_per_interest_top_n, score_items, top_n


def _random_case(seed: int, batch: int = 6, interests: int = 4, dim: int = 8, items: int = 300):
    rng = np.random.default_rng(seed)
    user_interests = rng.normal(size=(batch, interests, dim)).astype(np.float32)
    item_embeddings = rng.normal(size=(items, dim)).astype(np.float32)
    return user_interests, item_embeddings


def test_score_items_by_hand():
    # One user, two interests; three items.
    user = np.array([[[1.0, 0.0], [0.0, 2.0]]], dtype=np.float32)
    items = np.array([[3.0, 1.0], [-1.0, -1.0], [0.5, 4.0]], dtype=np.float32)
    # item 0: max(3, 2) = 3; item 1: max(-1, -2) = -1; item 2: max(0.5, 8) = 8.
    np.testing.assert_allclose(score_items(user, items).numpy(), [[3.0, -1.0, 8.0]])


def test_score_items_matches_numpy():
    user_interests, item_embeddings = _random_case(0)
    expected = np.einsum("bkd,nd->bkn", user_interests, item_embeddings).max(axis=1)
    np.testing.assert_allclose(
        score_items(user_interests, item_embeddings).numpy(), expected, rtol=1e-5, atol=1e-5
    )


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
    _, unmasked = top_n(user_interests, item_embeddings, n=3, mask_padding_id=False)
    np.testing.assert_array_equal(unmasked.numpy()[:, 0], 0)


def test_exclude_zero_is_a_no_op_and_excluded_items_fill_the_tail_at_minus_inf():
    user = np.array([[[1.0]]], dtype=np.float32)
    items = np.array([[9.0], [1.0], [3.0], [2.0], [5.0]], dtype=np.float32)  # Ids 0..4, 0 = padding.
    scores, ids = top_n(user, items, n=4, exclude=np.array([[0, 0]]))
    np.testing.assert_array_equal(ids.numpy(), [[4, 2, 3, 1]])
    np.testing.assert_allclose(scores.numpy(), [[5.0, 3.0, 2.0, 1.0]])
    scores, ids = top_n(user, items, n=4, exclude=np.array([[4, 0, 2]]))
    np.testing.assert_array_equal(ids.numpy()[0, :2], [3, 1])
    assert np.all(np.isneginf(scores.numpy()[0, 2:]))
    # Without padding masking, 0 in exclude still excludes nothing: padding (score 9) comes first.
    _, ids = top_n(user, items, n=2, exclude=np.array([[0]]), mask_padding_id=False)
    np.testing.assert_array_equal(ids.numpy(), [[0, 4]])


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
    top_n(user_interests, item_embeddings, n=20, mask_padding_id=False)  # Fine without masking.
    with pytest.raises(ValueError, match="positive int"):
        top_n(user_interests, item_embeddings, n=0)
    with pytest.raises(ValueError, match="exclude must have rank 2"):
        top_n(user_interests, item_embeddings, n=5, exclude=np.array([1, 2]))
    with pytest.raises(ValueError, match="exclude has batch size 2"):
        top_n(user_interests, item_embeddings, n=5, exclude=np.ones((2, 3), np.int32))
    with pytest.raises(tf.errors.InvalidArgumentError, match="id >= num_items"):
        top_n(user_interests, item_embeddings, n=5, exclude=np.full((6, 1), 20))
