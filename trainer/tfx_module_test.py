"""Tests of the TFX module: reading the pipeline's examples into the trainer's data, the Trainer config."""

from __future__ import annotations

import trainer  # noqa: F401  (selects Keras 2 before anything imports TensorFlow)
import pytest
import tensorflow as tf

from trainer import data_schema, tfx_module
from trainer.export_settings import ExportSettings
from trainer.sequences import SequenceData


def test_read_user_sequences_sorts_users_and_keeps_raw_ids_in_order():
    batches = [
        {
            data_schema.USER_ID: tf.constant([[b"u2"], [b"u10"]]),
            data_schema.ITEM_IDS: tf.ragged.constant([[b"c", b"a b"], [b"\xc3\xa9"]]).to_sparse(),
        },
        {data_schema.USER_ID: tf.constant([[b"u1"]]), data_schema.ITEM_IDS: tf.ragged.constant([[b"d", b"d", b"c"]])},
    ]

    def dataset_factory(file_patterns, options, schema):
        assert file_patterns == ["split/*"] and not options.shuffle and options.num_epochs == 1
        assert schema == "the schema"
        return batches  # iterated like a dataset of feature batches

    users = tfx_module.read_user_sequences(dataset_factory, "split/*", "the schema")
    assert users == {"u1": ["d", "d", "c"], "u10": ["\u00e9"], "u2": ["c", "a b"]}
    assert list(users) == ["u1", "u10", "u2"]


def test_the_pipeline_and_the_command_line_index_items_alike():
    """run_fn's data (already split examples) gets the indices `dmirec train` gives the same users."""
    sequences = {f"u{i}": [f"i{(i * 7 + j) % 13}" for j in range(3 + i % 5)] for i in range(60)}
    from_log = SequenceData.from_sequences(sequences, seed=0)
    by_split = {split: {u: sequences[u] for u in encoded.user_ids} for split, encoded in from_log.splits.items()}
    from_examples = SequenceData.from_split_sequences(by_split)
    assert from_examples.vocabulary == from_log.vocabulary
    for split in data_schema.SPLIT_RATIOS:
        assert from_examples.splits[split].user_ids == from_log.splits[split].user_ids
        assert from_examples.splits[split].items.tolist() == from_log.splits[split].items.tolist()
    with pytest.raises(ValueError, match="expected the splits"):
        SequenceData.from_split_sequences({data_schema.TRAIN: {}})


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


def test_export_settings_travel_in_the_export_key():
    custom_config = {"model": "dmi", "export": {"scann_leaves": 50, "xla": False}}
    assert tfx_module.model_config(custom_config).model == "dmi"  # the export key is not the model's
    assert tfx_module.export_settings(custom_config) == ExportSettings(scann_leaves=50, xla=False)
    assert tfx_module.export_settings({"model": "dmi"}) == tfx_module.export_settings(None) == ExportSettings()
    with pytest.raises(ValueError, match="unknown export setting.*leaves"):
        tfx_module.export_settings({"export": {"leaves": 50}})
