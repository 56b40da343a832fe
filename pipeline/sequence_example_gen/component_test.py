"""Tests of the SequenceExampleGen component: its spec, and a tiny TFX pipeline reading its output."""

from __future__ import annotations

from pathlib import Path

import trainer  # noqa: F401  (selects Keras 2 before anything imports TensorFlow)
import pytest
from tensorflow_metadata.proto.v0 import anomalies_pb2
from tfx import v1 as tfx

from pipeline.sequence_example_gen import QuarantinedRows, SequenceExampleGen, spec
from pipeline.sequence_example_gen.schema_test import SCHEMA_PATH
from trainer import data_schema


def test_component_declares_its_parameters_and_outputs():
    gen = SequenceExampleGen(input_base="/logs", split_seed=7, min_user=5, min_item=5)
    assert gen.exec_properties == {
        spec.INPUT_BASE_KEY: "/logs",
        spec.SPLIT_SEED_KEY: 7,
        spec.MIN_USER_KEY: 5,
        spec.MIN_ITEM_KEY: 5,
        spec.KCORE_ROUNDS_KEY: 10,
        spec.MAX_BAD_FRACTION_KEY: 0.01,
    }
    assert gen.outputs[spec.EXAMPLES_KEY].type is tfx.types.standard_artifacts.Examples
    assert gen.outputs[spec.QUARANTINE_KEY].type is QuarantinedRows


@pytest.mark.parametrize(
    "arguments, message",
    [
        ({"min_user": -1}, "min_user must be >= 0"),
        ({"kcore_rounds": 0}, "kcore_rounds must be >= 1"),
        ({"max_bad_fraction": 1.5}, r"max_bad_fraction must be in \[0, 1\]"),
    ],
)
def test_component_rejects_bad_parameters(arguments, message):
    with pytest.raises(ValueError, match=message):
        SequenceExampleGen(input_base="/logs", **arguments)


@pytest.mark.slow
def test_tfx_statistics_and_validation_read_the_output(tmp_path):
    """SequenceExampleGen -> StatisticsGen -> ExampleValidator (imported schema) on LocalDagRunner.

    One user has a negative timestamp: the validator must report it, in that user's split only.
    """
    log = tmp_path / "log.csv"
    log.write_text("user_id,item_id,timestamp\nuser0,i1,1\nuser0,i2,2\nuser1,i1,-4\nuser1,i3,5\n")
    gen = SequenceExampleGen(input_base=str(log), split_seed=1)
    statistics = tfx.components.StatisticsGen(examples=gen.outputs["examples"])
    schema = tfx.components.ImportSchemaGen(schema_file=str(SCHEMA_PATH))
    validator = tfx.components.ExampleValidator(
        statistics=statistics.outputs["statistics"], schema=schema.outputs["schema"]
    )
    root = tmp_path / "pipeline"
    tfx.orchestration.LocalDagRunner().run(
        tfx.dsl.Pipeline(
            pipeline_name="sequence_example_gen_test",
            pipeline_root=str(root),
            metadata_connection_config=tfx.orchestration.metadata.sqlite_metadata_connection_config(
                str(tmp_path / "metadata.sqlite")
            ),
            components=[gen, statistics, schema, validator],
            beam_pipeline_args=["--direct_num_workers=1"],
        )
    )

    anomalous_splits = {}
    for path in root.glob("ExampleValidator/anomalies/*/Split-*/SchemaDiff.pb"):
        anomalies = anomalies_pb2.Anomalies.FromString(path.read_bytes())
        anomalous_splits[path.parent.name] = sorted(anomalies.anomaly_info)
    assert anomalous_splits == {"Split-train": [data_schema.TIMESTAMPS], "Split-eval": [], "Split-test": []}
