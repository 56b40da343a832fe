"""Tests for bench.run_record: result paths and atomic JSON files."""

import os

from bench import run_record


def test_result_path_never_overwrites_full_results(tmp_path):
    assert run_record.result_path(str(tmp_path), "reproduce", False).endswith("reproduce.json")
    assert run_record.result_path(str(tmp_path), "reproduce", True).endswith("reproduce_quick.json")
    assert run_record.result_path(str(tmp_path), "x", True, ".png").endswith("x_quick.png")
    # A run on other data than Beauty never replaces Beauty's committed results.
    assert run_record.result_stem("tuning", "beauty") == "tuning"
    assert run_record.result_stem("tuning", "synthetic") == "tuning_synthetic"



def test_write_json_is_atomic_and_readable(tmp_path):
    path = str(tmp_path / "a" / "r.json")
    run_record.write_json(path, {"value": (1, 2)})
    assert run_record.read_json(path) == {"value": [1, 2]}
    assert not os.path.exists(path + ".tmp")
    assert run_record.read_json(str(tmp_path / "missing.json")) is None
