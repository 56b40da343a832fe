"""Tests of serving/warmup.py: reading the warm-up file format and its replay when a version loads."""

from __future__ import annotations

import os

import pytest
import tensorflow as tf
from tensorflow_serving.apis import classification_pb2, prediction_log_pb2

from serving.server_config import ServedModel
from serving.model_manager import ModelManager, VersionState
from serving.testing import ReferenceModel, predict_request, write_warmup_requests
from serving.warmup import WARMUP_PATH, read_warmup_requests


def test_written_requests_read_back(tmp_path):
    requests = [predict_request([["i1", "i2"]], top_n=3), predict_request([[""]])]
    path = write_warmup_requests(str(tmp_path), requests)
    assert path == os.path.join(str(tmp_path), WARMUP_PATH)
    assert read_warmup_requests(str(tmp_path)) == requests
    assert read_warmup_requests(str(tmp_path / "elsewhere")) == []


def test_rejects_records_other_than_predict_logs(tmp_path):
    path = tmp_path / WARMUP_PATH
    path.parent.mkdir(parents=True)
    log = prediction_log_pb2.PredictionLog(
        classify_log=prediction_log_pb2.ClassifyLog(request=classification_pb2.ClassificationRequest())
    )
    with tf.io.TFRecordWriter(str(path)) as writer:
        writer.write(log.SerializeToString())
    with pytest.raises(ValueError, match="record 0 is a classify_log"):
        read_warmup_requests(str(tmp_path))


def test_version_loads_after_replaying_its_warmup_requests(tmp_path, caplog):
    warmup = [predict_request([["i1"]], top_n=5)] * 3
    ReferenceModel.random(seed=1).save(str(tmp_path), 1, warmup_requests=warmup)
    manager = ModelManager(ServedModel("dmi", str(tmp_path)))
    with caplog.at_level("INFO", logger="serving.model_manager"):
        manager.poll()
    assert [s.state for s in manager.statuses()] == [VersionState.AVAILABLE]
    assert "(3 warm-up requests)" in caplog.text
    manager.stop()


def test_failing_warmup_request_fails_the_version(tmp_path):
    model = ReferenceModel.random(seed=1)
    model.save(str(tmp_path), 1)
    warmup = [predict_request([["i1"]]), predict_request([["i1"]], top_n=99)]
    model.save(str(tmp_path), 2, warmup_requests=warmup)
    manager = ModelManager(ServedModel("dmi", str(tmp_path)))
    manager.poll()
    failed, serving = manager.statuses()
    assert (failed.state, serving.state) == (VersionState.END, VersionState.AVAILABLE)
    assert "warm-up request 1 failed" in failed.error_message
    assert "top_n must be at most" in failed.error_message
    manager.stop()
