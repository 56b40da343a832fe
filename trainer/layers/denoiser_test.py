"""Tests for trainer.layers.denoiser."""

import trainer  # noqa: F401  (selects Keras 2 before TensorFlow is imported)

import math

import numpy as np
import tensorflow as tf
import tf_keras as keras
from absl.testing import parameterized

from trainer.layers.denoiser import InterestDenoiser, MLPDenoiser, prune_history

BATCH, LENGTH, DIM, STEPS = 5, 10, 8, 6
# Left-aligned histories of 10, 7, 3, 1 and 0 valid items.
MASK = np.arange(LENGTH)[None, :] < np.array([10, 7, 3, 1, 0])[:, None]


def _random_inputs(seed: int = 0):
    rng = np.random.default_rng(seed)
    history = rng.normal(size=(BATCH, LENGTH, DIM)).astype(np.float32)
    # Padding gets the largest raw scores so that a pruning that ignores the mask would pick it.
    attention = np.where(MASK, rng.uniform(size=(BATCH, LENGTH)), 10.0).astype(np.float32)
    return history, attention


class PruneHistoryTest(tf.test.TestCase, parameterized.TestCase):
    @parameterized.parameters((0.1,), (0.3,), (0.5,), (0.75,), (1.0,))
    def test_selects_the_top_ceil_gamma_n_valid_items(self, gamma):
        history, attention = _random_inputs()
        context, context_mask = prune_history(history, attention, MASK, gamma)
        max_kept = math.ceil(round(gamma * LENGTH, 9))
        self.assertEqual(context.shape, (BATCH, max_kept, DIM))
        self.assertEqual(context_mask.shape, (BATCH, max_kept))
        self.assertEqual(context_mask.dtype, tf.bool)
        for b in range(BATCH):
            valid = np.flatnonzero(MASK[b])
            kept = math.ceil(round(gamma * len(valid), 9))
            self.assertEqual(int(context_mask[b].numpy().sum()), kept)
            self.assertTrue(np.all(context_mask[b].numpy()[:kept]))  # Valid slots come first.
            expected_positions = valid[np.argsort(-attention[b, valid])[:kept]]
            # Compare the selected rows as sets of embeddings (order: decreasing attention).
            self.assertAllClose(context[b, :kept], history[b, expected_positions])
            self.assertAllEqual(context[b, kept:], np.zeros((max_kept - kept, DIM)))

    def test_gamma_one_keeps_every_valid_item_and_never_padding(self):
        history, attention = _random_inputs(1)
        context, context_mask = prune_history(history, attention, MASK, 1.0)
        self.assertAllEqual(context_mask, MASK.sum(axis=1)[:, None] > np.arange(LENGTH)[None, :])
        for b in range(BATCH):
            selected = {tuple(row) for row in context[b].numpy()[context_mask[b].numpy()]}
            self.assertEqual(selected, {tuple(row) for row in history[b][MASK[b]]})

    def test_exact_ceil_on_decimal_gamma(self):
        # 0.3 * 10 is 3.0000000000000004 in binary; the layer must still keep 3 items, not 4.
        history, attention = _random_inputs()
        _, context_mask = prune_history(history, attention, MASK, 0.3)
        self.assertEqual(context_mask.shape[1], 3)
        self.assertAllEqual(context_mask.numpy().sum(axis=1), [3, 3, 1, 1, 0])

    def test_empty_history_selects_nothing(self):
        history, attention = _random_inputs()
        context, context_mask = prune_history(history, attention, MASK, 0.5)
        self.assertFalse(np.any(context_mask[4]))
        self.assertAllEqual(context[4], np.zeros((5, DIM)))

    def test_float_mask_and_unknown_batch(self):
        history, attention = _random_inputs()
        prune = tf.function(
            lambda h, a, m: prune_history(h, a, m, 0.5),
            input_signature=[
                tf.TensorSpec([None, LENGTH, DIM]),
                tf.TensorSpec([None, LENGTH]),
                tf.TensorSpec([None, LENGTH]),
            ],
        )
        context, context_mask = prune(history, attention, MASK.astype(np.float32))
        expected_context, expected_mask = prune_history(history, attention, MASK, 0.5)
        self.assertAllEqual(context_mask, expected_mask)
        self.assertAllClose(context, expected_context)

    def test_invalid_arguments_raise(self):
        history, attention = _random_inputs()
        with self.assertRaisesRegex(ValueError, r"`gamma` must satisfy 0 < gamma <= 1"):
            prune_history(history, attention, MASK, 0.0)
        with self.assertRaisesRegex(ValueError, r"`gamma` must satisfy 0 < gamma <= 1"):
            prune_history(history, attention, MASK, 1.5)
        with self.assertRaisesRegex(ValueError, r"`history_embeddings` must have rank 3"):
            prune_history(history[..., 0], attention, MASK, 0.5)
        with self.assertRaisesRegex(ValueError, r"`attention` must have shape \(batch, length\)"):
            prune_history(history, attention[:, :4], MASK, 0.5)
        with self.assertRaisesRegex(ValueError, r"`mask` must have shape \(batch, length\)"):
            prune_history(history, attention, MASK[:, None], 0.5)


