"""SequenceExampleGen's executor: runs :class:`LogToSequenceExamples`, writes the artifacts, checks counts.

Outputs:

- ``examples`` (``Examples``): ``Split-train``, ``Split-eval`` and ``Split-test`` directories of gzipped
  TFRecord files ``data_tfrecord-*.gz`` of ``tf.train.Example``, written by TFX's own ExampleGen writer;
  ``split_names``, ``payload_format`` (``FORMAT_TF_EXAMPLE``) and ``file_format`` (``tfrecords_gzip``)
  set as StatisticsGen, the Trainer and the evaluator expect.
- ``quarantine`` (``QuarantinedRows``): ``bad_rows-*.tsv``, ``row_counts.json``; its ``bad_rows`` and
  ``total_rows`` custom properties hold the counts.

The counts are read from ``row_counts.json``, which the pipeline computes with ordinary combiners, rather
than from Beam metrics: metric queries differ between runners (committed or only attempted values, or
none), the file is exact on every runner.
"""

from __future__ import annotations

import functools
import json
import os
from typing import Any

import trainer  # noqa: F401  (selects Keras 2 before anything imports TensorFlow)
import apache_beam as beam
from absl import logging
from tfx import types
from tfx.components.example_gen import write_split
from tfx.components.util import examples_utils
from tfx.dsl.components.base import base_beam_executor
from tfx.dsl.io import fileio
from tfx.proto import example_gen_pb2
from tfx.types import artifact_utils

from pipeline.sequence_example_gen import spec, transforms

QUARANTINE_FILE_PREFIX = "bad_rows"
ROW_COUNTS_FILE = "row_counts.json"
_LOG_FILE_SUFFIXES = (".csv", ".csv.gz")


def input_file_patterns(input_base: str) -> list[str]:
    """The file patterns of the interaction logs under ``input_base``.

    Args:
      input_base: a directory (its ``*.csv`` and ``*.csv.gz`` files are read) or one log file.

    Returns:
      Glob patterns for a directory, or ``[input_base]`` for a file.

    Raises:
      FileNotFoundError: nothing matches.
    """
    if fileio.isdir(input_base):
        patterns = [os.path.join(input_base, f"*{suffix}") for suffix in _LOG_FILE_SUFFIXES]
        if not any(fileio.glob(pattern) for pattern in patterns):
            raise FileNotFoundError(f"no interaction log (*.csv or *.csv.gz file) in {input_base}")
        return patterns
    if not fileio.exists(input_base):
        raise FileNotFoundError(f"input_base {input_base} does not exist")
    return [input_base]


def read_row_counts(quarantine_uri: str) -> dict[str, int]:
    """Reads the row counts the pipeline wrote beside the quarantined rows."""
    with fileio.open(os.path.join(quarantine_uri, ROW_COUNTS_FILE)) as f:
        return json.loads(f.read())


def check_bad_fraction(row_counts: dict[str, int], max_bad_fraction: float, quarantine_uri: str) -> None:
    """Fails when the input holds no rows, or when more than ``max_bad_fraction`` of them are malformed.

    Raises:
      ValueError: the message gives the counts and where the malformed rows are.
    """
    bad = row_counts[transforms.BAD_ROWS]
    total = bad + row_counts[transforms.GOOD_ROWS]
    if total == 0:
        raise ValueError("the input holds no data rows (only headers or blank lines)")
    if bad / total > max_bad_fraction:
        raise ValueError(
            f"{bad:,} of {total:,} rows ({bad / total:.1%}) are malformed, above max_bad_fraction "
            f"{max_bad_fraction:.1%}; see {quarantine_uri}"
        )


def check_kcore_converged(row_counts: dict[str, int], kcore_rounds: int) -> None:
    """Fails when the last k-core round still removed events (the k-core may not have converged).

    Raises:
      ValueError: the message says how many events the last round removed.
    """
    removed = row_counts[transforms.KCORE_LAST_ROUND_REMOVED]
    if removed:
        raise ValueError(
            f"the k-core did not converge within kcore_rounds={kcore_rounds}: the last round still "
            f"removed {removed:,} events; raise kcore_rounds"
        )


