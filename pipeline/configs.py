"""Defaults of the pipeline and its runners, in one place (as the TFX taxi template's ``configs.py``).

:func:`pipeline.pipeline.create_pipeline` takes every path and setting as an argument; the runners
(``local_runner.py``, ``kubeflow_runner.py``) and the ``dmirec run`` / ``dmirec compile-kfp`` commands
fill them from here.
"""

from __future__ import annotations

from pathlib import Path

PIPELINE_NAME = "dmi-rec"

# The functions of the TFX module (trainer/tfx_module.py), by import path.
PREPROCESSING_FN = "trainer.tfx_module.preprocessing_fn"
RUN_FN = "trainer.tfx_module.run_fn"

# Model and blessing.
DEFAULT_MODEL = "dmi"
# A model is blessed when its test Recall@50 is at least MIN_RECALL and at most RECALL_TOLERANCE
# (absolute) below the latest blessed model's.
DEFAULT_MIN_RECALL = 0.0
DEFAULT_RECALL_TOLERANCE = 0.01

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
