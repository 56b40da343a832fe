"""RetrievalEvaluator: protocol metrics of the exported servable on test users, and the blessing decision.

The evaluator scores what will be pushed: the Trainer's exported ``dmi_exact`` SavedModel, called through
its ``serving_default`` signature with raw string item ids (the in-graph id mapping included), on the
test users of SequenceExampleGen's examples (raw ids too: nothing here knows an index) cut as the
protocol says, with the metrics code of training (:func:`trainer.evaluation.evaluate_saved_model`). ``dmi_exact`` ranks all items
exactly (Eq. 20), so its numbers equal the trained model's; the ScaNN servable ``dmi`` approximates them.

The blessing rule is in :mod:`pipeline.components.blessing`. The baseline, the latest blessed model of the
pipeline, arrives as the optional input ``baseline_model`` (a TFX ``Resolver`` with
``LatestBlessedModelStrategy`` in the pipeline, as the TFX templates wire their Evaluator), so the rule is
the same on every orchestrator and the component needs no ML Metadata connection. The baseline's own
``dmi_exact`` servable is evaluated on the candidate's test users (as TFX's Evaluator re-evaluates its
baseline), so the comparison holds when the data moved on since the baseline was blessed. A re-run whose
Trainer came from the cache receives its own model as the baseline: it is blessed again (above the
threshold) without a second evaluation, and the pusher sees that version is already served.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

import trainer  # noqa: F401  (selects Keras 2 before anything imports TensorFlow)
from absl import logging
from tfx import types
from tfx.components.evaluator import executor as evaluator_executor
from tfx.components.util import tfxio_utils
from tfx.dsl.components.base import base_beam_component, executor_spec
from tfx.dsl.io import fileio
from tfx.types import artifact_utils, standard_artifacts
from tfx.types.component_spec import ChannelParameter, ExecutionParameter
from tfx.utils import io_utils, path_utils

from pipeline import configs
from pipeline.components import blessing
from trainer import data_schema, export, tfx_module
from trainer.evaluation import evaluate_saved_model
from trainer.train import VALIDATION_METRIC

# Inputs, parameters and outputs.
MODEL_KEY = "model"
EXAMPLES_KEY = "examples"
SCHEMA_KEY = "schema"
MIN_RECALL_KEY = "min_recall"
RECALL_TOLERANCE_KEY = "recall_tolerance"
BASELINE_MODEL_KEY = "baseline_model"
EVALUATION_KEY = "evaluation"
BLESSING_KEY = "blessing"

METRICS_FILE = "metrics.json"
EVALUATED_SERVABLE = export.EXACT
_TELEMETRY = ["RetrievalEvaluator"]


class RetrievalEvaluatorSpec(types.ComponentSpec):
    """Inputs, parameters and outputs of :class:`RetrievalEvaluator`."""

    PARAMETERS = {
        MIN_RECALL_KEY: ExecutionParameter(type=float),
        RECALL_TOLERANCE_KEY: ExecutionParameter(type=float),
    }
    INPUTS = {
        MODEL_KEY: ChannelParameter(type=standard_artifacts.Model),
        BASELINE_MODEL_KEY: ChannelParameter(type=standard_artifacts.Model, optional=True),
        EXAMPLES_KEY: ChannelParameter(type=standard_artifacts.Examples),
        SCHEMA_KEY: ChannelParameter(type=standard_artifacts.Schema),
    }
    OUTPUTS = {
        EVALUATION_KEY: ChannelParameter(type=standard_artifacts.ModelEvaluation),
        BLESSING_KEY: ChannelParameter(type=standard_artifacts.ModelBlessing),
    }


class Executor(evaluator_executor.Executor):
    """Evaluates the ``dmi_exact`` servable on test users and decides the blessing.

    A subclass of TFX's Evaluator executor only for what orchestrators do around evaluators: its ``Do`` is
    replaced whole. TFX's Kubeflow V2 entry point rewrites the blessing's ``current_model_id`` and
    ``baseline_model_id`` from ML Metadata ids into Kubeflow artifact names for subclasses of that class
    only, and the compiled latest-blessed-model resolver looks the model up by that name; with a plain
    executor the Resolver would never find a baseline on Kubeflow.
    """

    def Do(
        self,
        input_dict: dict[str, list[types.Artifact]],
        output_dict: dict[str, list[types.Artifact]],
        exec_properties: dict[str, Any],
    ) -> None:
        """Writes ``metrics.json`` into ``evaluation`` and the decision onto ``blessing``.

        Args:
          input_dict: ``model`` (the Trainer's), ``examples`` (SequenceExampleGen's, with a ``test``
            split), ``schema`` (theirs) and, optionally, ``baseline_model`` (the latest blessed model;
            absent or empty for the pipeline's first).
          output_dict: ``evaluation`` (ModelEvaluation) and ``blessing`` (ModelBlessing).
          exec_properties: ``min_recall`` and ``recall_tolerance``.

        Raises:
          FileNotFoundError: the model has no ``dmi_exact`` servable.
          ValueError: the examples have no ``test`` split, or it has no user to evaluate.
        """
        self._log_startup(input_dict, output_dict, exec_properties)
        model = artifact_utils.get_single_instance(input_dict[MODEL_KEY])
        examples = artifact_utils.get_single_instance(input_dict[EXAMPLES_KEY])
        evaluation = artifact_utils.get_single_instance(output_dict[EVALUATION_KEY])
        model_blessing = artifact_utils.get_single_instance(output_dict[BLESSING_KEY])

        servable_dir = _servable_dir(model)
        if servable_dir is None:
            raise FileNotFoundError(f"the model artifact at {model.uri} has no {EVALUATED_SERVABLE} servable")
        if data_schema.TEST not in artifact_utils.decode_split_names(examples.split_names):
            raise ValueError(f"the examples at {examples.uri} have no {data_schema.TEST!r} split")
        schema = tfx_module.read_schema(
            io_utils.get_only_uri_in_dir(artifact_utils.get_single_uri(input_dict[SCHEMA_KEY]))
        )
        test_users = tfx_module.read_user_sequences(
            tfxio_utils.get_tf_dataset_factory_from_artifact([examples], _TELEMETRY),
            io_utils.all_files_pattern(artifact_utils.get_split_uri([examples], data_schema.TEST)),
            schema,
        )
        metrics, users = evaluate_saved_model(servable_dir, test_users)
        recall = metrics[VALIDATION_METRIC]

        resolved = input_dict.get(BASELINE_MODEL_KEY) or []
        baseline, note = _baseline(resolved, model, recall, test_users)
        min_recall = float(exec_properties[MIN_RECALL_KEY])
        tolerance = float(exec_properties[RECALL_TOLERANCE_KEY])
        decision = blessing.decide(recall, min_recall, tolerance, baseline)
        if note:
            decision = dataclasses.replace(decision, reason=f"{decision.reason} ({note})")
        logging.info("RetrievalEvaluator: %s on %d test users: %s; blessed=%s: %s",
                     EVALUATED_SERVABLE, users, metrics, decision.blessed, decision.reason)

        report = {
            "split": data_schema.TEST,
            "users": users,
            "servable": EVALUATED_SERVABLE,
            "metrics": metrics,
            "ndcg": "rank order, IDCG over the number of hits (protocol.md)",
            "blessed": decision.blessed,
            "reason": decision.reason,
            "min_recall": min_recall,
            "recall_tolerance": tolerance,
            "baseline": None if baseline is None else dataclasses.asdict(baseline),
        }
        with fileio.open(os.path.join(evaluation.uri, METRICS_FILE), "w") as f:
            f.write(json.dumps(report, indent=2, sort_keys=True))
        _record_blessing(model_blessing, model, recall, decision, baseline)


def _servable_dir(model: types.Artifact) -> str | None:
    """The model artifact's ``dmi_exact`` servable, or None when it has none."""
    path = os.path.join(path_utils.serving_model_dir(model.uri), EVALUATED_SERVABLE)
    return path if fileio.exists(os.path.join(path, "saved_model.pb")) else None


def _baseline(
    resolved: list[types.Artifact],
    model: types.Artifact,
    recall: float,
    test_users: Mapping[str, Sequence[str]],
) -> tuple[blessing.Baseline | None, str]:
    """The latest blessed model measured on the candidate's test users, and a note for the reason.

    Args:
      resolved: what the Resolver passed: [] for the pipeline's first model, else one Model.
      model: the candidate.
      recall: the candidate's test Recall@50.
      test_users: the candidate's test users, by raw ids (items the baseline does not know are targets
        it cannot retrieve, see :func:`trainer.evaluation.evaluate_saved_model`).

    Returns:
      ``(baseline, note)``: None and a note when the baseline's servable is gone (e.g. its pipeline root
      was cleaned): the threshold alone decides then, and the reason says so.
    """
    if not resolved:
        return None, ""
    (previous,) = resolved
    if previous.id == model.id:
        return blessing.Baseline(previous.id, previous.uri, recall, is_candidate=True), ""
    servable_dir = _servable_dir(previous)
    if servable_dir is None:
        note = f"the latest blessed model {previous.uri} has no {EVALUATED_SERVABLE} servable: not compared"
        logging.warning("RetrievalEvaluator: %s", note)
        return None, note
    metrics, _ = evaluate_saved_model(servable_dir, test_users)
    return blessing.Baseline(previous.id, previous.uri, metrics[VALIDATION_METRIC]), ""


def _record_blessing(
    model_blessing: types.Artifact,
    model: types.Artifact,
    recall: float,
    decision: blessing.Decision,
    baseline: blessing.Baseline | None,
) -> None:
    model_blessing.set_int_custom_property(blessing.BLESSED, int(decision.blessed))
    model_blessing.set_float_custom_property(blessing.RECALL, recall)
    model_blessing.set_string_custom_property(blessing.REASON, decision.reason)
    model_blessing.set_string_custom_property(blessing.CURRENT_MODEL, model.uri)
    model_blessing.set_int_custom_property(blessing.CURRENT_MODEL_ID, model.id)
    if baseline is not None:
        model_blessing.set_string_custom_property(blessing.BASELINE_MODEL, baseline.model_uri)
        model_blessing.set_int_custom_property(blessing.BASELINE_MODEL_ID, baseline.model_id)
        model_blessing.set_float_custom_property(blessing.BASELINE_RECALL, baseline.recall)


class RetrievalEvaluator(base_beam_component.BaseBeamComponent):
    """Evaluates the trained model's exact servable on test users and blesses it or not.

    Outputs:
      evaluation: ``ModelEvaluation`` holding ``metrics.json`` (metrics, users, decision, baseline).
      blessing: ``ModelBlessing`` with custom properties ``blessed`` (1 or 0), ``recall_at_50``,
        ``reason``, ``current_model``/``current_model_id`` and, when compared, ``baseline_model``,
        ``baseline_model_id``, ``baseline_recall_at_50``.

    Example::

        evaluator = RetrievalEvaluator(
            model=trainer.outputs["model"],
            examples=example_gen.outputs["examples"],
            schema=validation_gate.outputs["validated_schema"],
            baseline_model=latest_blessed.outputs["model"],  # a Resolver (LatestBlessedModelStrategy)
            min_recall=0.05,
        )
    """

    SPEC_CLASS = RetrievalEvaluatorSpec
    EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(Executor)  # TFX's Evaluator executor is a Beam one

    def __init__(
        self,
        model: types.BaseChannel,
        examples: types.BaseChannel,
        schema: types.BaseChannel,
        baseline_model: types.BaseChannel | None = None,
        min_recall: float = configs.DEFAULT_MIN_RECALL,
        recall_tolerance: float = configs.DEFAULT_RECALL_TOLERANCE,
    ) -> None:
        """Configures the component.

        Args:
          model: the Trainer's ``model`` (with the ``dmi_exact`` servable under ``Format-Serving``).
          examples: SequenceExampleGen's ``examples`` (the ``test`` split is evaluated).
          schema: their (validated) schema.
          baseline_model: the latest blessed model (a Resolver's output); None blesses on the threshold
            alone.
          min_recall: the least test Recall@50 to bless.
          recall_tolerance: how far (absolute) below the baseline's Recall@50 a model may be.

        Raises:
          ValueError: a ``min_recall`` or ``recall_tolerance`` outside [0, 1].
        """
        for name, value in ((MIN_RECALL_KEY, min_recall), (RECALL_TOLERANCE_KEY, recall_tolerance)):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {value}")
        super().__init__(
            spec=RetrievalEvaluatorSpec(
                model=model,
                examples=examples,
                schema=schema,
                baseline_model=baseline_model,
                min_recall=float(min_recall),
                recall_tolerance=float(recall_tolerance),
                evaluation=types.Channel(type=standard_artifacts.ModelEvaluation),
                blessing=types.Channel(type=standard_artifacts.ModelBlessing),
            )
        )
