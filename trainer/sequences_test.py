"""Tests for sequences, the vocabulary, the user split and evaluation cuts."""

import collections

import numpy as np
import pytest

from trainer import data_schema, sequences
from trainer.interactions import Interaction


def test_user_sequence_orders_by_time_and_drops_consecutive_repeats():
    events = [
        Interaction("u", "b", 2),
        Interaction("u", "a", 1),
        Interaction("u", "b", 3),
        Interaction("u", "a", 4),
    ]
    assert sequences.user_sequence(events) == ["a", "b", "a"]
    assert sequences.user_sequence(events, drop_consecutive_duplicates=False) == ["a", "b", "b", "a"]


def test_vocabulary_is_sorted_by_descending_frequency_with_padding_zero(tmp_path):
    vocabulary = sequences.Vocabulary.from_sequences([["x", "y", "y"], ["z", "y", "x"], ["w"]])
    assert vocabulary.item_ids == ("y", "x", "w", "z")  # ties (w, z: 1 each) broken by id
    assert vocabulary.counts == (3, 2, 1, 1)
    np.testing.assert_array_equal(vocabulary.lookup(["y", "z", "unknown"]), [1, 4, 0])
    path = str(tmp_path / "vocabulary.tsv")
    vocabulary.save(path)
    assert sequences.Vocabulary.load(path) == vocabulary


def test_user_split_is_stable_disjoint_and_close_to_8_1_1():
    users = [f"user{i}" for i in range(20_000)]
    splits = [sequences.user_split(u, seed=7) for u in users]
    assert splits == [sequences.user_split(u, seed=7) for u in users]
    counts = collections.Counter(splits)
    assert abs(counts["train"] / len(users) - 0.8) < 0.015
    assert abs(counts["eval"] / len(users) - 0.1) < 0.01
    assert abs(counts["test"] / len(users) - 0.1) < 0.01
    assert splits != [sequences.user_split(u, seed=8) for u in users]


def test_sequence_data_encodes_and_splits_every_user_once():
    data = sequences.SequenceData.from_sequences(
        {f"u{i}": ["a", "b", f"i{i % 7}"] for i in range(200)}, seed=1
    )
    users = [u for split in data.splits.values() for u in split.user_ids]
    assert sorted(users) == sorted(f"u{i}" for i in range(200))
    assert data.num_items == 9
    train = data.train
    assert train.lengths.tolist() == [3] * len(train)
    assert data.vocabulary.item_ids[train.sequence(0)[0] - 1] == "a"


def test_evaluation_set_cuts_at_80_percent_and_keeps_last_l_history_items():
    split = sequences.EncodedSequences.from_index_lists(
        ["long", "short", "single"], [np.arange(1, 11), np.array([5, 6]), np.array([9])]
    )
    cut = sequences.evaluation_set(split, max_length=3)
    assert cut.user_ids == ("long", "short")
    # long: k = int(0.8 * 10) = 8 -> history = last 3 of items 1..8, targets 9, 10.
    np.testing.assert_array_equal(cut.histories[0], [6, 7, 8])
    np.testing.assert_array_equal(cut.targets[0], [9, 10])
    # short: k = int(1.6) = 1 -> history [5] left-aligned, target [6].
    np.testing.assert_array_equal(cut.histories[1], [5, 0, 0])
    np.testing.assert_array_equal(cut.targets[1], [6])


def test_vocabulary_load_reports_bad_lines(tmp_path):
    path = tmp_path / "vocabulary.tsv"
    path.write_text("a\t3\nb three\n")
    with pytest.raises(ValueError, match="vocabulary.tsv line 2"):
        sequences.Vocabulary.load(str(path))


def test_cut_users_cuts_raw_ids_as_evaluation_set_cuts_indices():
    logs = {f"u{i}": [f"i{(3 * i + j) % 17}" for j in range(1 + i % 9)] for i in range(80)}
    data = sequences.SequenceData.from_sequences(logs, seed=3)
    encoded = sequences.evaluation_set(data.test, max_length=20)
    raw = sequences.cut_users(logs, data_schema.TEST, seed=3)
    assert [user for user, _, _ in raw] == sorted(encoded.user_ids)
    names = ("",) + data.vocabulary.item_ids
    by_user = {user: row for row, user in enumerate(encoded.user_ids)}
    for user, history, targets in raw:
        row = by_user[user]
        assert history == [names[i] for i in encoded.histories[row] if i]
        assert targets == [names[i] for i in encoded.targets[row]]
