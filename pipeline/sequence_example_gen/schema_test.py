"""Tests of schemas/user_sequences.pbtxt, the schema of SequenceExampleGen's examples."""

from __future__ import annotations

from pathlib import Path

import trainer  # noqa: F401  (selects Keras 2 before anything imports TensorFlow)
import tensorflow as tf
import tensorflow_data_validation as tfdv
from google.protobuf import text_format
from tensorflow_metadata.proto.v0 import schema_pb2

from pipeline.sequence_example_gen import transforms
from trainer import data_schema

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "schemas" / "user_sequences.pbtxt"


def load_schema() -> schema_pb2.Schema:
    return text_format.Parse(SCHEMA_PATH.read_text(), schema_pb2.Schema())


def anomalies_of(sequences: list[transforms.UserSequence], directory: Path) -> dict[str, str]:
    """Feature -> anomaly description, for examples written as SequenceExampleGen writes them."""
    path = directory / "examples.tfrecord"
    with tf.io.TFRecordWriter(str(path)) as writer:
        for sequence in sequences:
            writer.write(transforms.to_example(sequence).SerializeToString())
    statistics = tfdv.generate_statistics_from_tfrecord(data_location=str(path))
    anomalies = tfdv.validate_statistics(statistics, load_schema())
    return {name: info.description for name, info in anomalies.anomaly_info.items()}


def test_schema_parses_and_names_the_example_features():
    schema = load_schema()
    features = {feature.name: feature for feature in schema.feature}
    assert set(features) == {data_schema.USER_ID, data_schema.ITEM_IDS, data_schema.TIMESTAMPS}
    assert features[data_schema.USER_ID].type == schema_pb2.BYTES
    assert [dim.size for dim in features[data_schema.USER_ID].shape.dim] == [1]
    assert features[data_schema.ITEM_IDS].value_count.min == 1
    assert features[data_schema.TIMESTAMPS].type == schema_pb2.INT
    assert features[data_schema.TIMESTAMPS].int_domain.min == 0


def test_negative_timestamps_are_an_anomaly(tmp_path):
    valid = transforms.UserSequence("u1", ("i1", "i2"), (10, 20))
    invalid = transforms.UserSequence("u2", ("i3", "i4"), (-5, 7))
    (tmp_path / "valid").mkdir()
    (tmp_path / "invalid").mkdir()

    assert anomalies_of([valid], tmp_path / "valid") == {}
    assert anomalies_of([valid, invalid], tmp_path / "invalid") == {
        data_schema.TIMESTAMPS: "Unexpectedly small value: -5."
    }
