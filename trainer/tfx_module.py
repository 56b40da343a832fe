"""The TFX module of the pipeline: Trainer's ``run_fn``, and reading the pipeline's per-user examples.

The pipeline names ``run_fn`` by its import path (``trainer.tfx_module.run_fn``), as the TFX taxi template
does, rather than by ``module_file``: TFX packages a ``module_file`` together with every other ``.py``
file of its directory into an ad-hoc wheel of top-level modules written under the pipeline root at
compile time, while this package is installed wherever the components run (the virtual environment, the
pipeline's container image).

There is no Transform: raw item ids are what the examples, the evaluator and the servables exchange, and
indices exist only inside the Trainer. :func:`run_fn` reads SequenceExampleGen's examples (raw ids),
builds the vocabulary over all three splits with :meth:`trainer.sequences.SequenceData.
from_split_sequences`, the same code ``dmirec train`` runs (so one log gives the same indices, ties in
frequency included, on both paths), trains with :func:`trainer.train.train` and writes the servables with
:func:`trainer.export.export_servables`, which carry that vocabulary as their asset. Why not Transform
(``docs/architecture.md``): the only preprocessing is that vocabulary; Transform's graph could not serve
it (the signature takes dense id histories), so the servable needed a second lookup built from Transform's
file, with its own tie order, and the evaluator converted ids back and forth.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import tensorflow as tf
from tensorflow_metadata.proto.v0 import schema_pb2
from tfx.components.trainer.fn_args_utils import FnArgs
from tfx.utils import io_utils
from tfx_bsl.public import tfxio

from trainer import config as config_lib
from trainer import data_schema, export, train
from trainer.export_settings import ExportSettings
from trainer.model import DMIModel
from trainer.sequences import SequenceData

logger = logging.getLogger(__name__)

# Keys of the Trainer's ``custom_config``.
MODEL_KEY = "model"
OVERRIDES_KEY = "overrides"
EXPORT_KEY = "export"  # ExportSettings.to_dict(); absent: the default settings
# Examples read per batch when loading a split into memory.
_READ_BATCH_SIZE = 1024

# tfx.components.trainer.fn_args_utils.DataAccessor.tf_dataset_factory's signature.
DatasetFactory = Callable[..., tf.data.Dataset]


def read_user_sequences(
    dataset_factory: DatasetFactory, file_pattern: str, schema: schema_pb2.Schema
) -> dict[str, list[str]]:
    """Reads one split of SequenceExampleGen's examples into memory: user id -> raw item ids, by user id.

    Beam writes examples in no particular order; sorting by user id makes the training batches a function
    of the data and the seed alone.

    Args:
      dataset_factory: ``DataAccessor.tf_dataset_factory`` of the ``Examples`` artifact (or any function
        with its signature).
      file_pattern: the split's files.
      schema: the examples' schema (``schemas/user_sequences.pbtxt``).

    Returns:
      Each user's items in time order, users sorted by id.
    """
    dataset = dataset_factory(
        [file_pattern],
        tfxio.TensorFlowDatasetOptions(batch_size=_READ_BATCH_SIZE, num_epochs=1, shuffle=False),
        schema,
    )
    users: dict[str, list[str]] = {}
    for batch in dataset:
        items = batch[data_schema.ITEM_IDS]
        if isinstance(items, tf.SparseTensor):
            items = tf.RaggedTensor.from_sparse(items)
        for user, row in zip(np.reshape(batch[data_schema.USER_ID].numpy(), [-1]), items.numpy()):
            users[user.decode("utf-8")] = [item.decode("utf-8") for item in row]
    return dict(sorted(users.items()))


def read_schema(path: str) -> schema_pb2.Schema:
    """The schema file a component received (``FnArgs.schema_path``, a Schema artifact's file)."""
    return io_utils.SchemaReader().read(path)


def model_config(custom_config: Mapping[str, Any] | None) -> config_lib.ModelConfig:
    """The model configuration a Trainer's ``custom_config`` carries.

    Args:
      custom_config: ``{"model": variant name, "overrides": {field: value}}`` (lists for tuple fields, as
        JSON has no tuples); both keys optional (default: ``dmi`` without overrides). Its ``export`` key
        is :func:`export_settings`'.

    Returns:
      The validated :class:`~trainer.config.ModelConfig`.

    Raises:
      ValueError: an unknown variant, an unknown field or an invalid value.
    """
    custom_config = dict(custom_config or {})
    unknown = set(custom_config) - {MODEL_KEY, OVERRIDES_KEY, EXPORT_KEY}
    if unknown:
        raise ValueError(f"unknown custom_config key(s): {', '.join(sorted(unknown))}")
    overrides = {
        key: tuple(value) if isinstance(value, list) else value
        for key, value in dict(custom_config.get(OVERRIDES_KEY) or {}).items()
    }
    unknown = set(overrides) - {field.name for field in dataclasses.fields(config_lib.ModelConfig)}
    if unknown:
        raise ValueError(f"unknown ModelConfig field(s) in custom_config: {', '.join(sorted(unknown))}")
    return config_lib.variant_config(custom_config.get(MODEL_KEY, "dmi"), overrides)


def export_settings(custom_config: Mapping[str, Any] | None) -> ExportSettings:
    """How a Trainer's ``custom_config`` asks for the servables to be exported (its ``export`` key).

    Raises:
      ValueError: an unknown setting or an invalid value.
    """
    return ExportSettings.from_dict((custom_config or {}).get(EXPORT_KEY))


def run_fn(fn_args: FnArgs) -> None:
    """Trainer's entry point: trains with :func:`trainer.train.train` and exports the servables.

    The Trainer must read SequenceExampleGen's ``examples`` (with the validated ``schema``) with
    ``train_args.splits = ["train"]`` and ``eval_args.splits = ["eval", "test"]`` (in this order):
    validation users drive early stopping, test users are evaluated with the best weights. ``train_args.num_steps``, when set, becomes ``max_steps``;
    ``eval_args.num_steps`` is ignored, as the protocol validates on every eval user.

    Writes:
      ``fn_args.model_run_dir``: what :func:`trainer.train.train` writes (config, vocabulary, weights,
      metrics, TensorBoard logs, checkpoints).
      ``fn_args.serving_model_dir``: the ``dmi`` (ScaNN) and ``dmi_exact`` SavedModels.

    Args:
      fn_args: the Trainer's ``FnArgs``; ``custom_config`` as :func:`model_config` and
        :func:`export_settings` read it.

    Raises:
      ValueError: a bad ``custom_config``, eval splits other than two, or a variant without a servable
        (:func:`trainer.config.has_servable`: ``pop``).
    """
    config = model_config(fn_args.custom_config)
    settings = export_settings(fn_args.custom_config)
    if fn_args.train_steps:
        config = dataclasses.replace(config, max_steps=int(fn_args.train_steps))
    config_lib.require_servable(config)
    if len(fn_args.train_files) != 1 or len(fn_args.eval_files) != 2:
        raise ValueError(
            "run_fn expects train_args.splits == ['train'] and eval_args.splits == ['eval', 'test'], got "
            f"{len(fn_args.train_files)} train and {len(fn_args.eval_files)} eval file pattern(s)"
        )
    if not fn_args.schema_path:
        raise ValueError("run_fn needs the examples' schema (the Trainer's schema input)")
    schema = read_schema(fn_args.schema_path)
    patterns = {
        data_schema.TRAIN: fn_args.train_files[0],
        data_schema.EVAL: fn_args.eval_files[0],
        data_schema.TEST: fn_args.eval_files[1],
    }
    data = SequenceData.from_split_sequences({
        split: read_user_sequences(fn_args.data_accessor.tf_dataset_factory, pattern, schema)
        for split, pattern in patterns.items()
    })
    logger.info(
        "training %s on %d items; users train %d / eval %d / test %d",
        config.model,
        data.num_items,
        len(data.train),
        len(data.eval),
        len(data.test),
    )
    settings.check_model(config, data.num_items)  # before training, not after
    result = train.train(config, data, out_dir=fn_args.model_run_dir, verbose=2)
    if not isinstance(result.model, DMIModel):  # only a broken invariant: require_servable passed above
        raise TypeError(f"train built a {type(result.model).__name__} for {config.model!r}, not a DMIModel")
    written = export.export_servables(result.model, data.vocabulary, fn_args.serving_model_dir, settings)
    logger.info("test metrics %s; servables %s", result.test, written)
