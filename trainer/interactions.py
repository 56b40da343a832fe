"""Interaction logs: the project's canonical raw input, its readers, converters and filters.

An interaction log is a CSV file with the header ``user_id,item_id,timestamp``: ids are strings, the
timestamp an integer (seconds, or any monotonic order such as the position in a sequence). Everything
downstream (the trainer's command line, the TFX pipeline's sequence ExampleGen) reads this format.

Readers never guess past bad input: a malformed line raises :class:`LogFormatError`, whose message names
the file, the line and the offending text (``log.csv line 3: expected 3 fields, got 2: 'u1,i2'``), unless
the caller asked to skip bad lines, in which case they are counted in a :class:`ReadReport`. Writers write
to a temporary file beside the target and rename it, so an interrupted run never leaves half a log.
Paths may be local or any TensorFlow file system URI (``gs://...``, :mod:`trainer.filesystem`); readers
stream the file line by line either way, and TensorFlow is imported only for a URI.
"""

from __future__ import annotations

import collections
import csv
import dataclasses
import json
import os
import statistics
from collections.abc import Callable, Iterable, Iterator, Sequence

from trainer import data_schema
from trainer import filesystem as fs
from trainer.filesystem import atomic_writer  # interactions.atomic_writer: what trainer/cli.py uses

FORMATS = ("log", "sequences", "comirec", "amazon-json")
_HEADER = ",".join(data_schema.LOG_COLUMNS)
_MAX_EXAMPLES = 5


@dataclasses.dataclass(frozen=True)
class Interaction:
    """One event of an interaction log."""

    user_id: str
    item_id: str
    timestamp: int


class LogFormatError(ValueError):
    """A malformed line in an input file; the message names the file, the line and its text."""

    def __init__(self, path: str, line_number: int, reason: str, text: str):
        self.path = path
        self.line_number = line_number
        self.reason = reason
        self.text = text
        super().__init__(f"{os.path.basename(path)} line {line_number}: {reason}: {text!r}")


@dataclasses.dataclass
class ReadReport:
    """What a reader saw: lines read, events kept and the malformed lines it skipped."""

    path: str
    lines: int = 0
    interactions: int = 0
    bad_lines: int = 0
    bad_examples: list[str] = dataclasses.field(default_factory=list)

    def record_bad(self, error: LogFormatError) -> None:
        self.bad_lines += 1
        if len(self.bad_examples) < _MAX_EXAMPLES:
            self.bad_examples.append(str(error))

    def summary(self) -> str:
        text = f"{self.path}: {self.lines} lines, {self.interactions} interactions"
        if self.bad_lines:
            text += f", {self.bad_lines} malformed lines skipped (first: {self.bad_examples[0]})"
        return text


def _parse_int(value: str, what: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"{what} is not an integer ({value.strip()!r})") from None


def _require_id(value: str, what: str) -> str:
    """A non-empty id without line breaks (servables keep their vocabulary one id per line)."""
    value = value.strip()
    if not value:
        raise ValueError(f"empty {what}")
    if "\n" in value or "\r" in value:
        raise ValueError(f"{what} holds a line break")
    return value


# Each line parser turns one line into events or raises ValueError with a reason; the line number and the
# file name are added by `_read_lines`, so every format reports errors the same way.
LineParser = Callable[[str, int], list[Interaction]]


def _parse_log_line(line: str, line_number: int) -> list[Interaction]:
    fields = next(csv.reader([line]))
    if len(fields) != 3:
        raise ValueError(f"expected 3 fields, got {len(fields)}")
    return [
        Interaction(
            _require_id(fields[0], data_schema.USER_ID),
            _require_id(fields[1], data_schema.ITEM_ID),
            _parse_int(fields[2], data_schema.TIMESTAMP),
        )
    ]


def _parse_sequence_line(line: str, line_number: int) -> list[Interaction]:
    """``user item item ...``: items in time order; the timestamp is the item's position (0-based)."""
    fields = line.split()
    if len(fields) < 2:
        raise ValueError(f"expected a user id and at least one item id, got {len(fields)} fields")
    user, items = fields[0], fields[1:]
    return [Interaction(user, item, position) for position, item in enumerate(items)]


def _parse_comirec_line(line: str, line_number: int) -> list[Interaction]:
    """ComiRec/REMI files: ``user,item,index[,timestamp]``; the order key is the timestamp if present."""
    fields = line.split(",")
    if len(fields) not in (3, 4):
        raise ValueError(f"expected 3 or 4 fields, got {len(fields)}")
    order = fields[3] if len(fields) == 4 else fields[2]
    return [
        Interaction(
            _require_id(fields[0], data_schema.USER_ID),
            _require_id(fields[1], data_schema.ITEM_ID),
            _parse_int(order, data_schema.TIMESTAMP),
        )
    ]


