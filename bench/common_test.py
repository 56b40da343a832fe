"""Cheap tests of the suite's helpers and report rendering (no training, no TensorFlow graphs)."""

import argparse
import json
import os

import pytest

from bench import common, report, reproduce


def test_summarize_mean_and_sample_std():
    stat = common.summarize([0.1, 0.2, 0.3])
    assert stat["mean"] == pytest.approx(0.2)
    assert stat["std"] == pytest.approx(0.1)
    assert stat["runs"] == [0.1, 0.2, 0.3]
    single = common.summarize([0.5])
    assert single["std"] is None
    assert common.format_stat(single) == "0.5000"
    assert common.format_stat(stat) == "0.2000 ± 0.1000"
    assert common.format_stat(None) == "-"


def test_result_path_never_overwrites_full_results(tmp_path):
    assert common.result_path(str(tmp_path), "reproduce", False).endswith("reproduce.json")
    assert common.result_path(str(tmp_path), "reproduce", True).endswith("reproduce_quick.json")
    assert common.result_path(str(tmp_path), "x", True, ".png").endswith("x_quick.png")


def test_write_json_is_atomic_and_readable(tmp_path):
    path = str(tmp_path / "a" / "r.json")
    common.write_json(path, {"value": (1, 2)})
    assert common.read_json(path) == {"value": [1, 2]}
    assert not os.path.exists(path + ".tmp")
    assert common.read_json(str(tmp_path / "missing.json")) is None


def test_tables():
    table = common.markdown_table(["a", "b"], [[1, 2]])
    assert table.splitlines() == ["| a | b |", "|---|---|", "| 1 | 2 |"]
    text = common.text_table(["name", "v"], [["long name", 1]])
    assert text.splitlines()[0].startswith("name     ")


def test_latency_summary_in_milliseconds():
    summary = common.latency_summary([0.001] * 98 + [0.010, 0.020])
    assert summary["count"] == 100
    assert summary["p50_ms"] == pytest.approx(1.0)
    assert summary["max_ms"] == pytest.approx(20.0)
    assert common.latency_summary([]) == {"count": 0}


def test_argument_parsers():
    assert common.parse_int_list("1, 2,5") == [1, 2, 5]
    parse = common.parse_name_list(("a", "b"))
    assert parse("b,a") == ["b", "a"]
    with pytest.raises(argparse.ArgumentTypeError):
        parse("c")


def _fake_reproduce(quick: bool) -> dict:
    run = {
        "seed": 0,
        "test": {m: 0.1 for m in common.METRICS},
        "validation": {},
        "best_step": 1000,
        "steps": 2000,
        "examples_per_second": 5000.0,
        "wall_time_s": 60.0,
        "history": [{"step": 1000, "val_recall@50": 0.1}],
    }
    entry = {"model": "dmi", "config": {}, "runs": [run], **common.summarize_metrics([run])}
    return {
        "commit": "abc",
        "command": "python -m bench.reproduce --quick",
        "date": "2026-01-01",
        "quick": quick,
        "cpu_count": 2,
        "loadavg": [1.0, 1.0, 1.0],
        "data": {"name": "beauty", "items": 10, "users": {"train": 8}},
        "models": {"dmi": entry},
    }


def test_reproduce_table_has_paper_columns():
    header, rows = reproduce.table_rows(_fake_reproduce(True), paper=True)
    assert header == ["metric", "DMI", "DMI paper", "REMI own code†"]
    assert rows[3][:3] == ["R@50", "0.1000", "0.1631 ± 0.0018"]


def test_report_labels_quick_runs_and_lists_what_is_missing(tmp_path):
    common.write_json(str(tmp_path / "reproduce_quick.json"), _fake_reproduce(True))
    text = report.render(str(tmp_path), str(tmp_path / "results.md"))
    assert "**Quick run**" in text
    assert "reproduce_quick.json" in text
    assert "Not run yet: `python -m bench.serving_latency`" in text
    assert "full run not done yet" in text
    # A full result, when present, wins over the quick one.
    common.write_json(str(tmp_path / "reproduce.json"), _fake_reproduce(False))
    text = report.render(str(tmp_path), str(tmp_path / "results.md"))
    assert "`bench/results/reproduce.json` (full run" in text
    json.dumps(text)


def test_ablation_reuses_only_identical_reproduction_runs():
    from bench.reproduce import RunSpec, reusable_runs

    overrides = {"max_steps": 100}
    spec = RunSpec("dmi-diff", "remi", overrides, (0,))
    data = {"name": "beauty", "items": 12101}
    run = {"seed": 0, "test": {"recall@50": 0.1}}
    reproduced = {
        "data": data,
        "command": "python -m bench.reproduce",
        "commit": "abc",
        "models": {
            "remi": {"config": common.config_dict("remi", overrides), "runs": [run, {**run, "seed": 1}]}
        },
    }
    reused = reusable_runs(reproduced, spec, data)
    assert (
        reused["runs"] == [run] and reused["model"] == "remi" and "bench.reproduce" in reused["reused_from"]
    )
    assert reusable_runs(reproduced, RunSpec("dmi-diff", "remi", {"max_steps": 99}, (0,)), data) is None
    assert reusable_runs(reproduced, spec, {**data, "items": 1}) is None
    assert reusable_runs(reproduced, RunSpec("dmi-diff", "remi", overrides, (2,)), data) is None
    assert reusable_runs(None, spec, data) is None


def test_runs_that_train_the_same_model_are_recognised():
    dmi = common.config_dict("dmi", {})
    old = {k: v for k, v in dmi.items() if k != "denoiser_dropout"}  # recorded before the field existed
    assert common.same_config(old, dmi)
    assert not common.same_config({**dmi, "eta": 0.2}, dmi)
    assert not common.same_config(old, {**dmi, "denoiser_dropout": 0.1})
    remi = common.config_dict("remi", {})
    assert common.same_config(
        {**remi, "noise_scale": 1.0, "denoiser_norm": "post"}, remi
    )  # unused without diffusion
    assert not common.same_config({**remi, "learning_rate": 0.002}, remi)


def test_tune_trials_parse_and_reject_bad_ones():
    import argparse

    from bench import tune

    assert tune.parse_trial("x=dmi:eta=0.2,noise_scale=2") == ("x", "dmi", {"eta": 0.2, "noise_scale": 2.0})
    assert len({tune.parse_trial(t)[0] for t in tune.DEFAULT_TRIALS}) == len(tune.DEFAULT_TRIALS)
    for bad in ("nomodel", "x=nope", "x=dmi:eta", "x=dmi:unknown=1"):
        with pytest.raises(argparse.ArgumentTypeError):
            tune.parse_trial(bad)
