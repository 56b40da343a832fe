"""Tests for bench.summaries: statistics over seeds and their tables."""

import pytest

from bench import summaries


def test_summarize_mean_and_sample_std():
    stat = summaries.summarize([0.1, 0.2, 0.3])
    assert stat["mean"] == pytest.approx(0.2)
    assert stat["std"] == pytest.approx(0.1)
    assert stat["runs"] == [0.1, 0.2, 0.3]
    single = summaries.summarize([0.5])
    assert single["std"] is None
    assert summaries.format_stat(single) == "0.5000"
    assert summaries.format_stat(stat) == "0.2000 ± 0.1000"
    assert summaries.format_stat(None) == "-"



def test_tables():
    table = summaries.markdown_table(["a", "b"], [[1, 2]])
    assert table.splitlines() == ["| a | b |", "|---|---|", "| 1 | 2 |"]
    text = summaries.text_table(["name", "v"], [["long name", 1]])
    assert text.splitlines()[0].startswith("name     ")
