"""Tests of ValidationGate: it fails on anomalies, naming them, and passes the schema on otherwise."""

from __future__ import annotations

from pathlib import Path

import pytest
from tensorflow_metadata.proto.v0 import anomalies_pb2
from tfx.types import artifact_utils, standard_artifacts

from pipeline.components import validation_gate
from pipeline.components.validation_gate import ValidationGate


def _anomalies(root: Path, by_split: dict[str, dict[str, str]]) -> standard_artifacts.ExampleAnomalies:
    """An anomalies artifact as ExampleValidator writes it: split -> {feature: description}."""
    artifact = standard_artifacts.ExampleAnomalies()
    artifact.uri = str(root / "anomalies")
    artifact.split_names = artifact_utils.encode_split_names(list(by_split))
    for split, features in by_split.items():
        proto = anomalies_pb2.Anomalies()
        for feature, description in features.items():
            proto.anomaly_info[feature].description = description
            proto.anomaly_info[feature].severity = anomalies_pb2.AnomalyInfo.ERROR
        directory = Path(artifact_utils.get_split_uri([artifact], split))
        directory.mkdir(parents=True)
        (directory / validation_gate.ANOMALIES_FILE).write_bytes(proto.SerializeToString())
    return artifact


def _run_gate(tmp_path: Path, anomalies: standard_artifacts.ExampleAnomalies) -> Path:
    schema = standard_artifacts.Schema()
    schema.uri = str(tmp_path / "schema")
    Path(schema.uri).mkdir()
    (Path(schema.uri) / "schema.pbtxt").write_text('feature { name: "user_id" type: BYTES }\n')
    validated = standard_artifacts.Schema()
    validated.uri = str(tmp_path / "validated")
    Path(validated.uri).mkdir()
    executor = ValidationGate.EXECUTOR_SPEC.executor_class()
    executor.Do({"anomalies": [anomalies], "schema": [schema]}, {"validated_schema": [validated]}, {})
    return Path(validated.uri)


def test_describe_anomalies_names_split_feature_and_reason(tmp_path):
    anomalies = _anomalies(tmp_path, {
        "train": {"timestamps": "Unexpectedly small value: -7."},
        "eval": {},
        "test": {"item_ids": "Some examples have fewer values than expected."},
    })
    assert validation_gate.describe_anomalies(validation_gate.load_anomalies(anomalies)) == [
        "split test: feature 'item_ids': Some examples have fewer values than expected.",
        "split train: feature 'timestamps': Unexpectedly small value: -7.",
    ]


def test_gate_fails_on_anomalies_with_the_message(tmp_path):
    anomalies = _anomalies(tmp_path, {"train": {"timestamps": "Unexpectedly small value: -7."}, "eval": {}})
    with pytest.raises(validation_gate.SchemaAnomaliesError) as error:
        _run_gate(tmp_path, anomalies)
    message = str(error.value)
    assert "1 schema anomaly (stopping before the Trainer)" in message
    assert "split train: feature 'timestamps': Unexpectedly small value: -7." in message
    assert not list((tmp_path / "validated").iterdir())


def test_gate_passes_the_schema_on_when_clean(tmp_path):
    anomalies = _anomalies(tmp_path, {"train": {}, "eval": {}, "test": {}})
    validated = _run_gate(tmp_path, anomalies)
    assert (validated / "schema.pbtxt").read_text() == (tmp_path / "schema" / "schema.pbtxt").read_text()
