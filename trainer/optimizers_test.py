"""Tests for the item table's Adam updates: lazy rows derived by hand, dense identical to legacy Adam."""

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

import trainer  # noqa: F401
from trainer import config, optimizers
from trainer.model import DMIModel


def _adam_rows(
    grads: list[np.ndarray], lr: float = 0.1, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-7
) -> np.ndarray:
    """The total Adam step of one row that receives ``grads[t]`` at step t + 1 (numpy reference)."""
    m = v = 0.0
    total = 0.0
    for t, g in enumerate(grads, start=1):
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        total = total + lr * np.sqrt(1 - b2**t) / (1 - b1**t) * m / (np.sqrt(v) + eps)
    return total


def _sparse(values: list | np.ndarray, indices: list[int], rows: int) -> tf.IndexedSlices:
    shape = tf.constant([rows, 2])
    return tf.IndexedSlices(tf.constant(values, tf.float32), tf.constant(indices, tf.int64), shape)


def test_lazy_adam_updates_only_the_rows_in_the_gradient():
    table = tf.Variable(np.zeros((5, 2), np.float32))
    optimizer = optimizers.LazyAdam(0.1)
    first = np.array([[1.0, -2.0], [0.5, 0.5]], np.float32)
    optimizer.apply_gradients([(_sparse(first, [1, 3], 5), table)])
    second = np.array([[3.0, 1.0]], np.float32)
    optimizer.apply_gradients([(_sparse(second, [1], 5), table)])
    expected = np.zeros((5, 2), np.float32)
    expected[1] = -_adam_rows([first[0], second[0]])
    # Row 3 took one step; lazily it does not move on its momentum at step 2 (dense Adam would).
    expected[3] = -_adam_rows([first[1]])
    np.testing.assert_allclose(table.numpy(), expected, rtol=1e-5, atol=1e-7)
    for slot in ("m", "v"):
        untouched = optimizer.get_slot(table, slot).numpy()[[0, 2, 4]]
        np.testing.assert_array_equal(untouched, 0.0)


def test_lazy_adam_sums_duplicate_indices():
    table = tf.Variable(np.zeros((3, 2), np.float32))
    optimizer = optimizers.LazyAdam(0.1)
    optimizer.apply_gradients([(_sparse([[1.0, 1.0], [2.0, -4.0]], [2, 2], 3), table)])
    np.testing.assert_allclose(table.numpy()[2], -_adam_rows([np.array([3.0, -3.0])]), rtol=1e-5)


def test_lazy_adam_on_dense_gradients_is_legacy_adam():
    rng = np.random.default_rng(0)
    start = rng.normal(size=(4, 3)).astype(np.float32)
    tables = [tf.Variable(start), tf.Variable(start)]
    opts = [optimizers.LazyAdam(0.01), keras.optimizers.legacy.Adam(0.01)]
    for _ in range(3):
        gradient = tf.constant(rng.normal(size=(4, 3)), tf.float32)
        for optimizer, table in zip(opts, tables):
            optimizer.apply_gradients([(gradient, table)])
    np.testing.assert_array_equal(tables[0].numpy(), tables[1].numpy())


def test_auto_is_dense_below_the_threshold_and_lazy_from_it():
    assert optimizers.item_table_update("auto", 12_101) == "dense"
    assert optimizers.item_table_update("auto", optimizers.LAZY_MIN_ITEMS - 1) == "dense"
    assert optimizers.item_table_update("auto", optimizers.LAZY_MIN_ITEMS) == "lazy"
    assert optimizers.item_table_update("dense", 10**6) == "dense"
    assert optimizers.item_table_update("lazy", 10) == "lazy"
    with pytest.raises(ValueError, match="item_table_update"):
        optimizers.item_table_update("sparse", 10)
    with pytest.raises(ValueError, match="item_table_update"):
        config.variant_config("remi", {"item_table_update": "sparse"})


@pytest.mark.parametrize("update", ["dense", "lazy"])
def test_a_training_step_moves_only_the_batch_rows_lazily(update):
    tiny = {"embedding_dim": 8, "num_interests": 2, "max_length": 4, "batch_size": 2, "num_negatives": 2}
    model = DMIModel(config.variant_config("remi", {**tiny, "item_table_update": update}), 50)
    model.build_for_inputs()
    model.compile(optimizer=optimizers.LazyAdam(0.01))
    step = {
        "history": tf.constant([[1, 2, 0, 0], [3, 4, 5, 0]], tf.int32),
        "target": tf.constant([6, 7], tf.int32),
        "seed": tf.constant([1, 2], tf.int64),
    }
    model.train_step(step)
    after_one = model.item_table.numpy().copy()
    other = {
        **step,
        "history": tf.constant([[10, 11, 0, 0], [12, 13, 0, 0]], tf.int32),
        "target": tf.constant([14, 15], tf.int32),
    }
    model.train_step(other)
    moved = np.any(model.item_table.numpy() != after_one, axis=1)
    # Rows 1-7 took the first step only. Dense Adam moves them again on their momentum; lazy leaves them.
    assert moved[1:8].all() == (update == "dense")
    assert moved[10:16].all()
