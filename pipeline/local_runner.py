"""Runs the pipeline on this machine: TFX's LocalDagRunner, ML Metadata in SQLite, Beam's DirectRunner.

Everything goes under one output directory:

- ``<out>/metadata.sqlite``: ML Metadata (lineage, the cache, the evaluator's baselines);
- ``<out>/pipeline_root/``: the components' artifacts;
- ``<out>/serving/``: pushed servables (unless another serving base is given).

Re-running with unchanged inputs and settings reuses every component's earlier output (TFX's cache).
SequenceExampleGen has no input artifact, so its cache keys on the log's path and its parameters only:
give a changed log a new path (as one does with dated log directories) or run with caching off.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import trainer  # noqa: F401  (selects Keras 2 before anything imports TensorFlow)
import ml_metadata as mlmd
from ml_metadata.proto import metadata_store_pb2
from tfx import v1 as tfx

from pipeline import configs, run_summary
from pipeline.pipeline import create_pipeline
from pipeline.sequence_example_gen.component import DEFAULT_KCORE_ROUNDS, DEFAULT_MAX_BAD_FRACTION


def metadata_config(out_dir: str) -> metadata_store_pb2.ConnectionConfig:
    """The SQLite ML Metadata store of a local output directory."""
    return tfx.orchestration.metadata.sqlite_metadata_connection_config(
        os.path.join(os.path.abspath(out_dir), configs.METADATA_FILE)
    )


def run(
    *,
    log: str,
    out_dir: str,
    model: str = configs.DEFAULT_MODEL,
    overrides: Mapping[str, Any] | None = None,
    serving_base: str | None = None,
    beam_args: Sequence[str] = configs.LOCAL_BEAM_ARGS,
    split_seed: int = 0,
    min_user: int = 0,
    min_item: int = 0,
    kcore_rounds: int = DEFAULT_KCORE_ROUNDS,
    max_bad_fraction: float = DEFAULT_MAX_BAD_FRACTION,
    min_recall: float = configs.DEFAULT_MIN_RECALL,
    recall_tolerance: float = configs.DEFAULT_RECALL_TOLERANCE,
    schema_path: str = configs.LOCAL_SCHEMA_PATH,
    pipeline_name: str = configs.PIPELINE_NAME,
    enable_cache: bool = True,
) -> run_summary.RunSummary:
    """Runs the whole pipeline once and summarises the run.

    Args:
      log: an interaction log CSV file, or a directory of them.
      out_dir: the output directory (ML Metadata, artifacts and, by default, the serving directory).
      model: the model variant.
      overrides: ``ModelConfig`` field values over the variant's preset.
      serving_base: where blessed servables are pushed; default ``<out_dir>/serving``.
      beam_args: Beam pipeline options of the Beam-based components; the default runs the DirectRunner
        with one worker process per core, :data:`~pipeline.configs.IN_PROCESS_BEAM_ARGS` runs it inside
        this process.
      split_seed: seed of the 8:1:1 user split.
      min_user: iterative k-core threshold for users (0: none).
      min_item: iterative k-core threshold for items (0: none).
      kcore_rounds: k-core rounds.
      max_bad_fraction: the most malformed rows accepted, as a fraction.
      min_recall: the least test Recall@50 to bless.
      recall_tolerance: how far (absolute) below the latest blessed model's Recall@50 a model may be.
      schema_path: the examples' schema.
      pipeline_name: the pipeline's name in ML Metadata.
      enable_cache: reuse unchanged components' outputs.

    Returns:
      The run's summary (states, metrics, blessing, push).

    Raises:
      FileNotFoundError: ``log`` does not exist.
      Exception: a failed component's own error, e.g. ``SchemaAnomaliesError`` (a ``ValueError``) from the
        validation gate; the components after it did not run.
    """
    if not os.path.exists(log):
        raise FileNotFoundError(f"no interaction log at {log}")
    out_dir = os.path.abspath(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    connection = metadata_config(out_dir)
    pipeline = create_pipeline(
        pipeline_name=pipeline_name,
        pipeline_root=os.path.join(out_dir, configs.PIPELINE_ROOT_DIR),
        input_base=os.path.abspath(log),
        schema_path=os.path.abspath(schema_path),
        serving_base=os.path.abspath(serving_base or os.path.join(out_dir, configs.SERVING_DIR)),
        model=model,
        overrides=overrides,
        split_seed=split_seed,
        min_user=min_user,
        min_item=min_item,
        kcore_rounds=kcore_rounds,
        max_bad_fraction=max_bad_fraction,
        min_recall=min_recall,
        recall_tolerance=recall_tolerance,
        metadata_connection_config=connection,
        beam_pipeline_args=beam_args,
        enable_cache=enable_cache,
    )
    tfx.orchestration.LocalDagRunner().run(pipeline)
    return run_summary.latest_run(mlmd.MetadataStore(connection), pipeline_name)
