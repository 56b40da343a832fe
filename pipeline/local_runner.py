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
import trainer  # noqa: F401  (selects Keras 2 before anything imports TensorFlow)
import ml_metadata as mlmd
from ml_metadata.proto import metadata_store_pb2
from tfx import v1 as tfx

from pipeline import configs, run_summary
from pipeline.pipeline import create_pipeline
from trainer import filesystem as fs


def metadata_config(out_dir: str) -> metadata_store_pb2.ConnectionConfig:
    """The SQLite ML Metadata store of a local output directory."""
    return tfx.orchestration.metadata.sqlite_metadata_connection_config(
        os.path.join(os.path.abspath(out_dir), configs.METADATA_FILE)
    )


def _absolute(path: str) -> str:
    """A local path made absolute (the components run elsewhere than the caller's directory); URIs as given."""
    return path if fs.is_uri(path) else os.path.abspath(path)


def run(
    *,
    log: str,
    out_dir: str,
    settings: configs.PipelineSettings | None = None,
    serving_base: str | None = None,
    schema_path: str = configs.LOCAL_SCHEMA_PATH,
) -> run_summary.RunSummary:
    """Runs the whole pipeline once and summarises the run.

    Args:
      log: an interaction log CSV file, or a directory of them.
      out_dir: the output directory (ML Metadata, artifacts and, by default, the serving directory).
      settings: what to train and when to push (default :class:`~pipeline.configs.PipelineSettings()`: its
        Beam options run the DirectRunner with one worker process per core;
        :data:`~pipeline.configs.IN_PROCESS_BEAM_ARGS` runs it inside this process).
      serving_base: where blessed servables are pushed, local or a TensorFlow file system URI
        (``gs://...``); default ``<out_dir>/serving``.
      schema_path: the examples' schema.

    Returns:
      The run's summary (states, metrics, blessing, push).

    Raises:
      FileNotFoundError: ``log`` does not exist.
      Exception: a failed component's own error, e.g. ``SchemaAnomaliesError`` (a ``ValueError``) from the
        validation gate; the components after it did not run.
    """
    settings = settings or configs.PipelineSettings()
    if not fs.exists(log):
        raise FileNotFoundError(f"no interaction log at {log}")
    out_dir = os.path.abspath(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    connection = metadata_config(out_dir)
    pipeline = create_pipeline(
        settings,
        pipeline_root=os.path.join(out_dir, configs.PIPELINE_ROOT_DIR),
        input_base=_absolute(log),
        schema_path=os.path.abspath(schema_path),
        serving_base=_absolute(serving_base or os.path.join(out_dir, configs.SERVING_DIR)),
        metadata_connection_config=connection,
    )
    tfx.orchestration.LocalDagRunner().run(pipeline)
    return run_summary.latest_run(mlmd.MetadataStore(connection), settings.pipeline_name)
