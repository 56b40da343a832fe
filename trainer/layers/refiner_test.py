"""Tests for trainer.layers.refiner."""

import trainer  # noqa: F401  (selects Keras 2 before TensorFlow is imported)

import math

import numpy as np
import tensorflow as tf
import tf_keras as keras
from absl.testing import parameterized

from trainer.layers.denoiser import MLPDenoiser, UnencodedContextDenoiser
from trainer.layers.refiner import DiffusionRefiner

BATCH, INTERESTS, LENGTH, DIM, STEPS = 3, 2, 6, 4, 10
MASK = np.arange(LENGTH)[None, :] < np.array([6, 3, 0])[:, None]
# A schedule noisy enough (1 - alpha_bar_T = 0.5) for mistakes in the sampler to show.
SCHEDULE = dict(diffusion_steps=STEPS, alpha_min=0.01, alpha_max=0.5, noise_scale=1.0)


def _refiner(**kwargs) -> DiffusionRefiner:
    arguments = dict(SCHEDULE, gamma=0.5, eta=0.4, sampling_steps=STEPS)
    arguments.update(kwargs)
    return DiffusionRefiner(**arguments)


def _inputs(seed: int = 0):
    rng = np.random.default_rng(seed)
    interests = rng.normal(size=(BATCH, INTERESTS, DIM)).astype(np.float32)
    attention = rng.uniform(size=(BATCH, INTERESTS, LENGTH)) * MASK[:, None, :]
    attention = (attention / np.maximum(attention.sum(-1, keepdims=True), 1e-9)).astype(np.float32)
    history = rng.normal(size=(BATCH, LENGTH, DIM)).astype(np.float32)
    return interests, attention, history


class _ConstantDenoiser(UnencodedContextDenoiser):
    """A perfect denoiser: always predicts the true clean vectors."""

    def __init__(self, clean: np.ndarray):
        super().__init__()
        self.clean = tf.constant(clean)

    def call(self, noisy_interest, step, context, context_mask, training=None):
        return self.clean


class _InvertingDenoiser(UnencodedContextDenoiser):
    """Perfect under zero noise: v0 = v_t / sqrt(alpha_bar_t), right only if v_t stays on the DDIM path."""

    def __init__(self, schedule):
        super().__init__()
        self.schedule = schedule

    def call(self, noisy_interest, step, context, context_mask, training=None):
        return noisy_interest / tf.sqrt(self.schedule.alpha_bar(step))[:, None]


class _AffineDenoiser(UnencodedContextDenoiser):
    """0.5 v_t + 0.01 t + masked mean of the context: depends on every input, mirrored in numpy below."""

    def call(self, noisy_interest, step, context, context_mask, training=None):
        weights = tf.cast(context_mask, tf.float32)[..., None]
        mean = tf.reduce_sum(context * weights, 1) / tf.maximum(tf.reduce_sum(weights, 1), 1.0)
        return 0.5 * noisy_interest + 0.01 * tf.cast(step, tf.float32)[:, None] + mean


def _numpy_affine(noisy, step, history, attention, mask, gamma):
    """_AffineDenoiser with numpy item pruning: top ceil(gamma * n) valid items by attention."""
    valid = np.flatnonzero(mask)
    kept = math.ceil(round(gamma * len(valid), 9))
    chosen = valid[np.argsort(-attention[valid])[:kept]]
    mean = history[chosen].mean(axis=0) if kept else np.zeros(history.shape[-1])
    return 0.5 * noisy + 0.01 * step + mean


