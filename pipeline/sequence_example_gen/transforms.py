"""The Beam logic of SequenceExampleGen: interaction-log files in, one ``tf.train.Example`` per user out.

:class:`LogToSequenceExamples` composes the stages below; it runs on any Beam runner and is tested on its
own with ``TestPipeline``. Every rule about users, sequences and splits comes from ``trainer/`` (the same
code the command line runs), so both paths produce the same users, splits and sequences:

1. Read. Beam's text sources (``ReadFromText``, ``ReadFromTextWithFilename``) split a file into byte
   ranges read by different workers, none of which knows how many lines precede its range, so they cannot
   number lines. Each file is therefore read whole by one worker (:func:`read_numbered_lines`): the
   parallelism is across files, not within one (split a very large log into several files; gzipped files
   could not be split anyway). Lines break at ``\\n``, ``\\r\\n`` and ``\\r`` like Python's universal
   newlines, as ``trainer.interactions.read_interactions`` opens files, so line numbers (1-based, the
   header being line 1) agree with its ``LogFormatError`` messages.
2. Parse (:class:`ParseLogLines`): line 1 must be the header ``user_id,item_id,timestamp`` (a file
   without it is not an interaction log and fails the pipeline), blank lines are skipped, every other
   line goes through ``trainer.interactions.parse_line``. Malformed lines go to the ``quarantine`` output
   as ``path:line<TAB>reason<TAB>text`` and are counted by the Beam counters ``bad_rows`` / ``good_rows``.
3. K-core (:class:`KCoreFilter`, when ``min_user > 1`` or ``min_item > 1`` as on the command line): a Beam
   pipeline is a static graph, so instead of looping until nothing changes it runs a fixed number of
   rounds, each one iteration of ``trainer.interactions.k_core``'s loop. When ``k_core`` finishes within
   that many iterations (counting its last one, which removes nothing) the result is the same events;
   the events removed by the last round are counted so that the executor can tell whether it did.
4. Sequences (:func:`build_user_sequence`): events grouped by user, ordered by ``(timestamp, file, line)``
   and turned into a sequence by ``trainer.sequences.user_sequence``, with the kept items' timestamps.
5. Split: each user goes to ``trainer.sequences.user_split(user_id, split_seed)``.
"""

from __future__ import annotations

import collections
import csv
from collections.abc import Iterable, Iterator, Sequence
from typing import NamedTuple

import trainer  # noqa: F401  (selects Keras 2 before anything imports TensorFlow)
import apache_beam as beam
import tensorflow as tf
from apache_beam import pvalue
from apache_beam.io import fileio
from apache_beam.metrics import Metrics

from pipeline import configs
from trainer import data_schema, interactions, sequences
from trainer.interactions import Interaction

SPLITS = tuple(data_schema.SPLIT_RATIOS)
LOG_HEADER = ",".join(data_schema.LOG_COLUMNS)
LOG_FORMAT = "log"
METRICS_NAMESPACE = "sequence_example_gen"
QUARANTINE = "quarantine"
_EVENTS = "events"
_KEPT = "kept"
_REMOVED = "removed"

# Keys of the row-counts dictionary (:attr:`SequenceExampleGenOutputs.row_counts`).
GOOD_ROWS = "good_rows"
BAD_ROWS = "bad_rows"
KCORE_LAST_ROUND_REMOVED = "kcore_last_round_removed"


def users_key(split: str) -> str:
    """The row-counts key of the number of users in ``split``."""
    return f"users_{split}"


class NumberedLine(NamedTuple):
    """One line of an input file, without its line break."""

    path: str
    line_number: int
    raw: bytes


# Where an event's row is, ``(path, line_number)``: orders a user's events of equal timestamp by file
# position, as the command line (which reads one file in order) does.
SourcePosition = tuple[str, int]
PositionedEvent = tuple[SourcePosition, Interaction]


class UserSequence(NamedTuple):
    """A user's items in time order, repeats in a row dropped, and the timestamp of each kept item."""

    user_id: str
    item_ids: tuple[str, ...]
    timestamps: tuple[int, ...]


class SequenceExampleGenOutputs(NamedTuple):
    """What :class:`LogToSequenceExamples` produces.

    Attributes:
      examples: split name (``train``, ``eval``, ``test``) -> one ``tf.train.Example`` per user.
      quarantine: the malformed lines, ``path:line<TAB>reason<TAB>text``.
      row_counts: a single dictionary: ``good_rows``, ``bad_rows``, ``kcore_last_round_removed`` and
        ``users_<split>`` for each split.
    """

    examples: dict[str, beam.PCollection]
    quarantine: beam.PCollection
    row_counts: beam.PCollection


