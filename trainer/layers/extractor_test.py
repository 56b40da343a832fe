"""Tests for trainer.layers.extractor."""

import trainer  # noqa: F401  (selects Keras 2 before TensorFlow is imported)

import numpy as np
import tensorflow as tf
import tf_keras as keras

from trainer.layers.extractor import MultiInterestExtractor

BATCH, LENGTH, DIM, INTERESTS = 4, 6, 8, 3
MASK = np.array(
    [
        [1, 1, 1, 1, 1, 1],
        [1, 1, 1, 0, 0, 0],
        [1, 0, 0, 0, 0, 0],
        [0, 0, 0, 0, 0, 0],
    ],
    dtype=bool,
)


def _numpy_extract(layer: MultiInterestExtractor, history: np.ndarray, mask: np.ndarray):
    """Eq. 4-5 recomputed from the layer's weights: positions in the attention only, exact zero padding."""
    positions = layer.position_embeddings.numpy()
    w1 = layer.attention_hidden.kernel.numpy()  # (d, d_a)
    w2 = layer.attention_logits.kernel.numpy()  # (d_a, K)
    logits = np.einsum("bla,ak->bkl", np.tanh((history + positions) @ w1), w2)
    attention = np.zeros_like(logits)
    for b in range(history.shape[0]):
        valid = mask[b]
        if valid.any():
            scores = np.exp(logits[b][:, valid] - logits[b][:, valid].max(axis=-1, keepdims=True))
            attention[b][:, valid] = scores / scores.sum(axis=-1, keepdims=True)
    return attention @ history, attention


class MultiInterestExtractorTest(tf.test.TestCase):
    def setUp(self):
        super().setUp()
        keras.utils.set_random_seed(1)
        rng = np.random.default_rng(0)
        self.history = rng.normal(size=(BATCH, LENGTH, DIM)).astype(np.float32)
        self.layer = MultiInterestExtractor(INTERESTS, LENGTH)

    def test_shapes_and_default_attention_units(self):
        interests, attention = self.layer(self.history, MASK)
        self.assertEqual(interests.shape, (BATCH, INTERESTS, DIM))
        self.assertEqual(attention.shape, (BATCH, INTERESTS, LENGTH))
        self.assertEqual(self.layer.attention_hidden.kernel.shape, (DIM, 4 * DIM))
        self.assertEqual(self.layer.position_embeddings.shape, (LENGTH, DIM))
        custom = MultiInterestExtractor(INTERESTS, LENGTH, attention_units=5)
        custom(self.history, MASK)
        self.assertEqual(custom.attention_hidden.kernel.shape, (DIM, 5))

    def test_padding_gets_exactly_zero_attention_and_rows_sum_to_one(self):
        _, attention = self.layer(self.history, MASK)
        attention = attention.numpy()
        padding = np.broadcast_to(~MASK[:, None, :], attention.shape)
        self.assertTrue(np.all(attention[padding] == 0.0))
        self.assertTrue(np.all(attention[~padding] > 0.0))
        sums = attention.sum(axis=-1)
        self.assertAllClose(sums[:3], np.ones((3, INTERESTS)), atol=1e-6)
        self.assertAllEqual(sums[3], np.zeros(INTERESTS))

    def test_matches_numpy_recomputation(self):
        self.layer(self.history, MASK)  # Builds the weights.
        # Positions far from zero make a V computed from H + P detectably different.
        self.layer.position_embeddings.assign(
            np.full((LENGTH, DIM), 3.0, np.float32) * np.arange(LENGTH)[:, None]
        )
        interests, attention = self.layer(self.history, MASK)
        expected_interests, expected_attention = _numpy_extract(self.layer, self.history, MASK)
        self.assertAllClose(attention, expected_attention, atol=1e-6)
        self.assertAllClose(interests, expected_interests, atol=1e-5)

    def test_padding_content_does_not_matter(self):
        interests, attention = self.layer(self.history, MASK)
        changed = np.where(MASK[..., None], self.history, 1e3).astype(np.float32)
        changed_interests, changed_attention = self.layer(changed, MASK)
        self.assertAllClose(changed_attention, attention, atol=1e-7)
        self.assertAllClose(changed_interests, interests, atol=1e-6)

    def test_empty_history_gives_zero_interests_without_nan(self):
        interests, attention = self.layer(self.history, MASK)
        self.assertTrue(np.all(np.isfinite(interests.numpy())))
        self.assertAllEqual(interests[3], np.zeros((INTERESTS, DIM)))
        self.assertAllEqual(attention[3], np.zeros((INTERESTS, LENGTH)))

    def test_float_mask_equals_boolean_mask(self):
        expected = self.layer(self.history, MASK)
        actual = self.layer(self.history, MASK.astype(np.float32))
        self.assertAllClose(actual[0], expected[0])
        self.assertAllClose(actual[1], expected[1])

    def test_unknown_batch_in_tf_function(self):
        self.layer(self.history, MASK)
        # autograph=False: the call has no Python control flow, and AutoGraph would transpile tf_keras.
        call = tf.function(
            self.layer.call,
            input_signature=[tf.TensorSpec([None, LENGTH, DIM]), tf.TensorSpec([None, LENGTH], tf.bool)],
            autograph=False,
        )
        self.assertAllClose(call(self.history, MASK)[0], self.layer(self.history, MASK)[0])

    def test_invalid_shapes_raise(self):
        with self.assertRaisesRegex(ValueError, r"`history_embeddings` must have rank 3"):
            self.layer(self.history[:, :, 0], MASK)
        with self.assertRaisesRegex(ValueError, r"must have length max_length=6"):
            self.layer(self.history[:, :4], MASK[:, :4])
        with self.assertRaisesRegex(ValueError, r"`mask` must have shape \(batch, length\)"):
            self.layer(self.history, MASK[:, :, None])
        with self.assertRaisesRegex(ValueError, r"`mask` must have shape \(batch, length\)"):
            self.layer(self.history, MASK[:, :5])
        with self.assertRaisesRegex(ValueError, r"`num_interests` must be >= 1"):
            MultiInterestExtractor(0, LENGTH)

    def test_config_round_trip(self):
        layer = MultiInterestExtractor(INTERESTS, LENGTH, attention_units=7, name="extractor")
        restored = MultiInterestExtractor.from_config(layer.get_config())
        self.assertEqual(restored.get_config(), layer.get_config())
        self.assertEqual(restored.attention_units, 7)
        deserialized = keras.layers.deserialize(keras.layers.serialize(layer))
        self.assertIsInstance(deserialized, MultiInterestExtractor)
        self.assertEqual(deserialized.get_config(), layer.get_config())


if __name__ == "__main__":
    tf.test.main()
