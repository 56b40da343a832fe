"""Compiles the pipeline for Kubeflow Pipelines v2 (and Vertex AI Pipelines): a pipeline-spec JSON file.

Every component runs in one container image (``Dockerfile``: the TFX 1.16 image with this project
installed), which holds the schema at :data:`~pipeline.configs.IMAGE_SCHEMA_PATH`. Kubeflow keeps its own
ML Metadata; the latest blessed model reaches the RetrievalEvaluator through the pipeline's Resolver node
(compiled into the spec as an importer-like resolver task), so blessing compares with it as in local runs.
"""

from __future__ import annotations

import os
import trainer  # noqa: F401  (selects Keras 2 before anything imports TensorFlow)
from tfx import v1 as tfx

from pipeline import configs
from pipeline.pipeline import create_pipeline


def compile_pipeline(
    *,
    out_dir: str,
    pipeline_root: str,
    log: str,
    image: str = configs.DEFAULT_IMAGE,
    settings: configs.PipelineSettings | None = None,
    serving_base: str | None = None,
    schema_path: str = configs.IMAGE_SCHEMA_PATH,
) -> str:
    """Writes the Kubeflow Pipelines v2 spec of the pipeline.

    Args:
      out_dir: directory of the spec file (``<pipeline_name>.json``).
      pipeline_root: where the components write artifacts (e.g. ``gs://bucket/dmi-rec``).
      log: the interaction logs, readable from the cluster (e.g. ``gs://bucket/logs/2024-06``).
      image: the container image of every component.
      settings: what to train and when to push (default ``PipelineSettings()``; its Beam options run the
        DirectRunner on the pod's cores).
      serving_base: where blessed servables are pushed; default ``<pipeline_root>/serving``.
      schema_path: the examples' schema inside the image.

    Returns:
      The path of the spec file.
    """
    settings = settings or configs.PipelineSettings()
    pipeline = create_pipeline(
        settings,
        pipeline_root=pipeline_root,
        input_base=log,
        schema_path=schema_path,
        serving_base=serving_base or os.path.join(pipeline_root, configs.SERVING_DIR),
    )
    filename = f"{settings.pipeline_name}.json"
    runner = tfx.orchestration.experimental.KubeflowV2DagRunner(
        config=tfx.orchestration.experimental.KubeflowV2DagRunnerConfig(default_image=image),
        output_dir=out_dir,
        output_filename=filename,
    )
    runner.run(pipeline)
    return os.path.join(out_dir, filename)
