"""Tests of the SequenceExampleGen Beam logic, on hand-made logs, with TestPipeline."""

from __future__ import annotations

import collections
import gzip
import random
from collections.abc import Iterable
from pathlib import Path

import trainer  # noqa: F401  (selects Keras 2 before anything imports TensorFlow)
import apache_beam as beam
import pytest
import tensorflow as tf
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.testing import test_pipeline
from apache_beam.testing.util import assert_that, equal_to

from pipeline.sequence_example_gen import transforms
from trainer import data_schema, interactions, sequences
from trainer.interactions import Interaction

HEADER = "user_id,item_id,timestamp"

# (user, items, timestamps) of an example.
SequenceTuple = tuple[str, tuple[str, ...], tuple[int, ...]]


def write_log(path: Path, rows: Iterable[str], line_break: str = "\n") -> Path:
    text = line_break.join([HEADER, *rows]) + line_break
    if path.suffix == ".gz":
        path.write_bytes(gzip.compress(text.encode("utf-8")))
    else:
        path.write_bytes(text.encode("utf-8"))
    return path


def as_tuple(example: tf.train.Example) -> SequenceTuple:
    feature = example.features.feature
    return (
        feature[data_schema.USER_ID].bytes_list.value[0].decode(),
        tuple(item.decode() for item in feature[data_schema.ITEM_IDS].bytes_list.value),
        tuple(feature[data_schema.TIMESTAMPS].int64_list.value),
    )


def all_sequences(outputs: transforms.SequenceExampleGenOutputs) -> beam.PCollection:
    """Every split's examples as :data:`SequenceTuple`."""
    return (
        [outputs.examples[split] for split in transforms.SPLITS]
        | "AllSplits" >> beam.Flatten()
        | "AsTuples" >> beam.Map(as_tuple)
    )


def expected_counts(good: int, bad: int, removed: int, users: Iterable[str], seed: int = 0) -> dict[str, int]:
    per_split = collections.Counter(sequences.user_split(user, seed) for user in users)
    return {
        transforms.GOOD_ROWS: good,
        transforms.BAD_ROWS: bad,
        transforms.KCORE_LAST_ROUND_REMOVED: removed,
        **{transforms.users_key(split): per_split[split] for split in transforms.SPLITS},
    }


def cli_sequences(path: Path, min_user: int = 0, min_item: int = 0, seed: int = 0) -> dict[str, set]:
    """What the command line builds from one log file: split -> {(user, items)}."""
    events = list(interactions.read_interactions(str(path), skip_bad=True))
    if min_user > 1 or min_item > 1:
        events = interactions.k_core(events, min_user=min_user, min_item=min_item)
    by_split: dict[str, set] = {split: set() for split in transforms.SPLITS}
    for user, user_events in interactions.group_by_user(events).items():
        by_split[sequences.user_split(user, seed)].add((user, tuple(sequences.user_sequence(user_events))))
    return by_split


def test_aligned_timestamps_keep_the_first_event_of_each_run():
    events = [Interaction("u", item, t) for item, t in [("b", 5), ("a", 1), ("a", 2), ("b", 3), ("a", 5)]]
    item_ids = sequences.user_sequence(events)
    assert item_ids == ["a", "b", "a"]
    assert transforms.aligned_timestamps(events, item_ids) == [1, 3, 5]


def test_aligned_timestamps_reject_items_out_of_order():
    events = [Interaction("u", "a", 1), Interaction("u", "b", 2)]
    with pytest.raises(ValueError, match="'a'"):
        transforms.aligned_timestamps(events, ["b", "a"])


def test_parse_row_reports_invalid_utf8():
    with pytest.raises(ValueError, match="not valid UTF-8"):
        transforms.parse_row(b"u1,caf\xe9,3")
    assert transforms.parse_row(b"u1,i1,3") == [Interaction("u1", "i1", 3)]


def test_sequences_order_dedup_timestamps_and_quarantine(tmp_path):
    first = write_log(
        tmp_path / "a.csv",
        [
            "u1,i3,30",
            "u1,i1,10",
            "u1,i2,20",
            "u1,i2,25",  # repeat in a row (by time): dropped, i2 keeps timestamp 20
            "not a row",  # line 6
            "",
            "u2,i9,7",
            "u2,i8,7",  # same timestamp: file order decides, i9 first
        ],
        line_break="\r\n",
    )
    second = write_log(
        tmp_path / "b.csv.gz",
        ["u1,i4,40", "u2,i7,-1", "u3,i1,x", "u3,i1,1"],  # line 4: timestamp not an integer
    )
    # Lone carriage returns end lines (universal newlines, as read_interactions reads files).
    third = tmp_path / "c.csv"
    third.write_bytes(b"user_id,item_id,timestamp\ru4,i1,1\ru4,caf\xe9,2\r\nu4,i2,3\n")
    expected = [
        ("u1", ("i1", "i2", "i3", "i4"), (10, 20, 30, 40)),
        ("u2", ("i7", "i9", "i8"), (-1, 7, 7)),
        ("u3", ("i1",), (1,)),
        ("u4", ("i1", "i2"), (1, 3)),
    ]
    with test_pipeline.TestPipeline() as pipeline:
        patterns = [str(tmp_path / "*.csv"), str(tmp_path / "*.gz")]
        outputs = pipeline | transforms.LogToSequenceExamples(patterns)
        assert_that(all_sequences(outputs), equal_to(expected))
        assert_that(
            outputs.quarantine,
            equal_to(
                [
                    f"{first}:6\texpected 3 fields, got 1\tnot a row",
                    f"{second}:4\ttimestamp is not an integer ('x')\tu3,i1,x",
                    f"{third}:3\tnot valid UTF-8 (invalid continuation byte at byte offset 6)\tu4,caf\\xe9,2",
                ]
            ),
            label="Quarantine",
        )
        assert_that(
            outputs.row_counts,
            equal_to([expected_counts(good=11, bad=3, removed=0, users=["u1", "u2", "u3", "u4"])]),
            label="RowCounts",
        )
    counters = pipeline.result.metrics().query(MetricsFilter().with_namespace(transforms.METRICS_NAMESPACE))
    assert {counter.key.metric.name: counter.committed for counter in counters["counters"]} == {
        transforms.GOOD_ROWS: 11,
        transforms.BAD_ROWS: 3,
    }


