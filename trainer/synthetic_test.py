"""Tests for the synthetic log generator."""

import collections
import dataclasses

import numpy as np
import pytest

from trainer import synthetic

SMALL = synthetic.SyntheticConfig(users=300, items=200, topics=10, seed=3)


def test_same_seed_same_log_other_seed_other_log():
    first = list(synthetic.generate(SMALL))
    assert first == list(synthetic.generate(SMALL))
    assert first != list(synthetic.generate(dataclasses.replace(SMALL, seed=4)))


def test_sizes_and_lengths():
    events = list(synthetic.generate(SMALL))
    lengths = collections.Counter(e.user_id for e in events)
    assert len(lengths) == SMALL.users
    assert min(lengths.values()) >= SMALL.min_length
    assert max(lengths.values()) <= SMALL.max_length
    assert abs(np.mean(list(lengths.values())) - SMALL.mean_length) < 2.5
    assert {e.item_id for e in events} <= {f"i{i}" for i in range(SMALL.items)}
    for user_events in _by_user(events).values():
        times = [e.timestamp for e in user_events]
        assert times == sorted(times)


def _by_user(events):
    users = collections.defaultdict(list)
    for e in events:
        users[e.user_id].append(e)
    return users


def test_users_mix_few_topics_and_popularity_is_skewed():
    """A user's items come from a few topics: far fewer distinct items than a uniform draw would give."""
    events = list(synthetic.generate(SMALL))
    counts = np.array(sorted(collections.Counter(e.item_id for e in events).values(), reverse=True))
    # Skew: the top 10% of items take a much larger share than 10% of the events.
    assert counts[: len(counts) // 10].sum() / counts.sum() > 0.3
    # Co-occurrence structure: two events of the same user share a topic, so the same user's items
    # repeat much more than under independent popularity-weighted draws.
    rng = np.random.default_rng(0)
    popularity = counts / counts.sum()
    repeats, expected = [], []
    for user_events in _by_user(events).values():
        items = [e.item_id for e in user_events]
        repeats.append(len(items) - len(set(items)))
        draws = rng.choice(len(popularity), size=len(items), p=popularity)
        expected.append(len(draws) - len(set(draws)))
    assert np.mean(repeats) > 1.5 * np.mean(expected)


def test_invalid_configs_are_rejected():
    with pytest.raises(ValueError, match="min_length"):
        synthetic.SyntheticConfig(min_length=3)
    with pytest.raises(ValueError, match="topics"):
        synthetic.SyntheticConfig(items=5, topics=10)
