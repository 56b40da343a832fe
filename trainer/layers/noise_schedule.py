"""The linear-variance noise schedule of DMI's forward process (Eq. 7-8) and its derived quantities."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import tensorflow as tf


class NoiseSchedule:
    """Fixed (non-trainable) noise schedule of DMI's diffusion module.

    The schedule is defined through the cumulative signal level ``alpha_bar_t`` (Eq. 8)::

        1 - alpha_bar_t = noise_scale * (alpha_min + (t - 1) / (T - 1) * (alpha_max - alpha_min)),  t = 1..T

    with ``alpha_bar_0 = 1``. Training noises with ``q(v_t | v_0)`` (`q_sample`, Eq. 7) and inference runs
    deterministic DDIM updates (`ddim_step`), and both need only ``alpha_bar``. The per-step ``alpha_t``,
    ``beta_t`` and the DDPM posterior ``q(v_{t-1} | v_t, v_0)`` (Eq. 10) are not used by any sampler here,
    so they are not computed (the tests derive them from ``alphas_bar``).

    Choice for ``T == 1`` (Eq. 8 divides by ``T - 1``): the single step gets the maximum noise level,
    ``1 - alpha_bar_1 = noise_scale * alpha_max``. ``alpha_max`` is the paper's "maximum noise level" and
    inference always starts from step ``T``, so this keeps ``1 - alpha_bar_T = noise_scale * alpha_max`` for
    every ``T``. (DiffRec's ``np.linspace(start, end, 1)`` would give ``noise_scale * alpha_min`` instead.)

    Everything is computed once in float64 with numpy and exposed as read-only numpy arrays; the ``tf``
    methods gather float32 values from constants, so they work inside ``tf.function`` with any batch shape.

    Args:
      diffusion_steps: Number of diffusion steps ``T`` (>= 1).
      alpha_min: Minimum noise level ``alpha_min`` (> 0).
      alpha_max: Maximum noise level ``alpha_max`` (>= ``alpha_min``).
      noise_scale: Noise scale ``s`` (> 0, with ``noise_scale * alpha_max < 1`` so that ``alpha_bar_T > 0``).

    Raises:
      ValueError: If an argument is out of range.
    """

    def __init__(self, diffusion_steps: int, alpha_min: float, alpha_max: float, noise_scale: float) -> None:
        if (
            isinstance(diffusion_steps, bool)
            or not isinstance(diffusion_steps, (int, np.integer))
            or diffusion_steps < 1
        ):
            raise ValueError(f"`diffusion_steps` must be an integer >= 1, got {diffusion_steps!r}")
        if not 0.0 < alpha_min <= alpha_max:
            raise ValueError(
                f"Noise levels must satisfy 0 < alpha_min <= alpha_max, got alpha_min={alpha_min}, "
                f"alpha_max={alpha_max}"
            )
        if not 0.0 < noise_scale or not noise_scale * alpha_max < 1.0:
            raise ValueError(
                "`noise_scale` must satisfy 0 < noise_scale and noise_scale * alpha_max < 1 (alpha_bar_T > 0), "
                f"got noise_scale={noise_scale}, noise_scale * alpha_max={noise_scale * alpha_max}"
            )
        self._diffusion_steps = int(diffusion_steps)
        self._alpha_min = float(alpha_min)
        self._alpha_max = float(alpha_max)
        self._noise_scale = float(noise_scale)

        if self._diffusion_steps == 1:
            noise_levels = np.array([self._noise_scale * self._alpha_max])
        else:
            last = self._diffusion_steps
            fractions = np.arange(last, dtype=np.float64) / (last - 1)
            noise_levels = self._noise_scale * (self._alpha_min + fractions * (self._alpha_max - self._alpha_min))
        alphas_bar = np.concatenate([[1.0], 1.0 - noise_levels])  # index t = 0..T
        self._alphas_bar = _read_only(alphas_bar)

    @property
    def diffusion_steps(self) -> int:
        """Number of diffusion steps ``T``."""
        return self._diffusion_steps

    @property
    def alphas_bar(self) -> np.ndarray:
        """``alpha_bar_t`` for ``t = 0..T`` (shape ``(T + 1,)``, ``alphas_bar[0] == 1``)."""
        return self._alphas_bar

    def alpha_bar(self, t: tf.Tensor) -> tf.Tensor:
        """Gathers ``alpha_bar_t``.

        Args:
          t: Integer tensor of any shape with values in ``0..T`` (``0`` gives 1).

        Returns:
          A float32 tensor of the shape of ``t``.
        """
        return tf.gather(tf.constant(self._alphas_bar, tf.float32), t)

    def q_sample(self, v0: tf.Tensor, t: tf.Tensor, noise: tf.Tensor) -> tf.Tensor:
        """Samples ``v_t ~ q(v_t | v_0)`` by reparameterization (Eq. 7).

        Args:
          v0: Clean vectors, shape ``(..., d)``.
          t: Integer steps in ``0..T``, shape ``(...)`` (the shape of ``v0`` without its last axis).
          noise: Standard normal noise of the shape of ``v0``.

        Returns:
          ``sqrt(alpha_bar_t) * v0 + sqrt(1 - alpha_bar_t) * noise``, shape of ``v0``.
        """
        alpha_bar = self.alpha_bar(t)[..., tf.newaxis]
        return tf.sqrt(alpha_bar) * v0 + tf.sqrt(1.0 - alpha_bar) * noise

    def ddim_step(self, v_t: tf.Tensor, v0: tf.Tensor, t: int, t_prev: int) -> tf.Tensor:
        """Deterministic DDIM update (Song et al., 2021, with ``eta_DDIM = 0``) from step ``t`` to ``t_prev``.

        With the prediction ``v0`` of the clean vector::

            eps_hat    = (v_t - sqrt(alpha_bar_t) v0) / sqrt(1 - alpha_bar_t)
            v_{t_prev} = sqrt(alpha_bar_{t_prev}) v0 + sqrt(1 - alpha_bar_{t_prev}) eps_hat

        ``t_prev = 0`` (``alpha_bar_0 = 1``) returns ``v0`` exactly.

        Args:
          v_t: Vectors at step ``t``, shape ``(..., d)``.
          v0: Predicted clean vectors, shape of ``v_t``.
          t: Current step, a Python int in ``1..T``.
          t_prev: Next step, a Python int in ``0..t-1``.

        Returns:
          The vectors at step ``t_prev``, shape of ``v_t``.

        Raises:
          ValueError: If ``0 <= t_prev < t <= T`` does not hold.
        """
        last = self._diffusion_steps
        if not 0 <= t_prev < t <= last:
            raise ValueError(f"DDIM steps must satisfy 0 <= t_prev < t <= {last}, got t={t}, t_prev={t_prev}")
        alpha_bar, alpha_bar_prev = float(self._alphas_bar[t]), float(self._alphas_bar[t_prev])
        predicted_noise = (v_t - math.sqrt(alpha_bar) * v0) / math.sqrt(1.0 - alpha_bar)
        return math.sqrt(alpha_bar_prev) * v0 + math.sqrt(1.0 - alpha_bar_prev) * predicted_noise

    def ddim_timesteps(self, sampling_steps: int) -> list[int]:
        """Evenly spaced descending subsequence of ``T..1`` for DDIM sampling.

        The subsequence keeps both endpoints of Algorithm 2's loop ``t = T, ..., 1`` (for
        ``sampling_steps >= 2``): ``t_i = T - round(i * (T - 1) / (sampling_steps - 1))`` with halves rounded
        up, computed in integers. Consecutive entries differ by at least 1 because the spacing
        ``(T - 1) / (sampling_steps - 1)`` is >= 1. ``sampling_steps == 1`` gives ``[T]`` and
        ``sampling_steps == T`` gives ``[T, T - 1, ..., 1]``.

        Args:
          sampling_steps: Number of sampling steps ``S``, ``1 <= S <= T``.

        Returns:
          ``S`` strictly decreasing Python ints, the first one ``T``, all >= 1.

        Raises:
          ValueError: If ``sampling_steps`` is not in ``1..T``.
        """
        if isinstance(sampling_steps, bool) or not isinstance(sampling_steps, (int, np.integer)):
            raise ValueError(f"`sampling_steps` must be an integer, got {sampling_steps!r}")
        last = self._diffusion_steps
        if not 1 <= sampling_steps <= last:
            raise ValueError(f"`sampling_steps` must be in 1..{last} (the schedule's T), got {sampling_steps}")
        if sampling_steps == 1:
            return [last]
        gaps = sampling_steps - 1
        return [last - (2 * i * (last - 1) + gaps) // (2 * gaps) for i in range(sampling_steps)]

    def get_config(self) -> dict[str, Any]:
        """Returns the constructor arguments."""
        return {
            "diffusion_steps": self._diffusion_steps,
            "alpha_min": self._alpha_min,
            "alpha_max": self._alpha_max,
            "noise_scale": self._noise_scale,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> NoiseSchedule:
        """Creates a schedule from the output of `get_config`."""
        return cls(**config)

    def __repr__(self) -> str:
        arguments = ", ".join(f"{key}={value!r}" for key, value in self.get_config().items())
        return f"{type(self).__name__}({arguments})"


def _read_only(values: np.ndarray) -> np.ndarray:
    """Returns ``values`` as a float64 array that cannot be modified in place."""
    values = np.asarray(values, dtype=np.float64)
    values.setflags(write=False)
    return values