def read_numbered_lines(readable_file: fileio.ReadableFile) -> Iterator[NumberedLine]:
    """Reads a whole file (decompressed by its extension, e.g. ``.gz``) as numbered lines.

    Args:
      readable_file: a file matched by ``fileio.MatchAll`` and opened by ``fileio.ReadMatches``.

    Yields:
      The file's lines, numbered from 1; ``\\n``, ``\\r\\n`` and ``\\r`` each end a line.
    """
    path = readable_file.metadata.path
    line_number = 0
    with readable_file.open() as f:
        # Binary lines end at b"\n"; bytes.splitlines() also breaks at a lone b"\r".
        for chunk in iter(f.readline, b""):
            for raw in chunk.splitlines():
                line_number += 1
                yield NumberedLine(path, line_number, raw)


def parse_row(raw: bytes) -> list[Interaction]:
    """Parses one data row of an interaction log with ``trainer.interactions.parse_line``.

    Args:
      raw: the row's bytes, without the line break.

    Returns:
      The row's events (one for the log format).

    Raises:
      ValueError: the row is malformed; the message says why.
    """
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ValueError(f"not valid UTF-8 ({error.reason} at byte offset {error.start})") from None
    try:
        return interactions.parse_line(text, LOG_FORMAT)
    except csv.Error as error:  # e.g. a field over the csv module's size limit
        raise ValueError(f"not a CSV row ({error})") from None


def quarantine_record(path: str, line_number: int, reason: str, text: str) -> str:
    """A quarantine line: ``path:line<TAB>reason<TAB>text``."""
    return f"{path}:{line_number}\t{reason}\t{text}"


class ParseLogLines(beam.DoFn):
    """Turns numbered log lines into positioned events; malformed lines go to the ``quarantine`` output."""

    def __init__(self) -> None:
        self._good_rows = Metrics.counter(METRICS_NAMESPACE, GOOD_ROWS)
        self._bad_rows = Metrics.counter(METRICS_NAMESPACE, BAD_ROWS)

    def process(self, line: NumberedLine) -> Iterator[PositionedEvent | pvalue.TaggedOutput]:
        """Parses one line.

        Args:
          line: a line of an interaction log.

        Yields:
          ``((path, line_number), event)`` for each event of a good row, or a quarantine record on the
          ``quarantine`` output for a malformed row; nothing for the header or a blank line.

        Raises:
          LogFormatError: line 1 is not the log header.
        """
        text = line.raw.decode("utf-8", "backslashreplace")
        if line.line_number == 1:
            if text.strip() != LOG_HEADER:
                raise interactions.LogFormatError(line.path, 1, f"expected the header {LOG_HEADER!r}", text)
            return
        if not text.strip():
            return
        try:
            events = parse_row(line.raw)
        except ValueError as error:
            self._bad_rows.inc()
            record = quarantine_record(line.path, line.line_number, str(error), text)
            yield pvalue.TaggedOutput(QUARANTINE, record)
            return
        self._good_rows.inc()
        for event in events:
            yield (line.path, line.line_number), event


def _key_by_user(positioned: PositionedEvent) -> tuple[str, PositionedEvent]:
    return positioned[1].user_id, positioned


def _mark_user_support(
    user_events: tuple[str, Iterable[PositionedEvent]], min_user: int
) -> Iterator[tuple[str, tuple[PositionedEvent, bool]]]:
    """Keys a user's events by item, each marked with whether the user has at least ``min_user`` events."""
    _, events = user_events
    events = list(events)
    user_has_support = len(events) >= min_user
    for positioned in events:
        yield positioned[1].item_id, (positioned, user_has_support)


class _FilterBySupport(beam.DoFn):
    """Keeps an item's events if the item has ``min_item`` events and their user had enough; the rest go
    to the ``removed`` output."""

    def __init__(self, min_item: int) -> None:
        self._min_item = min_item
        self._removed = Metrics.counter(METRICS_NAMESPACE, "kcore_removed_events")

    def process(
        self, item_events: tuple[str, Iterable[tuple[PositionedEvent, bool]]]
    ) -> Iterator[PositionedEvent | pvalue.TaggedOutput]:
        # Iterated twice: GroupByKey values are re-iterable, and a popular item's may not fit in memory.
        _, marked = item_events
        item_has_support = sum(1 for _ in marked) >= self._min_item
        for positioned, user_has_support in marked:
            if item_has_support and user_has_support:
                yield positioned
            else:
                self._removed.inc()
                yield pvalue.TaggedOutput(_REMOVED, positioned)


