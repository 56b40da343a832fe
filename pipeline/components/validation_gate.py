"""ValidationGate: stops the pipeline when ExampleValidator found anomalies, before the Trainer.

TFX 1.16's ExampleValidator records anomalies (and a per-split ``blessed`` custom property on its
``ExampleAnomalies`` artifact) but never fails, and no built-in component consumes that verdict: a
pipeline that only wires ExampleValidator beside the Trainer trains on data that violates the schema.
This gate reads the anomalies and fails its execution with every anomaly named. On success it passes the
schema through unchanged (``validated_schema``); the Trainer and the evaluator read that copy, so they —
and everything after them — depend on the validation having passed, on any orchestrator.
"""

import os

import trainer  # noqa: F401  (selects Keras 2 before anything imports TensorFlow)
from tensorflow_metadata.proto.v0 import anomalies_pb2
from tfx import v1 as tfx
from tfx.dsl.io import fileio
from tfx.types import artifact_utils
from tfx.utils import io_utils

# The file ExampleValidator writes in each split directory of its anomalies artifact.
ANOMALIES_FILE = "SchemaDiff.pb"
SCHEMA_FILE = "schema.pbtxt"


class SchemaAnomaliesError(ValueError):
    """The examples violate the schema; the message lists every anomaly."""


def load_anomalies(anomalies: tfx.types.standard_artifacts.ExampleAnomalies) -> dict[str, anomalies_pb2.Anomalies]:
    """ExampleValidator's findings, per split.

    Args:
      anomalies: the validator's output artifact.

    Returns:
      Split name -> the ``Anomalies`` proto of that split.
    """
    found = {}
    for split in artifact_utils.decode_split_names(anomalies.split_names):
        path = os.path.join(artifact_utils.get_split_uri([anomalies], split), ANOMALIES_FILE)
        found[split] = anomalies_pb2.Anomalies.FromString(io_utils.read_bytes_file(path))
    return found


def describe_anomalies(by_split: dict[str, anomalies_pb2.Anomalies]) -> list[str]:
    """One line per anomaly, ``split <name>: feature '<feature>': <description>``; empty when none."""
    lines = []
    for split, anomalies in sorted(by_split.items()):
        for feature, info in sorted(anomalies.anomaly_info.items()):
            lines.append(f"split {split}: feature {feature!r}: {_description(info)}")
        if anomalies.HasField("dataset_anomaly_info"):
            lines.append(f"split {split}: dataset: {_description(anomalies.dataset_anomaly_info)}")
    return lines


def _description(info: anomalies_pb2.AnomalyInfo) -> str:
    reasons = "; ".join(reason.description or reason.short_description for reason in info.reason)
    return info.description or reasons or anomalies_pb2.AnomalyInfo.Severity.Name(info.severity)


@tfx.dsl.components.component
def ValidationGate(  # noqa: N802  (TFX names components in CamelCase)
    anomalies: tfx.dsl.components.InputArtifact[tfx.types.standard_artifacts.ExampleAnomalies],
    schema: tfx.dsl.components.InputArtifact[tfx.types.standard_artifacts.Schema],
    validated_schema: tfx.dsl.components.OutputArtifact[tfx.types.standard_artifacts.Schema],
) -> None:
    """Fails when the examples have anomalies; otherwise passes the schema on.

    Args:
      anomalies: ExampleValidator's ``anomalies`` output.
      schema: the schema the examples were validated against.
      validated_schema: the same schema, written only when every split is free of anomalies.

    Raises:
      SchemaAnomaliesError: an anomaly in any split; the message names each one.
    """
    problems = describe_anomalies(load_anomalies(anomalies))
    if problems:
        raise SchemaAnomaliesError(
            f"ExampleValidator found {len(problems)} schema anomal{'y' if len(problems) == 1 else 'ies'} "
            "(stopping before the Trainer): " + " | ".join(problems)
            + f" (details: {anomalies.uri})"
        )
    source = io_utils.get_only_uri_in_dir(schema.uri)
    fileio.copy(source, os.path.join(validated_schema.uri, SCHEMA_FILE), overwrite=True)
