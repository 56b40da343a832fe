"""The TFX module of the pipeline: Transform's ``preprocessing_fn`` and Trainer's ``run_fn``.

The pipeline names these functions by their import paths (``trainer.tfx_module.preprocessing_fn``,
``trainer.tfx_module.run_fn``), as the TFX taxi template does, rather than by ``module_file``: TFX packages
a ``module_file`` together with every other ``.py`` file of its directory into an ad-hoc wheel of
top-level modules written under the pipeline root at compile time, while this package is installed
wherever the components run (the virtual environment, the pipeline's container image).

Transform (:func:`preprocessing_fn`) re-indexes items as the protocol does: indices 1..N by descending
frequency, 0 for padding and unknown ids (:data:`trainer.constants.PADDING_INDEX`). Ties in frequency are
ordered by TFT (by item id bytes, *descending*), whereas :meth:`trainer.sequences.Vocabulary.from_sequences`
orders them by id ascending; both are deterministic, and :func:`load_vocabulary` reads TFT's file in its
index order, so the trainer, the exported servables and the transformed examples agree on every index.

Trainer (:func:`run_fn`) reads the transformed splits back into :class:`trainer.sequences.SequenceData`
and calls :func:`trainer.train.train`, the function ``dmirec train`` runs, then writes the servables with
:func:`trainer.export.export_servables`.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import tensorflow as tf
import tensorflow_transform as tft
from tfx.components.trainer.fn_args_utils import FnArgs
from tfx_bsl.public import tfxio

from trainer import config as config_lib
from trainer import constants, export, train
from trainer.model import DMIModel
from trainer.sequences import EncodedSequences, SequenceData, Vocabulary

logger = logging.getLogger(__name__)

# Name of the item vocabulary Transform writes (``<transform_graph>/transform_fn/assets/``).
ITEM_VOCABULARY = "item_ids"
# Keys of the Trainer's ``custom_config``.
MODEL_KEY = "model"
OVERRIDES_KEY = "overrides"
# Transformed examples read per batch when loading a split into memory.
_READ_BATCH_SIZE = 1024

# tfx.components.trainer.fn_args_utils.DataAccessor.tf_dataset_factory's signature.
DatasetFactory = Callable[..., tf.data.Dataset]


def _shift(indices: tf.SparseTensor | tf.RaggedTensor) -> tf.SparseTensor | tf.RaggedTensor:
    """Adds 1 to every value: vocabulary positions 0..N-1 (and -1 for unknown) become 1..N (and 0)."""
    if isinstance(indices, tf.SparseTensor):
        return tf.sparse.map_values(tf.add, indices, tf.constant(1, indices.dtype))
    return tf.ragged.map_flat_values(tf.add, indices, tf.constant(1, indices.dtype))


def preprocessing_fn(inputs: Mapping[str, Any]) -> dict[str, Any]:
    """Transform's preprocessing function: maps each user's item ids to frequency-sorted indices.

    Args:
      inputs: the features of a batch of per-user examples (``schemas/user_sequences.pbtxt``):
        ``user_id`` (dense string, one per user) and ``item_ids`` (a variable-length string list, as a
        ``SparseTensor`` or ``RaggedTensor``); ``timestamps`` is not needed past the example generator.

    Returns:
      ``user_id`` unchanged and ``item_ids`` as int64 indices: 1..N by descending frequency over the
      analyzed splits, 0 for ids outside the vocabulary. The vocabulary is written as
      :data:`ITEM_VOCABULARY` (gzipped TFRecords of ``b"<count> <item id>"``, most frequent first; this
      format keeps ids containing spaces intact, which TFT's text format with counts would rewrite).
    """
    positions = tft.compute_and_apply_vocabulary(
        inputs[constants.ITEM_IDS],
        default_value=-1,
        vocab_filename=ITEM_VOCABULARY,
        store_frequency=True,
        file_format="tfrecord_gzip",
    )
    return {constants.USER_ID: inputs[constants.USER_ID], constants.ITEM_IDS: _shift(positions)}


def load_vocabulary(transform_output: tft.TFTransformOutput) -> Vocabulary:
    """The item vocabulary Transform computed, as a :class:`Vocabulary` in index order with counts.

    Args:
      transform_output: the Transform graph (``TFTransformOutput`` of its ``transform_graph`` artifact).

    Returns:
      The vocabulary: ``item_ids[i]`` is index ``i + 1``.

    Raises:
      FileNotFoundError: the graph has no :data:`ITEM_VOCABULARY` vocabulary.
      ValueError: a record is not ``b"<count> <item id>"``.
    """
    path = transform_output.vocabulary_file_by_name(ITEM_VOCABULARY)
    if path is None:
        raise FileNotFoundError(f"the Transform graph has no {ITEM_VOCABULARY!r} vocabulary")
    item_ids, counts = [], []
    for position, record in enumerate(
        tf.data.TFRecordDataset(path, compression_type="GZIP").as_numpy_iterator()
    ):
        count, sep, item = record.partition(b" ")
        if not sep or not count.isdigit():
            raise ValueError(f"{path} record {position}: expected b'<count> <item id>', got {record[:80]!r}")
        item_ids.append(item.decode("utf-8"))
        counts.append(int(count))
    return Vocabulary(tuple(item_ids), tuple(counts))


def read_encoded_sequences(
    dataset_factory: DatasetFactory, file_pattern: str, transform_output: tft.TFTransformOutput
) -> EncodedSequences:
    """Reads one split of transformed examples into memory, users sorted by id.

    Beam writes examples in no particular order; sorting by user id makes the training batches a function
    of the data and the seed alone.

    Args:
      dataset_factory: ``DataAccessor.tf_dataset_factory`` of the transformed ``Examples`` artifact.
      file_pattern: the split's files.
      transform_output: the Transform graph, for the transformed schema.

    Returns:
      The split's users and their item indices in time order.
    """
    dataset = dataset_factory(
        [file_pattern],
        tfxio.TensorFlowDatasetOptions(batch_size=_READ_BATCH_SIZE, num_epochs=1, shuffle=False),
        transform_output.transformed_metadata.schema,
    )
    users: list[str] = []
    sequences: list[np.ndarray] = []
    for batch in dataset:
        items = batch[constants.ITEM_IDS]
        if isinstance(items, tf.SparseTensor):
            items = tf.RaggedTensor.from_sparse(items)
        users.extend(user.decode("utf-8") for user in np.reshape(batch[constants.USER_ID].numpy(), [-1]))
        sequences.extend(np.asarray(row, dtype=np.int32) for row in items.numpy())
    order = sorted(range(len(users)), key=users.__getitem__)
    return EncodedSequences.from_index_lists([users[i] for i in order], [sequences[i] for i in order])


def model_config(custom_config: Mapping[str, Any] | None) -> config_lib.ModelConfig:
    """The model configuration a Trainer's ``custom_config`` carries.

    Args:
      custom_config: ``{"model": variant name, "overrides": {field: value}}`` (lists for tuple fields, as
        JSON has no tuples); both keys optional (default: ``dmi`` without overrides).

    Returns:
      The validated :class:`~trainer.config.ModelConfig`.

    Raises:
      ValueError: an unknown variant, an unknown field or an invalid value.
    """
    custom_config = dict(custom_config or {})
    unknown = set(custom_config) - {MODEL_KEY, OVERRIDES_KEY}
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


def run_fn(fn_args: FnArgs) -> None:
    """Trainer's entry point: trains with :func:`trainer.train.train` and exports the servables.

    The Trainer must read Transform's ``transformed_examples`` with ``train_args.splits = ["train"]`` and
    ``eval_args.splits = ["eval", "test"]`` (in this order): validation users drive early stopping, test
    users are evaluated with the best weights. ``train_args.num_steps``, when set, becomes ``max_steps``;
    ``eval_args.num_steps`` is ignored, as the protocol validates on every eval user.

    Writes:
      ``fn_args.model_run_dir``: what :func:`trainer.train.train` writes (config, vocabulary, weights,
      metrics, TensorBoard logs, checkpoints).
      ``fn_args.serving_model_dir``: the ``dmi`` (ScaNN) and ``dmi_exact`` SavedModels.

    Args:
      fn_args: the Trainer's ``FnArgs``; ``custom_config`` as :func:`model_config` reads it.

    Raises:
      ValueError: a bad ``custom_config``, eval splits other than two, or the ``pop`` variant (not a
        servable model).
    """
    config = model_config(fn_args.custom_config)
    if fn_args.train_steps:
        config = dataclasses.replace(config, max_steps=int(fn_args.train_steps))
    if config.user_tower == "popularity":
        raise ValueError(f"model {config.model!r} has no servable; the pipeline trains neural variants only")
    if len(fn_args.train_files) != 1 or len(fn_args.eval_files) != 2:
        raise ValueError(
            "run_fn expects train_args.splits == ['train'] and eval_args.splits == ['eval', 'test'], got "
            f"{len(fn_args.train_files)} train and {len(fn_args.eval_files)} eval file pattern(s)"
        )
    transform_output = tft.TFTransformOutput(fn_args.transform_output)
    vocabulary = load_vocabulary(transform_output)
    patterns = {
        constants.TRAIN: fn_args.train_files[0],
        constants.EVAL: fn_args.eval_files[0],
        constants.TEST: fn_args.eval_files[1],
    }
    splits = {
        split: read_encoded_sequences(fn_args.data_accessor.tf_dataset_factory, pattern, transform_output)
        for split, pattern in patterns.items()
    }
    data = SequenceData(vocabulary, splits)
    logger.info(
        "training %s on %d items; users train %d / eval %d / test %d",
        config.model,
        data.num_items,
        len(data.train),
        len(data.eval),
        len(data.test),
    )
    result = train.train(config, data, out_dir=fn_args.model_run_dir, verbose=2)
    if not isinstance(result.model, DMIModel):
        raise ValueError(f"model {config.model!r} has no servable")
    written = export.export_servables(result.model, vocabulary, fn_args.serving_model_dir)
    logger.info("test metrics %s; servables %s", result.test, written)
