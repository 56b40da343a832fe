"""`dmirec compile-kfp`: the Kubeflow Pipelines v2 spec holds every component, its image and parameters."""

from __future__ import annotations

import json

import pytest

from pipeline import cli, configs

IMAGE = "gcr.io/test-project/dmi-rec:1.2.3"
ROOT = "gs://test-bucket/dmi-rec"
LOG = "gs://test-bucket/logs/2024-06"
COMPONENTS = {
    "SequenceExampleGen", "StatisticsGen", "ImportSchemaGen", "ExampleValidator", "ValidationGate",
    "Trainer", "RetrievalEvaluator", "ServablePusher",
}
# TFX compiles the latest-blessed-model Resolver into two KFP resolver tasks (artifact queries).
RESOLVER_TASKS = {
    "latest_blessed_model_resolver-model-blessing-resolver", "latest_blessed_model_resolver-model-resolver"
}


@pytest.fixture(scope="module")
def spec(tmp_path_factory):
    out = tmp_path_factory.mktemp("kfp")
    status = cli.main([
        "compile-kfp", "--out", str(out), "--image", IMAGE, "--pipeline-root", ROOT, "--log", LOG,
        "--model", "remi", "--set", "max_steps=5000", "--set", "embedding_dim=32", "--min-recall", "0.05",
        "--min-user", "5", "--min-item", "5", "--beam-arg=--runner=DataflowRunner", "--recall-tolerance", "0.02",
        "--scann-leaves", "2000", "--scann-leaves-to-search", "200", "--no-xla",
    ])
    assert status == 0
    return json.loads((out / f"{configs.PIPELINE_NAME}.json").read_text())["pipelineSpec"]


def _parameter(spec: dict, task: str, name: str):
    value = spec["root"]["dag"]["tasks"][task]["inputs"]["parameters"][name]["runtimeValue"]["constantValue"]
    return next(iter(value.values()))


def test_every_component_runs_in_the_configured_image(spec):
    assert set(spec["root"]["dag"]["tasks"]) == COMPONENTS | RESOLVER_TASKS
    executors = spec["deploymentSpec"]["executors"]
    assert {name.removesuffix("_executor") for name in executors} == COMPONENTS | RESOLVER_TASKS
    for name, executor in executors.items():
        if name.removesuffix("_executor") in RESOLVER_TASKS:
            continue  # run by Kubeflow itself: a query over its ML Metadata, no container
        container = executor["container"]
        assert container["image"] == IMAGE
        assert container["command"][-1] == "tfx.orchestration.kubeflow.v2.container.kubeflow_v2_run_executor"
    # Beam options reach the Beam-based components, after the defaults so that they win.
    args = executors["StatisticsGen_executor"]["container"]["args"]
    assert args[-3:] == [*configs.LOCAL_BEAM_ARGS, "--runner=DataflowRunner"]


def test_components_carry_their_parameters(spec):
    assert _parameter(spec, "SequenceExampleGen", "input_base") == LOG
    assert _parameter(spec, "SequenceExampleGen", "min_user") == "5"
    assert _parameter(spec, "ImportSchemaGen", "schema_file") == configs.IMAGE_SCHEMA_PATH
    assert _parameter(spec, "Trainer", "run_fn") == configs.RUN_FN
    assert json.loads(_parameter(spec, "Trainer", "custom_config")) == {
        "model": "remi",
        "overrides": {"embedding_dim": 32, "max_steps": 5000},
        "export": {"scann_leaves": 2000, "scann_leaves_to_search": 200, "xla": False},
    }
    assert _parameter(spec, "RetrievalEvaluator", "min_recall") == 0.05
    assert _parameter(spec, "RetrievalEvaluator", "recall_tolerance") == 0.02
    assert _parameter(spec, "ServablePusher", "serving_base") == f"{ROOT}/{configs.SERVING_DIR}"
    assert spec["pipelineInfo"]["name"] == configs.PIPELINE_NAME


def test_tasks_depend_on_validation(spec):
    tasks = spec["root"]["dag"]["tasks"]
    for task in ("Trainer", "RetrievalEvaluator"):
        assert {"SequenceExampleGen", "ValidationGate"} <= set(tasks[task]["dependentTasks"])
        schema = tasks[task]["inputs"]["artifacts"]["schema"]["taskOutputArtifact"]
        assert schema == {"outputArtifactKey": "validated_schema", "producerTask": "ValidationGate"}
    assert tasks["ServablePusher"]["dependentTasks"] == ["RetrievalEvaluator", "Trainer"]


def test_the_evaluator_receives_the_latest_blessed_model(spec):
    tasks = spec["root"]["dag"]["tasks"]
    baseline = tasks["RetrievalEvaluator"]["inputs"]["artifacts"]["baseline_model"]["taskOutputArtifact"]
    assert baseline == {"outputArtifactKey": "model", "producerTask": "latest_blessed_model_resolver-model-resolver"}
    queries = {
        name: executor["resolver"]["outputArtifactQueries"]
        for name, executor in spec["deploymentSpec"]["executors"].items()
        if "resolver" in executor
    }
    blessings = queries["latest_blessed_model_resolver-model-blessing-resolver_executor"]["model_blessing"]
    assert "metadata.blessed.number_value=1" in blessings["filter"]  # the property RetrievalEvaluator writes
    model = queries["latest_blessed_model_resolver-model-resolver_executor"]["model"]
    assert "metadata['current_model_id']" in model["filter"]
