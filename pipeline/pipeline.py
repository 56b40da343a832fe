"""The DMI-Rec TFX pipeline: interaction logs in, a blessed retrieval model pushed to a serving directory.

``create_pipeline`` builds the DAG and knows no paths or runner settings: the runners
(``local_runner.py``, ``kubeflow_runner.py``) pass them in, as in the TFX taxi template.

1. SequenceExampleGen: logs -> one example per user, split 8:1:1 by user; malformed rows quarantined.
2. StatisticsGen, ImportSchemaGen (``schemas/user_sequences.pbtxt``), ExampleValidator, and the
   ValidationGate, which fails the run on any anomaly; the Trainer and the evaluator read the schema the
   gate passes on, so neither runs on examples that failed validation.
3. Trainer (``trainer.tfx_module.run_fn`` -> ``trainer.train.train``, then the ``dmi`` and ``dmi_exact``
   servables) reads SequenceExampleGen's examples, raw ids, once the gate passed their schema, and builds
   the item vocabulary itself, over train, eval *and* test users, with the code ``dmirec train`` uses
   (the protocol re-indexes the whole data set, as ComiRec does: items only eval or test users have would
   otherwise be unknown, unretrievable and silently dropped from those users' histories and targets; ids
   carry no label information, so this leaks nothing but the catalogue, which a retrieval system has
   anyway). The servables carry that vocabulary as their asset: raw ids are all they take and return.
   There is no Transform (see ``docs/architecture.md``). The variant, its ``ModelConfig`` overrides and
   the export settings (``PipelineSettings.export``) travel in ``custom_config``.
4. RetrievalEvaluator: test metrics of ``dmi_exact``; blesses when Recall@50 clears the threshold and is
   not worse (beyond a tolerance) than the latest blessed model's on the same test users. That model comes
   in as an input from a ``Resolver`` (``LatestBlessedModelStrategy``), as in the TFX templates, so the
   local and the Kubeflow runs compare alike.
5. ServablePusher: copies blessed servables to ``<serving_base>/<name>/<version>/``.
"""

from __future__ import annotations

import trainer  # noqa: F401  (selects Keras 2 before anything imports TensorFlow)
from ml_metadata.proto import metadata_store_pb2
from tfx import v1 as tfx

from pipeline import configs
from pipeline.components import RetrievalEvaluator, ServablePusher, ValidationGate
from pipeline.sequence_example_gen import SequenceExampleGen
from trainer import data_schema, tfx_module

# Node ids the run summary (run_summary.py) looks up.
BASELINE_RESOLVER_ID = "latest_blessed_model_resolver"
EVALUATOR_ID = "RetrievalEvaluator"
PUSHER_ID = "ServablePusher"


def create_pipeline(
    settings: configs.PipelineSettings,
    *,
    pipeline_root: str,
    input_base: str,
    schema_path: str,
    serving_base: str,
    metadata_connection_config: metadata_store_pb2.ConnectionConfig | None = None,
) -> tfx.dsl.Pipeline:
    """Builds the pipeline.

    Args:
      settings: what to train and when to push (validated when it was built).
      pipeline_root: where the components write their artifacts.
      input_base: the interaction logs: a directory of ``*.csv``/``*.csv.gz`` files or one file.
      schema_path: the schema of the per-user examples (``schemas/user_sequences.pbtxt``), readable where
        ImportSchemaGen runs.
      serving_base: where blessed servables are pushed (``<serving_base>/<name>/<version>/``).
      metadata_connection_config: the ML Metadata store of local runs; None for orchestrators that manage
        their own (Kubeflow).

    Returns:
      The pipeline.
    """
    example_gen = SequenceExampleGen(
        input_base=input_base,
        split_seed=settings.split_seed,
        min_user=settings.min_user,
        min_item=settings.min_item,
        kcore_rounds=settings.kcore_rounds,
        max_bad_fraction=settings.max_bad_fraction,
    )
    statistics_gen = tfx.components.StatisticsGen(examples=example_gen.outputs["examples"])
    schema_gen = tfx.components.ImportSchemaGen(schema_file=schema_path)
    example_validator = tfx.components.ExampleValidator(
        statistics=statistics_gen.outputs["statistics"], schema=schema_gen.outputs["schema"]
    )
    validation_gate = ValidationGate(
        anomalies=example_validator.outputs["anomalies"], schema=schema_gen.outputs["schema"]
    )
    export_settings = settings.export.to_dict()  # empty for the defaults
    model_trainer = tfx.components.Trainer(
        run_fn=configs.RUN_FN,
        examples=example_gen.outputs["examples"],
        schema=validation_gate.outputs["validated_schema"],
        train_args=tfx.proto.TrainArgs(splits=[data_schema.TRAIN]),
        eval_args=tfx.proto.EvalArgs(splits=[data_schema.EVAL, data_schema.TEST]),
        # Serialized as JSON with sorted keys (tuples become lists): the Trainer's cache key does not depend
        # on the overrides' order; tfx_module.model_config turns the lists back into tuples.
        # The export settings only when they differ from the defaults, so that runs without them keep their
        # cache key.
        custom_config={
            tfx_module.MODEL_KEY: settings.model,
            tfx_module.OVERRIDES_KEY: dict(settings.overrides),
            **({tfx_module.EXPORT_KEY: export_settings} if export_settings else {}),
        },
    )
    latest_blessed = tfx.dsl.Resolver(
        strategy_class=tfx.dsl.experimental.LatestBlessedModelStrategy,
        model=tfx.dsl.Channel(type=tfx.types.standard_artifacts.Model),
        model_blessing=tfx.dsl.Channel(type=tfx.types.standard_artifacts.ModelBlessing),
    ).with_id(BASELINE_RESOLVER_ID)
    evaluator = RetrievalEvaluator(
        model=model_trainer.outputs["model"],
        examples=example_gen.outputs["examples"],
        schema=validation_gate.outputs["validated_schema"],
        baseline_model=latest_blessed.outputs["model"],
        min_recall=settings.min_recall,
        recall_tolerance=settings.recall_tolerance,
    ).with_id(EVALUATOR_ID)
    pusher = ServablePusher(
        model=model_trainer.outputs["model"],
        model_blessing=evaluator.outputs["blessing"],
        serving_base=serving_base,
    ).with_id(PUSHER_ID)
    return tfx.dsl.Pipeline(
        pipeline_name=settings.pipeline_name,
        pipeline_root=pipeline_root,
        components=[
            example_gen,
            statistics_gen,
            schema_gen,
            example_validator,
            validation_gate,
            model_trainer,
            latest_blessed,
            evaluator,
            pusher,
        ],
        enable_cache=settings.enable_cache,
        metadata_connection_config=metadata_connection_config,
        beam_pipeline_args=list(settings.beam_args),
    )

