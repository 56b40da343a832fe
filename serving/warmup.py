"""SavedModel warm-up: requests replayed after a version loads and before it serves, as TF Serving does.

An exporter stores sample requests in ``<version>/assets.extra/tf_serving_warmup_requests``, a TFRecord
file of ``tensorflow.serving.PredictionLog`` records. Replaying them runs every signature once, so the first
real request does not pay for lazy initialisation (table and kernel set-up, memory pools). Only
``predict_log`` records are supported; a failing warm-up request fails the version's load, as in TF Serving.

This module only reads and replays them: the trainer's exporter (``trainer/export.py``) writes them for
real servables, and :func:`serving.testing.write_warmup_requests` for the tests' toy SavedModels.
"""

from __future__ import annotations

import os

import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_log_pb2

from serving.servable import Servable

WARMUP_PATH = os.path.join("assets.extra", "tf_serving_warmup_requests")
MAX_WARMUP_RECORDS = 1000  # TF Serving's limit


def read_warmup_requests(export_dir: str) -> list[predict_pb2.PredictRequest]:
    """Reads a SavedModel's warm-up requests.

    Args:
        export_dir: the SavedModel (version) directory.

    Returns:
        The requests, in file order; empty if the model has no warm-up file.

    Raises:
        ValueError: more than :data:`MAX_WARMUP_RECORDS` records, or a record that is not a ``predict_log``.
        tf.errors.OpError: the file is not a readable TFRecord file.
    """
    path = os.path.join(export_dir, WARMUP_PATH)
    if not tf.io.gfile.exists(path):
        return []
    requests = []
    for index, record in enumerate(tf.data.TFRecordDataset(path).as_numpy_iterator()):
        if index == MAX_WARMUP_RECORDS:
            raise ValueError(f"{path} holds more than {MAX_WARMUP_RECORDS} warm-up records")
        log = prediction_log_pb2.PredictionLog.FromString(record)
        kind = log.WhichOneof("log_type")
        if kind != "predict_log":
            raise ValueError(
                f"{path} record {index} is a {kind}; only predict_log warm-up records are supported"
            )
        requests.append(log.predict_log.request)
    return requests


def replay_warmup_requests(servable: Servable) -> int:
    """Runs a servable's warm-up requests through validation and execution.

    Args:
        servable: the freshly loaded version.

    Returns:
        How many requests were replayed.

    Raises:
        ValueError: a warm-up request was rejected or failed; the message names its index.
    """
    requests = read_warmup_requests(servable.path)
    for index, request in enumerate(requests):
        try:
            signature = servable.signature(request.model_spec.signature_name)
            signature.select_outputs(request.output_filter)
            signature(signature.prepare(request.inputs))
        except Exception as e:
            raise ValueError(f"warm-up request {index} failed: {e}") from e
    return len(requests)