class ServeRefineTest(tf.test.TestCase, parameterized.TestCase):
    @parameterized.product(sampling_steps=[1, 2, 5, STEPS], serving_noise=["zero", "random"])
    def test_perfect_denoiser_recovers_the_interests(self, sampling_steps, serving_noise):
        interests, attention, history = _inputs()
        refiner = _refiner(sampling_steps=sampling_steps, serving_noise=serving_noise)
        refiner.denoiser = _ConstantDenoiser(interests.reshape(-1, DIM))
        refined = refiner.serve_refine(interests, attention, history, MASK, seed=tf.constant([1, 2, 3]))
        self.assertAllClose(refined, interests, atol=1e-5)

    @parameterized.parameters(1, 2, 5, STEPS)
    def test_ddim_keeps_a_perfect_prediction_on_its_path(self, sampling_steps):
        interests, attention, history = _inputs()
        refiner = _refiner(sampling_steps=sampling_steps)
        refiner.denoiser = _InvertingDenoiser(refiner.schedule)
        refined = refiner.serve_refine(interests, attention, history, MASK)
        self.assertAllClose(refined, interests, atol=1e-5)

    @parameterized.parameters((3, 0.4, True), (STEPS, 0.7, True), (4, 0.4, False))
    def test_matches_numpy_ddim(self, sampling_steps, eta, stop_gradient):
        interests, attention, history = _inputs(1)
        refiner = _refiner(sampling_steps=sampling_steps, eta=eta, stop_gradient=stop_gradient)
        refiner.denoiser = _AffineDenoiser()
        refined = refiner.serve_refine(interests, attention, history, MASK)

        schedule = refiner.schedule
        timesteps = schedule.ddim_timesteps(sampling_steps)
        alphas_bar = schedule.alphas_bar
        expected = np.zeros_like(interests)
        for b in range(BATCH):
            for k in range(INTERESTS):
                v = interests[b, k].astype(np.float64)
                v_t = np.sqrt(alphas_bar[STEPS]) * v  # Zero serving noise.
                for i, t in enumerate(timesteps):
                    v0_hat = _numpy_affine(v_t, t, history[b], attention[b, k], MASK[b], 0.5)
                    alpha_bar_prev = alphas_bar[timesteps[i + 1]] if i + 1 < len(timesteps) else 1.0
                    eps_hat = (v_t - np.sqrt(alphas_bar[t]) * v0_hat) / np.sqrt(1.0 - alphas_bar[t])
                    v_t = np.sqrt(alpha_bar_prev) * v0_hat + np.sqrt(1.0 - alpha_bar_prev) * eps_hat
                expected[b, k] = eta * v0_hat + (1.0 - eta) * v if stop_gradient else v0_hat
        self.assertAllClose(refined, expected, atol=1e-5)

    def test_zero_noise_is_deterministic_and_ignores_the_seed(self):
        interests, attention, history = _inputs()
        refiner = _refiner(sampling_steps=3)
        first = refiner.serve_refine(interests, attention, history, MASK)
        self.assertAllEqual(refiner.serve_refine(interests, attention, history, MASK, seed=7), first)
        self.assertAllEqual(refiner.serve_refine(interests, attention, history, MASK, seed=8), first)

    def test_random_noise_is_reproducible_per_seed(self):
        interests, attention, history = _inputs()
        refiner = _refiner(sampling_steps=3, serving_noise="random")
        refiner.denoiser = _AffineDenoiser()  # Sensitive to its input, unlike the real, freshly built one.
        seeds = tf.constant([11, 12, 13])
        first = refiner.serve_refine(interests, attention, history, MASK, seed=seeds)
        self.assertAllEqual(refiner.serve_refine(interests, attention, history, MASK, seed=seeds), first)
        other = refiner.serve_refine(interests, attention, history, MASK, seed=tf.constant([21, 22, 23]))
        self.assertTrue(np.all(np.abs(other - first).max(axis=-1) > 1e-3))
        # A user's result depends on its own seed only, not on the rest of the batch.
        mixed = refiner.serve_refine(interests, attention, history, MASK, seed=tf.constant([11, 22, 23]))
        self.assertAllEqual(mixed[0], first[0])
        self.assertNotAllClose(mixed[1], first[1])
        # A scalar seed is shared by every user.
        shared = refiner.serve_refine(interests, attention, history, MASK, seed=12)
        self.assertAllEqual(shared[1], first[1])

    def test_random_noise_requires_a_seed(self):
        interests, attention, history = _inputs()
        refiner = _refiner(serving_noise="random")
        with self.assertRaisesRegex(ValueError, r"`seed` is required"):
            refiner.serve_refine(interests, attention, history, MASK)
        with self.assertRaisesRegex(ValueError, r"`seed` must be a scalar or have shape \(batch,\)"):
            refiner.serve_refine(interests, attention, history, MASK, seed=tf.zeros((3, 2), tf.int64))

    @parameterized.parameters("transformer", "mlp")
    def test_real_denoiser_in_tf_function_with_unknown_batch(self, denoiser):
        interests, attention, history = _inputs()
        refiner = _refiner(sampling_steps=3, denoiser=denoiser, serving_noise="random")
        serve = tf.function(
            refiner.serve_refine,
            input_signature=[
                tf.TensorSpec([None, INTERESTS, DIM]),
                tf.TensorSpec([None, INTERESTS, LENGTH]),
                tf.TensorSpec([None, LENGTH, DIM]),
                tf.TensorSpec([None, LENGTH], tf.bool),
                tf.TensorSpec([None], tf.int64),
            ],
        )
        seeds = tf.constant([1, 2, 3], tf.int64)
        refined = serve(interests, attention, history, MASK, seeds)
        self.assertEqual(refined.shape, (BATCH, INTERESTS, DIM))
        self.assertAllClose(
            refined, refiner.serve_refine(interests, attention, history, MASK, seeds), atol=1e-5
        )
        self.assertTrue(np.all(np.isfinite(refined.numpy())))


