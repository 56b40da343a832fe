"""SequenceExampleGen: the pipeline's first component, interaction logs in, per-user sequence examples out.

A custom TFX component on a Beam executor, so ``beam_pipeline_args`` pass through and the same pipeline
runs on the DirectRunner, Dataflow, Flink or Spark. It builds the users, sequences and splits with the
``trainer/`` functions the command line uses (see ``transforms.py``).

Caching: the component has no input channel, so TFX's cache keys on its parameters only; a run over
changed files under the same ``input_base`` would reuse the previous output. Give each data version its
own ``input_base`` or run with caching off.
"""

from __future__ import annotations

import trainer  # noqa: F401  (selects Keras 2 before anything imports TensorFlow)
from tfx import types
from tfx.dsl.components.base import base_beam_component, executor_spec
from tfx.types import standard_artifacts

from pipeline import configs
from pipeline.sequence_example_gen import executor, spec


class SequenceExampleGen(base_beam_component.BaseBeamComponent):
    """Turns interaction-log CSV files into one ``tf.train.Example`` per user, split 8:1:1 by user.

    Each example has ``user_id`` (bytes, one value), ``item_ids`` (bytes) and ``timestamps`` (int64): the
    user's items in time order with consecutive repeats dropped (``trainer.sequences.user_sequence``) and
    the timestamp of each. Users are split by ``trainer.sequences.user_split(user_id, split_seed)``.

    Outputs:
      examples: ``Examples`` with the splits ``train``, ``eval``, ``test`` (gzipped TFRecords of
        ``tf.train.Example``; schema in ``schemas/user_sequences.pbtxt``).
      quarantine: ``QuarantinedRows``: the malformed rows (``path:line<TAB>reason<TAB>text``) and the
        run's row counts.

    Example::

        gen = SequenceExampleGen(input_base="gs://bucket/logs/2024-06", min_user=5, min_item=5)
        statistics = StatisticsGen(examples=gen.outputs["examples"])
    """

    SPEC_CLASS = spec.SequenceExampleGenSpec
    EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(executor.Executor)

    def __init__(
        self,
        input_base: str,
        split_seed: int = 0,
        min_user: int = 0,
        min_item: int = 0,
        kcore_rounds: int = configs.DEFAULT_KCORE_ROUNDS,
        max_bad_fraction: float = configs.DEFAULT_MAX_BAD_FRACTION,
    ) -> None:
        """Configures the component.

        Args:
          input_base: a directory of interaction logs (its ``*.csv`` and ``*.csv.gz`` files, each with
            the header ``user_id,item_id,timestamp``) or a single log file; any filesystem Beam reads
            (local, ``gs://``, ...).
          split_seed: seed of the 8:1:1 user split.
          min_user: iterative k-core: drop users with fewer events (0 or 1: no filter).
          min_item: iterative k-core: drop items with fewer events (0 or 1: no filter).
          kcore_rounds: filtering rounds of the k-core (a Beam graph is static). The result equals
            ``trainer.interactions.k_core`` when that converges within this many iterations of its loop;
            otherwise the run fails and asks for more rounds.
          max_bad_fraction: the run fails when a larger fraction of the data rows is malformed.

        Raises:
          ValueError: a negative threshold, ``kcore_rounds < 1`` or ``max_bad_fraction`` outside
            [0, 1].
        """
        for name, value in (("min_user", min_user), ("min_item", min_item)):
            if value < 0:
                raise ValueError(f"{name} must be >= 0, got {value}")
        if kcore_rounds < 1:
            raise ValueError(f"kcore_rounds must be >= 1, got {kcore_rounds}")
        if not 0.0 <= max_bad_fraction <= 1.0:
            raise ValueError(f"max_bad_fraction must be in [0, 1], got {max_bad_fraction}")
        super().__init__(
            spec=spec.SequenceExampleGenSpec(
                input_base=input_base,
                split_seed=split_seed,
                min_user=min_user,
                min_item=min_item,
                kcore_rounds=kcore_rounds,
                max_bad_fraction=float(max_bad_fraction),
                examples=types.Channel(type=standard_artifacts.Examples),
                quarantine=types.Channel(type=spec.QuarantinedRows),
            )
        )