class KCoreRound(beam.PTransform):
    """One iteration of ``trainer.interactions.k_core``'s loop.

    Users and items are both counted over the round's input events, then every event whose user has fewer
    than ``min_user`` events or whose item has fewer than ``min_item`` is removed (two shuffles: by user,
    then by item).
    """

    def __init__(self, min_user: int, min_item: int) -> None:
        super().__init__()
        self._min_user = min_user
        self._min_item = min_item

    def expand(self, events: beam.PCollection) -> pvalue.DoOutputsTuple:
        """Returns the kept events (``.kept``) and the removed ones (``.removed``)."""
        return (
            events
            | "KeyByUser" >> beam.Map(_key_by_user)
            | "GroupByUser" >> beam.GroupByKey()
            | "MarkUserSupport" >> beam.FlatMap(_mark_user_support, self._min_user)
            | "GroupByItem" >> beam.GroupByKey()
            | "FilterBySupport"
            >> beam.ParDo(_FilterBySupport(self._min_item)).with_outputs(_REMOVED, main=_KEPT)
        )


class KCoreFilter(beam.PTransform):
    """Iterative k-core filtering in a fixed number of :class:`KCoreRound` rounds.

    The result equals ``trainer.interactions.k_core(events, min_user, min_item)`` whenever that function
    finishes within ``rounds`` iterations of its loop (the last of which removes nothing). Then the last
    round removes nothing here either; when the last round did remove events, the filter may not have
    converged and more rounds are needed.
    """

    def __init__(self, min_user: int, min_item: int, rounds: int) -> None:
        super().__init__()
        if rounds < 1:
            raise ValueError(f"the k-core needs at least one round, got {rounds}")
        self._min_user = min_user
        self._min_item = min_item
        self._rounds = rounds

    def expand(self, events: beam.PCollection) -> tuple[beam.PCollection, beam.PCollection]:
        """Returns the kept events and the events the last round removed."""
        removed = None
        for round_number in range(1, self._rounds + 1):
            outputs = events | f"Round{round_number}" >> KCoreRound(self._min_user, self._min_item)
            events, removed = outputs[_KEPT], outputs[_REMOVED]
        return events, removed


def aligned_timestamps(events: Sequence[Interaction], item_ids: Sequence[str]) -> list[int]:
    """The timestamp of each item of ``item_ids = trainer.sequences.user_sequence(events)``.

    ``user_sequence`` returns item ids only: the events in time order (a stable sort), keeping the first
    event of every run of repeats. Matching each item, in order, to the earliest not yet passed event with
    that id in the same time order therefore finds the kept events.

    Args:
      events: a user's events.
      item_ids: ``user_sequence(events)``.

    Returns:
      The timestamps, one per item.

    Raises:
      ValueError: ``item_ids`` is not a subsequence of the events in time order.
    """
    remaining = iter(sorted(events, key=lambda event: event.timestamp))
    timestamps = []
    for item_id in item_ids:
        match = next((event for event in remaining if event.item_id == item_id), None)
        if match is None:
            raise ValueError(f"item {item_id!r} of the sequence is not among the events left in time order")
        timestamps.append(match.timestamp)
    return timestamps


def build_user_sequence(user_events: tuple[str, Iterable[PositionedEvent]]) -> UserSequence:
    """A user's sequence, by ``trainer.sequences.user_sequence``, with its timestamps.

    Args:
      user_events: a user id and its events with their positions in the input.

    Returns:
      The sequence; events of equal timestamp keep their input order (file, then line).
    """
    user_id, positioned = user_events
    events = [event for _, event in sorted(positioned, key=lambda pair: pair[0])]
    item_ids = sequences.user_sequence(events)
    return UserSequence(user_id, tuple(item_ids), tuple(aligned_timestamps(events, item_ids)))


def split_index(sequence: UserSequence, num_splits: int, split_seed: int) -> int:
    """``beam.Partition`` function: the index in :data:`SPLITS` of the user's split."""
    del num_splits  # always len(SPLITS)
    return SPLITS.index(sequences.user_split(sequence.user_id, split_seed))