class TrainRefineTest(tf.test.TestCase, parameterized.TestCase):
    def _train_inputs(self):
        interests, attention, history = _inputs(2)
        rng = np.random.default_rng(3)
        step = tf.constant([1, 5, STEPS])
        noise = rng.normal(size=(BATCH, DIM)).astype(np.float32)
        return interests[:, 0], attention[:, 0], history, step, noise

    @parameterized.parameters(True, False)
    def test_matches_numpy(self, stop_gradient):
        interest, attention, history, step, noise = self._train_inputs()
        refiner = _refiner(eta=0.4, stop_gradient=stop_gradient)
        refiner.denoiser = _AffineDenoiser()
        z, loss = refiner.train_refine(interest, attention, history, MASK, step, noise)

        alphas_bar = refiner.schedule.alphas_bar[step.numpy()][:, None]
        noisy = np.sqrt(alphas_bar) * interest + np.sqrt(1.0 - alphas_bar) * noise
        denoised = np.stack(
            [
                _numpy_affine(noisy[b], step.numpy()[b], history[b], attention[b], MASK[b], 0.5)
                for b in range(BATCH)
            ]
        )
        self.assertAllClose(loss, np.linalg.norm(denoised - interest, axis=-1).mean(), atol=1e-5)
        expected_z = 0.4 * denoised + 0.6 * interest if stop_gradient else denoised
        self.assertAllClose(z, expected_z, atol=1e-5)

    @parameterized.parameters("norm", "squared", "mse")
    def test_diffusion_loss_variants_match_numpy(self, loss):
        interest, attention, history, step, noise = self._train_inputs()
        refiner = _refiner(loss=loss)
        refiner.denoiser = _AffineDenoiser()
        _, value = refiner.train_refine(interest, attention, history, MASK, step, noise)
        alphas_bar = refiner.schedule.alphas_bar[step.numpy()][:, None]
        noisy = np.sqrt(alphas_bar) * interest + np.sqrt(1.0 - alphas_bar) * noise
        error = np.stack(
            [
                _numpy_affine(noisy[b], step.numpy()[b], history[b], attention[b], MASK[b], 0.5)
                for b in range(BATCH)
            ]
        ) - interest
        expected = {
            "norm": np.linalg.norm(error, axis=-1),
            "squared": (error**2).sum(axis=-1),
            "mse": (error**2).mean(axis=-1),
        }[loss].mean()
        self.assertAllClose(value, expected, rtol=1e-5)

    def test_relative_noise_is_scaled_by_the_interest_rms(self):
        interest, attention, history, step, noise = self._train_inputs()
        refiner = _refiner(noise="relative")
        refiner.denoiser = _AffineDenoiser()
        z, _ = refiner.train_refine(interest, attention, history, MASK, step, noise)
        alphas_bar = refiner.schedule.alphas_bar[step.numpy()][:, None]
        rms = np.sqrt((interest**2).mean(axis=-1, keepdims=True))
        noisy = np.sqrt(alphas_bar) * interest + np.sqrt(1.0 - alphas_bar) * rms * noise
        denoised = np.stack(
            [
                _numpy_affine(noisy[b], step.numpy()[b], history[b], attention[b], MASK[b], 0.5)
                for b in range(BATCH)
            ]
        )
        self.assertAllClose(z, 0.4 * denoised + 0.6 * interest, atol=1e-5)

    def test_input_dropout_only_in_training(self):
        interest, attention, history, step, noise = self._train_inputs()
        keras.utils.set_random_seed(0)
        refiner = _refiner(input_dropout=0.5)
        refiner.denoiser = _AffineDenoiser()
        plain = _refiner()
        plain.denoiser = _AffineDenoiser()
        inference, _ = refiner.train_refine(interest, attention, history, MASK, step, noise, training=False)
        expected, _ = plain.train_refine(interest, attention, history, MASK, step, noise, training=True)
        self.assertAllClose(inference, expected, atol=1e-6)
        dropped, _ = refiner.train_refine(interest, attention, history, MASK, step, noise, training=True)
        # The affine denoiser reads 0.5 v_t: dropped coordinates lose it, kept ones double it.
        difference = (dropped.numpy() - expected.numpy()) / 0.4
        alphas_bar = refiner.schedule.alphas_bar[step.numpy()][:, None]
        half_noisy = 0.5 * (np.sqrt(alphas_bar) * interest + np.sqrt(1.0 - alphas_bar) * noise)
        dropped_mask = np.isclose(difference, -half_noisy, atol=1e-5)
        kept_mask = np.isclose(difference, half_noisy, atol=1e-5)
        self.assertTrue(np.all(dropped_mask | kept_mask))
        self.assertTrue(dropped_mask.any() and kept_mask.any())

    @parameterized.parameters(1, 3, STEPS)
    def test_chain_training_computes_what_serving_computes(self, sampling_steps):
        interests, attention, history = _inputs(4)
        refiner = _refiner(sampling_steps=sampling_steps, training="chain")
        refiner.denoiser = _AffineDenoiser()
        served = refiner.serve_refine(interests, attention, history, MASK)
        for k in range(INTERESTS):
            z, loss = refiner.train_refine(
                interests[:, k],
                attention[:, k],
                history,
                MASK,
                tf.constant([1, 2, 3]),  # ignored by the chain, which starts at T
                np.zeros((BATCH, DIM), np.float32),  # the serving chain's zero noise
            )
            self.assertAllClose(z, served[:, k], atol=1e-5)
            denoised = (z.numpy() - 0.6 * interests[:, k]) / 0.4
            self.assertAllClose(loss, np.linalg.norm(denoised - interests[:, k], axis=-1).mean(), atol=1e-4)

    def test_chain_training_sends_gradients_through_every_step(self):
        interests, attention, history = _inputs(4)
        refiner = _refiner(sampling_steps=3, training="chain")
        noise = np.random.default_rng(0).normal(size=(BATCH, DIM)).astype(np.float32)
        with tf.GradientTape() as tape:
            z, loss = refiner.train_refine(
                interests[:, 0], attention[:, 0], history, MASK, tf.constant([1, 1, 1]), noise, training=True
            )
            total = tf.reduce_sum(z) + loss
        gradient = tape.gradient(total, refiner.denoiser.step_embedding.embeddings)
        rows = np.flatnonzero(np.abs(tf.convert_to_tensor(gradient).numpy()).sum(axis=-1) > 0)
        self.assertAllEqual(rows, sorted(refiner.timesteps))  # every DDIM step's embedding was used

    def test_recency_embeddings_reach_the_denoiser(self):
        interests, attention, history = _inputs(6)
        # One DDIM step: Z = 0.4 f(v_T) + 0.6 v, so a shift of f's context mean shifts Z by 0.4 of it.
        refiner = _refiner(recency=True, max_length=LENGTH, sampling_steps=1)
        refiner.denoiser = _AffineDenoiser()
        plain = _refiner(sampling_steps=1)
        plain.denoiser = _AffineDenoiser()
        served = refiner.serve_refine(interests, attention, history, MASK)
        # Zero-initialised: the paper's denoiser to start with.
        self.assertAllClose(served, plain.serve_refine(interests, attention, history, MASK))
        table = np.arange(LENGTH * DIM, dtype=np.float32).reshape(LENGTH, DIM)
        refiner.recency_embedding.assign(table)
        # The affine denoiser reads the mean of the kept items: with recency it is shifted by the mean of
        # their recency rows (user 0 keeps 3 of 6 valid items, user 1 2 of 3; user 2 has none).
        shifted = refiner.serve_refine(interests, attention, history, MASK).numpy()
        base = plain.serve_refine(interests, attention, history, MASK).numpy()
        for b, valid in enumerate((6, 3)):
            for k in range(INTERESTS):
                kept = np.argsort(-np.where(MASK[b], attention[b, k], -np.inf))[: math.ceil(valid / 2)]
                expected = base[b, k] + 0.4 * table[valid - 1 - kept].mean(axis=0)
                self.assertAllClose(shifted[b, k], expected, rtol=1e-5, atol=1e-4)
        self.assertAllClose(shifted[2], base[2])
        with self.assertRaisesRegex(ValueError, "`recency` needs `max_length`"):
            _refiner(recency=True)

    def test_trajectory_ends_with_the_served_representation(self):
        interests, attention, history = _inputs(5)
        refiner = _refiner(sampling_steps=4)
        refiner.denoiser = _AffineDenoiser()
        trajectory = refiner.refinement_trajectory(interests, attention, history, MASK)
        self.assertLen(trajectory, 4)
        self.assertAllClose(trajectory[-1], refiner.serve_refine(interests, attention, history, MASK))
        self.assertNotAllClose(trajectory[0], trajectory[-1])

    def test_gradient_routing_with_stop_gradient(self):
        interest, attention, history, step, noise = map(tf.constant, self._train_inputs())
        refiner = _refiner(eta=0.4, dropout=0.1)
        with tf.GradientTape(persistent=True) as tape:
            tape.watch([interest, attention, history])
            z, loss = refiner.train_refine(interest, attention, history, MASK, step, noise, training=True)
            total = tf.reduce_sum(z)
        weights = refiner.denoiser.trainable_weights
        self.assertNotEmpty(weights)
        self.assertEqual(len(refiner.trainable_weights), len(weights))
        for source in (interest, attention, history):
            gradient = tape.gradient(loss, source)
            self.assertTrue(gradient is None or not np.any(gradient.numpy()))
        self.assertGreater(_global_norm(tape.gradient(loss, weights)), 0.0)
        # Z reaches v through (1 - eta) v only: v0_tilde is computed from detached inputs.
        self.assertAllClose(tape.gradient(total, interest), np.full((BATCH, DIM), 0.6), atol=1e-6)
        self.assertGreater(_global_norm(tape.gradient(total, weights)), 0.0)

    def test_input_gradient_routes_the_recommendation_loss_only_to_the_interest(self):
        interest, attention, history, step, noise = map(tf.constant, self._train_inputs())
        refiner = _refiner(eta=0.4, input_gradient=True)
        with tf.GradientTape(persistent=True) as tape:
            tape.watch(interest)
            z, loss = refiner.train_refine(interest, attention, history, MASK, step, noise)
            refiner.input_gradient = False  # the same weights, the paper's routing
            z_plain, _ = refiner.train_refine(interest, attention, history, MASK, step, noise)
            objective = tf.reduce_sum(z**2)
            objective_plain = tf.reduce_sum(z_plain**2)
        # Same values; L_dm has no gradient into v, the recommendation objective more than (1 - eta).
        self.assertAllClose(z, z_plain, atol=1e-6)
        self.assertIsNone(tape.gradient(loss, interest))
        direct = 0.6 * 2 * z.numpy()
        self.assertNotAllClose(tape.gradient(objective, interest), direct)
        self.assertAllClose(
            tape.gradient(objective_plain, interest), 0.6 * 2 * z_plain.numpy(), atol=1e-5
        )

    def test_gradient_routing_without_stop_gradient(self):
        interest, attention, history, step, noise = map(tf.constant, self._train_inputs())
        refiner = _refiner(stop_gradient=False)
        with tf.GradientTape(persistent=True) as tape:
            tape.watch([interest, history])
            z, loss = refiner.train_refine(interest, attention, history, MASK, step, noise)
        self.assertGreater(np.abs(tape.gradient(loss, interest).numpy()).sum(), 0.0)
        self.assertGreater(np.abs(tape.gradient(loss, history).numpy()).sum(), 0.0)
        self.assertGreater(_global_norm(tape.gradient(z, refiner.denoiser.trainable_weights)), 0.0)

    def test_loss_gradient_is_finite_for_an_exact_reconstruction(self):
        interest, attention, history, step, noise = self._train_inputs()
        refiner = _refiner(stop_gradient=False)
        refiner.denoiser = _ConstantDenoiser(interest)
        source = tf.constant(interest)
        with tf.GradientTape() as tape:
            tape.watch(source)
            _, loss = refiner.train_refine(source, attention, history, MASK, step, noise)
        self.assertEqual(float(loss), 0.0)
        self.assertTrue(np.all(np.isfinite(tape.gradient(loss, source).numpy())))

    def test_tf_function_with_unknown_batch_matches_eager(self):
        interest, attention, history, step, noise = self._train_inputs()
        refiner = _refiner()
        train = tf.function(
            refiner.train_refine,
            input_signature=[
                tf.TensorSpec([None, DIM]),
                tf.TensorSpec([None, LENGTH]),
                tf.TensorSpec([None, LENGTH, DIM]),
                tf.TensorSpec([None, LENGTH], tf.bool),
                tf.TensorSpec([None], tf.int32),
                tf.TensorSpec([None, DIM]),
            ],
        )
        z, loss = train(interest, attention, history, MASK, step, noise)
        expected_z, expected_loss = refiner.train_refine(interest, attention, history, MASK, step, noise)
        self.assertAllClose(z, expected_z, atol=1e-5)
        self.assertAllClose(loss, expected_loss, atol=1e-5)

    def test_mlp_denoiser(self):
        interest, attention, history, step, noise = self._train_inputs()
        refiner = _refiner(denoiser="mlp")
        self.assertIsInstance(refiner.denoiser, MLPDenoiser)
        z, loss = refiner.train_refine(interest, attention, history, MASK, step, noise)
        self.assertEqual(z.shape, (BATCH, DIM))
        self.assertEqual(loss.shape, ())

    def test_invalid_inputs_raise(self):
        interest, attention, history, step, noise = self._train_inputs()
        refiner = _refiner()
        with self.assertRaisesRegex(ValueError, r"`interest` must have rank 2"):
            refiner.train_refine(interest[:, None], attention, history, MASK, step, noise)
        with self.assertRaisesRegex(ValueError, r"`noise` must have the shape of `interest`"):
            refiner.train_refine(interest, attention, history, MASK, step, noise[:, :2])
        with self.assertRaisesRegex(ValueError, r"`step` must have rank 1"):
            refiner.train_refine(interest, attention, history, MASK, step[:, None], noise)


