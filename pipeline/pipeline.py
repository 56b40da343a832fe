"""The DMI-Rec TFX pipeline: interaction logs in, a blessed retrieval model pushed to a serving directory.

``create_pipeline`` builds the DAG and knows no paths or runner settings: the runners
(``local_runner.py``, ``kubeflow_runner.py``) pass them in, as in the TFX taxi template.

1. SequenceExampleGen: logs -> one example per user, split 8:1:1 by user; malformed rows quarantined.
2. StatisticsGen, ImportSchemaGen (``schemas/user_sequences.pbtxt``), ExampleValidator, and the
   ValidationGate, which fails the run on any anomaly; Transform reads the schema the gate passes on.
3. Transform (``trainer.tfx_module.preprocessing_fn``): item ids -> indices 1..N by descending frequency.
   The vocabulary is analyzed over train, eval *and* test users, as the protocol re-indexes the whole data
   set (ComiRec; ``dmirec train`` does the same): items that only eval or test users have would otherwise
   be unknown, unretrievable and silently dropped from those users' histories and targets. Ids carry no
   label information, so this leaks nothing but the catalogue, which a retrieval system has anyway.
4. Trainer (``trainer.tfx_module.run_fn`` -> ``trainer.train.train``, then the ``dmi`` and ``dmi_exact``
   servables); the variant and its ``ModelConfig`` overrides travel in ``custom_config``.
5. RetrievalEvaluator: test metrics of ``dmi_exact``; blesses when Recall@50 clears the threshold and is
   not worse (beyond a tolerance) than the latest blessed model's, found in ML Metadata.
6. ServablePusher: copies blessed servables to ``<serving_base>/<name>/<version>/``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import trainer  # noqa: F401  (selects Keras 2 before anything imports TensorFlow)
from ml_metadata.proto import metadata_store_pb2
from tfx import v1 as tfx

from pipeline import configs
from pipeline.components import RetrievalEvaluator, ServablePusher, ValidationGate
from pipeline.sequence_example_gen import SequenceExampleGen
from pipeline.sequence_example_gen.component import DEFAULT_KCORE_ROUNDS, DEFAULT_MAX_BAD_FRACTION
from trainer import config as config_lib
from trainer import constants, tfx_module

SPLITS = tuple(constants.SPLIT_RATIOS)
# Node ids the run summary (run_summary.py) looks up.
EVALUATOR_ID = "RetrievalEvaluator"
PUSHER_ID = "ServablePusher"


def create_pipeline(
    *,
    pipeline_name: str,
    pipeline_root: str,
    input_base: str,
    schema_path: str,
    serving_base: str,
    model: str = configs.DEFAULT_MODEL,
    overrides: Mapping[str, Any] | None = None,
    split_seed: int = 0,
    min_user: int = 0,
    min_item: int = 0,
    kcore_rounds: int = DEFAULT_KCORE_ROUNDS,
    max_bad_fraction: float = DEFAULT_MAX_BAD_FRACTION,
    min_recall: float = configs.DEFAULT_MIN_RECALL,
    recall_tolerance: float = configs.DEFAULT_RECALL_TOLERANCE,
    metadata_connection_config: metadata_store_pb2.ConnectionConfig | None = None,
    beam_pipeline_args: Sequence[str] = (),
    enable_cache: bool = True,
) -> tfx.dsl.Pipeline:
    """Builds the pipeline.

    Args:
      pipeline_name: the pipeline's name (its ML Metadata context; the evaluator's baseline is the latest
        blessed model under this name).
      pipeline_root: where the components write their artifacts.
      input_base: the interaction logs: a directory of ``*.csv``/``*.csv.gz`` files or one file.
      schema_path: the schema of the per-user examples (``schemas/user_sequences.pbtxt``), readable where
        ImportSchemaGen runs.
      serving_base: where blessed servables are pushed (``<serving_base>/<name>/<version>/``).
      model: the model variant (:data:`trainer.config.VARIANTS`, not ``pop``, which has no servable).
      overrides: :class:`~trainer.config.ModelConfig` field values over the variant's preset.
      split_seed: seed of the 8:1:1 user split.
      min_user: iterative k-core: drop users with fewer events (0: no filter).
      min_item: iterative k-core: drop items with fewer events (0: no filter).
      kcore_rounds: k-core rounds of SequenceExampleGen.
      max_bad_fraction: the most malformed rows SequenceExampleGen accepts, as a fraction of all rows.
      min_recall: the least test Recall@50 to bless a model.
      recall_tolerance: how far (absolute) below the latest blessed model's Recall@50 a model may be.
      metadata_connection_config: the ML Metadata store: the pipeline's (local runs) and the evaluator's
        source of the latest blessed model; None for orchestrators that manage their own (Kubeflow).
      beam_pipeline_args: options of every Beam-based component (runner, workers, ...).
      enable_cache: reuse the outputs of components whose inputs and parameters did not change.

    Returns:
      The pipeline.

    Raises:
      ValueError: an unknown variant, ``pop``, or invalid config overrides (checked here, before a run).
    """
    config = config_lib.variant_config(model, overrides)  # fails now rather than in the Trainer
    if config.user_tower == "popularity":
        raise ValueError(f"model {model!r} has no servable; the pipeline trains neural variants only")

    example_gen = SequenceExampleGen(
        input_base=input_base,
        split_seed=split_seed,
        min_user=min_user,
        min_item=min_item,
        kcore_rounds=kcore_rounds,
        max_bad_fraction=max_bad_fraction,
    )
    statistics_gen = tfx.components.StatisticsGen(examples=example_gen.outputs["examples"])
    schema_gen = tfx.components.ImportSchemaGen(schema_file=schema_path)
    example_validator = tfx.components.ExampleValidator(
        statistics=statistics_gen.outputs["statistics"], schema=schema_gen.outputs["schema"]
    )
    validation_gate = ValidationGate(
        anomalies=example_validator.outputs["anomalies"], schema=schema_gen.outputs["schema"]
    )
    transform = tfx.components.Transform(
        examples=example_gen.outputs["examples"],
        schema=validation_gate.outputs["validated_schema"],
        preprocessing_fn=configs.PREPROCESSING_FN,
        splits_config=tfx.proto.SplitsConfig(analyze=list(SPLITS), transform=list(SPLITS)),
        disable_statistics=True,
    )
    model_trainer = tfx.components.Trainer(
        run_fn=configs.RUN_FN,
        examples=transform.outputs["transformed_examples"],
        transform_graph=transform.outputs["transform_graph"],
        train_args=tfx.proto.TrainArgs(splits=[constants.TRAIN]),
        eval_args=tfx.proto.EvalArgs(splits=[constants.EVAL, constants.TEST]),
        # Serialized as JSON with sorted keys (tuples become lists): the Trainer's cache key does not depend
        # on the overrides' order; tfx_module.model_config turns the lists back into tuples.
        custom_config={tfx_module.MODEL_KEY: model, tfx_module.OVERRIDES_KEY: dict(overrides or {})},
    )
    evaluator = RetrievalEvaluator(
        model=model_trainer.outputs["model"],
        examples=transform.outputs["transformed_examples"],
        transform_graph=transform.outputs["transform_graph"],
        min_recall=min_recall,
        recall_tolerance=recall_tolerance,
        metadata_connection_config=metadata_connection_config,
    ).with_id(EVALUATOR_ID)
    pusher = ServablePusher(
        model=model_trainer.outputs["model"],
        model_blessing=evaluator.outputs["blessing"],
        serving_base=serving_base,
    ).with_id(PUSHER_ID)
    return tfx.dsl.Pipeline(
        pipeline_name=pipeline_name,
        pipeline_root=pipeline_root,
        components=[
            example_gen,
            statistics_gen,
            schema_gen,
            example_validator,
            validation_gate,
            transform,
            model_trainer,
            evaluator,
            pusher,
        ],
        enable_cache=enable_cache,
        metadata_connection_config=metadata_connection_config,
        beam_pipeline_args=list(beam_pipeline_args),
    )

