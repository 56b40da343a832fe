"""Tests for trainer.sampled_softmax (Eq. 15-16 trained with a shared-negatives sampled softmax)."""

import trainer  # noqa: F401  (selects Keras 2 before TensorFlow is imported)

import numpy as np
import pytest
import tensorflow as tf

from trainer import sampled_softmax
from trainer.sampled_softmax import CandidateSample, SampledSoftmax, sampled_softmax_loss

NUM_ITEMS, DIM, BATCH = 50, 6, 8


def _inputs(seed: int):
    rng = np.random.default_rng(seed)
    users = rng.normal(size=(BATCH, DIM)).astype(np.float32)
    table = rng.normal(size=(NUM_ITEMS + 1, DIM)).astype(np.float32)
    targets = rng.integers(1, NUM_ITEMS + 1, size=BATCH).astype(np.int64)
    return users, table, targets


def _numpy_loss(users, table, targets, sampled, true_q, sampled_q, remove_hits=True, log_q=True):
    """Straightforward per-example reference: loop over examples, logsumexp over kept logits."""
    losses = []
    for b in range(len(targets)):
        pos = users[b] @ table[targets[b]] - (np.log(true_q[b]) if log_q else 0.0)
        negs = [
            users[b] @ table[s] - (np.log(q) if log_q else 0.0)
            for s, q in zip(sampled, sampled_q)
            if not (remove_hits and s == targets[b])
        ]
        logits = np.array([pos] + negs, dtype=np.float64)
        losses.append(np.log(np.sum(np.exp(logits - logits.max()))) + logits.max() - pos)
    return np.array(losses)


@pytest.mark.parametrize("sampler", ["log_uniform", "uniform"])
def test_equals_tf_nn_sampled_softmax_loss_for_the_same_candidates(sampler):
    users, table, targets = _inputs(0)
    loss_fn = SampledSoftmax(NUM_ITEMS, num_sampled=20, sampler=sampler)
    candidates = loss_fn.sample(targets, seed=3)
    ours = sampled_softmax_loss(users, targets, table, candidates)
    reference = tf.nn.sampled_softmax_loss(
        weights=table,
        biases=tf.zeros([NUM_ITEMS + 1]),
        labels=targets[:, None],
        inputs=users,
        num_sampled=20,
        num_classes=NUM_ITEMS + 1,
        sampled_values=tuple(candidates),
        remove_accidental_hits=True,
    )
    assert ours.shape == (BATCH,)
    np.testing.assert_allclose(ours.numpy(), reference.numpy(), rtol=1e-5, atol=1e-5)


def test_equals_tf_nn_sampled_softmax_loss_with_accidental_hits():
    users, table, targets = _inputs(1)
    # Hand-made candidates that contain the targets of examples 0 and 3.
    sampled = np.array([targets[0], 11, targets[3], 42, 7], dtype=np.int64)
    candidates = CandidateSample(
        sampled_ids=tf.constant(sampled),
        true_expected_count=tf.constant(np.linspace(0.1, 0.9, BATCH, dtype=np.float32)[:, None]),
        sampled_expected_count=tf.constant([0.5, 0.2, 0.3, 0.05, 0.7], dtype=tf.float32),
    )
    ours = sampled_softmax_loss(users, targets, table, candidates)
    reference = tf.nn.sampled_softmax_loss(
        table,
        tf.zeros([NUM_ITEMS + 1]),
        targets[:, None],
        users,
        5,
        NUM_ITEMS + 1,
        sampled_values=tuple(candidates),
    )
    np.testing.assert_allclose(ours.numpy(), reference.numpy(), rtol=1e-5, atol=1e-5)


def test_matches_a_numpy_reference_and_accidental_hits_contribute_nothing():
    users, table, targets = _inputs(2)
    targets[:2] = [5, 9]
    sampled = np.array([5, 13, 9, 21], dtype=np.int64)  # Hits example 0 (id 5) and example 1 (id 9).
    true_q = np.full((BATCH, 1), 0.25, np.float32)
    sampled_q = np.array([0.4, 0.1, 0.3, 0.2], np.float32)
    candidates = CandidateSample(tf.constant(sampled), tf.constant(true_q), tf.constant(sampled_q))
    ours = sampled_softmax_loss(users, targets, table, candidates).numpy()
    np.testing.assert_allclose(
        ours, _numpy_loss(users, table, targets, sampled, true_q[:, 0], sampled_q), rtol=1e-5
    )
    # Example 0 with the hit removed == example 0 against the other three negatives only.
    without_hit = CandidateSample(tf.constant(sampled[1:]), tf.constant(true_q), tf.constant(sampled_q[1:]))
    np.testing.assert_allclose(
        ours[0], sampled_softmax_loss(users, targets, table, without_hit).numpy()[0], rtol=1e-6
    )
    # Keeping accidental hits changes exactly the examples that have one.
    kept = sampled_softmax_loss(users, targets, table, candidates, remove_accidental_hits=False)
    changed = ~np.isclose(kept.numpy(), ours, rtol=1e-6)
    np.testing.assert_array_equal(changed, [True, True] + [False] * (BATCH - 2))
    np.testing.assert_allclose(
        kept.numpy(),
        _numpy_loss(users, table, targets, sampled, true_q[:, 0], sampled_q, remove_hits=False),
        rtol=1e-5,
    )


