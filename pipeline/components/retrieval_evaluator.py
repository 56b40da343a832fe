"""RetrievalEvaluator: protocol metrics of the exported servable on test users, and the blessing decision.

The evaluator scores what will be pushed: the Trainer's exported ``dmi_exact`` SavedModel, called through
its ``serving_default`` signature with raw string item ids (the in-graph id mapping included), on the
test users of Transform's output cut as the protocol says (:func:`trainer.sequences.evaluation_set`),
with the metrics code of training (:class:`trainer.evaluation.Evaluator`). ``dmi_exact`` ranks all items
exactly (Eq. 20), so its numbers equal the trained model's; the ScaNN servable ``dmi`` approximates them.

The blessing rule and the baseline lookup are in :mod:`pipeline.components.blessing`. The executor asks ML
Metadata itself for the latest blessed model when it is given a connection: TFX's cache then keys only on
the model and the examples, so a re-run with unchanged inputs reuses the evaluation (and the push) instead
of evaluating the model against its own earlier blessing, as a Resolver-fed baseline input would. Without
a connection (e.g. a Kubeflow run) the threshold alone decides, and the blessing's reason says so.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import trainer  # noqa: F401  (selects Keras 2 before anything imports TensorFlow)
import ml_metadata as mlmd
import tensorflow as tf
import tensorflow_transform as tft
from absl import logging
from ml_metadata.proto import metadata_store_pb2
from tfx import types
from tfx.components.util import tfxio_utils
from tfx.dsl.components.base import base_component, base_executor, executor_spec
from tfx.dsl.io import fileio
from tfx.types import artifact_utils, standard_artifacts
from tfx.types.component_spec import ChannelParameter, ExecutionParameter
from tfx.utils import io_utils, path_utils, proto_utils

from pipeline.components import blessing
from trainer import constants, export, tfx_module
from trainer.evaluation import Evaluator
from trainer.sequences import EncodedSequences, Vocabulary, evaluation_set
from trainer.train import VALIDATION_METRIC

# Inputs, parameters and outputs.
MODEL_KEY = "model"
EXAMPLES_KEY = "examples"
TRANSFORM_GRAPH_KEY = "transform_graph"
MIN_RECALL_KEY = "min_recall"
RECALL_TOLERANCE_KEY = "recall_tolerance"
METADATA_CONNECTION_KEY = "metadata_connection_config"
EVALUATION_KEY = "evaluation"
BLESSING_KEY = "blessing"

METRICS_FILE = "metrics.json"
EVALUATED_SERVABLE = export.EXACT
_TELEMETRY = ["RetrievalEvaluator"]


class ServableRecommender:
    """A SavedModel's ``serving_default`` seen as a model of item indices, for :class:`Evaluator`.

    Histories of indices become raw ids (index 0, padding, becomes "", which the servable ignores), and
    the returned raw ids become indices again.

    Args:
      saved_model_dir: a servable written by :func:`trainer.export.export_servables`.
      vocabulary: the item ids of indices 1..N (the model's).
    """

    def __init__(self, saved_model_dir: str, vocabulary: Vocabulary):
        self.num_items = len(vocabulary)
        self._loaded = tf.saved_model.load(saved_model_dir)  # the signature needs the object alive
        self._serve = self._loaded.signatures["serving_default"]
        self._item_ids = tf.constant(("",) + vocabulary.item_ids)
        self._indices = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(self._item_ids[1:], tf.range(1, self.num_items + 1)),
            default_value=constants.PADDING_INDEX,
        )

    def recommend(self, history: tf.Tensor, n: int) -> tuple[tf.Tensor, tf.Tensor]:
        """The top-``n`` items of each history: ``(scores, indices)``, each (batch, n)."""
        outputs = self._serve(
            history=tf.gather(self._item_ids, history),
            top_n=tf.constant(n, tf.int32),
            exclude_history=tf.constant(False),
        )
        return outputs["scores"], self._indices.lookup(outputs["item_ids"])


def evaluate_servable(
    saved_model_dir: str, vocabulary: Vocabulary, test_examples: EncodedSequences
) -> tuple[dict[str, float], int]:
    """Protocol metrics of a servable on cut test users.

    Args:
      saved_model_dir: the servable.
      vocabulary: its item vocabulary.
      test_examples: the test users.

    Returns:
      ``(metrics, users)``: Recall/HitRate/NDCG at 20 and 50 (rank-order NDCG) and the users evaluated.
    """
    # The servable keeps the last L items of what it is given, so the cut histories are passed whole.
    users = evaluation_set(test_examples, max_length=int(test_examples.lengths.max(initial=1)))
    return Evaluator(ServableRecommender(saved_model_dir, vocabulary), users)(), len(users)


class RetrievalEvaluatorSpec(types.ComponentSpec):
    """Inputs, parameters and outputs of :class:`RetrievalEvaluator`."""

    PARAMETERS = {
        MIN_RECALL_KEY: ExecutionParameter(type=float),
        RECALL_TOLERANCE_KEY: ExecutionParameter(type=float),
        METADATA_CONNECTION_KEY: ExecutionParameter(type=metadata_store_pb2.ConnectionConfig, optional=True),
    }
    INPUTS = {
        MODEL_KEY: ChannelParameter(type=standard_artifacts.Model),
        EXAMPLES_KEY: ChannelParameter(type=standard_artifacts.Examples),
        TRANSFORM_GRAPH_KEY: ChannelParameter(type=standard_artifacts.TransformGraph),
    }
    OUTPUTS = {
        EVALUATION_KEY: ChannelParameter(type=standard_artifacts.ModelEvaluation),
        BLESSING_KEY: ChannelParameter(type=standard_artifacts.ModelBlessing),
    }


class Executor(base_executor.BaseExecutor):
    """Evaluates the ``dmi_exact`` servable on test users and decides the blessing."""

    def Do(
        self,
        input_dict: dict[str, list[types.Artifact]],
        output_dict: dict[str, list[types.Artifact]],
        exec_properties: dict[str, Any],
    ) -> None:
        """Writes ``metrics.json`` into ``evaluation`` and the decision onto ``blessing``.

        Args:
          input_dict: ``model`` (the Trainer's), ``examples`` (Transform's transformed examples, with a
            ``test`` split), ``transform_graph`` (for the item vocabulary).
          output_dict: ``evaluation`` (ModelEvaluation) and ``blessing`` (ModelBlessing).
          exec_properties: ``min_recall``, ``recall_tolerance`` and, optionally,
            ``metadata_connection_config`` (JSON of an ML Metadata ``ConnectionConfig``).

        Raises:
          FileNotFoundError: the model has no ``dmi_exact`` servable.
          ValueError: the examples have no ``test`` split, or it has no user to evaluate.
        """
        self._log_startup(input_dict, output_dict, exec_properties)
        model = artifact_utils.get_single_instance(input_dict[MODEL_KEY])
        examples = artifact_utils.get_single_instance(input_dict[EXAMPLES_KEY])
        evaluation = artifact_utils.get_single_instance(output_dict[EVALUATION_KEY])
        model_blessing = artifact_utils.get_single_instance(output_dict[BLESSING_KEY])

        servable_dir = os.path.join(path_utils.serving_model_dir(model.uri), EVALUATED_SERVABLE)
        if not fileio.exists(os.path.join(servable_dir, "saved_model.pb")):
            raise FileNotFoundError(f"the model artifact has no {EVALUATED_SERVABLE} servable at {servable_dir}")
        if constants.TEST not in artifact_utils.decode_split_names(examples.split_names):
            raise ValueError(f"the examples at {examples.uri} have no {constants.TEST!r} split")
        transform_output = tft.TFTransformOutput(
            artifact_utils.get_single_uri(input_dict[TRANSFORM_GRAPH_KEY])
        )
        vocabulary = tfx_module.load_vocabulary(transform_output)
        dataset_factory = tfxio_utils.get_tf_dataset_factory_from_artifact([examples], _TELEMETRY)
        test_examples = tfx_module.read_encoded_sequences(
            dataset_factory,
            io_utils.all_files_pattern(artifact_utils.get_split_uri([examples], constants.TEST)),
            transform_output,
        )
        metrics, users = evaluate_servable(servable_dir, vocabulary, test_examples)
        recall = metrics[VALIDATION_METRIC]

        connection = exec_properties.get(METADATA_CONNECTION_KEY)
        baseline = self._baseline(connection) if connection else None
        min_recall = float(exec_properties[MIN_RECALL_KEY])
        tolerance = float(exec_properties[RECALL_TOLERANCE_KEY])
        decision = blessing.decide(recall, min_recall, tolerance, baseline)
        if not connection:
            decision = dataclasses.replace(
                decision, reason=f"{decision.reason} (no ML Metadata connection: not compared with earlier models)"
            )
        logging.info("RetrievalEvaluator: %s on %d test users: %s; blessed=%s: %s",
                     EVALUATED_SERVABLE, users, metrics, decision.blessed, decision.reason)

        report = {
            "split": constants.TEST,
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

    def _baseline(self, connection_json: str) -> blessing.Baseline | None:
        """The latest blessed model of this pipeline, from ML Metadata."""
        pipeline_info = self._context.pipeline_info if self._context else None
        if pipeline_info is None or not pipeline_info.id:
            raise ValueError("a metadata connection was given but the executor does not know its pipeline")
        connection = proto_utils.json_to_proto(connection_json, metadata_store_pb2.ConnectionConfig())
        return blessing.latest_blessed_baseline(mlmd.MetadataStore(connection), pipeline_info.id)


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


class RetrievalEvaluator(base_component.BaseComponent):
    """Evaluates the trained model's exact servable on test users and blesses it or not.

    Outputs:
      evaluation: ``ModelEvaluation`` holding ``metrics.json`` (metrics, users, decision, baseline).
      blessing: ``ModelBlessing`` with custom properties ``blessed`` (1 or 0), ``recall_at_50``,
        ``reason``, ``current_model``/``current_model_id`` and, when compared, ``baseline_model``,
        ``baseline_model_id``, ``baseline_recall_at_50``.

    Example::

        evaluator = RetrievalEvaluator(
            model=trainer.outputs["model"],
            examples=transform.outputs["transformed_examples"],
            transform_graph=transform.outputs["transform_graph"],
            min_recall=0.05,
        )
    """

    SPEC_CLASS = RetrievalEvaluatorSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(Executor)

    def __init__(
        self,
        model: types.BaseChannel,
        examples: types.BaseChannel,
        transform_graph: types.BaseChannel,
        min_recall: float = 0.0,
        recall_tolerance: float = 0.0,
        metadata_connection_config: metadata_store_pb2.ConnectionConfig | None = None,
    ) -> None:
        """Configures the component.

        Args:
          model: the Trainer's ``model`` (with the ``dmi_exact`` servable under ``Format-Serving``).
          examples: Transform's ``transformed_examples`` (the ``test`` split is evaluated).
          transform_graph: Transform's ``transform_graph`` (the item vocabulary).
          min_recall: the least test Recall@50 to bless.
          recall_tolerance: how far (absolute) below the latest blessed model's Recall@50 a model may be.
          metadata_connection_config: the pipeline's ML Metadata, to find the latest blessed model; None
            blesses on the threshold alone.

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
                transform_graph=transform_graph,
                min_recall=float(min_recall),
                recall_tolerance=float(recall_tolerance),
                metadata_connection_config=metadata_connection_config,
                evaluation=types.Channel(type=standard_artifacts.ModelEvaluation),
                blessing=types.Channel(type=standard_artifacts.ModelBlessing),
            )
        )