def test_a_file_without_the_header_fails_the_pipeline(tmp_path):
    log = tmp_path / "log.csv"
    log.write_text("u1,i1,1\n")
    with pytest.raises(Exception, match="expected the header"):
        with test_pipeline.TestPipeline() as pipeline:
            _ = pipeline | transforms.LogToSequenceExamples([str(log)])


# A 2-core (min_user = min_item = 2) peeled one event per iteration of trainer.interactions.k_core's loop:
# (u1, a) goes first (a has one event), then (u1, b) (u1 is left with one), (u2, b), (u2, p); the 5th
# iteration removes nothing. x, y, z with p, q are the core.
KCORE_ROWS = [
    "u1,a,1", "u1,b,2",
    "u2,b,1", "u2,p,2",
    "x,p,1", "x,q,2",
    "y,p,1", "y,q,2",
    "z,p,1", "z,q,2",
]  # fmt: skip
KCORE_ITERATIONS = 5


@pytest.mark.parametrize(
    "rounds, last_round_removed, users",
    [
        (KCORE_ITERATIONS, 0, ["x", "y", "z"]),  # converged: equals trainer.interactions.k_core
        (3, 1, ["u2", "x", "y", "z"]),  # the 3rd round removed (u2, b): not converged
    ],
)
def test_kcore_rounds(tmp_path, rounds, last_round_removed, users):
    log = write_log(tmp_path / "log.csv", KCORE_ROWS)
    with test_pipeline.TestPipeline() as pipeline:
        outputs = pipeline | transforms.LogToSequenceExamples(
            [str(log)], min_user=2, min_item=2, kcore_rounds=rounds
        )
        assert_that(
            all_sequences(outputs) | beam.Map(lambda sequence: sequence[0]), equal_to(users), label="Users"
        )
        assert_that(
            outputs.row_counts,
            equal_to([expected_counts(good=len(KCORE_ROWS), bad=0, removed=last_round_removed, users=users)]),
            label="RowCounts",
        )
    if rounds == KCORE_ITERATIONS:
        cli = cli_sequences(log, min_user=2, min_item=2)
        assert {user for split in cli.values() for user, _ in split} == set(users)


def synthetic_log(path: Path, users: int, items: int, seed: int) -> Path:
    """Users with 1-5 events over few timestamps (ties) and popular items (repeats in a row)."""
    rng = random.Random(seed)
    rows = [
        f"user{user},item{min(int(rng.expovariate(0.05)), items - 1)},{rng.randrange(12)}"
        for user in range(users)
        for _ in range(rng.randint(1, 5))
    ]
    rng.shuffle(rows)
    return write_log(path, rows)


def test_splits_and_sequences_equal_the_command_line_path(tmp_path):
    """Same users, splits and sequences as the trainer's command line, and an 8:1:1 user split."""
    log = synthetic_log(tmp_path / "log.csv", users=3000, items=400, seed=7)
    seed, min_user, min_item, kcore_rounds = 11, 3, 3, 4  # trainer's k_core loop runs 4 times here
    expected = cli_sequences(log, min_user=min_user, min_item=min_item, seed=seed)
    num_users = sum(len(split) for split in expected.values())
    assert 1500 < num_users < 2000  # the k-core removed users with 1 or 2 events

    for split, ratio in data_schema.SPLIT_RATIOS.items():
        share = len(expected[split]) / num_users
        assert abs(share - ratio / sum(data_schema.SPLIT_RATIOS.values())) < 0.03, (split, share)
    assert not set.intersection(*({user for user, _ in users} for users in expected.values()))

    def without_timestamps(sequence: SequenceTuple) -> tuple[str, tuple[str, ...]]:
        user, items, timestamps = sequence
        assert len(timestamps) == len(items) and list(timestamps) == sorted(timestamps)
        return user, items

    with test_pipeline.TestPipeline() as pipeline:
        outputs = pipeline | transforms.LogToSequenceExamples(
            [str(log)], split_seed=seed, min_user=min_user, min_item=min_item, kcore_rounds=kcore_rounds
        )
        assert_that(
            outputs.row_counts | beam.Map(lambda counts: counts[transforms.KCORE_LAST_ROUND_REMOVED]),
            equal_to([0]),
            label="Converged",
        )
        for split in transforms.SPLITS:
            assert_that(
                outputs.examples[split]
                | f"AsTuples[{split}]" >> beam.Map(as_tuple)
                | f"WithoutTimestamps[{split}]" >> beam.Map(without_timestamps),
                equal_to(sorted(expected[split])),
                label=f"Split[{split}]",
            )