def _denoiser_inputs(seed: int = 0):
    rng = np.random.default_rng(seed)
    noisy = rng.normal(size=(BATCH, DIM)).astype(np.float32)
    context = rng.normal(size=(BATCH, 4, DIM)).astype(np.float32)
    # The last user has no valid context at all.
    context_mask = np.array([[1, 1, 1, 1], [1, 1, 0, 0], [1, 0, 0, 0], [0, 1, 0, 1], [0, 0, 0, 0]], bool)
    return noisy, context, context_mask


class InterestDenoiserTest(tf.test.TestCase):
    def setUp(self):
        super().setUp()
        keras.utils.set_random_seed(2)
        self.denoiser = InterestDenoiser(STEPS, num_heads=2, ffn_multiplier=2)

    def test_output_shape(self):
        noisy, context, context_mask = _denoiser_inputs()
        output = self.denoiser(noisy, tf.constant([1, 2, 3, 4, 6]), context, context_mask)
        self.assertEqual(output.shape, (BATCH, DIM))
        self.assertTrue(np.all(np.isfinite(output.numpy())))

    def test_output_depends_on_step(self):
        noisy, context, context_mask = _denoiser_inputs()
        first = self.denoiser(noisy, tf.fill([BATCH], 1), context, context_mask).numpy()
        last = self.denoiser(noisy, tf.fill([BATCH], STEPS), context, context_mask).numpy()
        self.assertTrue(np.all(np.abs(first - last).max(axis=-1) > 1e-4))

    def test_output_depends_on_valid_context(self):
        noisy, context, context_mask = _denoiser_inputs()
        steps = tf.fill([BATCH], 3)
        output = self.denoiser(noisy, steps, context, context_mask).numpy()
        changed = self.denoiser(noisy, steps, context + 1.0, context_mask).numpy()
        self.assertTrue(np.all(np.abs(output - changed)[:4].max(axis=-1) > 1e-4))

    def test_masked_context_does_not_affect_output(self):
        noisy, context, context_mask = _denoiser_inputs()
        steps = tf.constant([1, 2, 3, 4, 6])
        output = self.denoiser(noisy, steps, context, context_mask)
        garbage = 100.0 * np.random.default_rng(5).normal(size=context.shape)
        scrambled = np.where(context_mask[..., None], context, garbage)
        changed = self.denoiser(noisy, steps, scrambled.astype(np.float32), context_mask.astype(np.float32))
        self.assertAllClose(changed, output, rtol=1e-6, atol=1e-6)
        # The user without valid context attends to the step token only, so its context is irrelevant.
        self.assertTrue(np.all(np.isfinite(output[4].numpy())))

    def test_dropout_only_in_training(self):
        denoiser = InterestDenoiser(STEPS, dropout=0.5)
        noisy, context, context_mask = _denoiser_inputs()
        steps = tf.fill([BATCH], 2)
        inference = denoiser(noisy, steps, context, context_mask, training=False)
        self.assertAllClose(denoiser(noisy, steps, context, context_mask, training=False), inference)
        self.assertNotAllClose(denoiser(noisy, steps, context, context_mask, training=True), inference)

    def test_invalid_inputs_raise(self):
        noisy, context, context_mask = _denoiser_inputs()
        steps = tf.fill([BATCH], 2)
        with self.assertRaisesRegex(ValueError, r"`noisy_interest` must have shape \(batch, dim\)"):
            self.denoiser(noisy[:, None], steps, context, context_mask)
        with self.assertRaisesRegex(ValueError, r"`step` must have shape \(batch,\)"):
            self.denoiser(noisy, steps[:, None], context, context_mask)
        with self.assertRaisesRegex(ValueError, r"`context` must have shape \(batch, k, dim\)"):
            self.denoiser(noisy, steps, context[..., :3], context_mask)
        with self.assertRaisesRegex(ValueError, r"`context_mask` must have shape \(batch, k\)"):
            self.denoiser(noisy, steps, context, context_mask[:, :2])
        with self.assertRaisesRegex(ValueError, r"must be divisible by `num_heads`=3"):
            InterestDenoiser(STEPS, num_heads=3)(noisy, steps, context, context_mask)

    def test_config_round_trip(self):
        denoiser = InterestDenoiser(STEPS, num_heads=4, ffn_multiplier=3, dropout=0.1, activation="gelu")
        restored = InterestDenoiser.from_config(denoiser.get_config())
        self.assertEqual(restored.get_config(), denoiser.get_config())


