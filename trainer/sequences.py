"""Per-user sequences, the frequency-sorted item vocabulary, the user split and evaluation cuts.

This module is the protocol's data side (protocol.md, "Data and split"), shared by the command-line
training path and the TFX pipeline so both see the same users, ids and cuts:

- a user's sequence is their items in time order, repeated consecutive events dropped;
- users are split 8:1:1 into train / eval / test by a seeded hash of the user id (disjoint users, stable
  under reordering or appending to the log, so a user never moves between splits);
- items are re-indexed 1..N by descending frequency, 0 being padding, so that a log-uniform negative
  sampler over indices is popularity-like (ComiRec);
- a validation or test user is cut at ``int(0.8 * len)``: the last ``L`` items before the cut are the
  history, every item after it a target.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import os
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from trainer import data_schema
from trainer import filesystem as fs
from trainer.interactions import Interaction, group_by_user

_BUCKETS = sum(data_schema.SPLIT_RATIOS.values())


def user_split(user_id: str, seed: int = 0) -> str:
    """The split of a user: ``train``, ``eval`` or ``test`` in the ratio 8:1:1, by a seeded hash.

    The hash (MD5 of ``"<seed>:<user_id>"``) is stable across processes and machines, unlike Python's
    ``hash``, so the Beam pipeline and the command line put every user in the same split.
    """
    bucket = int.from_bytes(hashlib.md5(f"{seed}:{user_id}".encode()).digest()[:8], "little") % _BUCKETS
    for split, ratio in data_schema.SPLIT_RATIOS.items():
        if bucket < ratio:
            return split
        bucket -= ratio
    raise AssertionError("unreachable")


def user_sequence(events: Sequence[Interaction], drop_consecutive_duplicates: bool = True) -> list[str]:
    """A user's item ids in time order (stable for equal timestamps), repeats in a row dropped."""
    items = [event.item_id for event in sorted(events, key=lambda event: event.timestamp)]
    if drop_consecutive_duplicates:
        items = [item for position, item in enumerate(items) if position == 0 or item != items[position - 1]]
    return items


@dataclasses.dataclass(frozen=True)
class Vocabulary:
    """Item ids by descending frequency: index ``i + 1`` is ``item_ids[i]``; index 0 is padding.

    Attributes:
      item_ids: the ids, most frequent first (ties broken by id, so the order is deterministic).
      counts: their frequencies, same order.
    """

    item_ids: tuple[str, ...]
    counts: tuple[int, ...]

    def __post_init__(self) -> None:
        if len(self.item_ids) != len(self.counts):
            raise ValueError(f"{len(self.item_ids)} item ids but {len(self.counts)} counts")
        object.__setattr__(self, "_index", {item: i + 1 for i, item in enumerate(self.item_ids)})

    @classmethod
    def from_sequences(cls, sequences: Iterable[Sequence[str]]) -> "Vocabulary":
        counts = collections.Counter(item for sequence in sequences for item in sequence)
        ordered = sorted(counts.items(), key=lambda pair: (-pair[1], pair[0]))
        return cls(tuple(item for item, _ in ordered), tuple(count for _, count in ordered))

    def __len__(self) -> int:
        return len(self.item_ids)

    def lookup(self, item_ids: Iterable[str]) -> np.ndarray:
        """Indices of ``item_ids``; unknown ids map to 0 (padding, ignored by the model)."""
        return np.array([self._index.get(item, data_schema.PADDING_INDEX) for item in item_ids], dtype=np.int32)

    def save(self, path: str) -> None:
        """Writes ``item_id<TAB>count`` lines, most frequent first (atomically)."""
        with fs.atomic_writer(path) as f:
            for item, count in zip(self.item_ids, self.counts):
                f.write(f"{item}\t{count}\n")

    @classmethod
    def load(cls, path: str) -> "Vocabulary":
        items, counts = [], []
        with fs.open_file(path) as f:
            for line_number, line in enumerate(f, start=1):
                item, sep, count = line.rstrip("\r\n").rpartition("\t")
                if not sep or not count.isdigit():
                    raise ValueError(
                        f"{os.path.basename(path)} line {line_number}: expected 'item_id<TAB>count'"
                    )
                items.append(item)
                counts.append(int(count))
        return cls(tuple(items), tuple(counts))


