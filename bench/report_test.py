"""Tests for bench.report on small synthetic result directories (never the real docs/results.md)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from bench import references, report, run_record, summaries


def _train_speed(
    dmi_rate: float, quick: bool = False, dmi_over_floor: float = 1.2, large_vs_beauty: float = 0.8
) -> dict[str, Any]:
    """A train_speed result with the fields the report reads: dmi at ``dmi_rate``, remi at 20,000, and a
    catalogue sweep whose 400k-item dmi runs at ``large_vs_beauty`` times its Beauty rate."""

    def model(name: str, rate: float, over_floor: float, **extra: Any) -> dict[str, Any]:
        step_ms = 128e3 / rate
        return {
            "model": name,
            "batch_size": 128,
            "examples_per_second": rate,
            "median_period_examples_per_second": rate - 100,
            "measured_steps": 1000,
            "ms_per_step": step_ms,
            "floor_ms_per_step": step_ms / over_floor,
            "over_floor": over_floor,
            "item_table_update": "dense",
            **extra,
        }

    dmi = model("dmi", dmi_rate, dmi_over_floor)
    large = model("dmi", dmi_rate * large_vs_beauty, 1.1, vs_beauty=large_vs_beauty, item_table_update="lazy")
    catalogues = [
        {"data": {"items": 12_101}, "models": {"dmi": {"auto": {**dmi, "vs_beauty": 1.0}}}},
        {"data": {"items": 400_000}, "models": {"dmi": {"auto": large}}},
    ]

    return {
        "commit": "0123456789abcdef0123-dirty",
        "command": "python -m bench.train_speed",
        "date": "2026-01-02",
        "quick": quick,
        "cpu_count": 2,
        "loadavg": [1.5, 1.0, 1.0],
        "loadavg_end": [1.25, 1.0, 1.0],
        "duration_s": 126.0,
        "threads": {"intra_op": 2},
        "period_steps": 250,
        "measured_periods": 4,
        "repeats": 1,
        "anchor": {"examples_per_second": 1300.0},
        "models": {"dmi": dmi, "remi": model("remi", 20_000.0, 1.1)},
        "catalogues": catalogues,
        "dmi_over_remi": dmi_rate / 20_000.0,
        "figure": "train_speed.png",
    }


def _paths(tmp_path: Path) -> tuple[str, str]:
    """A results directory and a markdown path in a sibling ``docs`` directory, as in the repository."""
    results = tmp_path / "results"
    results.mkdir()
    return str(results), str(tmp_path / "docs" / "results.md")


def _section(text: str, heading: str) -> str:
    """The markdown from ``heading`` to the next second-level heading."""
    start = text.index(heading)
    end = text.find("\n## ", start + len(heading))
    return text[start:] if end < 0 else text[start:end]


def test_an_empty_results_directory_lists_every_benchmark_as_not_run(tmp_path):
    results, docs = _paths(tmp_path)
    text = report.render(results, docs)
    headings = [line for line in text.splitlines() if line.startswith("## ") and line[3].isdigit()]
    assert headings == [f"## {number}. {title}" for number, (_, title) in enumerate(report.SECTIONS, start=1)]
    missing = _section(text, "## Not run yet at full scale").splitlines()[2:]
    assert [line for line in missing if line] == [
        f"- {title}: not run — `python -m {report._module(stem)}`" for stem, title in report.SECTIONS
    ]
    targets = _section(text, "## Targets")
    assert "| serving latency targets | - | not measured yet | - |" in targets
    assert "full run not done yet" in targets
    assert "**reached**" not in text and report.QUICK_WARNING not in text


@pytest.mark.parametrize(
    "dmi_rate, over_floor, vs_beauty, status",
    [(14_000.0, 1.2, 0.8, "**reached**"), (12_000.0, 1.5, 0.4, "missed")],
)
def test_a_full_train_speed_result_gives_its_table_target_and_figure(
    tmp_path, dmi_rate, over_floor, vs_beauty, status
):
    results, docs = _paths(tmp_path)
    result = _train_speed(dmi_rate, dmi_over_floor=over_floor, large_vs_beauty=vs_beauty)
    run_record.write_json(os.path.join(results, "train_speed.json"), result)
    (Path(results) / "train_speed.png").write_bytes(b"png")
    # A quick run beside the full one is not shown.
    run_record.write_json(os.path.join(results, "train_speed_quick.json"), _train_speed(1.0, quick=True))
    text = report.render(results, docs)

    speed = _section(text, "## 6. Training throughput")
    assert report.QUICK_WARNING not in speed
    # 126 s = 2.1 min; the commit's first 12 hex digits keep the -dirty suffix; 1-minute load averages.
    assert (
        "Source: `bench/results/train_speed.json` (full run, 2.1 min), produced by "
        "`python -m bench.train_speed` at commit `0123456789ab-dirty` on 2026-01-02, 2 CPUs, load average "
        "[1.5] at start / [1.25] at end"
    ) in speed
    # examples/s, steps/s = rate / 128, the median period, ms/step = 128,000 / rate, the floor's ms/step
    # (ms/step / over_floor), the ratio, rate / 1300 (the anchor), measured steps.
    row = {
        14_000.0: "| dmi | 14,000 | 109.4 | 13,900 | 9.14 | 7.62 | 1.20x | 10.77x | 1000 |",
        12_000.0: "| dmi | 12,000 | 93.8 | 11,900 | 10.67 | 7.11 | 1.50x | 9.23x | 1000 |",
    }
    assert row[dmi_rate] in speed
    assert "| remi | 20,000 | 156.2 | 19,900 | 6.40 | 5.82 | 1.10x | 15.38x | 1000 |" in speed
    # The sweep: 400k items at vs_beauty times the Beauty rate, lazily updated.
    large = f"| 400,000 | dmi | lazy | {dmi_rate * vs_beauty:,.0f} |"
    assert large in speed and f"| {vs_beauty:.2f}x |" in speed
    assert f"DMI / REMI throughput: **{dmi_rate / 20_000:.2f}**." in speed
    assert "Wall time to a converged DMI: no Beauty reproduce result yet." in speed
    # The figure is linked relative to the markdown file's directory.
    assert "![Training throughput](../results/train_speed.png)" in speed

    targets = _section(text, "## Targets")
    step, floor = row[dmi_rate].split(" | ")[4:6]
    measured = f"{step} ms vs floor {floor} ms: {over_floor:.2f}x"
    target = (
        f"| dmi training step <= 1.3x its floor (same run) | {measured} | {status} | `train_speed.json` |"
    )
    assert target in targets
    large_rate = f"{dmi_rate * vs_beauty:,.0f} examples/s: {vs_beauty:.2f}x"
    assert f"| dmi throughput at 400,000 items >= 0.5x Beauty's | {large_rate} | {status} |" in targets
    left = _section(text, "## Not run yet at full scale")
    assert "Training throughput" not in left
    assert left.count("\n- ") == len(report.SECTIONS) - 1


def test_a_figure_that_is_missing_is_left_out(tmp_path):
    results, docs = _paths(tmp_path)
    run_record.write_json(os.path.join(results, "train_speed_quick.json"), _train_speed(14_000.0, quick=True))
    text = report.render(results, docs)
    speed = _section(text, "## 6. Training throughput")
    assert report.QUICK_WARNING in speed and "train_speed_quick.json` (quick run" in speed
    assert "![" not in speed
    # A quick throughput does not count towards the target, and is listed as only a quick run.
    assert "dmi training step" not in text
    assert "- Training throughput: only a quick run — `python -m bench.train_speed`" in text


def test_main_writes_the_given_markdown_file_only(tmp_path, capsys):
    results, docs = _paths(tmp_path)
    run_record.write_json(os.path.join(results, "train_speed.json"), _train_speed(14_000.0))
    assert report.main(["--results", results, "--docs", docs]) == 0
    assert capsys.readouterr().out == f"wrote {docs}\n"
    with open(docs, encoding="utf-8") as file:
        assert file.read() == report.render(results, docs)
    assert os.listdir(os.path.dirname(docs)) == ["results.md"]  # no temporary file left behind


def fake_reproduce_result(quick: bool) -> dict:
    run = {
        "seed": 0,
        "test": {m: 0.1 for m in references.METRICS},
        "validation": {},
        "best_step": 1000,
        "steps": 2000,
        "examples_per_second": 5000.0,
        "wall_time_s": 60.0,
        "history": [{"step": 1000, "val_recall@50": 0.1}],
    }
    entry = {"model": "dmi", "config": {}, "runs": [run], **summaries.summarize_metrics([run])}
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


def test_report_labels_quick_runs_and_lists_what_is_missing(tmp_path):
    run_record.write_json(str(tmp_path / "reproduce_quick.json"), fake_reproduce_result(True))
    text = report.render(str(tmp_path), str(tmp_path / "results.md"))
    assert "**Quick run**" in text
    assert "reproduce_quick.json" in text
    assert "Not run yet: `python -m bench.serving_latency`" in text
    assert "full run not done yet" in text
    # A full result, when present, wins over the quick one.
    run_record.write_json(str(tmp_path / "reproduce.json"), fake_reproduce_result(False))
    text = report.render(str(tmp_path), str(tmp_path / "results.md"))
    assert "`bench/results/reproduce.json` (full run" in text
    json.dumps(text)


def test_a_serving_capacity_result_gives_its_table(tmp_path):
    results, docs = _paths(tmp_path)

    def figure(rate: float, of_floor: float | None = None) -> dict[str, Any]:
        out = {
            "max_requests_per_s": rate,
            "closed_loop": {"requests_per_s": 2 * rate, "latency": {"p99_ms": 40.0}},
        }
        return out if of_floor is None else {**out, "of_floor": of_floor}

    capacity = {
        "command": "python -m bench.serving_capacity",
        "quick": False,
        "model": {"source": "trained here"},
        "settings": {
            "clients": 32,
            "p99_ms": 20.0,
            "duration_s": 5.0,
            "probes": 6,
            "kept_up": 0.97,
            "server": "dmirec serve",
            "requests": "batch-1 PredictRequest",
        },
        "capacity": {
            "floor": figure(1000.0),
            "modes": {"unbatched": {"dmi_exact": figure(300.0, 0.3)}, "batched": {"dmi": figure(400.0, 0.4)}},
        },
    }
    run_record.write_json(os.path.join(results, "serving_capacity.json"), capacity)
    number, title = next(
        (n, t) for n, (stem, t) in enumerate(report.SECTIONS, 1) if stem == "serving_capacity"
    )
    section = _section(report.render(results, docs), f"## {number}. {title}")
    assert "p99 is <= 20 ms with at least 97% of it answered" in section
    assert "| floor: trivial server | - | 1000.0 | 1 | 2000.0 | 40.0 |" in section
    assert "| dmi_exact | unbatched | 300.0 | 0.300 | 600.0 | 40.0 |" in section
    assert "| dmi | batched | 400.0 | 0.400 | 800.0 | 40.0 |" in section