class PreNormInterestDenoiserTest(tf.test.TestCase):
    def setUp(self):
        super().setUp()
        keras.utils.set_random_seed(4)
        self.denoiser = InterestDenoiser(STEPS, num_heads=2, ffn_multiplier=2, denoiser_norm="pre")

    def _zero_residual_branches(self, denoiser: InterestDenoiser) -> None:
        """Zeroes the last projection of the attention and of the feed-forward branch."""
        for weight in denoiser.cross_attention._output_dense.weights + denoiser.ffn_output.weights:
            weight.assign(tf.zeros_like(weight))

    def test_residual_path_carries_the_noisy_interest(self):
        noisy, context, context_mask = _denoiser_inputs()
        steps = tf.constant([1, 2, 3, 4, 6])
        self.denoiser(noisy, steps, context, context_mask)  # builds
        self._zero_residual_branches(self.denoiser)
        # Both branches add zero: pre-norm returns v_t itself, unlike post-norm (normalised output below).
        self.assertAllClose(self.denoiser(noisy, steps, context, context_mask), noisy, atol=1e-6)
        post = InterestDenoiser(STEPS, num_heads=2, ffn_multiplier=2, denoiser_norm="post")
        post(noisy, steps, context, context_mask)
        self._zero_residual_branches(post)
        centered = noisy - noisy.mean(axis=-1, keepdims=True)
        normalised = centered / np.sqrt((centered**2).mean(axis=-1, keepdims=True) + 1e-6)
        self.assertAllClose(post(noisy, steps, context, context_mask), normalised, atol=1e-3)

    def test_without_query_residual_the_output_has_no_path_from_v_t(self):
        noisy, context, context_mask = _denoiser_inputs()
        steps = tf.constant([1, 2, 3, 4, 6])
        denoiser = InterestDenoiser(
            STEPS, num_heads=2, ffn_multiplier=2, denoiser_norm="pre", query_residual=False
        )
        denoiser(noisy, steps, context, context_mask)
        self._zero_residual_branches(denoiser)
        # Both branches add zero and nothing carries v_t: the prediction is 0 (v_t with the residual).
        self.assertAllClose(denoiser(noisy, steps, context, context_mask), np.zeros_like(noisy), atol=1e-6)
        self.assertFalse(InterestDenoiser.from_config(denoiser.get_config()).query_residual)
        with self.assertRaisesRegex(ValueError, "query_residual=False"):
            InterestDenoiser(STEPS, denoiser_norm="post", query_residual=False)

    def test_output_depends_on_valid_context_only(self):
        noisy, context, context_mask = _denoiser_inputs()
        steps = tf.fill([BATCH], 3)
        output = self.denoiser(noisy, steps, context, context_mask).numpy()
        changed = self.denoiser(noisy, steps, context + 1.0, context_mask).numpy()
        self.assertTrue(np.all(np.abs(output - changed)[:4].max(axis=-1) > 1e-4))
        garbage = 100.0 * np.random.default_rng(6).normal(size=context.shape)
        scrambled = np.where(context_mask[..., None], context, garbage).astype(np.float32)
        self.assertAllClose(self.denoiser(noisy, steps, scrambled, context_mask), output, atol=1e-5)

    def test_config_round_trip_and_invalid_position(self):
        restored = InterestDenoiser.from_config(self.denoiser.get_config())
        self.assertEqual(restored.get_config()["denoiser_norm"], "pre")
        with self.assertRaisesRegex(ValueError, "`denoiser_norm` must be one of"):
            InterestDenoiser(STEPS, denoiser_norm="middle")


