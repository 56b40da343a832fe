"""The pipeline's settings and defaults, in one place (as the TFX taxi template's ``configs.py``).

:class:`PipelineSettings` is what a run trains and when it pushes, whatever the orchestrator;
:func:`pipeline.pipeline.create_pipeline` takes it plus the paths, which the runners (``local_runner.py``,
``kubeflow_runner.py``) own. The ``dmirec run`` / ``dmirec compile-kfp`` commands build it from their flags.
This module imports nothing heavy (the command line reads it to build its help).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

from trainer.export_settings import ExportSettings

PIPELINE_NAME = "dmi-rec"

# The Trainer's function (trainer/tfx_module.py), by import path.
RUN_FN = "trainer.tfx_module.run_fn"

# Model and blessing.
DEFAULT_MODEL = "dmi"
# A model is blessed when its test Recall@50 is at least MIN_RECALL and at most RECALL_TOLERANCE
# (absolute) below the latest blessed model's.
DEFAULT_MIN_RECALL = 0.0
DEFAULT_RECALL_TOLERANCE = 0.01

# SequenceExampleGen: k-core rounds (the iteration stops earlier once nothing changes) and the most
# malformed rows a run accepts, as a fraction of all rows.
DEFAULT_KCORE_ROUNDS = 10
DEFAULT_MAX_BAD_FRACTION = 0.01

# The schema of SequenceExampleGen's examples: in this checkout (local runs), and where the Dockerfile
# copies the project in the pipeline's image (Kubeflow runs).
LOCAL_SCHEMA_PATH = str(Path(__file__).resolve().parents[1] / "schemas" / "user_sequences.pbtxt")
IMAGE_PROJECT_DIR = "/opt/dmi-rec"
IMAGE_SCHEMA_PATH = f"{IMAGE_PROJECT_DIR}/schemas/user_sequences.pbtxt"
# Kubeflow runs: placeholders to replace with a real registry and bucket (or pass on the command line).
DEFAULT_IMAGE = "gcr.io/my-project/dmi-rec:latest"
KFP_PIPELINE_ROOT = "gs://my-bucket/dmi-rec/pipeline_root"
KFP_LOG = "gs://my-bucket/dmi-rec/logs"

# Local runs: ML Metadata, pipeline root and serving directory under the output directory.
METADATA_FILE = "metadata.sqlite"
PIPELINE_ROOT_DIR = "pipeline_root"
SERVING_DIR = "serving"

# Beam on the local machine: the DirectRunner with one worker process per core.
LOCAL_BEAM_ARGS = ("--direct_running_mode=multi_processing", "--direct_num_workers=0")
# Beam inside the calling process (tests; debugging): no worker processes to start.
IN_PROCESS_BEAM_ARGS = ("--direct_running_mode=in_memory", "--direct_num_workers=1")


@dataclasses.dataclass(frozen=True)
class PipelineSettings:
    """What one pipeline run trains and when it pushes: everything but the paths, for every runner.

    Validated on construction, so a bad flag fails before any component runs.

    Attributes:
      model: the model variant (``trainer.config.VARIANTS``), one with a servable
        (``trainer.config.has_servable``: not ``pop``).
      overrides: ``trainer.config.ModelConfig`` field values over the variant's preset.
      export: how the Trainer exports the servables (``trainer.export_settings.ExportSettings``: the ScaNN
        index, XLA, the DDIM steps served).
      split_seed: seed of the 8:1:1 user split.
      min_user: iterative k-core: drop users with fewer events (0: no filter).
      min_item: iterative k-core: drop items with fewer events (0: no filter).
      kcore_rounds: the most k-core rounds of SequenceExampleGen.
      max_bad_fraction: the most malformed log rows SequenceExampleGen accepts, as a fraction of all rows.
      min_recall: the least test Recall@50 to bless a model.
      recall_tolerance: how far (absolute) below the latest blessed model's test Recall@50 a model may be
        and still be blessed.
      beam_args: options of every Beam-based component (runner, workers, ...).
      enable_cache: reuse the outputs of components whose inputs and parameters did not change.
      pipeline_name: the pipeline's name (its ML Metadata context, where the latest blessed model is found).
    """

    model: str = DEFAULT_MODEL
    overrides: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    export: ExportSettings = ExportSettings()
    split_seed: int = 0
    min_user: int = 0
    min_item: int = 0
    kcore_rounds: int = DEFAULT_KCORE_ROUNDS
    max_bad_fraction: float = DEFAULT_MAX_BAD_FRACTION
    min_recall: float = DEFAULT_MIN_RECALL
    recall_tolerance: float = DEFAULT_RECALL_TOLERANCE
    beam_args: tuple[str, ...] = LOCAL_BEAM_ARGS
    enable_cache: bool = True
    pipeline_name: str = PIPELINE_NAME

    def __post_init__(self) -> None:
        from trainer.config import require_servable, variant_config  # light: dataclasses only

        object.__setattr__(self, "overrides", MappingProxyType(dict(self.overrides)))
        object.__setattr__(self, "beam_args", tuple(self.beam_args))
        config = variant_config(self.model, self.overrides)  # ValueError: unknown variant or field
        require_servable(config)
        if not isinstance(self.export, ExportSettings):
            raise ValueError(f"export must be an ExportSettings, got {self.export!r}")
        self.export.check_config(config)
        for name in ("split_seed", "min_user", "min_item", "kcore_rounds"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
        if self.kcore_rounds < 1:
            raise ValueError(f"kcore_rounds must be at least 1, got {self.kcore_rounds}")
        for name in ("max_bad_fraction", "min_recall", "recall_tolerance"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be a number in [0, 1], got {value!r}")
        if not self.pipeline_name:
            raise ValueError("pipeline_name must not be empty")
