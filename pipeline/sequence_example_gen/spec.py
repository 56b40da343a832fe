"""SequenceExampleGen's parameter and output names, its quarantine artifact type and its ComponentSpec.

Kept apart from ``component.py`` so that the executor can read the names without importing the component
(which imports the executor).
"""

from __future__ import annotations

import trainer  # noqa: F401  (selects Keras 2 before anything imports TensorFlow)
from tfx import types
from tfx.types import standard_artifacts
from tfx.types.component_spec import ChannelParameter, ExecutionParameter

# Execution parameters.
INPUT_BASE_KEY = "input_base"
SPLIT_SEED_KEY = "split_seed"
MIN_USER_KEY = "min_user"
MIN_ITEM_KEY = "min_item"
KCORE_ROUNDS_KEY = "kcore_rounds"
MAX_BAD_FRACTION_KEY = "max_bad_fraction"

# Outputs.
EXAMPLES_KEY = "examples"
QUARANTINE_KEY = "quarantine"

# Custom properties of the quarantine artifact.
BAD_ROWS_PROPERTY = "bad_rows"
TOTAL_ROWS_PROPERTY = "total_rows"


class QuarantinedRows(types.Artifact):
    """The rows of an input log that SequenceExampleGen rejected, and the run's row counts.

    * File structure:
       - ``{uri}/bad_rows-NNNNN-of-NNNNN.tsv``: one line per malformed row,
         ``path:line<TAB>reason<TAB>text`` (``line`` 1-based, the header being line 1).
       - ``{uri}/row_counts.json``: ``good_rows``, ``bad_rows``, the users per split and the events the
         last k-core round removed (0 when the k-core converged).

    * Custom properties:
       - ``bad_rows`` (:data:`BAD_ROWS_PROPERTY`): number of malformed rows.
       - ``total_rows`` (:data:`TOTAL_ROWS_PROPERTY`): number of data rows read (good and malformed; header
         and blank lines excluded).

    Kubeflow Pipelines v2 accepts a custom artifact type only with a ``<namespace>.<Name>`` type name and
    no declared ``PROPERTIES`` (its generic artifact schema has none), hence custom properties. The type
    name must also be an import path of the class: TFX's Kubeflow V2 container entry point recreates a
    custom artifact by importing its schema title, so with any other name every task that reads or writes
    one fails (found by executing the compiled spec, ``tests/test_kubeflow_run.py``). ``pipeline`` exposes
    the class lazily (``pipeline/__init__.py``), which satisfies both rules.
    """

    TYPE_NAME = "pipeline.QuarantinedRows"


class SequenceExampleGenSpec(types.ComponentSpec):
    """Parameters and outputs of :class:`~pipeline.sequence_example_gen.component.SequenceExampleGen`."""

    PARAMETERS = {
        INPUT_BASE_KEY: ExecutionParameter(type=str),
        SPLIT_SEED_KEY: ExecutionParameter(type=int),
        MIN_USER_KEY: ExecutionParameter(type=int),
        MIN_ITEM_KEY: ExecutionParameter(type=int),
        KCORE_ROUNDS_KEY: ExecutionParameter(type=int),
        MAX_BAD_FRACTION_KEY: ExecutionParameter(type=float),
    }
    INPUTS = {}
    OUTPUTS = {
        EXAMPLES_KEY: ChannelParameter(type=standard_artifacts.Examples),
        QUARANTINE_KEY: ChannelParameter(type=QuarantinedRows),
    }