def test_log_q_correction_can_be_disabled():
    users, table, targets = _inputs(3)
    candidates = SampledSoftmax(NUM_ITEMS, 10).sample(targets, seed=1)
    plain = sampled_softmax_loss(users, targets, table, candidates, subtract_log_q=False)
    expected = _numpy_loss(
        users, table, targets, candidates.sampled_ids.numpy(), None, [None] * 10, log_q=False
    )
    np.testing.assert_allclose(plain.numpy(), expected, rtol=1e-5)


@pytest.mark.parametrize("sampler", ["log_uniform", "uniform"])
@pytest.mark.parametrize("unique", [True, False])
def test_padding_id_is_never_sampled_and_every_real_id_can_be(sampler, unique):
    num_items = 12
    loss_fn = SampledSoftmax(num_items, num_sampled=6, sampler=sampler, unique=unique)
    seen = set()
    for _ in range(100):
        ids = loss_fn.sample(tf.constant([1, num_items]), seed=None).sampled_ids.numpy()
        seen.update(ids.tolist())
    assert 0 not in seen
    assert seen == set(range(1, num_items + 1))  # Including the last id, num_items.


def test_log_uniform_expected_counts_follow_the_zipfian_law_on_id_minus_one():
    # With replacement, expected count = S * P(class) with P(c) = log((c + 2) / (c + 1)) / log(R + 1)
    # for class c = id - 1, i.e. P(id) = log((id + 1) / id) / log(num_items + 1): id 1 most likely.
    num_items, num_sampled = 40, 16
    loss_fn = SampledSoftmax(num_items, num_sampled, sampler="log_uniform", unique=False)
    targets = np.array([1, 2, 40], dtype=np.int64)
    candidates = loss_fn.sample(targets, seed=5)

    def expected(ids):
        ids = np.asarray(ids, dtype=np.float64)
        return num_sampled * np.log((ids + 1) / ids) / np.log(num_items + 1)

    np.testing.assert_allclose(candidates.true_expected_count.numpy()[:, 0], expected(targets), rtol=1e-5)
    np.testing.assert_allclose(
        candidates.sampled_expected_count.numpy(), expected(candidates.sampled_ids.numpy()), rtol=1e-5
    )


def test_all_items_uniformly_sampled_equals_the_full_softmax():
    # Uniform sampling of every item: Q is the same for every id, so -log Q shifts all logits by one
    # constant, and the target (an accidental hit among the samples) is counted once: Eq. 15 exactly.
    users, table, targets = _inputs(4)
    for subtract_log_q in (True, False):
        loss_fn = SampledSoftmax(
            NUM_ITEMS, num_sampled=NUM_ITEMS, sampler="uniform", subtract_log_q=subtract_log_q
        )
        ours = loss_fn(users, targets, table, seed=2).numpy()
        logits = users.astype(np.float64) @ table[1:].T.astype(np.float64)  # Real items 1..N only.
        full = np.log(np.exp(logits).sum(axis=1)) - logits[np.arange(BATCH), targets - 1]
        np.testing.assert_allclose(ours, full, rtol=1e-5)


def test_gradients_reach_user_vectors_and_only_the_used_item_rows():
    users, table, targets = _inputs(5)
    targets[:] = [1, 2, 3, 3, 4, 4, 4, 5]
    user_var, table_var = tf.Variable(users), tf.Variable(table)
    sampled = np.array([10, 20, 30], dtype=np.int64)
    candidates = CandidateSample(tf.constant(sampled), tf.fill([BATCH, 1], 0.3), tf.constant([0.3, 0.2, 0.1]))
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(sampled_softmax_loss(user_var, targets, table_var, candidates))
    user_grad, table_grad = tape.gradient(loss, [user_var, table_var])
    assert isinstance(table_grad, tf.IndexedSlices)  # Sparse update of the embedding table.
    table_grad = tf.convert_to_tensor(table_grad).numpy()
    assert np.all(np.abs(user_grad.numpy()).sum(axis=1) > 0)
    touched = set(targets.tolist()) | set(sampled.tolist())
    row_norms = np.abs(table_grad).sum(axis=1)
    assert all(row_norms[i] > 0 for i in touched)
    assert all(row_norms[i] == 0 for i in range(NUM_ITEMS + 1) if i not in touched)  # Row 0 included.
    # d loss_b / d u_b = sum_j softmax_j e_j - e_target, checked on example 0 in numpy.
    logits = np.array(
        [users[0] @ table[1] - np.log(0.3)]
        + [users[0] @ table[s] - np.log(q) for s, q in zip(sampled, [0.3, 0.2, 0.1])]
    )
    probs = np.exp(logits - logits.max())
    probs /= probs.sum()
    rows = table[[1, 10, 20, 30]]
    np.testing.assert_allclose(user_grad.numpy()[0], probs @ rows - table[1], rtol=1e-4, atol=1e-5)


