"""Tests of create_pipeline: the DAG, each component's settings, and early failures on bad settings."""

from __future__ import annotations

import json

import pytest
from tfx import v1 as tfx

from pipeline import configs, pipeline
from pipeline.components import retrieval_evaluator
from trainer.export_settings import ExportSettings

PATHS = {
    "pipeline_root": "/runs/root",
    "input_base": "/logs/2024-06",
    "schema_path": "/schemas/user_sequences.pbtxt",
    "serving_base": "/serving",
}


def _settings(**settings) -> configs.PipelineSettings:
    return configs.PipelineSettings(**{"pipeline_name": "test-pipeline", **settings})


def _components(**settings) -> dict:
    built = pipeline.create_pipeline(_settings(**settings), **PATHS)
    return {component.id: component for component in built.components}


def _producer(component, key: str) -> tuple[str, str]:
    channel = component.inputs[key]
    return channel.producer_component_id, channel.output_key


def test_the_dag_in_order():
    components = _components()
    assert list(components) == [
        "ImportSchemaGen", "SequenceExampleGen", pipeline.BASELINE_RESOLVER_ID, "StatisticsGen",
        "ExampleValidator", "ValidationGate", "Trainer", pipeline.EVALUATOR_ID, pipeline.PUSHER_ID,
    ]  # topological order (nodes without inputs first); no Transform: raw ids go to the Trainer
    assert _producer(components["ExampleValidator"], "statistics") == ("StatisticsGen", "statistics")
    assert _producer(components["ValidationGate"], "anomalies") == ("ExampleValidator", "anomalies")
    # The Trainer and the evaluator only ever see examples that passed validation (the gate's schema).
    for node in ("Trainer", pipeline.EVALUATOR_ID):
        assert _producer(components[node], "examples") == ("SequenceExampleGen", "examples")
        assert _producer(components[node], "schema") == ("ValidationGate", "validated_schema")
    assert _producer(components[pipeline.EVALUATOR_ID], "model") == ("Trainer", "model")
    assert _producer(components[pipeline.PUSHER_ID], "model_blessing") == (pipeline.EVALUATOR_ID, "blessing")
    # The baseline is the latest blessed model, handed over by TFX's Resolver (no ML Metadata connection).
    resolver = components[pipeline.BASELINE_RESOLVER_ID]
    assert resolver.exec_properties["resolver_class"] is tfx.dsl.experimental.LatestBlessedModelStrategy
    assert _producer(components[pipeline.EVALUATOR_ID], "baseline_model") == (pipeline.BASELINE_RESOLVER_ID, "model")


def test_components_carry_the_settings():
    components = _components(model="remi", overrides={"embedding_dim": 16, "ydnn_hidden_units": (32,)},
                             split_seed=3, min_user=5, min_item=4, min_recall=0.1, recall_tolerance=0.02)
    gen = components["SequenceExampleGen"].exec_properties
    assert (gen["input_base"], gen["split_seed"], gen["min_user"], gen["min_item"]) == ("/logs/2024-06", 3, 5, 4)
    assert components["ImportSchemaGen"].exec_properties["schema_file"] == PATHS["schema_path"]

    trainer = components["Trainer"].exec_properties
    assert trainer["run_fn"] == configs.RUN_FN and trainer["module_file"] is None
    assert json.loads(trainer["train_args"]) == {"splits": ["train"]}
    assert json.loads(trainer["eval_args"]) == {"splits": ["eval", "test"]}
    assert json.loads(trainer["custom_config"]) == {
        "model": "remi", "overrides": {"embedding_dim": 16, "ydnn_hidden_units": [32]}
    }

    exporting = _components(
        export=ExportSettings(scann_leaves=300, scann_leaves_to_search=30, xla=False, sampling_steps=2)
    )
    assert json.loads(exporting["Trainer"].exec_properties["custom_config"])["export"] == {
        "scann_leaves": 300, "scann_leaves_to_search": 30, "xla": False, "sampling_steps": 2
    }

    evaluator = components[pipeline.EVALUATOR_ID].exec_properties
    assert evaluator[retrieval_evaluator.MIN_RECALL_KEY] == 0.1
    assert evaluator[retrieval_evaluator.RECALL_TOLERANCE_KEY] == 0.02
    assert components[pipeline.PUSHER_ID].exec_properties["serving_base"] == "/serving"


def test_pipeline_settings():
    connection = tfx.orchestration.metadata.sqlite_metadata_connection_config("/runs/metadata.sqlite")
    built = pipeline.create_pipeline(
        _settings(beam_args=["--direct_num_workers=1"], enable_cache=False),
        **PATHS,
        metadata_connection_config=connection,
    )
    assert (built.pipeline_info.pipeline_name, built.pipeline_info.pipeline_root) == ("test-pipeline", "/runs/root")
    assert built.beam_pipeline_args == ["--direct_num_workers=1"] and built.enable_cache is False
    assert built.metadata_connection_config == connection


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"model": "pop"}, "has no servable"),
        ({"model": "nope"}, "unknown model"),
        ({"overrides": {"embedding_dim": 0}}, "embedding_dim must be >= 1"),
        ({"min_recall": 2.0}, r"min_recall must be a number in \[0, 1\], got 2.0"),
        ({"recall_tolerance": float("nan")}, r"recall_tolerance must be a number in \[0, 1\]"),
        ({"max_bad_fraction": -0.1}, r"max_bad_fraction must be a number in \[0, 1\]"),
        ({"min_user": -1}, "min_user must be a non-negative integer, got -1"),
        ({"split_seed": 1.5}, "split_seed must be a non-negative integer"),
        ({"kcore_rounds": 0}, "kcore_rounds must be at least 1"),
        ({"pipeline_name": ""}, "pipeline_name must not be empty"),
        ({"export": {"scann_leaves": 10}}, "export must be an ExportSettings"),
        ({"export": ExportSettings(sampling_steps=11)}, r"sampling_steps \(11\) must be at most .* T = 10"),
        ({"model": "remi", "export": ExportSettings(sampling_steps=1)}, "'remi' model has no diffusion refiner"),
    ],
)
def test_bad_settings_fail_before_any_pipeline_is_built(settings, message):
    with pytest.raises(ValueError, match=message):
        _settings(**settings)


def test_settings_are_immutable_and_hold_their_own_copies():
    overrides = {"embedding_dim": 16}
    settings = _settings(overrides=overrides, beam_args=["--a"])
    overrides["embedding_dim"] = 32
    assert settings.overrides == {"embedding_dim": 16} and settings.beam_args == ("--a",)
    with pytest.raises(TypeError):
        settings.overrides["embedding_dim"] = 8  # type: ignore[index]
    defaults = configs.PipelineSettings()
    assert (defaults.kcore_rounds, defaults.max_bad_fraction) == (
        configs.DEFAULT_KCORE_ROUNDS, configs.DEFAULT_MAX_BAD_FRACTION
    )