def _parse_amazon_json_line(line: str, line_number: int) -> list[Interaction]:
    """Amazon review JSON lines (McAuley et al.): ``reviewerID``, ``asin``, ``unixReviewTime``."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError as e:
        raise ValueError(f"invalid JSON ({e.msg})") from None
    if not isinstance(record, dict):
        raise ValueError("expected a JSON object")
    missing = [key for key in ("reviewerID", "asin", "unixReviewTime") if key not in record]
    if missing:
        raise ValueError(f"missing key(s) {', '.join(missing)}")
    return [
        Interaction(
            _require_id(str(record["reviewerID"]), "reviewerID"),
            _require_id(str(record["asin"]), "asin"),
            _parse_int(str(record["unixReviewTime"]), "unixReviewTime"),
        )
    ]


_PARSERS: dict[str, LineParser] = {
    "log": _parse_log_line,
    "sequences": _parse_sequence_line,
    "comirec": _parse_comirec_line,
    "amazon-json": _parse_amazon_json_line,
}


def parse_line(line: str, fmt: str = "log") -> list[Interaction]:
    """Parses one line of an input file (a log line without the header) into its events.

    The Beam pipeline uses this to parse rows one by one; files are read with :func:`read_interactions`.

    Raises:
      ValueError: a malformed line (the reason only; the caller knows the file and line), or an
        unknown format.
    """
    if fmt not in _PARSERS:
        raise ValueError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
    return _PARSERS[fmt](line, 0)


def detect_format(path: str) -> str:
    """Guesses an input file's format from its first non-empty line.

    Args:
      path: the input file.

    Returns:
      One of :data:`FORMATS`: ``log`` for the canonical header, ``amazon-json`` for a JSON object,
      ``comirec`` for comma-separated lines, ``sequences`` for whitespace-separated ones.

    Raises:
      LogFormatError: the file is empty.
    """
    with fs.open_file(path) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            if line == _HEADER:
                return "log"
            if line.startswith("{"):
                return "amazon-json"
            if "," in line:
                return "comirec"
            return "sequences"
    raise LogFormatError(path, 1, "empty file, cannot detect its format", "")


def read_interactions(
    path: str, fmt: str = "log", skip_bad: bool = False, report: ReadReport | None = None
) -> Iterator[Interaction]:
    """Streams the events of an input file.

    Args:
      path: the file to read.
      fmt: one of :data:`FORMATS`, or ``auto`` to detect it (:func:`detect_format`).
      skip_bad: count malformed lines in ``report`` and go on, instead of raising.
      report: filled in while reading (lines, events, malformed lines).

    Yields:
      The file's events in file order.

    Raises:
      LogFormatError: a malformed line (unless ``skip_bad``), or a log without the
        ``user_id,item_id,timestamp`` header; raised even with ``skip_bad`` for a missing header.
      ValueError: an unknown format.
    """
    if fmt == "auto":
        fmt = detect_format(path)
    if fmt not in _PARSERS:
        raise ValueError(f"unknown format {fmt!r}; expected auto or one of {', '.join(FORMATS)}")
    parse = _PARSERS[fmt]
    report = report if report is not None else ReadReport(path)
    with fs.open_file(path) as f:
        for line_number, raw in enumerate(f, start=1):
            report.lines += 1
            line = raw.rstrip("\r\n")
            if fmt == "log" and line_number == 1:
                if line.strip() != _HEADER:
                    raise LogFormatError(path, 1, f"expected the header {_HEADER!r}", line)
                continue
            if not line.strip():
                continue
            try:
                events = parse(line, line_number)
            except ValueError as e:
                error = LogFormatError(path, line_number, str(e), line)
                if not skip_bad:
                    raise error from None
                report.record_bad(error)
                continue
            report.interactions += len(events)
            yield from events


def write_log(path: str, interactions: Iterable[Interaction]) -> int:
    """Writes an interaction log atomically; returns the number of events written."""
    count = 0
    with atomic_writer(path) as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(data_schema.LOG_COLUMNS)
        for event in interactions:
            writer.writerow((event.user_id, event.item_id, event.timestamp))
            count += 1
    return count


def group_by_user(interactions: Iterable[Interaction]) -> dict[str, list[Interaction]]:
    """Groups events by user (users in order of first appearance), each user's events sorted by time.

    The sort is stable, so events with equal timestamps keep their file order.
    """
    users: dict[str, list[Interaction]] = collections.defaultdict(list)
    for event in interactions:
        users[event.user_id].append(event)
    for events in users.values():
        events.sort(key=lambda event: event.timestamp)
    return dict(users)


def k_core(interactions: Sequence[Interaction], min_user: int = 0, min_item: int = 0) -> list[Interaction]:
    """Iterative k-core filtering, as ComiRec/REMI preprocess their data sets.

    Repeatedly drops users with fewer than ``min_user`` events and items with fewer than ``min_item``
    events until both conditions hold for every remaining user and item (removing an item can push a user
    under the threshold and the other way round). Events are counted, not distinct items.

    Args:
      interactions: the events.
      min_user: minimum number of events per user (0 or 1: no user filter).
      min_item: minimum number of events per item (0 or 1: no item filter).

    Returns:
      The surviving events, in their input order.
    """
    kept = list(interactions)
    while True:
        user_counts = collections.Counter(event.user_id for event in kept)
        item_counts = collections.Counter(event.item_id for event in kept)
        filtered = [
            event
            for event in kept
            if user_counts[event.user_id] >= min_user and item_counts[event.item_id] >= min_item
        ]
        if len(filtered) == len(kept):
            return filtered
        kept = filtered


def convert(
    input_path: str,
    output_path: str,
    fmt: str = "auto",
    min_user: int = 0,
    min_item: int = 0,
    skip_bad: bool = False,
) -> ReadReport:
    """Converts an input file into an interaction log, optionally k-core filtered.

    The output lists users in order of first appearance, each user's events in time order.

    Args:
      input_path: a file in one of :data:`FORMATS` (or ``auto``).
      output_path: the interaction log to write (atomically).
      fmt: the input format.
      min_user: k-core threshold for users (see :func:`k_core`).
      min_item: k-core threshold for items.
      skip_bad: skip and count malformed lines instead of stopping at the first.

    Returns:
      The read report; ``report.interactions`` counts events read, before filtering.
    """
    report = ReadReport(input_path)
    events = list(read_interactions(input_path, fmt, skip_bad=skip_bad, report=report))
    if min_user > 1 or min_item > 1:
        events = k_core(events, min_user=min_user, min_item=min_item)
    by_user = group_by_user(events)
    write_log(output_path, (event for user_events in by_user.values() for event in user_events))
    return report


@dataclasses.dataclass(frozen=True)
class LogStats:
    """Size and sequence-length distribution of an interaction log."""

    users: int
    items: int
    interactions: int
    min_length: int
    max_length: int
    mean_length: float
    median_length: float
    p90_length: float
    length_histogram: dict[str, int]

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2)

    def to_text(self) -> str:
        lines = [
            f"users         {self.users:,}",
            f"items         {self.items:,}",
            f"interactions  {self.interactions:,}",
            f"density       {self.interactions / max(1, self.users * self.items):.5%}",
            "sequence length per user:",
            f"  min {self.min_length}  median {self.median_length:g}  mean {self.mean_length:.1f}"
            f"  p90 {self.p90_length:g}  max {self.max_length}",
        ]
        width = max(self.length_histogram.values(), default=1)
        for bucket, count in self.length_histogram.items():
            bar = "#" * max(1 if count else 0, round(40 * count / width))
            lines.append(f"  {bucket:>9}  {count:>8,}  {bar}")
        return "\n".join(lines)


_BUCKETS = ((1, 4), (5, 9), (10, 19), (20, 49), (50, 99), (100, 199), (200, None))


def log_stats(interactions: Iterable[Interaction]) -> LogStats:
    """Computes :class:`LogStats` for a stream of events."""
    lengths: collections.Counter[str] = collections.Counter()
    items: set[str] = set()
    total = 0
    for event in interactions:
        lengths[event.user_id] += 1
        items.add(event.item_id)
        total += 1
    if not lengths:
        raise ValueError("the log holds no interactions")
    values = sorted(lengths.values())
    histogram = {}
    for low, high in _BUCKETS:
        label = f"{low}-{high}" if high is not None else f">={low}"
        histogram[label] = sum(1 for v in values if v >= low and (high is None or v <= high))
    p90 = statistics.quantiles(values, n=10)[-1] if len(values) > 1 else float(values[0])
    return LogStats(
        users=len(values),
        items=len(items),
        interactions=total,
        min_length=values[0],
        max_length=values[-1],
        mean_length=total / len(values),
        median_length=float(statistics.median(values)),
        p90_length=float(p90),
        length_histogram=histogram,
    )