def test_call_in_tf_function_with_unknown_batch():
    users, table, targets = _inputs(6)
    loss_fn = SampledSoftmax(NUM_ITEMS, num_sampled=16)
    table_var = tf.Variable(table)

    @tf.function(input_signature=[tf.TensorSpec([None, DIM]), tf.TensorSpec([None], tf.int64)])
    def step(u, t):
        return loss_fn(u, t, table_var)

    for size in (BATCH, 3):
        loss = step(users[:size], targets[:size])
        assert loss.shape == (size,)
        assert np.all(np.isfinite(loss.numpy())) and np.all(loss.numpy() > 0)


def test_argument_errors():
    users, table, targets = _inputs(7)
    with pytest.raises(ValueError, match="Unknown sampler"):
        SampledSoftmax(NUM_ITEMS, 10, sampler="zipf")
    with pytest.raises(ValueError, match="num_sampled must be a positive int"):
        SampledSoftmax(NUM_ITEMS, 0)
    with pytest.raises(ValueError, match="cannot draw that many distinct"):
        SampledSoftmax(NUM_ITEMS, NUM_ITEMS + 1)
    SampledSoftmax(NUM_ITEMS, NUM_ITEMS + 1, unique=False)  # With replacement it is fine.
    loss_fn = SampledSoftmax(NUM_ITEMS, 10)
    with pytest.raises(ValueError, match="expected num_items \\+ 1 = 51"):
        loss_fn(users, targets, table[1:])
    with pytest.raises(ValueError, match="user_vectors must have shape"):
        loss_fn(users[:, None], targets, table)
    with pytest.raises(ValueError, match="target_ids must be"):
        loss_fn(users, targets[:, None], table)
    with pytest.raises(ValueError, match="dim"):
        loss_fn(users[:, :3], targets, table)
    with pytest.raises(ValueError, match="batch size"):
        loss_fn(users[:3], targets, table)
    with pytest.raises(tf.errors.InvalidArgumentError, match="padding"):
        loss_fn(users, np.zeros(BATCH, np.int64), table)
    with pytest.raises(tf.errors.InvalidArgumentError, match="num_items"):
        loss_fn(users, np.full(BATCH, NUM_ITEMS + 1, np.int64), table)


@pytest.mark.parametrize("sampler", ["log_uniform", "uniform"])
@pytest.mark.parametrize("unique", [True, False])
def test_stateless_candidates_are_a_function_of_the_seed_with_tensorflows_distribution(sampler, unique):
    range_max, num_sampled = 50, 20
    seed = tf.constant([3, 4], tf.int64)
    first, tries = sampled_softmax.stateless_candidates(seed, num_sampled, range_max, sampler, unique)
    again, _ = sampled_softmax.stateless_candidates(seed, num_sampled, range_max, sampler, unique)
    other, _ = sampled_softmax.stateless_candidates(seed + 1, num_sampled, range_max, sampler, unique)
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)
    assert first.shape == (num_sampled,) and 0 <= int(tf.reduce_min(first)) and int(tf.reduce_max(first)) < range_max
    if unique:
        assert len(set(first.numpy())) == num_sampled and int(tries) >= num_sampled
    # Empirical inclusion frequencies over many seeds match the reported expected counts (for unique
    # sampling TF's formula 1 - (1 - p)^tries is itself approximate: tries depends on the draws).
    counts, expected = np.zeros(range_max), np.zeros(range_max)
    draws = 1500
    for i in range(draws):
        sampled, tries = sampled_softmax.stateless_candidates(tf.constant([i, 7], tf.int64), num_sampled, range_max, sampler, unique)
        np.add.at(counts, sampled.numpy(), 1)
        expected += sampled_softmax.expected_count(tf.range(range_max), tries, num_sampled, range_max, sampler).numpy()
    np.testing.assert_allclose(counts / draws, expected / draws, atol=0.06)


def test_a_stateless_seed_makes_the_loss_reproducible():
    loss = sampled_softmax.SampledSoftmax(num_items=40, num_sampled=10)
    users, targets = tf.random.stateless_normal([4, 8], [1, 2]), tf.constant([1, 5, 9, 40])
    table = tf.random.stateless_normal([41, 8], [3, 4])
    seed = tf.constant([5, 6], tf.int64)
    np.testing.assert_array_equal(loss(users, targets, table, seed=seed), loss(users, targets, table, seed=seed))