class MLPDenoiserTest(tf.test.TestCase):
    def setUp(self):
        super().setUp()
        keras.utils.set_random_seed(3)
        self.denoiser = MLPDenoiser(STEPS, ffn_multiplier=2)

    def test_shape_and_step_dependence(self):
        noisy, context, context_mask = _denoiser_inputs()
        first = self.denoiser(noisy, tf.fill([BATCH], 0), context, context_mask).numpy()
        last = self.denoiser(noisy, tf.fill([BATCH], STEPS), context, context_mask).numpy()
        self.assertEqual(first.shape, (BATCH, DIM))
        self.assertTrue(np.all(np.abs(first - last).max(axis=-1) > 1e-4))

    def test_matches_numpy_and_ignores_context(self):
        noisy, context, context_mask = _denoiser_inputs()
        steps = np.array([1, 2, 3, 4, 6])
        output = self.denoiser(noisy, tf.constant(steps), context, context_mask)
        ignored = self.denoiser(noisy, tf.constant(steps), context + 5.0, ~context_mask)
        self.assertAllClose(ignored, output)
        features = np.concatenate([noisy, self.denoiser.step_embedding.embeddings.numpy()[steps]], axis=-1)
        hidden = np.tanh(features @ self.denoiser.hidden.kernel.numpy() + self.denoiser.hidden.bias.numpy())
        expected = hidden @ self.denoiser.projection.kernel.numpy() + self.denoiser.projection.bias.numpy()
        self.assertAllClose(output, expected, atol=1e-5)

    def test_config_round_trip(self):
        restored = MLPDenoiser.from_config(self.denoiser.get_config())
        self.assertEqual(restored.get_config(), self.denoiser.get_config())


if __name__ == "__main__":
    tf.test.main()


class EncodedContextTest(tf.test.TestCase, parameterized.TestCase):
    """``denoise_encoded(encode_context(C))`` (the DDIM chain's path) is ``call`` with ``C``."""

    @parameterized.parameters(("post", True), ("pre", True), ("pre", False))
    def test_the_encoded_context_gives_the_calls_output(self, norm, query_residual):
        keras.utils.set_random_seed(3)
        denoiser = InterestDenoiser(STEPS, num_heads=2, ffn_multiplier=2, denoiser_norm=norm, query_residual=query_residual)
        noisy, context, context_mask = _denoiser_inputs()
        steps = tf.constant([1, 2, 3, 4, 6])
        expected = denoiser(noisy, steps, context, context_mask).numpy()
        encoded = denoiser.encode_context(context, context_mask)
        self.assertEqual(encoded.keys.shape, (BATCH, context.shape[1], 2, DIM // 2))
        self.assertEqual(encoded.mask.shape, (BATCH, 1, 1 + context.shape[1]))
        # One encoding serves every step: the step token's keys and values are the only ones recomputed.
        for step in (steps, tf.fill([BATCH], STEPS)):
            self.assertAllClose(
                denoiser.denoise_encoded(noisy, step, encoded),
                denoiser(noisy, step, context, context_mask),
                rtol=1e-5,
                atol=1e-6,
            )
        self.assertAllClose(denoiser.denoise_encoded(noisy, steps, encoded), expected, rtol=1e-5, atol=1e-6)

    def test_dropout_applies_on_the_encoded_path_in_training_only(self):
        denoiser = InterestDenoiser(STEPS, dropout=0.5)
        noisy, context, context_mask = _denoiser_inputs()
        steps = tf.fill([BATCH], 2)
        inference = denoiser(noisy, steps, context, context_mask, training=False)
        encoded = denoiser.encode_context(context, context_mask)
        self.assertAllClose(denoiser.denoise_encoded(noisy, steps, encoded, training=False), inference, atol=1e-6)
        trained = denoiser.denoise_encoded(noisy, steps, encoded, training=True)
        self.assertGreater(float(tf.reduce_max(tf.abs(trained - inference))), 1e-3)

    def test_the_mlp_takes_the_same_interface_and_ignores_the_context(self):
        denoiser = MLPDenoiser(STEPS)
        noisy, context, context_mask = _denoiser_inputs()
        steps = tf.constant([1, 2, 3, 4, 6])
        encoded = denoiser.encode_context(context, context_mask)
        self.assertAllClose(denoiser.denoise_encoded(noisy, steps, encoded), denoiser(noisy, steps, context, context_mask))
