"""Tests for the interaction-log readers, converters, k-core filter and statistics."""

import dataclasses
import json
import os

import pytest

from trainer import filesystem as fs
from trainer import interactions
from trainer.interactions import Interaction

BEAUTY = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "beauty", "Beauty.txt")


def _write(tmp_path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def _read(path: str) -> list[tuple[str, str, int]]:
    return [(e.user_id, e.item_id, e.timestamp) for e in interactions.read_interactions(path)]


def test_sequences_round_trip(tmp_path):
    source = _write(tmp_path, "seq.txt", "1 10 11 12\n2 11\n\n3 12 10\n")
    out = str(tmp_path / "log.csv")
    report = interactions.convert(source, out, fmt="sequences")
    assert report.interactions == 6
    assert _read(out) == [
        ("1", "10", 0),
        ("1", "11", 1),
        ("1", "12", 2),
        ("2", "11", 0),
        ("3", "12", 0),
        ("3", "10", 1),
    ]
    assert open(out).readline() == "user_id,item_id,timestamp\n"


def test_comirec_orders_by_timestamp_when_present(tmp_path):
    source = _write(tmp_path, "comirec.txt", "u1,b,1,200\nu1,a,0,100\nu2,c,0,5\n")
    out = str(tmp_path / "log.csv")
    interactions.convert(source, out, fmt="comirec")
    assert _read(out) == [("u1", "a", 100), ("u1", "b", 200), ("u2", "c", 5)]


def test_comirec_without_timestamp_uses_index(tmp_path):
    source = _write(tmp_path, "comirec.txt", "u1,b,1\nu1,a,0\n")
    out = str(tmp_path / "log.csv")
    interactions.convert(source, out, fmt="auto")
    assert _read(out) == [("u1", "a", 0), ("u1", "b", 1)]


def test_amazon_json_round_trip(tmp_path):
    lines = [
        {"reviewerID": "A1", "asin": "B01", "unixReviewTime": 300, "overall": 5.0},
        {"reviewerID": "A1", "asin": "B02", "unixReviewTime": 100},
        {"reviewerID": "A2", "asin": "B01", "unixReviewTime": 200},
    ]
    source = _write(tmp_path, "reviews.json", "\n".join(json.dumps(line) for line in lines) + "\n")
    out = str(tmp_path / "log.csv")
    assert interactions.detect_format(source) == "amazon-json"
    interactions.convert(source, out)
    assert _read(out) == [("A1", "B02", 100), ("A1", "B01", 300), ("A2", "B01", 200)]


def test_log_round_trip_is_identity(tmp_path):
    events = [Interaction("u1", "i,1", 3), Interaction("u1", "i2", 7), Interaction("u2", "i1", 1)]
    first = str(tmp_path / "a.csv")
    second = str(tmp_path / "b.csv")
    interactions.write_log(first, events)
    interactions.convert(first, second)
    assert list(interactions.read_interactions(second)) == events
    assert open(first).read() == open(second).read()


@pytest.mark.parametrize(
    "fmt, text, message",
    [
        (
            "log",
            "user_id,item_id,timestamp\nu1,i1,1\nu1,i2\n",
            "log.txt line 3: expected 3 fields, got 2: 'u1,i2'",
        ),
        (
            "log",
            "user_id,item_id,timestamp\nu1,i1,yesterday\n",
            "log.txt line 2: timestamp is not an integer ('yesterday'): 'u1,i1,yesterday'",
        ),
        ("log", "user,item,time\nu1,i1,1\n", "log.txt line 1: expected the header"),
        ("log", "user_id,item_id,timestamp\n,i1,1\n", "log.txt line 2: empty user_id: ',i1,1'"),
        ("sequences", "1 2 3\n4\n", "log.txt line 2: expected a user id and at least one item id"),
        ("comirec", "u1,i1,0\nu1;i2;1\n", "log.txt line 2: expected 3 or 4 fields, got 1"),
        (
            "amazon-json",
            '{"reviewerID": "A", "asin": "B", "unixReviewTime": 1}\n{"asin": "B"\n',
            "log.txt line 2: invalid JSON",
        ),
        ("amazon-json", '{"asin": "B", "unixReviewTime": 1}\n', "log.txt line 1: missing key(s) reviewerID"),
        (
            "amazon-json",
            '{"reviewerID": "A", "asin": "B\\nC", "unixReviewTime": 1}\n',
            "log.txt line 1: asin holds a line break",
        ),
    ],
)
def test_bad_lines_name_file_line_and_text(any_root, fmt, text, message):
    path = fs.join(any_root, "log.txt")  # a local file, or one on a TensorFlow file system (ram://)
    fs.write_text(path, text)
    with pytest.raises(interactions.LogFormatError) as error:
        list(interactions.read_interactions(path, fmt))
    assert str(error.value).startswith(message)


def test_remote_logs_read_and_write_as_local_ones(tmp_path, ram_root):
    """CRLF line ends and a bad line: the same events, the same line numbers, local or on ram://."""
    text = "user_id,item_id,timestamp\r\nu1,i1,1\r\nu1,i2,2\r\nbad\r\nu2,i1,3\r\n"
    reports = {}
    for root in (str(tmp_path), ram_root):
        fs.write_text(fs.join(root, "in.csv"), text)
        reports[root] = interactions.convert(fs.join(root, "in.csv"), fs.join(root, "log.csv"), skip_bad=True)
    local, remote = reports[str(tmp_path)], reports[ram_root]
    assert dataclasses.astuple(remote)[1:] == dataclasses.astuple(local)[1:]  # all but the path
    assert remote.bad_examples == ["in.csv line 4: expected 3 fields, got 1: 'bad'"]
    assert fs.read_text(fs.join(ram_root, "log.csv")) == fs.read_text(str(tmp_path / "log.csv"))
    assert _read(fs.join(ram_root, "log.csv")) == [("u1", "i1", 1), ("u1", "i2", 2), ("u2", "i1", 3)]
    assert sorted(fs.listdir(ram_root)) == ["in.csv", "log.csv"]  # no temporary file left


def test_skip_bad_counts_and_reports(tmp_path):
    path = _write(tmp_path, "log.csv", "user_id,item_id,timestamp\nu1,i1,1\nbad\nu1,i2,x\nu2,i1,4\n")
    report = interactions.ReadReport(path)
    events = list(interactions.read_interactions(path, skip_bad=True, report=report))
    assert [e.item_id for e in events] == ["i1", "i1"]
    assert report.bad_lines == 2
    assert report.interactions == 2
    assert report.bad_examples[0] == "log.csv line 3: expected 3 fields, got 1: 'bad'"


def test_failed_convert_keeps_existing_output(tmp_path):
    out = tmp_path / "log.csv"
    out.write_text("user_id,item_id,timestamp\nkeep,me,1\n")
    source = _write(tmp_path, "seq.txt", "1 2 3\n4\n")
    with pytest.raises(interactions.LogFormatError):
        interactions.convert(source, str(out), fmt="sequences")
    assert out.read_text() == "user_id,item_id,timestamp\nkeep,me,1\n"
    assert os.listdir(tmp_path) == sorted(os.listdir(tmp_path)) and len(os.listdir(tmp_path)) == 2


def test_k_core_is_iterative():
    # Item d has one event: dropping it leaves u4 with one event, so u4 drops; that leaves item c with one
    # event, so c drops; that leaves u3 with one event, so u3 drops. A single pass would drop only d.
    events = [
        Interaction("u1", "a", 0),
        Interaction("u1", "b", 1),
        Interaction("u2", "a", 0),
        Interaction("u2", "b", 1),
        Interaction("u3", "a", 0),
        Interaction("u3", "c", 1),
        Interaction("u4", "c", 0),
        Interaction("u4", "d", 1),
    ]
    kept = interactions.k_core(events, min_user=2, min_item=2)
    assert [(e.user_id, e.item_id) for e in kept] == [("u1", "a"), ("u1", "b"), ("u2", "a"), ("u2", "b")]


def test_k_core_without_thresholds_keeps_everything():
    events = [Interaction("u1", "a", 0), Interaction("u2", "b", 0)]
    assert interactions.k_core(events) == events


def test_log_stats():
    events = [Interaction("u1", "a", 0), Interaction("u1", "b", 1), Interaction("u2", "a", 0)]
    stats = interactions.log_stats(events)
    assert (stats.users, stats.items, stats.interactions) == (2, 2, 3)
    assert (stats.min_length, stats.max_length, stats.mean_length, stats.median_length) == (1, 2, 1.5, 1.5)
    assert stats.length_histogram["1-4"] == 2
    assert json.loads(stats.to_json())["users"] == 2
    with pytest.raises(ValueError, match="no interactions"):
        interactions.log_stats([])


@pytest.mark.beauty
@pytest.mark.skipif(not os.path.exists(BEAUTY), reason="../shared/data/beauty/Beauty.txt is absent")
def test_beauty_statistics_match_the_paper(tmp_path):
    assert interactions.detect_format(BEAUTY) == "sequences"
    out = str(tmp_path / "beauty.csv")
    interactions.convert(BEAUTY, out)
    stats = interactions.log_stats(interactions.read_interactions(out))
    assert (stats.users, stats.items, stats.interactions) == (22_363, 12_101, 198_502)
    assert (stats.min_length, stats.max_length) == (5, 204)
