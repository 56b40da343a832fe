"""Tests for the in-graph protocol batch sampler."""

import numpy as np

import trainer  # noqa: F401
from trainer import batches
from trainer.sequences import EncodedSequences


def _sequences():
    # User 0: items 1..12, user 1: items 20..25, user 2: a single item (never drawn).
    return EncodedSequences.from_index_lists(
        ["a", "b", "c"], [np.arange(1, 13), np.arange(20, 26), np.array([30])]
    )


def test_batches_follow_the_protocol_cut():
    sampler = batches.BatchSampler(_sequences(), batch_size=256, max_length=5, min_cut=4, seed=0)
    batch = {k: v.numpy() for k, v in sampler.sample(3).items()}
    assert batch["history"].shape == (256, 5) and batch["target"].shape == (256,)
    for history, target in zip(batch["history"], batch["target"]):
        valid = history[history > 0]
        assert 30 not in valid and target != 30
        base = 1 if target < 20 else 20
        cut = target - base  # 0-based position of the target in its user's sequence
        last = 11 if base == 1 else 5
        assert 4 <= cut <= last
        # History: the last <= 5 items before the cut, in order, left-aligned, zeros after.
        np.testing.assert_array_equal(valid, np.arange(base + max(0, cut - 5), base + cut))
        assert np.all(history[len(valid) :] == 0)
    # Every cut position is reachable for the long user.
    assert set(batch["target"][batch["target"] < 20]) == set(range(5, 13))


def test_batches_are_a_function_of_seed_and_step():
    sampler = batches.BatchSampler(_sequences(), batch_size=8, max_length=5, min_cut=4, seed=0)
    again = batches.BatchSampler(_sequences(), batch_size=8, max_length=5, min_cut=4, seed=0)
    other = batches.BatchSampler(_sequences(), batch_size=8, max_length=5, min_cut=4, seed=1)
    first = sampler.sample(10)
    np.testing.assert_array_equal(first["history"], again.sample(10)["history"])
    assert not np.array_equal(first["history"], sampler.sample(11)["history"])
    assert not np.array_equal(first["history"], other.sample(10)["history"])
    resumed = next(iter(sampler.dataset(start_step=10)))
    np.testing.assert_array_equal(first["target"], resumed["target"])


def test_short_users_are_cut_before_their_last_item():
    sequences = EncodedSequences.from_index_lists(["a"], [np.array([1, 2, 3])])
    batch = batches.BatchSampler(sequences, batch_size=64, max_length=5, min_cut=4, seed=0).sample(0)
    assert set(batch["target"].numpy()) == {3}
    np.testing.assert_array_equal(batch["history"].numpy()[0], [1, 2, 0, 0, 0])
