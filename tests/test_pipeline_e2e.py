"""The TFX pipeline end to end on LocalDagRunner, on a tiny synthetic log.

One output directory sees five runs (``runs`` fixture):

1. ``dmirec run`` (the command line): every component executes; the model is blessed and pushed as
   version 1. The log has two malformed rows, quarantined and counted.
2. The same again: the Resolver now hands run 1's model to the evaluator as the latest blessed model, so
   the evaluator and the pusher execute (everything else comes from the cache); the model is its own
   baseline, blessed again, and the pusher finds it already served: nothing new is pushed.
3. The same again: every component is served from the cache.
4. ``min_recall = 1.0``: only the evaluator and the pusher execute; the model is not blessed, not pushed.
5. A shorter training (a new model) with ``recall_tolerance = 1``: the evaluator measures run 1's model on
   the same test users as the baseline, blesses the new one, and it is pushed as version 2.

A log with a negative timestamp stops at the validation gate, before the Trainer.

Beam runs inside the test process (``--direct_running_mode=in_memory``): the default multi-processing
mode starts worker processes per Beam pipeline, which doubles the run time of a tiny log on 2 cores.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import time
from pathlib import Path

import trainer  # noqa: F401  (selects Keras 2 before anything imports TensorFlow)
import ml_metadata as mlmd
import numpy as np
import pytest
import tensorflow as tf
from ml_metadata.proto import metadata_store_pb2

from pipeline import cli, configs, local_runner, run_summary
from pipeline.components import blessing, validation_gate
from pipeline.sequence_example_gen import spec as gen_spec
from trainer import export, interactions, synthetic
from trainer.config import parse_overrides
from trainer.export_settings import ExportSettings

pytestmark = pytest.mark.slow

NODES = (
    "ImportSchemaGen", "SequenceExampleGen", "StatisticsGen", "ExampleValidator", "ValidationGate",
    "Trainer", "RetrievalEvaluator", "ServablePusher",
)
UPSTREAM = set(NODES) - {"RetrievalEvaluator", "ServablePusher"}
# The Resolver resolves afresh in every run (it has no cache: what is the latest blessed model may change).
RESOLVER = "latest_blessed_model_resolver"
SETTINGS = [
    "embedding_dim=16", "max_steps=60", "eval_every=30", "num_negatives=32", "batch_size=32",
    "diffusion_steps=4", "steps_per_call=10",
]
IN_PROCESS = ["--beam-arg=--direct_running_mode=in_memory", "--beam-arg=--direct_num_workers=1"]
# What `dmirec run` with IN_PROCESS passes to Beam (the cache keys on it: later runs must pass the same).
BEAM_ARGS = [*configs.LOCAL_BEAM_ARGS, "--direct_running_mode=in_memory", "--direct_num_workers=1"]
MALFORMED_ROWS = ["u1,i2", "u7,i3,not-a-time"]


def _write_log(path: Path, extra_rows: list[str]) -> Path:
    interactions.write_log(str(path), synthetic.generate(synthetic.SyntheticConfig(users=300, items=120, topics=6)))
    with open(path, "a", encoding="utf-8") as f:
        f.writelines(row + "\n" for row in extra_rows)
    return path


def _store(out: Path) -> mlmd.MetadataStore:
    return mlmd.MetadataStore(local_runner.metadata_config(str(out)))


def _states_by_node(store: mlmd.MetadataStore) -> dict[str, list[str]]:
    """Node id -> the states of its executions, oldest first, over every run."""
    node_type = store.get_context_type("node").id
    states: dict[str, list[str]] = {}
    for execution in sorted(store.get_executions(), key=lambda e: e.id):
        node = next(c for c in store.get_contexts_by_execution(execution.id) if c.type_id == node_type)
        states.setdefault(node.name.split(".", 1)[1], []).append(
            metadata_store_pb2.Execution.State.Name(execution.last_known_state)
        )
    return states


def _artifacts(store: mlmd.MetadataStore, type_name: str) -> list[metadata_store_pb2.Artifact]:
    return sorted(store.get_artifacts_by_type(type_name), key=lambda a: a.id)


def _all_versions(serving: Path) -> dict[str, list[str]]:
    """Servable name -> its version directories."""
    return {name: sorted(os.listdir(serving / name)) for name in ("dmi", "dmi_exact")}


def _model_run_dir(runs) -> Path:
    """Run 1's model run (run 5 trains the second)."""
    first, _ = _artifacts(_store(runs["out"]), "ModelRun")
    return Path(first.uri)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Five runs in one output directory; returns the summaries, timings, printed output and paths."""
    root = tmp_path_factory.mktemp("e2e")
    log = _write_log(root / "log.csv", MALFORMED_ROWS)
    out = root / "out"
    timings = {}

    start = time.perf_counter()
    printed = _capture(lambda: cli.main(
        ["run", "--log", str(log), "--out", str(out), *[f"--set={s}" for s in SETTINGS], *IN_PROCESS]
    ))
    timings["first"] = time.perf_counter() - start
    summaries = {"first": run_summary.latest_run(_store(out), configs.PIPELINE_NAME)}
    serving = out / configs.SERVING_DIR
    versions = {"first": _all_versions(serving)}

    later_runs = (
        ("again", {}),
        ("cached", {}),
        ("below_threshold", {"min_recall": 1.0}),
        ("compared", {"overrides": parse_overrides([*SETTINGS, "max_steps=40"]), "recall_tolerance": 1.0,
                      "export": ExportSettings(scann_leaves=8, scann_leaves_to_search=3)}),
    )
    for name, extra in later_runs:
        settings = configs.PipelineSettings(**{"overrides": parse_overrides(SETTINGS), "beam_args": BEAM_ARGS, **extra})
        start = time.perf_counter()
        summaries[name] = local_runner.run(log=str(log), out_dir=str(out), settings=settings)
        timings[name] = time.perf_counter() - start
        versions[name] = _all_versions(serving)
    print("run timings (s):", {k: round(v, 1) for k, v in timings.items()})
    return {"summaries": summaries, "printed": printed, "out": out, "serving": serving,
            "versions": versions, "timings": timings}


def _component_states(summary: run_summary.RunSummary) -> dict[str, str]:
    """The run's states without the Resolver's, which must have completed."""
    states = dict(summary.states)
    assert states.pop(RESOLVER) == "COMPLETE"
    return states


def _capture(command) -> str:
    """Runs a command-line call, returning what it printed; fails on a non-zero status."""
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        status = command()
    assert status == 0, buffer.getvalue()
    return buffer.getvalue()


def test_first_run_executes_every_component_and_pushes_version_1(runs):
    first = runs["summaries"]["first"]
    assert _component_states(first) == {node: "COMPLETE" for node in NODES}
    assert first.blessed and first.pushed and first.version == "1"
    serving = runs["serving"]
    assert first.servables == {name: str(serving / name / "1") for name in ("dmi", "dmi_exact")}
    assert runs["versions"]["first"] == {"dmi": ["1"], "dmi_exact": ["1"]}
    for name in ("dmi", "dmi_exact"):
        assert (serving / name / "1" / "saved_model.pb").is_file()
    printed = runs["printed"]
    assert "9 components, 0 from the cache" in printed
    assert f"pushed version 1:\n  dmi: {serving / 'dmi' / '1'}\n  dmi_exact: {serving / 'dmi_exact' / '1'}" in printed
    assert f"recall@50 {first.metrics['recall@50']:.4f}" in printed


def test_malformed_rows_are_quarantined_and_counted(runs):
    (quarantine,) = _artifacts(_store(runs["out"]), gen_spec.QuarantinedRows.TYPE_NAME)
    assert quarantine.custom_properties[gen_spec.BAD_ROWS_PROPERTY].int_value == len(MALFORMED_ROWS)
    rows = "".join(path.read_text() for path in Path(quarantine.uri).glob("bad_rows-*.tsv"))
    assert "expected 3 fields, got 2" in rows and "u7,i3,not-a-time" in rows


def test_evaluator_metrics_equal_the_trainers_test_metrics(runs):
    """The pushed dmi_exact servable scores test users exactly as the trained model did in run_fn."""
    trained = json.loads((_model_run_dir(runs) / "metrics.json").read_text())["test"]
    assert runs["summaries"]["first"].metrics == pytest.approx(trained)


def test_pushed_servables_answer_raw_item_ids(runs):
    vocabulary = [line.split("\t")[0] for line in (_model_run_dir(runs) / "vocabulary.tsv").read_text().splitlines()]
    history = tf.constant([[vocabulary[3], vocabulary[10], "unknown-item", ""], ["", "", "", ""]])
    import scann  # noqa: F401  (registers the ScaNN ops the dmi servable uses)

    for name in ("dmi_exact", "dmi"):
        loaded = tf.saved_model.load(str(runs["serving"] / name / "1"))
        outputs = loaded.signatures["serving_default"](
            history=history, top_n=tf.constant(10), exclude_history=tf.constant(False)
        )
        items = outputs["item_ids"].numpy().astype(str)
        assert items.shape == (2, 10) and outputs["scores"].shape == (2, 10)
        assert set(items.ravel()) <= set(vocabulary)
        assert all(len(set(row)) == 10 for row in items)
        assert np.all(np.diff(outputs["scores"].numpy()[0]) <= 1e-6)  # best first


def test_a_rerun_blesses_the_model_against_itself_and_pushes_nothing_new(runs):
    again = runs["summaries"]["again"]
    assert _component_states(again) == {node: "CACHED" if node in UPSTREAM else "COMPLETE" for node in NODES}
    assert again.blessed and "the latest blessed model itself" in again.reason
    assert again.pushed and again.version == "1"  # already served: not copied again
    assert runs["versions"]["again"] == {"dmi": ["1"], "dmi_exact": ["1"]}


def test_rerun_with_unchanged_inputs_is_served_from_the_cache(runs):
    cached = runs["summaries"]["cached"]
    assert _component_states(cached) == {node: "CACHED" for node in NODES}
    assert cached.pushed and cached.version == "1"  # the earlier push, reused
    assert runs["versions"]["cached"] == {"dmi": ["1"], "dmi_exact": ["1"]}
    assert _states_by_node(_store(runs["out"]))["Trainer"] == ["COMPLETE", "CACHED", "CACHED", "CACHED", "COMPLETE"]


def test_a_model_below_the_threshold_is_not_pushed(runs):
    below = runs["summaries"]["below_threshold"]
    executed = {"RetrievalEvaluator", "ServablePusher"}
    assert _component_states(below) == {node: "COMPLETE" if node in executed else "CACHED" for node in NODES}
    assert not below.blessed and "below the threshold 1.0000" in below.reason
    assert not below.pushed and below.version == ""
    assert runs["versions"]["below_threshold"] == {"dmi": ["1"], "dmi_exact": ["1"]}


def test_the_blessing_compares_with_the_latest_blessed_model_from_the_resolver(runs):
    compared = runs["summaries"]["compared"]
    assert compared.states["Trainer"] == "COMPLETE" and compared.states["ValidationGate"] == "CACHED"
    assert compared.blessed and "not worse than the latest blessed model's" in compared.reason
    assert compared.pushed and compared.version == "2"
    assert runs["versions"]["compared"] == {"dmi": ["1", "2"], "dmi_exact": ["1", "2"]}
    # The run's export settings reached the Trainer: version 2 holds the index asked for, version 1 the
    # default one (about sqrt(N) leaves, all searched in so small a catalogue).
    serving = runs["serving"]
    assert export.servable_scann_settings(str(serving / "dmi" / "2")) == (8, 3)
    leaves, searched = export.servable_scann_settings(str(serving / "dmi" / "1"))
    assert leaves == searched and (leaves, searched) != (8, 3)

    store = _store(runs["out"])
    first, again, below, latest = _artifacts(store, "ModelBlessing")
    first_model, new_model = _artifacts(store, "Model")
    assert [b.custom_properties[blessing.BLESSED].int_value for b in (first, again, below, latest)] == [1, 1, 0, 1]
    assert blessing.BASELINE_MODEL_ID not in first.custom_properties  # nothing to compare with yet
    assert latest.custom_properties[blessing.CURRENT_MODEL_ID].int_value == new_model.id
    # The baseline is run 1's model (the latest blessed one; run 4 did not bless), measured again on the
    # same test users: its recall is what it scored when it was blessed (ties in the top-k may move the
    # last digits).
    assert latest.custom_properties[blessing.BASELINE_MODEL_ID].int_value == first_model.id
    assert latest.custom_properties[blessing.BASELINE_RECALL].double_value == pytest.approx(
        first.custom_properties[blessing.RECALL].double_value, abs=1e-3
    )


def test_schema_violations_stop_the_run_before_the_trainer(tmp_path):
    log = _write_log(tmp_path / "log.csv", ["u3,i5,-7"])
    with pytest.raises(validation_gate.SchemaAnomaliesError) as error:
        local_runner.run(log=str(log), out_dir=str(tmp_path / "out"), settings=configs.PipelineSettings(beam_args=BEAM_ARGS))
    assert "feature 'timestamps': Unexpectedly small value: -7." in str(error.value)
    states = _states_by_node(_store(tmp_path / "out"))
    assert states["ExampleValidator"] == ["COMPLETE"] and states["ValidationGate"] == ["FAILED"]
    assert not {"Trainer", "RetrievalEvaluator", "ServablePusher"} & set(states)
    assert not (tmp_path / "out" / configs.SERVING_DIR).exists()