class DiffusionRefinerConfigTest(tf.test.TestCase):
    def test_config_round_trip(self):
        refiner = _refiner(
            denoiser="mlp", stop_gradient=False, serving_noise="random", sampling_steps=4, name="r"
        )
        restored = DiffusionRefiner.from_config(refiner.get_config())
        self.assertEqual(restored.get_config(), refiner.get_config())
        self.assertEqual(restored.timesteps, (10, 7, 4, 1))

    def test_keras_serialization(self):
        refiner = _refiner(gamma=0.3, eta=0.2, num_heads=4, name="refiner")
        restored = keras.layers.deserialize(keras.layers.serialize(refiner))
        self.assertIsInstance(restored, DiffusionRefiner)
        self.assertEqual(restored.get_config(), refiner.get_config())

    def test_invalid_arguments_raise(self):
        with self.assertRaisesRegex(ValueError, r"`sampling_steps` must be in 1..10"):
            _refiner(sampling_steps=11)
        with self.assertRaisesRegex(ValueError, r"`gamma` must satisfy"):
            _refiner(gamma=0.0)
        with self.assertRaisesRegex(ValueError, r"`eta` must be in \[0, 1\]"):
            _refiner(eta=1.5)
        with self.assertRaisesRegex(ValueError, r"`denoiser` must be one of"):
            _refiner(denoiser="gru")
        with self.assertRaisesRegex(ValueError, r"`serving_noise` must be one of"):
            _refiner(serving_noise="gaussian")
        with self.assertRaisesRegex(ValueError, r"0 < alpha_min <= alpha_max"):
            _refiner(alpha_min=0.6)


def _global_norm(gradients) -> float:
    return float(tf.linalg.global_norm([g for g in gradients if g is not None]))


if __name__ == "__main__":
    tf.test.main()
