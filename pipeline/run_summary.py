"""What the latest run of a pipeline did, read back from ML Metadata: node states, push, test metrics.

A run is a ``pipeline_run`` context of TFX's ML Metadata layout. Components served from the cache are
recorded as ``CACHED`` executions whose output events point at the reused artifacts, so a fully cached
run still reports the push and metrics it reused.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import ml_metadata as mlmd
from ml_metadata.proto import metadata_store_pb2
from tfx.dsl.io import fileio
from tfx.types import standard_artifacts

from pipeline.components import blessing, retrieval_evaluator, servable_pusher
from pipeline.pipeline import EVALUATOR_ID, PUSHER_ID

_RUN_CONTEXT_TYPE = "pipeline_run"
_NODE_CONTEXT_TYPE = "node"


@dataclasses.dataclass(frozen=True)
class RunSummary:
    """The outcome of one pipeline run.

    Attributes:
      run_id: the run's name (its ``pipeline_run`` context).
      states: node id -> its execution's state in this run (``COMPLETE``, ``CACHED``, ``FAILED``, ...).
      metrics: the evaluator's test metrics (empty when it did not run).
      blessed: whether the model was blessed.
      reason: why it was (not) blessed.
      pushed: whether the servables were pushed.
      version: the pushed version ("" when not pushed).
      servables: servable name -> pushed version directory.
    """

    run_id: str
    states: dict[str, str]
    metrics: dict[str, float]
    blessed: bool
    reason: str
    pushed: bool
    version: str
    servables: dict[str, str]


def latest_run(store: mlmd.MetadataStore, pipeline_name: str) -> RunSummary:
    """Summarises the latest run of a pipeline.

    Args:
      store: the pipeline's ML Metadata.
      pipeline_name: the pipeline's name.

    Returns:
      The summary of the run that holds the pipeline's latest execution.

    Raises:
      ValueError: the store has no execution of this pipeline.
    """
    pipeline_context = store.get_context_by_type_and_name("pipeline", pipeline_name)
    executions = store.get_executions_by_context(pipeline_context.id) if pipeline_context else []
    if not executions:
        raise ValueError(f"ML Metadata has no run of pipeline {pipeline_name!r}")
    latest = max(executions, key=lambda execution: execution.id)
    run = _context_of_type(store, latest.id, _RUN_CONTEXT_TYPE)
    by_node = {}
    for execution in sorted(store.get_executions_by_context(run.id), key=lambda execution: execution.id):
        node = _context_of_type(store, execution.id, _NODE_CONTEXT_TYPE).name
        by_node[node.removeprefix(f"{pipeline_name}.")] = execution
    states = {
        node: metadata_store_pb2.Execution.State.Name(execution.last_known_state)
        for node, execution in by_node.items()
    }

    metrics: dict[str, float] = {}
    blessed, reason = False, ""
    if EVALUATOR_ID in by_node:
        outputs = _outputs_by_type(store, by_node[EVALUATOR_ID].id)
        evaluation = outputs.get(standard_artifacts.ModelEvaluation.TYPE_NAME)
        if evaluation is not None:
            metrics = _read_json(os.path.join(evaluation.uri, retrieval_evaluator.METRICS_FILE))["metrics"]
        model_blessing = outputs.get(standard_artifacts.ModelBlessing.TYPE_NAME)
        if model_blessing is not None:
            blessed = model_blessing.custom_properties[blessing.BLESSED].int_value == 1
            reason = model_blessing.custom_properties[blessing.REASON].string_value
    pushed, version, servables = False, "", {}
    pushed_model = _outputs_by_type(store, by_node[PUSHER_ID].id).get(
        standard_artifacts.PushedModel.TYPE_NAME) if PUSHER_ID in by_node else None
    if pushed_model is not None and pushed_model.custom_properties[servable_pusher.PUSHED].int_value == 1:
        pushed = True
        version = pushed_model.custom_properties[servable_pusher.PUSHED_VERSION].string_value
        servables = json.loads(pushed_model.custom_properties[servable_pusher.PUSHED_SERVABLES].string_value)
    return RunSummary(run.name, states, metrics, blessed, reason, pushed, version, servables)


def _context_of_type(store: mlmd.MetadataStore, execution_id: int, type_name: str) -> metadata_store_pb2.Context:
    type_id = store.get_context_type(type_name).id
    for context in store.get_contexts_by_execution(execution_id):
        if context.type_id == type_id:
            return context
    raise ValueError(f"execution {execution_id} has no {type_name!r} context")


def _outputs_by_type(store: mlmd.MetadataStore, execution_id: int) -> dict[str, metadata_store_pb2.Artifact]:
    """An execution's output artifacts by type name (one per type in this pipeline's components)."""
    ids = [
        event.artifact_id
        for event in store.get_events_by_execution_ids([execution_id])
        if event.type == metadata_store_pb2.Event.OUTPUT
    ]
    artifacts = store.get_artifacts_by_id(ids)
    type_names = {t.id: t.name for t in store.get_artifact_types_by_id(list({a.type_id for a in artifacts}))}
    return {type_names[artifact.type_id]: artifact for artifact in artifacts}


def _read_json(path: str) -> Any:
    with fileio.open(path) as f:
        return json.loads(f.read())
