"""Tests for trainer.layers.noise_schedule."""

import trainer  # noqa: F401  (selects Keras 2 before TensorFlow is imported)

import numpy as np
import tensorflow as tf
from absl.testing import parameterized

from trainer.layers.noise_schedule import NoiseSchedule


def _numpy_alphas_bar(
    diffusion_steps: int, alpha_min: float, alpha_max: float, noise_scale: float
) -> np.ndarray:
    """alpha_bar_0..T from Eq. 8, written out term by term."""
    values = [1.0]
    for t in range(1, diffusion_steps + 1):
        fraction = (t - 1) / (diffusion_steps - 1) if diffusion_steps > 1 else 1.0
        values.append(1.0 - noise_scale * (alpha_min + fraction * (alpha_max - alpha_min)))
    return np.array(values)


def _ddpm_posterior(alphas_bar: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """DDPM's per-step quantities for t = 1..T (entry t - 1), derived from alpha_bar_0..T.

    Args:
      alphas_bar: ``alpha_bar_t`` for ``t = 0..T``.

    Returns:
      ``beta_t = 1 - alpha_bar_t / alpha_bar_{t-1}``, the coefficients of ``v_t`` and ``v_0`` in the mean of
      ``q(v_{t-1} | v_t, v_0)`` (Eq. 10) and its variance, written out term by term.
    """
    betas, coef_vt, coef_v0, variances = [], [], [], []
    for t in range(1, len(alphas_bar)):
        alpha = alphas_bar[t] / alphas_bar[t - 1]
        beta = 1.0 - alpha
        betas.append(beta)
        coef_vt.append(np.sqrt(alpha) * (1.0 - alphas_bar[t - 1]) / (1.0 - alphas_bar[t]))
        coef_v0.append(np.sqrt(alphas_bar[t - 1]) * beta / (1.0 - alphas_bar[t]))
        variances.append(beta * (1.0 - alphas_bar[t - 1]) / (1.0 - alphas_bar[t]))
    return np.array(betas), np.array(coef_vt), np.array(coef_v0), np.array(variances)


class NoiseScheduleTest(tf.test.TestCase, parameterized.TestCase):
    def test_endpoints_match_eq_8(self):
        schedule = NoiseSchedule(diffusion_steps=10, alpha_min=1e-4, alpha_max=4e-3, noise_scale=0.1)
        self.assertEqual(schedule.alphas_bar.shape, (11,))
        self.assertEqual(schedule.alphas_bar[0], 1.0)
        self.assertAlmostEqual(1.0 - schedule.alphas_bar[1], 0.1 * 1e-4, places=15)
        self.assertAlmostEqual(1.0 - schedule.alphas_bar[10], 0.1 * 4e-3, places=15)
        self.assertAllClose(schedule.alphas_bar, _numpy_alphas_bar(10, 1e-4, 4e-3, 0.1), rtol=0, atol=1e-15)

    def test_single_step_uses_the_maximum_noise_level(self):
        schedule = NoiseSchedule(diffusion_steps=1, alpha_min=0.01, alpha_max=0.2, noise_scale=0.5)
        self.assertAllClose(schedule.alphas_bar, [1.0, 0.9])
        self.assertEqual(schedule.ddim_timesteps(1), [1])

    @parameterized.parameters((2,), (5,), (40,))
    def test_alpha_bar_decreases_with_t(self, steps):
        schedule = NoiseSchedule(diffusion_steps=steps, alpha_min=1e-3, alpha_max=0.3, noise_scale=1.0)
        self.assertTrue(np.all(np.diff(schedule.alphas_bar) < 0.0))
        self.assertTrue(np.all(schedule.alphas_bar > 0.0))

    @parameterized.parameters((1, 0.01, 0.2, 0.5), (6, 0.01, 0.4, 0.8), (40, 1e-4, 4e-3, 0.1))
    def test_alphas_bar_define_a_proper_ddpm_chain(self, steps, alpha_min, alpha_max, noise_scale):
        # The per-step quantities of DDPM (Eq. 6 and 10), derived here from the product's alphas_bar.
        schedule = NoiseSchedule(steps, alpha_min, alpha_max, noise_scale)
        betas, coef_vt, coef_v0, variances = _ddpm_posterior(schedule.alphas_bar)
        self.assertTrue(np.all((betas > 0.0) & (betas < 1.0)))
        self.assertTrue(np.all((variances >= 0.0) & (variances <= betas)))
        self.assertAllClose(np.cumprod(1.0 - betas), schedule.alphas_bar[1:], rtol=0, atol=1e-12)
        # At t = 1 the posterior collapses onto v_0, and so does the product's last DDIM update.
        self.assertAlmostEqual(coef_vt[0], 0.0, places=12)
        self.assertAlmostEqual(coef_v0[0], 1.0, places=12)
        self.assertAlmostEqual(variances[0], 0.0, places=12)
        rng = np.random.default_rng(2)
        v_1, v0 = rng.normal(size=(2, 3, 5)).astype(np.float32)
        posterior_mean = coef_vt[0] * v_1 + coef_v0[0] * v0
        self.assertAllClose(schedule.ddim_step(tf.constant(v_1), tf.constant(v0), 1, 0), posterior_mean, atol=1e-6)

    def test_tf_gathers(self):
        schedule = NoiseSchedule(diffusion_steps=6, alpha_min=0.01, alpha_max=0.4, noise_scale=0.8)
        t = tf.constant([[0, 1, 6], [3, 3, 2]])
        self.assertEqual(schedule.alpha_bar(t).dtype, tf.float32)
        self.assertAllClose(schedule.alpha_bar(t), schedule.alphas_bar[t.numpy()], rtol=1e-7)
        self.assertAllClose(schedule.alpha_bar(tf.constant(0)), 1.0)

    def test_q_sample_statistics(self):
        schedule = NoiseSchedule(diffusion_steps=4, alpha_min=0.1, alpha_max=0.7, noise_scale=1.0)
        samples, dim = 20000, 3
        v0 = np.tile(np.array([[1.0, -2.0, 0.5]], np.float32), (samples, 1))
        t = np.repeat(np.array([1, 4]), samples // 2)
        noise = np.random.default_rng(0).standard_normal((samples, dim)).astype(np.float32)
        v_t = schedule.q_sample(v0, tf.constant(t), noise).numpy()
        for step, rows in ((1, slice(0, samples // 2)), (4, slice(samples // 2, None))):
            alpha_bar = schedule.alphas_bar[step]
            std = np.sqrt(1.0 - alpha_bar)
            tolerance = 5 * std / np.sqrt(samples // 2)
            self.assertAllClose(v_t[rows].mean(axis=0), np.sqrt(alpha_bar) * v0[0], atol=tolerance)
            self.assertAllClose(v_t[rows].std(axis=0), np.full(dim, std), rtol=0.05)
        # Exact per-row reparameterization, t broadcast over the last axis.
        alpha_bar = schedule.alphas_bar[t][:, None]
        self.assertAllClose(v_t, np.sqrt(alpha_bar) * v0 + np.sqrt(1 - alpha_bar) * noise, atol=1e-6)

    def test_ddim_step(self):
        schedule = NoiseSchedule(diffusion_steps=6, alpha_min=0.01, alpha_max=0.4, noise_scale=0.8)
        alphas_bar = _numpy_alphas_bar(6, 0.01, 0.4, 0.8)
        rng = np.random.default_rng(1)
        v_t, v0 = rng.normal(size=(2, 3, 5)).astype(np.float32)
        eps = (v_t - np.sqrt(alphas_bar[5]) * v0) / np.sqrt(1.0 - alphas_bar[5])
        expected = np.sqrt(alphas_bar[2]) * v0 + np.sqrt(1.0 - alphas_bar[2]) * eps
        self.assertAllClose(schedule.ddim_step(tf.constant(v_t), tf.constant(v0), 5, 2), expected, atol=1e-5)
        # A point on the forward path stays on it: v_t = sqrt(ab_t) v0 + sqrt(1 - ab_t) e -> same e at t_prev.
        noise = rng.normal(size=(3, 5))
        on_path = np.sqrt(alphas_bar[6]) * v0 + np.sqrt(1.0 - alphas_bar[6]) * noise
        self.assertAllClose(
            schedule.ddim_step(tf.constant(on_path, tf.float32), tf.constant(v0), 6, 3),
            np.sqrt(alphas_bar[3]) * v0 + np.sqrt(1.0 - alphas_bar[3]) * noise,
            atol=1e-5,
        )
        self.assertAllEqual(schedule.ddim_step(tf.constant(v_t), tf.constant(v0), 1, 0), v0)
        with self.assertRaisesRegex(ValueError, r"0 <= t_prev < t <= 6"):
            schedule.ddim_step(tf.constant(v_t), tf.constant(v0), 3, 3)
        with self.assertRaisesRegex(ValueError, r"0 <= t_prev < t <= 6"):
            schedule.ddim_step(tf.constant(v_t), tf.constant(v0), 7, 1)

    @parameterized.parameters(
        (10, 1, [10]),
        (10, 2, [10, 1]),
        (10, 3, [10, 5, 1]),  # Offsets 0, 4.5, 9: halves round the offset up.
        (10, 4, [10, 7, 4, 1]),
        (10, 10, [10, 9, 8, 7, 6, 5, 4, 3, 2, 1]),
        (5, 5, [5, 4, 3, 2, 1]),
        (80, 5, [80, 60, 40, 21, 1]),
    )
    def test_ddim_timesteps(self, steps, sampling_steps, expected):
        schedule = NoiseSchedule(diffusion_steps=steps, alpha_min=1e-4, alpha_max=1e-3, noise_scale=1.0)
        self.assertEqual(schedule.ddim_timesteps(sampling_steps), expected)

    def test_ddim_timesteps_invariants(self):
        for steps in range(1, 30):
            schedule = NoiseSchedule(diffusion_steps=steps, alpha_min=1e-4, alpha_max=1e-3, noise_scale=1.0)
            for sampling_steps in range(1, steps + 1):
                timesteps = np.array(schedule.ddim_timesteps(sampling_steps))
                self.assertLen(timesteps, sampling_steps)
                self.assertEqual(timesteps[0], steps)
                self.assertGreaterEqual(timesteps[-1], 1)
                self.assertTrue(np.all(np.diff(timesteps) < 0))
                if sampling_steps > 1:
                    self.assertEqual(timesteps[-1], 1)
                    gaps = -np.diff(timesteps)
                    self.assertLessEqual(gaps.max() - gaps.min(), 1)  # Evenly spaced up to rounding.

    def test_invalid_arguments_raise(self):
        with self.assertRaisesRegex(ValueError, r"`diffusion_steps` must be an integer >= 1"):
            NoiseSchedule(0, 1e-4, 1e-3, 1.0)
        with self.assertRaisesRegex(ValueError, r"`diffusion_steps` must be an integer >= 1"):
            NoiseSchedule(2.5, 1e-4, 1e-3, 1.0)
        with self.assertRaisesRegex(ValueError, r"0 < alpha_min <= alpha_max"):
            NoiseSchedule(5, 0.0, 1e-3, 1.0)
        with self.assertRaisesRegex(ValueError, r"0 < alpha_min <= alpha_max"):
            NoiseSchedule(5, 1e-2, 1e-3, 1.0)
        with self.assertRaisesRegex(ValueError, r"`noise_scale` must satisfy .*noise_scale \* alpha_max < 1"):
            NoiseSchedule(5, 1e-2, 0.5, 2.0)
        with self.assertRaisesRegex(ValueError, r"`noise_scale` must satisfy .*noise_scale \* alpha_max < 1"):
            NoiseSchedule(5, 1e-2, 0.5, 0.0)
        schedule = NoiseSchedule(5, 1e-4, 1e-3, 1.0)
        with self.assertRaisesRegex(ValueError, r"`sampling_steps` must be in 1..5"):
            schedule.ddim_timesteps(6)
        with self.assertRaisesRegex(ValueError, r"`sampling_steps` must be in 1..5"):
            schedule.ddim_timesteps(0)

    def test_config_round_trip_and_read_only_arrays(self):
        schedule = NoiseSchedule(7, 1e-4, 2e-3, 0.5)
        restored = NoiseSchedule.from_config(schedule.get_config())
        self.assertEqual(
            restored.get_config(), {"diffusion_steps": 7, "alpha_min": 1e-4, "alpha_max": 2e-3, "noise_scale": 0.5}
        )
        self.assertAllEqual(restored.alphas_bar, schedule.alphas_bar)
        with self.assertRaises(ValueError):
            schedule.alphas_bar[1] = 0.5


if __name__ == "__main__":
    tf.test.main()
