"""Tests for trainer.layers.routing."""

import trainer  # noqa: F401  (selects Keras 2 before TensorFlow is imported)

import numpy as np
import tensorflow as tf

from trainer.layers.routing import routing_regularization


class RoutingRegularizationTest(tf.test.TestCase):
    def test_hand_computed_example(self):
        # K = 2 interests over L = 3 positions, d = 2.
        # User 0, interest 0: [1/2, 1/2, 0], mean 1/3 -> C = [1/6, 1/6, -1/3], |C|^2 = 1/6, S_00 = 1/12.
        #         interest 1: [1, 0, 0],     mean 1/3 -> C = [2/3, -1/3, -1/3], |C|^2 = 2/3, S_11 = 1/3.
        #         ||diag(S)||^2 = 1/144 + 16/144 = 17/144 (the off-diagonal S_01 = 1/12 must not count).
        # User 1 (uniform attention): C = 0, contributes 0.
        # User 2 (last position is padding, zero attention; the mean still runs over all 3 positions):
        #         interest 0: [1, 0, 0] -> S_00 = 1/3;  interest 1: [1/2, 1/2, 0] -> S_11 = 1/12; 17/144.
        # User 3 (no valid position): all-zero attention, contributes 0.
        attention = np.array(
            [
                [[0.5, 0.5, 0.0], [1.0, 0.0, 0.0]],
                [[1 / 3, 1 / 3, 1 / 3], [1 / 3, 1 / 3, 1 / 3]],
                [[1.0, 0.0, 0.0], [0.5, 0.5, 0.0]],
                [[0.0, 0.0, 0.0], [0.0, 0.0, 0.0]],
            ],
            dtype=np.float32,
        )
        loss = routing_regularization(tf.constant(attention), embedding_dim=2)
        self.assertEqual(loss.shape, ())
        self.assertAllClose(loss, 34 / 144, rtol=1e-6)

    def test_scales_with_inverse_square_of_embedding_dim(self):
        attention = tf.constant([[[0.5, 0.5, 0.0], [1.0, 0.0, 0.0]]])
        self.assertAllClose(routing_regularization(attention, 4), 17 / 144 / 4, rtol=1e-6)

    def test_is_differentiable(self):
        attention = tf.Variable([[[0.5, 0.5, 0.0], [1.0, 0.0, 0.0]]])
        with tf.GradientTape() as tape:
            loss = routing_regularization(attention, 2)
        # d/dA of sum_k S_kk^2 = 2 S_kk * 2 C_k / d (the centring term sums to zero).
        centred = np.array([[[1 / 6, 1 / 6, -1 / 3], [2 / 3, -1 / 3, -1 / 3]]])
        diagonal = np.array([[1 / 12, 1 / 3]])
        self.assertAllClose(
            tape.gradient(loss, attention), 2 * diagonal[..., None] * 2 * centred / 2, atol=1e-6
        )

    def test_invalid_arguments_raise(self):
        with self.assertRaisesRegex(ValueError, r"`attention` must have rank 3"):
            routing_regularization(tf.zeros((2, 3)), 2)
        with self.assertRaisesRegex(ValueError, r"`embedding_dim` must be >= 1"):
            routing_regularization(tf.zeros((1, 2, 3)), 0)


if __name__ == "__main__":
    tf.test.main()