@dataclasses.dataclass(frozen=True)
class EncodedSequences:
    """The sequences of one split as indices, stored flat (``items[offsets[u]:offsets[u + 1]]``).

    Attributes:
      user_ids: the users, in order.
      items: all item indices, concatenated (int32).
      offsets: start of each user's sequence in ``items``, plus the total length (int64, len(users) + 1).
    """

    user_ids: tuple[str, ...]
    items: np.ndarray
    offsets: np.ndarray

    @classmethod
    def from_index_lists(cls, user_ids: Sequence[str], sequences: Sequence[np.ndarray]) -> "EncodedSequences":
        lengths = np.array([len(s) for s in sequences], dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        items = np.concatenate(sequences).astype(np.int32) if sequences else np.zeros(0, np.int32)
        return cls(tuple(user_ids), items, offsets)

    def __len__(self) -> int:
        return len(self.user_ids)

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def sequence(self, user: int) -> np.ndarray:
        return self.items[self.offsets[user] : self.offsets[user + 1]]


@dataclasses.dataclass(frozen=True)
class SequenceData:
    """A log ready for the protocol: the vocabulary and the encoded train / eval / test users."""

    vocabulary: Vocabulary
    splits: Mapping[str, EncodedSequences]

    @classmethod
    def from_sequences(
        cls, sequences: Mapping[str, Sequence[str]], seed: int = 0, vocabulary: Vocabulary | None = None
    ) -> "SequenceData":
        """Encodes and splits the users.

        Args:
          sequences: user id -> item ids in time order.
          seed: seed of the user split.
          vocabulary: the item indices to use (a trained model's); by default one is built over every
            user, as the protocol re-indexes the whole data set. Items it lacks become padding (0).
        """
        vocabulary = vocabulary or Vocabulary.from_sequences(sequences.values())
        by_split: dict[str, tuple[list[str], list[np.ndarray]]] = {
            split: ([], []) for split in data_schema.SPLIT_RATIOS
        }
        for user, items in sequences.items():
            users, encoded = by_split[user_split(user, seed)]
            users.append(user)
            encoded.append(vocabulary.lookup(items))
        splits = {split: EncodedSequences.from_index_lists(*pair) for split, pair in by_split.items()}
        return cls(vocabulary, splits)

    @classmethod
    def from_split_sequences(cls, splits: Mapping[str, Mapping[str, Sequence[str]]]) -> "SequenceData":
        """Encodes users that are already split (the pipeline's examples), indexing items over all of them.

        The vocabulary is :meth:`Vocabulary.from_sequences` over every split's users, exactly as
        :meth:`from_sequences` builds it for ``dmirec train``, so the same users give the same indices.

        Args:
          splits: split name (every one of :data:`trainer.data_schema.SPLIT_RATIOS`) -> user id -> item ids in
            time order. Users are kept in the given order.

        Raises:
          ValueError: a split is missing or unknown.
        """
        if set(splits) != set(data_schema.SPLIT_RATIOS):
            raise ValueError(f"expected the splits {sorted(data_schema.SPLIT_RATIOS)}, got {sorted(splits)}")
        vocabulary = Vocabulary.from_sequences(items for users in splits.values() for items in users.values())
        encoded = {
            split: EncodedSequences.from_index_lists(list(users), [vocabulary.lookup(i) for i in users.values()])
            for split, users in splits.items()
        }
        return cls(vocabulary, encoded)

    @classmethod
    def from_interactions(
        cls, events: Iterable[Interaction], seed: int = 0, vocabulary: Vocabulary | None = None
    ) -> "SequenceData":
        """:meth:`from_sequences` over a log's events (grouped per user, see :func:`user_sequence`)."""
        by_user = group_by_user(events)
        return cls.from_sequences({user: user_sequence(e) for user, e in by_user.items()}, seed, vocabulary)

    @property
    def num_items(self) -> int:
        return len(self.vocabulary)

    @property
    def train(self) -> EncodedSequences:
        return self.splits[data_schema.TRAIN]

    @property
    def eval(self) -> EncodedSequences:
        return self.splits[data_schema.EVAL]

    @property
    def test(self) -> EncodedSequences:
        return self.splits[data_schema.TEST]


def pad_histories(histories: Sequence[np.ndarray], max_length: int) -> np.ndarray:
    """The last ``max_length`` items of each history, left-aligned and padded with 0: (U, max_length)."""
    padded = np.zeros((len(histories), max_length), dtype=np.int32)
    for row, history in enumerate(histories):
        history = history[-max_length:]
        padded[row, : len(history)] = history
    return padded


@dataclasses.dataclass(frozen=True)
class EvaluationSet:
    """Cut validation or test users: (U, L) padded histories and each user's target items."""

    user_ids: tuple[str, ...]
    histories: np.ndarray
    targets: tuple[np.ndarray, ...]

    def __len__(self) -> int:
        return len(self.user_ids)


def protocol_cut(length: int, history_ratio: float = 0.8) -> int | None:
    """Where the protocol cuts an evaluation user's sequence: ``k = int(history_ratio * length)``.

    Returns:
      ``k`` (history ``seq[:k]``, targets ``seq[k:]``), or None when the user is left out: a cut that leaves
      no history (``k == 0``, a sequence of one item) or no target.
    """
    cut = int(history_ratio * length)
    return None if cut == 0 or cut == length else cut


def cut_users(
    sequences: Mapping[str, Sequence[str]], split: str, seed: int = 0, history_ratio: float = 0.8
) -> list[tuple[str, list[str], list[str]]]:
    """One split's users cut as the protocol cuts them, in raw ids (for requests to a served model).

    Args:
      sequences: user id -> item ids in time order (every user of a log).
      split: the split to keep (:func:`user_split` with ``seed``).
      seed: seed of the user split.
      history_ratio: the protocol's cut (:func:`protocol_cut`).

    Returns:
      ``(user, history, targets)`` per user the protocol can cut, users by id.
    """
    users = []
    for user in sorted(sequences):
        items = list(sequences[user])
        cut = protocol_cut(len(items), history_ratio)
        if cut is not None and user_split(user, seed) == split:
            users.append((user, items[:cut], items[cut:]))
    return users


def evaluation_set(split: EncodedSequences, max_length: int, history_ratio: float = 0.8) -> EvaluationSet:
    """Cuts each user at ``k = int(history_ratio * len)`` (protocol: 0.8).

    The history is the last ``max_length`` items of ``seq[:k]``, the targets every item of ``seq[k:]``.
    Users whose cut leaves no history (``k == 0``, sequences of one item) are left out.
    """
    users, histories, targets = [], [], []
    for row, user in enumerate(split.user_ids):
        sequence = split.sequence(row)
        cut = protocol_cut(len(sequence), history_ratio)
        if cut is None:
            continue
        users.append(user)
        histories.append(sequence[:cut])
        targets.append(sequence[cut:])
    return EvaluationSet(tuple(users), pad_histories(histories, max_length), tuple(targets))