def check_users_left(row_counts: dict[str, int]) -> None:
    """Fails when no user is left (every one was filtered out).

    Raises:
      ValueError: no example was written.
    """
    if not any(row_counts[transforms.users_key(split)] for split in transforms.SPLITS):
        raise ValueError(
            f"no user left: the k-core filter removed all {row_counts[transforms.GOOD_ROWS]:,} events"
        )


class Executor(base_beam_executor.BaseBeamExecutor):
    """Reads interaction logs and writes one ``tf.train.Example`` per user, split by user."""

    def Do(
        self,
        input_dict: dict[str, list[types.Artifact]],
        output_dict: dict[str, list[types.Artifact]],
        exec_properties: dict[str, Any],
    ) -> None:
        """Runs the Beam pipeline, then checks the row counts.

        Args:
          input_dict: unused (the component has no input channel).
          output_dict: ``examples`` (one ``Examples``) and ``quarantine`` (one ``QuarantinedRows``).
          exec_properties: ``input_base``, ``split_seed``, ``min_user``, ``min_item``, ``kcore_rounds``,
            ``max_bad_fraction`` (see the component).

        Raises:
          FileNotFoundError: ``input_base`` holds no interaction log.
          ValueError: too many malformed rows, an unconverged k-core, or no user left.
        """
        self._log_startup(input_dict, output_dict, exec_properties)
        examples = artifact_utils.get_single_instance(output_dict[spec.EXAMPLES_KEY])
        quarantine = artifact_utils.get_single_instance(output_dict[spec.QUARANTINE_KEY])
        input_base = exec_properties[spec.INPUT_BASE_KEY]
        file_patterns = input_file_patterns(input_base)
        examples.splits = list(transforms.SPLITS)

        with self._make_beam_pipeline() as pipeline:
            outputs = pipeline | "LogToSequenceExamples" >> transforms.LogToSequenceExamples(
                file_patterns,
                split_seed=exec_properties[spec.SPLIT_SEED_KEY],
                min_user=exec_properties[spec.MIN_USER_KEY],
                min_item=exec_properties[spec.MIN_ITEM_KEY],
                kcore_rounds=exec_properties[spec.KCORE_ROUNDS_KEY],
            )
            for split, split_examples in outputs.examples.items():
                _ = split_examples | f"WriteSplit[{split}]" >> write_split.WriteSplit(
                    examples.path(split=split), example_gen_pb2.FORMAT_TFRECORDS_GZIP
                )
            _ = outputs.quarantine | "WriteQuarantine" >> beam.io.WriteToText(
                os.path.join(quarantine.uri, QUARANTINE_FILE_PREFIX), file_name_suffix=".tsv"
            )
            _ = (
                outputs.row_counts
                | "RowCountsToJson" >> beam.Map(functools.partial(json.dumps, sort_keys=True))
                | "WriteRowCounts" >> beam.io.WriteToText(
                    os.path.join(quarantine.uri, ROW_COUNTS_FILE), num_shards=1, shard_name_template=""
                )
            )

        examples_utils.set_payload_format(examples, example_gen_pb2.FORMAT_TF_EXAMPLE)
        examples_utils.set_file_format(
            examples, write_split.to_file_format_str(example_gen_pb2.FORMAT_TFRECORDS_GZIP)
        )
        row_counts = read_row_counts(quarantine.uri)
        bad_rows = row_counts[transforms.BAD_ROWS]
        total_rows = bad_rows + row_counts[transforms.GOOD_ROWS]
        quarantine.set_int_custom_property(spec.BAD_ROWS_PROPERTY, bad_rows)
        quarantine.set_int_custom_property(spec.TOTAL_ROWS_PROPERTY, total_rows)
        users = ", ".join(
            f"{split} {row_counts[transforms.users_key(split)]:,}" for split in transforms.SPLITS
        )
        logging.info(
            "SequenceExampleGen read %s: %s rows, %s malformed (quarantined in %s); users: %s",
            input_base,
            f"{total_rows:,}",
            f"{bad_rows:,}",
            quarantine.uri,
            users,
        )
        check_bad_fraction(row_counts, exec_properties[spec.MAX_BAD_FRACTION_KEY], quarantine.uri)
        check_kcore_converged(row_counts, exec_properties[spec.KCORE_ROUNDS_KEY])
        check_users_left(row_counts)
