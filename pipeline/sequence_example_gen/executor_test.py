"""Tests of SequenceExampleGen's executor, run directly on a tiny log (Beam DirectRunner in-process)."""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import trainer  # noqa: F401  (selects Keras 2 before anything imports TensorFlow)
import pytest
import tensorflow as tf
from tfx.components.util import examples_utils
from tfx.proto import example_gen_pb2
from tfx.types import standard_artifacts

from pipeline.sequence_example_gen import executor, spec, transforms
from pipeline.sequence_example_gen.transforms_test import HEADER, as_tuple
from trainer import sequences

SEED = 3


def one_user_per_split(seed: int) -> dict[str, str]:
    """A user id for each split: split -> user."""
    users: dict[str, str] = {}
    for number in itertools.count():
        users.setdefault(sequences.user_split(f"user{number}", seed), f"user{number}")
        if len(users) == len(transforms.SPLITS):
            return users
    raise AssertionError("unreachable")


USERS = one_user_per_split(SEED)
# Per user: events out of time order and a repeat in a row; 9 good rows in all, and 2 malformed rows.
ROWS = [row for user in USERS.values() for row in (f"{user},i2,20", f"{user},i1,10", f"{user},i1,15")]
BAD_ROWS = ["only,two", "u9,i9,soon"]


@pytest.fixture(scope="module")
def log_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("logs")
    (directory / "part-0.csv").write_text("\n".join([HEADER, *ROWS[:5], BAD_ROWS[0]]) + "\n")
    (directory / "part-1.csv").write_text("\n".join([HEADER, BAD_ROWS[1], *ROWS[5:]]) + "\n")
    (directory / "README.md").write_text("not a log: ignored\n")
    return directory


def run_executor(
    input_base: Path, output_dir: Path, max_bad_fraction: float
) -> tuple[standard_artifacts.Examples, spec.QuarantinedRows]:
    examples = standard_artifacts.Examples()
    examples.uri = str(output_dir / "examples")
    quarantine = spec.QuarantinedRows()
    quarantine.uri = str(output_dir / "quarantine")
    executor.Executor().Do(
        {},
        {spec.EXAMPLES_KEY: [examples], spec.QUARANTINE_KEY: [quarantine]},
        {
            spec.INPUT_BASE_KEY: str(input_base),
            spec.SPLIT_SEED_KEY: SEED,
            spec.MIN_USER_KEY: 0,
            spec.MIN_ITEM_KEY: 0,
            spec.KCORE_ROUNDS_KEY: 10,
            spec.MAX_BAD_FRACTION_KEY: max_bad_fraction,
        },
    )
    return examples, quarantine


@pytest.fixture(scope="module")
def outputs(
    log_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[standard_artifacts.Examples, spec.QuarantinedRows]:
    return run_executor(log_dir, tmp_path_factory.mktemp("outputs"), max_bad_fraction=0.5)


def test_writes_one_example_per_user_in_gzipped_tfrecords_per_split(outputs):
    examples, _ = outputs
    for split, user in USERS.items():
        files = sorted(Path(examples.uri, f"Split-{split}").glob("data_tfrecord-*.gz"))
        assert files, split
        records = tf.data.TFRecordDataset([str(f) for f in files], compression_type="GZIP")
        written = [as_tuple(tf.train.Example.FromString(record.numpy())) for record in records]
        assert written == [(user, ("i1", "i2"), (10, 20))]


def test_sets_the_artifact_properties_downstream_components_read(outputs):
    examples, quarantine = outputs
    assert list(examples.splits) == ["train", "eval", "test"]
    assert examples_utils.get_payload_format(examples) == example_gen_pb2.FORMAT_TF_EXAMPLE
    assert examples_utils.get_file_format(examples) == "tfrecords_gzip"
    counts = (
        quarantine.get_int_custom_property(spec.BAD_ROWS_PROPERTY),
        quarantine.get_int_custom_property(spec.TOTAL_ROWS_PROPERTY),
    )
    assert counts == (2, 11)


def test_quarantine_holds_the_malformed_rows_with_file_and_line(outputs, log_dir):
    _, quarantine = outputs
    lines = [
        line
        for path in Path(quarantine.uri).glob(f"{executor.QUARANTINE_FILE_PREFIX}-*.tsv")
        for line in path.read_text().splitlines()
    ]
    assert sorted(lines) == [
        f"{log_dir / 'part-0.csv'}:7\texpected 3 fields, got 2\tonly,two",
        f"{log_dir / 'part-1.csv'}:2\ttimestamp is not an integer ('soon')\tu9,i9,soon",
    ]


def test_too_many_malformed_rows_fail_the_run(log_dir, tmp_path):
    message = "2 of 11 rows (18.2%) are malformed, above max_bad_fraction 1.0%; see "
    with pytest.raises(ValueError, match=re.escape(message) + ".*quarantine"):
        run_executor(log_dir, tmp_path, max_bad_fraction=0.01)


def test_input_base_without_logs_fails(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"no interaction log \(\*\.csv or \*\.csv\.gz file\)"):
        executor.input_file_patterns(str(tmp_path))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        executor.input_file_patterns(str(tmp_path / "log.csv"))


def row_counts(good: int = 10, bad: int = 0, removed: int = 0, users: int = 1) -> dict[str, int]:
    return {
        transforms.GOOD_ROWS: good,
        transforms.BAD_ROWS: bad,
        transforms.KCORE_LAST_ROUND_REMOVED: removed,
        **{transforms.users_key(split): users for split in transforms.SPLITS},
    }


def test_checks_pass_on_sound_counts():
    counts = row_counts(good=99, bad=1)
    executor.check_bad_fraction(counts, max_bad_fraction=0.01, quarantine_uri="q")
    executor.check_kcore_converged(counts, kcore_rounds=10)
    executor.check_users_left(counts)


def test_an_input_without_rows_fails():
    with pytest.raises(ValueError, match="no data rows"):
        executor.check_bad_fraction(row_counts(good=0), max_bad_fraction=0.01, quarantine_uri="q")


def test_an_unconverged_kcore_fails():
    message = "did not converge within kcore_rounds=4: the last round still removed 7 events"
    with pytest.raises(ValueError, match=message):
        executor.check_kcore_converged(row_counts(removed=7), kcore_rounds=4)


def test_no_user_left_fails():
    with pytest.raises(ValueError, match="no user left"):
        executor.check_users_left(row_counts(users=0))
