"""Tests for bench.reproduce: the driver of training runs (serial and parallel), its tables, run reuse."""

import trainer  # noqa: F401  (Keras 2 before TensorFlow)

import pytest

from bench import training
from bench.report_test import fake_reproduce_result
from bench.reproduce import RunSpec, reusable_runs, table_rows, train_and_test
from trainer import synthetic
from trainer.sequences import SequenceData

TINY = {
    "max_steps": 40,
    "eval_every": 20,
    "patience": 2,
    "steps_per_call": 10,
    "batch_size": 16,
    "num_negatives": 32,
    "embedding_dim": 8,
    "diffusion_steps": 4,
}


@pytest.fixture(scope="module")
def data():
    events = synthetic.generate(synthetic.SyntheticConfig(users=200, items=80, topics=5, seed=2))
    return SequenceData.from_interactions(events, seed=0)


def _comparable(results):
    """Per label and seed: the test metrics and the validation history (wall times differ per run)."""
    return {
        label: {
            run["seed"]: (run["test"], [entry["val_recall@50"] for entry in run["history"]], run["best_step"])
            for run in entry["runs"]
        }
        for label, entry in results.items()
    }


def test_parallel_runs_equal_serial_runs_and_resume(data, tmp_path, monkeypatch):
    monkeypatch.setenv("DMIREC_BACKBONE_CACHE", str(tmp_path / "backbones"))  # dmi trains two-stage
    specs = [RunSpec("dmi", "dmi", TINY, (0, 1)), RunSpec("remi", "remi", TINY, (0,))]
    serial = train_and_test(specs, data, {}, verbose=0)
    saves = []
    parallel = train_and_test(
        specs, data, {}, jobs=2, threads={"intra_op": 1, "inter_op": 1}, save=lambda: saves.append(1)
    )
    assert _comparable(parallel) == _comparable(serial)
    assert len(saves) == 3  # one save per finished run
    assert parallel["dmi"]["recall@50"]["runs"] == [r["test"]["recall@50"] for r in parallel["dmi"]["runs"]]
    # Everything is already there: resuming trains nothing, even with one seed fewer.
    fewer = [RunSpec("dmi", "dmi", TINY, (0,))]
    resumed = train_and_test(fewer, data, parallel, jobs=2, save=lambda: pytest.fail("nothing to train"))
    assert [run["seed"] for run in resumed["dmi"]["runs"]] == [0]
    assert training.config_dict("dmi", TINY) == resumed["dmi"]["config"]


def test_serving_probe_rows_and_eta_zero_equals_no_refinement(data, tmp_path, monkeypatch):
    from bench import serving_probe
    from trainer import config, train
    from trainer.sequences import evaluation_set

    monkeypatch.setenv("DMIREC_BACKBONE_CACHE", str(tmp_path / "backbones"))
    model = train.train(config.variant_config("dmi", TINY), data, verbose=0, evaluate_test=False).model
    validation = evaluation_set(data.eval, model.config.max_length)
    rows = serving_probe.probe(model, data.vocabulary, validation, etas=(0.0, 0.4))
    # no refinement + S in {1, T} x noise in {zero, random} x 2 etas
    assert [row["label"] for row in rows][:2] == ["no refinement", "S=1 zero eta=0.0"]
    assert len(rows) == 1 + 2 * 2 * 2
    for row in rows[1:]:
        if row["eta"] == 0.0:  # Z = v: the refinement is not used, whatever S and the noise
            assert row["validation"] == rows[0]["validation"]
            assert row["refinement_size"] == 0.0


def test_reproduce_table_has_paper_columns():
    header, rows = table_rows(fake_reproduce_result(True), paper=True)
    assert header == ["metric", "DMI", "DMI paper", "REMI own code†"]
    assert rows[3][:3] == ["R@50", "0.1000", "0.1631 ± 0.0018"]


def test_ablation_reuses_only_identical_reproduction_runs():
    overrides = {"max_steps": 100}
    spec = RunSpec("dmi-diff", "remi", overrides, (0,))
    data = {"name": "beauty", "items": 12101}
    run = {"seed": 0, "test": {"recall@50": 0.1}}
    reproduced = {
        "data": data,
        "command": "python -m bench.reproduce",
        "commit": "abc",
        "models": {
            "remi": {"config": training.config_dict("remi", overrides), "runs": [run, {**run, "seed": 1}]}
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
