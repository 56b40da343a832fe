"""Tests for pipeline.run_summary on a hand-built ML Metadata store in TFX's layout (no pipeline run)."""

from __future__ import annotations

import json
from pathlib import Path

import ml_metadata as mlmd
import pytest
from ml_metadata.proto import metadata_store_pb2
from tfx.types import standard_artifacts

from pipeline import run_summary
from pipeline.components import blessing, retrieval_evaluator, servable_pusher
from pipeline.pipeline import EVALUATOR_ID, PUSHER_ID

PIPELINE = "test-pipeline"
TRAINER_ID = "Trainer"
State = metadata_store_pb2.Execution.State


class _Store:
    """An in-memory ML Metadata store that records executions the way TFX's orchestrators do.

    Each execution is attributed and associated to the ``pipeline``, ``pipeline_run`` and ``node``
    contexts (node contexts named ``<pipeline>.<node id>``), and linked to its outputs by OUTPUT events.
    """

    def __init__(self) -> None:
        connection = metadata_store_pb2.ConnectionConfig()
        connection.fake_database.SetInParent()
        self.store = mlmd.MetadataStore(connection)
        self._context_types = {
            name: self.store.put_context_type(metadata_store_pb2.ContextType(name=name))
            for name in ("pipeline", "pipeline_run", "node")
        }
        self._execution_type = self.store.put_execution_type(metadata_store_pb2.ExecutionType(name="component"))
        self._contexts: dict[tuple[str, str], metadata_store_pb2.Context] = {}
        self._context("pipeline", PIPELINE)  # a registered pipeline, with or without runs

    def _context(self, type_name: str, name: str) -> metadata_store_pb2.Context:
        key = (type_name, name)
        if key not in self._contexts:
            context = metadata_store_pb2.Context(type_id=self._context_types[type_name], name=name)
            [context.id] = self.store.put_contexts([context])
            self._contexts[key] = context
        return self._contexts[key]

    def execution(
        self, run: str, node: str, state: int, outputs: dict[str, dict[str, int | str]] | None = None
    ) -> None:
        """Records one node's execution in ``run`` with output artifacts (type name -> custom properties).

        Args:
          run: the run's name (its ``pipeline_run`` context).
          node: the node id.
          state: the execution's ``Execution.State``.
          outputs: one output artifact per type name, with its uri under ``uri`` and custom properties.
        """
        artifacts_and_events = []
        for type_name, properties in (outputs or {}).items():
            type_id = self.store.put_artifact_type(metadata_store_pb2.ArtifactType(name=type_name))
            artifact = metadata_store_pb2.Artifact(type_id=type_id, uri=str(properties.get("uri", "")))
            for key, value in properties.items():
                if key == "uri":
                    continue
                field = "int_value" if isinstance(value, int) else "string_value"
                setattr(artifact.custom_properties[key], field, value)
            event = metadata_store_pb2.Event(type=metadata_store_pb2.Event.OUTPUT)
            artifacts_and_events.append((artifact, event))
        contexts = [
            self._context("pipeline", PIPELINE),
            self._context("pipeline_run", run),
            self._context("node", f"{PIPELINE}.{node}"),
        ]
        execution = metadata_store_pb2.Execution(type_id=self._execution_type, last_known_state=state)
        self.store.put_execution(execution, artifacts_and_events, contexts)


def _evaluation(tmp_path: Path, metrics: dict[str, float]) -> dict[str, int | str]:
    """A ModelEvaluation artifact whose directory holds the evaluator's metrics file."""
    (tmp_path / retrieval_evaluator.METRICS_FILE).write_text(json.dumps({"metrics": metrics, "other": 1}))
    return {"uri": str(tmp_path)}


def test_the_latest_run_with_its_states_metrics_blessing_and_push(tmp_path):
    store = _Store()
    store.execution("run-1", TRAINER_ID, State.COMPLETE)
    store.execution(
        "run-1",
        PUSHER_ID,
        State.COMPLETE,
        {
            standard_artifacts.PushedModel.TYPE_NAME: {
                servable_pusher.PUSHED: 1,
                servable_pusher.PUSHED_VERSION: "1",
                servable_pusher.PUSHED_SERVABLES: json.dumps({"dmi": "/serving/dmi/1"}),
            }
        },
    )
    metrics = {"recall@50": 0.25, "ndcg@50": 0.125}
    store.execution("run-2", TRAINER_ID, State.CACHED)
    store.execution(
        "run-2",
        EVALUATOR_ID,
        State.COMPLETE,
        {
            standard_artifacts.ModelEvaluation.TYPE_NAME: _evaluation(tmp_path, metrics),
            standard_artifacts.ModelBlessing.TYPE_NAME: {blessing.BLESSED: 1, blessing.REASON: "better"},
        },
    )
    servables = {"dmi": "/serving/dmi/2", "dmi_exact": "/serving/dmi_exact/2"}
    store.execution(
        "run-2",
        PUSHER_ID,
        State.COMPLETE,
        {
            standard_artifacts.PushedModel.TYPE_NAME: {
                servable_pusher.PUSHED: 1,
                servable_pusher.PUSHED_VERSION: "2",
                servable_pusher.PUSHED_SERVABLES: json.dumps(servables),
            }
        },
    )

    summary = run_summary.latest_run(store.store, PIPELINE)

    assert summary == run_summary.RunSummary(
        run_id="run-2",
        states={TRAINER_ID: "CACHED", EVALUATOR_ID: "COMPLETE", PUSHER_ID: "COMPLETE"},
        metrics=metrics,
        blessed=True,
        reason="better",
        pushed=True,
        version="2",
        servables=servables,
    )


def test_a_run_that_did_not_push_and_one_that_failed_before_evaluating(tmp_path):
    store = _Store()
    store.execution(
        "run-1",
        EVALUATOR_ID,
        State.COMPLETE,
        {
            standard_artifacts.ModelEvaluation.TYPE_NAME: _evaluation(tmp_path, {"recall@50": 0.01}),
            standard_artifacts.ModelBlessing.TYPE_NAME: {blessing.BLESSED: 0, blessing.REASON: "worse"},
        },
    )
    store.execution(
        "run-1",
        PUSHER_ID,
        State.COMPLETE,
        {
            standard_artifacts.PushedModel.TYPE_NAME: {
                servable_pusher.PUSHED: 0,
                servable_pusher.PUSHED_VERSION: "",
            }
        },
    )
    summary = run_summary.latest_run(store.store, PIPELINE)
    assert (summary.run_id, summary.metrics, summary.blessed, summary.reason) == (
        "run-1", {"recall@50": 0.01}, False, "worse"
    )
    assert (summary.pushed, summary.version, summary.servables) == (False, "", {})

    store.execution("run-2", TRAINER_ID, State.FAILED)
    summary = run_summary.latest_run(store.store, PIPELINE)
    assert summary == run_summary.RunSummary("run-2", {TRAINER_ID: "FAILED"}, {}, False, "", False, "", {})


def test_a_pipeline_without_runs_raises():
    store = _Store()
    with pytest.raises(ValueError, match="no run of pipeline 'test-pipeline'"):
        run_summary.latest_run(store.store, PIPELINE)
    with pytest.raises(ValueError, match="no run of pipeline 'other'"):
        run_summary.latest_run(store.store, "other")
