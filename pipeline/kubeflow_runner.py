"""Compiles the pipeline for Kubeflow Pipelines v2 (and Vertex AI Pipelines): a pipeline-spec JSON file.

Every component runs in one container image (``Dockerfile``: the TFX 1.16 image with this project
installed), which holds the schema at :data:`~pipeline.configs.IMAGE_SCHEMA_PATH`. Kubeflow keeps its own
ML Metadata, which the spec cannot reach, so the RetrievalEvaluator blesses on the Recall@50 threshold
alone there (its blessing's ``reason`` says so).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import trainer  # noqa: F401  (selects Keras 2 before anything imports TensorFlow)
from tfx import v1 as tfx

from pipeline import configs
from pipeline.pipeline import create_pipeline
from pipeline.sequence_example_gen.component import DEFAULT_KCORE_ROUNDS, DEFAULT_MAX_BAD_FRACTION


def compile_pipeline(
    *,
    out_dir: str,
    pipeline_root: str,
    log: str,
    image: str = configs.DEFAULT_IMAGE,
    serving_base: str | None = None,
    model: str = configs.DEFAULT_MODEL,
    overrides: Mapping[str, Any] | None = None,
    beam_args: Sequence[str] = configs.LOCAL_BEAM_ARGS,
    split_seed: int = 0,
    min_user: int = 0,
    min_item: int = 0,
    kcore_rounds: int = DEFAULT_KCORE_ROUNDS,
    max_bad_fraction: float = DEFAULT_MAX_BAD_FRACTION,
    min_recall: float = configs.DEFAULT_MIN_RECALL,
    schema_path: str = configs.IMAGE_SCHEMA_PATH,
    pipeline_name: str = configs.PIPELINE_NAME,
) -> str:
    """Writes the Kubeflow Pipelines v2 spec of the pipeline.

    Args:
      out_dir: directory of the spec file (``<pipeline_name>.json``).
      pipeline_root: where the components write artifacts (e.g. ``gs://bucket/dmi-rec``).
      log: the interaction logs, readable from the cluster (e.g. ``gs://bucket/logs/2024-06``).
      image: the container image of every component.
      serving_base: where blessed servables are pushed; default ``<pipeline_root>/serving``.
      model: the model variant.
      overrides: ``ModelConfig`` field values over the variant's preset.
      beam_args: Beam options of the Beam-based components (default: DirectRunner on the pod's cores).
      split_seed: seed of the 8:1:1 user split.
      min_user: iterative k-core threshold for users.
      min_item: iterative k-core threshold for items.
      kcore_rounds: k-core rounds.
      max_bad_fraction: the most malformed rows accepted, as a fraction.
      min_recall: the least test Recall@50 to bless.
      schema_path: the examples' schema inside the image.
      pipeline_name: the pipeline's name.

    Returns:
      The path of the spec file.
    """
    pipeline = create_pipeline(
        pipeline_name=pipeline_name,
        pipeline_root=pipeline_root,
        input_base=log,
        schema_path=schema_path,
        serving_base=serving_base or os.path.join(pipeline_root, configs.SERVING_DIR),
        model=model,
        overrides=overrides,
        split_seed=split_seed,
        min_user=min_user,
        min_item=min_item,
        kcore_rounds=kcore_rounds,
        max_bad_fraction=max_bad_fraction,
        min_recall=min_recall,
        beam_pipeline_args=beam_args,
    )
    filename = f"{pipeline_name}.json"
    runner = tfx.orchestration.experimental.KubeflowV2DagRunner(
        config=tfx.orchestration.experimental.KubeflowV2DagRunnerConfig(default_image=image),
        output_dir=out_dir,
        output_filename=filename,
    )
    runner.run(pipeline)
    return os.path.join(out_dir, filename)
