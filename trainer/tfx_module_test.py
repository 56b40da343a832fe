"""Tests of the TFX module: the Transform's item indices and vocabulary, reading splits, the Trainer config."""

from __future__ import annotations

import trainer  # noqa: F401  (selects Keras 2 before anything imports TensorFlow)
import apache_beam as beam
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_transform as tft
import tensorflow_transform.beam as tft_beam
from tensorflow_transform.tf_metadata import dataset_metadata

from trainer import constants, tfx_module
from trainer.sequences import Vocabulary

# Frequencies: b 3, "a c" 2, z 2, y 1. One id holds a space; "a c" and z tie.
USERS = [
    {constants.USER_ID: [b"u1"], constants.ITEM_IDS: [b"b", b"a c", b"z"]},
    {constants.USER_ID: [b"u2"], constants.ITEM_IDS: [b"z", b"b"]},
    {constants.USER_ID: [b"u3"], constants.ITEM_IDS: [b"b", b"y", b"a c"]},
]
RAW_FEATURES = {
    constants.USER_ID: tf.io.FixedLenFeature([1], tf.string),
    constants.ITEM_IDS: tf.io.VarLenFeature(tf.string),
}


@pytest.fixture(scope="module")
def transform_output(tmp_path_factory) -> tft.TFTransformOutput:
    """preprocessing_fn analyzed by TFT on Beam over USERS, written as a Transform component writes it."""
    root = tmp_path_factory.mktemp("transform")
    metadata = dataset_metadata.DatasetMetadata.from_feature_spec(RAW_FEATURES)
    with beam.Pipeline() as pipeline, tft_beam.Context(temp_dir=str(root / "tmp")):
        transform_fn = (pipeline | beam.Create(USERS), metadata) | tft_beam.AnalyzeDataset(
            tfx_module.preprocessing_fn
        )
        _ = transform_fn | tft_beam.WriteTransformFn(str(root / "graph"))
    return tft.TFTransformOutput(str(root / "graph"))


def _transform(output: tft.TFTransformOutput, users: dict[str, list[str]]) -> dict[str, list[int]]:
    ids = list(users)
    features = {
        constants.USER_ID: tf.constant([[user] for user in ids]),
        constants.ITEM_IDS: tf.ragged.constant([users[user] for user in ids]).to_sparse(),
    }
    transformed = output.transform_features_layer()(features)
    rows = tf.RaggedTensor.from_sparse(transformed[constants.ITEM_IDS]).to_list()
    assert [u.decode() for u in np.reshape(transformed[constants.USER_ID].numpy(), [-1])] == ids
    return dict(zip(ids, rows))


def test_vocabulary_is_by_descending_frequency_with_counts_and_ids_intact(transform_output):
    vocabulary = tfx_module.load_vocabulary(transform_output)
    # TFT breaks the tie between "a c" and z by id bytes, descending (Vocabulary.from_sequences: ascending).
    assert vocabulary == Vocabulary(("b", "z", "a c", "y"), (3, 2, 2, 1))


def test_items_become_indices_1_to_n_and_unknown_items_padding(transform_output):
    transformed = _transform(transform_output, {"u1": ["b", "a c", "z"], "new": ["y", "never seen", "b"]})
    assert transformed == {"u1": [1, 3, 2], "new": [4, constants.PADDING_INDEX, 1]}


def test_indices_agree_with_the_vocabulary_read_back(transform_output):
    vocabulary = tfx_module.load_vocabulary(transform_output)
    items = list(vocabulary.item_ids)
    assert _transform(transform_output, {"u": items})["u"] == vocabulary.lookup(items).tolist()


def test_read_encoded_sequences_sorts_users_and_keeps_item_order(transform_output):
    batches = [
        {
            constants.USER_ID: tf.constant([[b"u2"], [b"u10"]]),
            constants.ITEM_IDS: tf.ragged.constant([[3, 1], [2]], dtype=tf.int64).to_sparse(),
        },
        {
            constants.USER_ID: tf.constant([[b"u1"]]),
            constants.ITEM_IDS: tf.ragged.constant([[4, 4, 2]], dtype=tf.int64),
        },
    ]

    def dataset_factory(file_patterns, options, schema):
        assert file_patterns == ["split/*"] and not options.shuffle and options.num_epochs == 1
        return batches  # iterated like a dataset of feature batches

    split = tfx_module.read_encoded_sequences(dataset_factory, "split/*", transform_output)
    assert split.user_ids == ("u1", "u10", "u2")
    assert [split.sequence(i).tolist() for i in range(3)] == [[4, 4, 2], [2], [3, 1]]
    assert split.items.dtype == np.int32


def test_model_config_reads_variant_and_overrides():
    config = tfx_module.model_config(
        {"model": "remi", "overrides": {"embedding_dim": 16, "ydnn_hidden_units": [32, 16]}}
    )
    assert (config.model, config.embedding_dim, config.ydnn_hidden_units) == ("remi", 16, (32, 16))
    assert config.diffusion is False  # the remi preset
    assert tfx_module.model_config(None).model == "dmi"


@pytest.mark.parametrize(
    "custom_config, message",
    [
        ({"model": "nope"}, "unknown model"),
        ({"overrides": {"not_a_field": 1}}, "unknown ModelConfig field.*not_a_field"),
        ({"overrides": {"embedding_dim": 0}}, "embedding_dim must be >= 1"),
        ({"variant": "dmi"}, "unknown custom_config key"),
    ],
)
def test_model_config_rejects_bad_configs(custom_config, message):
    with pytest.raises(ValueError, match=message):
        tfx_module.model_config(custom_config)