def to_example(sequence: UserSequence) -> tf.train.Example:
    """The ``tf.train.Example`` of a user: ``user_id`` (1 value), ``item_ids``, ``timestamps``."""
    return tf.train.Example(
        features=tf.train.Features(
            feature={
                data_schema.USER_ID: tf.train.Feature(
                    bytes_list=tf.train.BytesList(value=[sequence.user_id.encode("utf-8")])
                ),
                data_schema.ITEM_IDS: tf.train.Feature(
                    bytes_list=tf.train.BytesList(value=[item.encode("utf-8") for item in sequence.item_ids])
                ),
                data_schema.TIMESTAMPS: tf.train.Feature(
                    int64_list=tf.train.Int64List(value=list(sequence.timestamps))
                ),
            }
        )
    )


def _label(element: object, key: str) -> str:
    """Replaces an element by the row-counts key it counts towards."""
    del element
    return key


class _CountByKey(beam.CombineFn):
    """Counts keys into a dictionary holding every expected key (0 for those never seen)."""

    def __init__(self, keys: Sequence[str]) -> None:
        self._keys = tuple(keys)

    def create_accumulator(self) -> collections.Counter[str]:
        return collections.Counter()

    def add_input(self, counts: collections.Counter[str], key: str) -> collections.Counter[str]:
        counts[key] += 1
        return counts

    def merge_accumulators(
        self, accumulators: Iterable[collections.Counter[str]]
    ) -> collections.Counter[str]:
        merged: collections.Counter[str] = collections.Counter()
        for counts in accumulators:
            merged.update(counts)
        return merged

    def extract_output(self, counts: collections.Counter[str]) -> dict[str, int]:
        return {key: counts[key] for key in self._keys}


class LogToSequenceExamples(beam.PTransform):
    """Interaction-log CSV files -> per-user sequence examples by split, quarantine and row counts.

    Apply it to a pipeline (``pipeline | LogToSequenceExamples(...)``); see the module docstring for the
    stages.
    """

    def __init__(
        self,
        file_patterns: Sequence[str],
        split_seed: int = 0,
        min_user: int = 0,
        min_item: int = 0,
        kcore_rounds: int = configs.DEFAULT_KCORE_ROUNDS,
    ) -> None:
        """Configures the transform.

        Args:
          file_patterns: files or glob patterns of interaction logs (``.gz`` files are decompressed).
          split_seed: seed of ``trainer.sequences.user_split``.
          min_user: k-core threshold for users (events per user); 0 or 1: no filter.
          min_item: k-core threshold for items (events per item); 0 or 1: no filter.
          kcore_rounds: number of k-core rounds (see :class:`KCoreFilter`).
        """
        super().__init__()
        self._file_patterns = list(file_patterns)
        self._split_seed = split_seed
        self._kcore = (
            KCoreFilter(min_user, min_item, kcore_rounds) if min_user > 1 or min_item > 1 else None
        )

    def expand(self, begin: pvalue.PBegin) -> SequenceExampleGenOutputs:
        lines = (
            begin
            | "FilePatterns" >> beam.Create(self._file_patterns)
            | "MatchFiles" >> fileio.MatchAll()
            | "OpenFiles" >> fileio.ReadMatches()
            | "ReadNumberedLines" >> beam.FlatMap(read_numbered_lines)
        )
        parsed = lines | "ParseLines" >> beam.ParDo(ParseLogLines()).with_outputs(QUARANTINE, main=_EVENTS)
        events, quarantine = parsed[_EVENTS], parsed[QUARANTINE]

        if self._kcore is None:
            kept, last_round_removed = events, begin | "NoKCore" >> beam.Create([])
        else:
            kept, last_round_removed = events | "KCore" >> self._kcore

        by_split = (
            kept
            | "KeyByUser" >> beam.Map(_key_by_user)
            | "GroupByUser" >> beam.GroupByKey()
            | "BuildSequences" >> beam.Map(build_user_sequence)
            | "SplitUsers" >> beam.Partition(split_index, len(SPLITS), self._split_seed)
        )
        examples = {
            split: by_split[index] | f"ToExample[{split}]" >> beam.Map(to_example)
            for index, split in enumerate(SPLITS)
        }

        counted = {
            GOOD_ROWS: events,  # one event per good row in the log format
            BAD_ROWS: quarantine,
            KCORE_LAST_ROUND_REMOVED: last_round_removed,
            **{users_key(split): by_split[index] for index, split in enumerate(SPLITS)},
        }
        row_counts = (
            [elements | f"Label[{key}]" >> beam.Map(_label, key) for key, elements in counted.items()]
            | "MergeLabels" >> beam.Flatten()
            | "CountRows" >> beam.CombineGlobally(_CountByKey(list(counted)))
        )
        return SequenceExampleGenOutputs(examples, quarantine, row_counts)
