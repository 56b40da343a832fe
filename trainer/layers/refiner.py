"""DMI's diffusion refinement of interest vectors: training (Algorithm 1) and DDIM serving (Algorithm 2)."""

from __future__ import annotations

from typing import Any

import tensorflow as tf
import tf_keras as keras

from trainer.choices import (
    DENOISERS,
    DIFFUSION_LOSSES,
    DIFFUSION_NOISES,
    DIFFUSION_TRAININGS,
    SERVING_NOISES,
    Denoiser,
    DenoiserNorm,
    DiffusionLoss,
    DiffusionNoise,
    DiffusionTraining,
    ServingNoise,
)
from trainer.layers.denoiser import DenoiserContext, InterestDenoiser, MLPDenoiser, prune_history
from trainer.layers.noise_schedule import NoiseSchedule


@keras.saving.register_keras_serializable(package="dmi_rec")
class DiffusionRefiner(keras.layers.Layer):
    """Refines interest vectors with DMI's diffusion module; owns the denoiser ``f_theta``.

    Two entry points instead of ``call``, since training and serving take different inputs:

    * `train_refine` (Algorithm 1) refines the one interest selected per user, from a step ``t`` and
      noise drawn by the caller, and returns ``Z = eta * v0_tilde + (1 - eta) * v`` (Eq. 13) with the
      reconstruction loss ``L_dm`` (Eq. 18).
    * `serve_refine` (Algorithm 2) refines every interest of every user from step ``T`` with
      ``sampling_steps`` deterministic DDIM steps (eta_DDIM = 0; the paper's online deployment uses DDIM).

    With ``stop_gradient=True`` (DMI), ``v``, the attention and the history embeddings are detached wherever
    they enter the denoiser or the loss target, so ``L_dm`` trains the denoiser only; the extractor gets the
    recommendation loss's gradient through the ``(1 - eta) * v`` term of ``Z`` (the paper's reason for
    Eq. 13), the denoiser through ``eta * v0_tilde``. With ``stop_gradient=False`` (the DMI-GD ablation)
    nothing is detached and ``Z = v0_tilde`` ("the denoised vectors will be directly used as the final
    interest vectors without fusing").

    Options where the paper is silent or its literal reading pins the denoiser to the identity (each
    measured in ``docs/refinement.md``):

    * ``loss``: ``L_dm`` per example as Eq. 18 writes it, ``||v0_tilde - v_0||_2`` (``"norm"``), its
      square (``"squared"``), or the square averaged over dimensions (``"mse"``, as DiffRec and DDRM);
      always averaged over the batch. The norm's gradient has the same size however small the error, so
      with lambda in the paper's range it outweighs the recommendation gradient and keeps
      ``v0_tilde = v_0``.
    * ``input_dropout``: dropout on ``v_t`` before the denoiser reads it (training only; DiffRec's and
      DDRM's denoisers drop half of their noisy input), so the denoiser cannot copy its input and has to
      use the history it attends to.
    * ``noise``: ``"absolute"`` (Eq. 7: ``sqrt(1 - alpha_bar_t) eps``) or ``"relative"``: ``eps`` scaled
      by the interest's RMS value ``||v_0||_2 / sqrt(d)``, so that the schedule's noise levels are
      signal-to-noise ratios whatever the scale the interests grow to during training.
    * ``input_gradient`` (with ``stop_gradient``): the recommendation loss also reaches the extractor
      through the denoiser's input (a second denoiser pass on the attached ``v`` gives ``Z``), while
      ``L_dm`` still trains the denoiser alone. The paper detaches ``v`` because of the reconstruction
      loss; this keeps that, and lets the extractor learn what the refiner makes of its interests.
    * ``recency``: add a learned embedding of each history item's recency (0 for the latest item) to the
      history the denoiser attends to. Eq. 11 attends to item embeddings alone, and the pruned context is
      ordered by attention, so without it the denoiser cannot tell a recent item from an old one.
    * ``training``: ``"one_step"`` (Algorithm 1) or ``"chain"``: training runs the serving DDIM chain
      from step ``T`` (``q_sample`` with the drawn noise at ``T``) and ``Z``/``L_dm`` come from its last
      prediction, so that serving computes exactly what was trained.

    Both entry points are excluded from AutoGraph: they have no tensor-dependent Python control flow (the
    DDIM loop runs over Python ints), and AutoGraph in TF 2.16 skips ``keras`` but not ``tf_keras``, so
    converting them would transpile tf_keras internals when traced (tens of seconds on a 2-core machine).

    Args:
      diffusion_steps: Diffusion steps ``T``.
      alpha_min: Minimum noise level of the schedule (Eq. 8).
      alpha_max: Maximum noise level of the schedule (Eq. 8).
      noise_scale: Noise scale ``s`` of the schedule (Eq. 8).
      gamma: Item-pruning proportion, ``0 < gamma <= 1`` (1: the DMI-IP ablation).
      eta: Weight of the refined vector in ``Z`` (Eq. 13), in ``[0, 1]``.
      sampling_steps: DDIM steps used by `serve_refine`, in ``1..T``.
      denoiser: ``"transformer"`` (`InterestDenoiser`, DMI) or ``"mlp"`` (`MLPDenoiser`, DMI-T).
      stop_gradient: ``False`` gives the DMI-GD ablation (see above).
      serving_noise: Noise of ``q(v_T | v_0)`` at serving: ``"zero"`` (``v_T = sqrt(alpha_bar_T) v``, no
        randomness) or ``"random"`` (Gaussian noise from a per-request seed, reproducible).
      num_heads: Attention heads of the transformer denoiser.
      ffn_multiplier: Hidden width of either denoiser, in multiples of the embedding size.
      dropout: Dropout of the transformer denoiser.
      denoiser_norm: ``"post"`` or ``"pre"``: LayerNorm placement of the transformer denoiser.
      query_residual: Keep the transformer denoiser's residual path from ``v_t`` (pre-norm only).
      loss: ``L_dm`` per example: ``"norm"``, ``"squared"`` or ``"mse"`` (see above).
      input_dropout: Dropout rate on ``v_t`` before the denoiser, in ``[0, 1)``; training only.
      noise: ``"absolute"`` or ``"relative"`` forward noise (see above).
      training: ``"one_step"`` or ``"chain"`` (see above).
      input_gradient: Route the recommendation gradient through the denoiser's input (see above).
      recency: Recency embeddings on the attended history (see above); needs ``max_length``.
      max_length: History length ``L`` (the number of recency embeddings).
      **kwargs: Passed to `keras.layers.Layer`.
    """

    def __init__(
        self,
        diffusion_steps: int,
        alpha_min: float,
        alpha_max: float,
        noise_scale: float,
        gamma: float,
        eta: float,
        sampling_steps: int,
        denoiser: Denoiser = "transformer",
        stop_gradient: bool = True,
        serving_noise: ServingNoise = "zero",
        num_heads: int = 2,
        ffn_multiplier: int = 4,
        dropout: float = 0.0,
        denoiser_norm: DenoiserNorm = "post",
        query_residual: bool = True,
        loss: DiffusionLoss = "norm",
        input_dropout: float = 0.0,
        noise: DiffusionNoise = "absolute",
        training: DiffusionTraining = "one_step",
        input_gradient: bool = False,
        recency: bool = False,
        max_length: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        # The refiner owns no weights itself (its denoiser builds on first use) and is used through
        # train_refine / serve_refine rather than __call__, so it counts as built from the start.
        self.built = True
        self.schedule = NoiseSchedule(diffusion_steps, alpha_min, alpha_max, noise_scale)
        self.timesteps = tuple(self.schedule.ddim_timesteps(sampling_steps))
        if not 0.0 < gamma <= 1.0:
            raise ValueError(f"`gamma` must satisfy 0 < gamma <= 1, got {gamma}")
        if not 0.0 <= eta <= 1.0:
            raise ValueError(f"`eta` must be in [0, 1], got {eta}")
        if denoiser not in DENOISERS:
            raise ValueError(f"`denoiser` must be one of {DENOISERS}, got {denoiser!r}")
        if serving_noise not in SERVING_NOISES:
            raise ValueError(f"`serving_noise` must be one of {SERVING_NOISES}, got {serving_noise!r}")
        if loss not in DIFFUSION_LOSSES:
            raise ValueError(f"`loss` must be one of {DIFFUSION_LOSSES}, got {loss!r}")
        if noise not in DIFFUSION_NOISES:
            raise ValueError(f"`noise` must be one of {DIFFUSION_NOISES}, got {noise!r}")
        if training not in DIFFUSION_TRAININGS:
            raise ValueError(f"`training` must be one of {DIFFUSION_TRAININGS}, got {training!r}")
        if not 0.0 <= input_dropout < 1.0:
            raise ValueError(f"`input_dropout` must be in [0, 1), got {input_dropout}")
        if recency and (max_length is None or max_length < 1):
            raise ValueError(f"`recency` needs `max_length` >= 1, got {max_length}")
        self.diffusion_steps = diffusion_steps
        self.alpha_min = alpha_min
        self.alpha_max = alpha_max
        self.noise_scale = noise_scale
        self.gamma = gamma
        self.eta = eta
        self.sampling_steps = sampling_steps
        self.denoiser_kind = denoiser
        self.stop_gradient = stop_gradient
        self.serving_noise = serving_noise
        self.num_heads = num_heads
        self.ffn_multiplier = ffn_multiplier
        self.dropout = dropout
        self.denoiser_norm = denoiser_norm
        self.query_residual = query_residual
        self.loss = loss
        self.input_dropout = input_dropout
        self.noise = noise
        self.training_mode = training
        self.input_gradient = input_gradient
        self.recency = recency
        self.max_length = max_length
        self.recency_embedding: tf.Variable | None = None  # (max_length, dim), created on first use
        if denoiser == "transformer":
            self.denoiser = InterestDenoiser(
                diffusion_steps,
                num_heads=num_heads,
                ffn_multiplier=ffn_multiplier,
                dropout=dropout,
                denoiser_norm=denoiser_norm,
                query_residual=query_residual,
                name="denoiser",
            )
        else:
            self.denoiser = MLPDenoiser(diffusion_steps, ffn_multiplier=ffn_multiplier, name="denoiser")
        self._input_dropout = keras.layers.Dropout(input_dropout, name="input_dropout")

    @tf.autograph.experimental.do_not_convert
    def train_refine(
        self,
        interest: tf.Tensor,
        attention: tf.Tensor,
        history_embeddings: tf.Tensor,
        mask: tf.Tensor,
        step: tf.Tensor,
        noise: tf.Tensor,
        training: bool | None = None,
    ) -> tuple[tf.Tensor, tf.Tensor]:
        """Refines the selected interest of each user and computes ``L_dm`` (Algorithm 1).

        Args:
          interest: The selected interest ``v`` per user (Eq. 14), float32 ``(batch, dim)``.
          attention: That interest's attention over the history, float32 ``(batch, L)``.
          history_embeddings: Item embeddings ``H``, float32 ``(batch, L, dim)``.
          mask: Valid history positions, boolean or 0/1 ``(batch, L)``.
          step: Diffusion steps ``t``, drawn uniformly from ``1..T`` by the caller, integer ``(batch,)``.
          noise: Standard normal noise for ``q(v_t | v_0)``, float32 ``(batch, dim)``.
          training: Whether the denoiser's dropout is active.

        Returns:
          A tuple ``(z, reconstruction_loss)``: the final representation ``Z`` ``(batch, dim)`` and the
          batch mean of ``L_dm`` (Eq. 18 with ``loss``; ``"norm"``: ``||v0_tilde - v_0||_2``), a float32
          scalar. With ``training="chain"``, ``step`` is ignored: the chain starts at ``T``.
        """
        interest, attention, history_embeddings, noise = (
            tf.convert_to_tensor(x, tf.float32) for x in (interest, attention, history_embeddings, noise)
        )
        step = tf.convert_to_tensor(step)
        _check_rank("interest", interest, 2, "(batch, dim)")
        _check_rank("step", step, 1, "(batch,)")
        if not noise.shape.is_compatible_with(interest.shape):
            raise ValueError(
                f"`noise` must have the shape of `interest` {interest.shape}, got shape {noise.shape}"
            )
        clean, attention, history_embeddings = self._detach(interest, attention, history_embeddings)
        history_embeddings = self._with_recency(history_embeddings, mask)
        context, context_mask = prune_history(history_embeddings, attention, mask, self.gamma)
        noise = self._scaled_noise(noise, clean)

        def refine(v0: tf.Tensor) -> tf.Tensor:
            if self.training_mode == "chain":
                start = tf.fill(tf.shape(v0)[:1], self.schedule.diffusion_steps)
                noisy = self.schedule.q_sample(v0, start, noise)
                return self._ddim_chain(noisy, context, context_mask, training=training)[-1]
            noisy = self.schedule.q_sample(v0, step, noise)
            return self._denoise(noisy, step, context, context_mask, training=training)

        denoised = refine(clean)
        reconstruction_loss = tf.reduce_mean(self._reconstruction_error(denoised - clean))
        if self.input_gradient and self.stop_gradient:
            # A second pass on the attached interest: only the recommendation loss reaches the extractor.
            denoised = refine(interest)
        return self._combine(denoised, interest), reconstruction_loss

    @tf.autograph.experimental.do_not_convert
    def serve_refine(
        self,
        interests: tf.Tensor,
        attention: tf.Tensor,
        history_embeddings: tf.Tensor,
        mask: tf.Tensor,
        seed: tf.Tensor | None = None,
    ) -> tf.Tensor:
        """Refines every interest of every user by DDIM sampling from step ``T`` (Algorithm 2).

        Each interest ``k`` is pruned with its own attention row and refined independently. The DDIM loop
        is unrolled in Python over ``timesteps`` (``ddim_timesteps(sampling_steps)``) followed by 0: at each
        ``t`` with successor ``t_prev``, ``v0_hat = f_theta(v_t, t, C_k)`` and ``v_{t_prev}`` is the
        deterministic DDIM update `NoiseSchedule.ddim_step`. The last update (to ``alpha_bar_0 = 1``) returns
        the last ``v0_hat``, which is the refined interest.

        Choice for ``serving_noise="random"``: user ``b``'s noise is drawn with
        ``tf.random.stateless_normal`` from ``seed[b]`` alone (one draw of shape ``(K, dim)`` per user, in
        a ``tf.map_fn``), so a user's result does not depend on how requests are batched; a scalar seed is
        used for every user of the batch.

        Args:
          interests: Interests ``V``, float32 ``(batch, K, dim)``.
          attention: Their attention ``A``, float32 ``(batch, K, L)``.
          history_embeddings: Item embeddings ``H``, float32 ``(batch, L, dim)``.
          mask: Valid history positions, boolean or 0/1 ``(batch, L)``.
          seed: Integer scalar or ``(batch,)`` seeds; required with ``serving_noise="random"``, ignored
            with ``"zero"``.

        Returns:
          The final representations ``Z``, float32 ``(batch, K, dim)``.

        Raises:
          ValueError: For invalid shapes, or a missing seed with ``serving_noise="random"``.
        """
        served = self.refinement_trajectory(interests, attention, history_embeddings, mask, seed, last_only=True)
        return served[0]

    @tf.autograph.experimental.do_not_convert
    def refinement_trajectory(
        self,
        interests: tf.Tensor,
        attention: tf.Tensor,
        history_embeddings: tf.Tensor,
        mask: tf.Tensor,
        seed: tf.Tensor | None = None,
        last_only: bool = False,
    ) -> list[tf.Tensor]:
        """`serve_refine`'s representation ``Z`` after each of its DDIM steps (for diagnostics).

        Args:
          interests, attention, history_embeddings, mask, seed: as `serve_refine`.
          last_only: return the last step's ``Z`` alone (what `serve_refine` serves), without building
            Eq. 13 for the intermediate steps.

        Returns:
          ``S`` float32 tensors ``(batch, K, dim)``: entry ``s`` is Eq. 13 applied to the prediction
          ``v0_hat`` of DDIM step ``s``; the last one is `serve_refine`'s output (the only one with
          ``last_only``).

        Raises:
          ValueError: For invalid shapes, or a missing seed with ``serving_noise="random"``.
        """
        interests, attention, history_embeddings = (
            tf.convert_to_tensor(x, tf.float32) for x in (interests, attention, history_embeddings)
        )
        mask = tf.convert_to_tensor(mask)
        _check_rank("interests", interests, 3, "(batch, num_interests, dim)")
        _check_rank("attention", attention, 3, "(batch, num_interests, length)")
        if not attention.shape[:2].is_compatible_with(interests.shape[:2]):
            raise ValueError(
                f"`attention` must have shape (batch, num_interests, length) = "
                f"({interests.shape[0]}, {interests.shape[1]}, length), got shape {attention.shape}"
            )
        _check_rank("history_embeddings", history_embeddings, 3, "(batch, length, dim)")
        if self.serving_noise == "random":
            if seed is None:
                raise ValueError("`seed` is required with serving_noise='random'")
            seed = tf.cast(seed, tf.int64)
            if seed.shape.rank not in (0, 1):
                raise ValueError(f"`seed` must be a scalar or have shape (batch,), got shape {seed.shape}")

        history_embeddings = self._with_recency(history_embeddings, mask)
        batch_size, num_interests, dim = tf.unstack(tf.shape(interests))
        flat_interests = tf.reshape(interests, [-1, interests.shape[-1]])  # (B*K, d)
        flat_attention = tf.reshape(attention, [-1, attention.shape[-1]])  # (B*K, L)
        context, context_mask = prune_history(
            tf.repeat(history_embeddings, num_interests, axis=0),
            flat_attention,
            tf.repeat(mask, num_interests, axis=0),
            self.gamma,
        )

        if self.serving_noise == "zero":
            noise = tf.zeros_like(flat_interests)
        else:
            noise = self._scaled_noise(
                tf.reshape(_per_user_normal(seed, batch_size, num_interests, dim), tf.shape(flat_interests)),
                flat_interests,
            )
        num_rows = tf.shape(flat_interests)[:1]
        noisy = self.schedule.q_sample(flat_interests, tf.fill(num_rows, self.schedule.diffusion_steps), noise)
        predictions = self._ddim_chain(noisy, context, context_mask, training=False)
        if last_only:
            predictions = predictions[-1:]
        return [
            tf.reshape(self._combine(prediction, flat_interests), tf.shape(interests))
            for prediction in predictions
        ]

    def _ddim_chain(
        self, noisy: tf.Tensor, context: tf.Tensor, context_mask: tf.Tensor, training: bool | None
    ) -> list[tf.Tensor]:
        """Runs the deterministic DDIM loop from ``v_T = noisy``; returns each step's ``v0_hat``.

        The loop is unrolled in Python over ``timesteps`` followed by 0: at each ``t`` with successor
        ``t_prev``, ``v0_hat = f_theta(v_t, t, C)`` and ``v_{t_prev}`` is `NoiseSchedule.ddim_step`. The last
        update (to ``alpha_bar_0 = 1``) equals the last ``v0_hat``, which is the refined interest. The
        context is encoded once for the whole chain (``encode_context`` of the denoiser: its projected keys
        and values do not depend on the step).
        """
        num_rows = tf.shape(noisy)[:1]
        if not self.denoiser.built:  # its sublayers are created by its first call (the output is unused)
            self.denoiser(noisy, tf.fill(num_rows, self.timesteps[0]), context, context_mask, training=training)
        encoded = self.denoiser.encode_context(context, context_mask)  # once for every step of the chain
        predictions = []
        for t, t_prev in zip(self.timesteps, self.timesteps[1:] + (0,)):
            denoised = self._denoise(noisy, tf.fill(num_rows, t), context, context_mask, training, encoded)
            predictions.append(denoised)
            noisy = self.schedule.ddim_step(noisy, denoised, t, t_prev)
        return predictions

    def _denoise(
        self,
        noisy: tf.Tensor,
        step: tf.Tensor,
        context: tf.Tensor,
        context_mask: tf.Tensor,
        training: bool | None,
        encoded: DenoiserContext | None = None,
    ) -> tf.Tensor:
        """``f_theta(v_t, t, C)``, with ``input_dropout`` on ``v_t`` in training (``C`` as ``encoded`` when given)."""
        if self.input_dropout > 0.0:
            noisy = self._input_dropout(noisy, training=training)
        if encoded is not None:
            return self.denoiser.denoise_encoded(noisy, step, encoded, training=training)
        return self.denoiser(noisy, step, context, context_mask, training=training)

    def _with_recency(self, history_embeddings: tf.Tensor, mask: tf.Tensor) -> tf.Tensor:
        """``H`` plus each valid position's recency embedding (``recency``), else ``H`` itself.

        Histories are left-aligned, so the recency of position ``j`` is ``n_valid - 1 - j``.
        """
        if not self.recency:
            return history_embeddings
        valid = tf.cast(mask, tf.bool)
        length = history_embeddings.shape[1]
        if length is None or length > self.max_length:
            raise ValueError(
                f"`history_embeddings` needs a static length <= max_length={self.max_length}, got "
                f"shape {history_embeddings.shape}"
            )
        num_valid = tf.reduce_sum(tf.cast(valid, tf.int32), axis=-1, keepdims=True)
        recency = tf.clip_by_value(num_valid - 1 - tf.range(length)[tf.newaxis, :], 0, self.max_length - 1)
        if self.recency_embedding is None:
            # Zeros: training starts from the paper's denoiser, which sees no recency.
            self.recency_embedding = self.add_weight(
                name="recency_embedding",
                shape=(self.max_length, history_embeddings.shape[-1]),
                initializer="zeros",
            )
        embedding = tf.gather(self.recency_embedding, recency)
        return history_embeddings + tf.where(valid[..., tf.newaxis], embedding, tf.zeros_like(embedding))

    def _scaled_noise(self, noise: tf.Tensor, clean: tf.Tensor) -> tf.Tensor:
        """The forward noise: ``noise`` itself, or scaled by each row's RMS value (``noise="relative"``)."""
        if self.noise == "absolute":
            return noise
        rms = tf.sqrt(tf.reduce_mean(tf.square(clean), axis=-1, keepdims=True))
        return noise * rms

    def _reconstruction_error(self, difference: tf.Tensor) -> tf.Tensor:
        """``L_dm`` per example of ``v0_tilde - v_0`` (batch, dim) -> (batch,), by ``loss``."""
        if self.loss == "norm":
            return _safe_norm(difference)
        if self.loss == "squared":
            return tf.reduce_sum(tf.square(difference), axis=-1)
        return tf.reduce_mean(tf.square(difference), axis=-1)

    def _detach(self, *tensors: tf.Tensor) -> tuple[tf.Tensor, ...]:
        """Stops the gradient of each tensor when ``stop_gradient`` is set."""
        return tuple(tf.stop_gradient(x) if self.stop_gradient else x for x in tensors)

    def _combine(self, denoised: tf.Tensor, interest: tf.Tensor) -> tf.Tensor:
        """``eta * denoised + (1 - eta) * interest`` (Eq. 13), or ``denoised`` for DMI-GD."""
        if not self.stop_gradient:
            return denoised
        return self.eta * denoised + (1.0 - self.eta) * interest

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            {
                "diffusion_steps": self.diffusion_steps,
                "alpha_min": self.alpha_min,
                "alpha_max": self.alpha_max,
                "noise_scale": self.noise_scale,
                "gamma": self.gamma,
                "eta": self.eta,
                "sampling_steps": self.sampling_steps,
                "denoiser": self.denoiser_kind,
                "stop_gradient": self.stop_gradient,
                "serving_noise": self.serving_noise,
                "num_heads": self.num_heads,
                "ffn_multiplier": self.ffn_multiplier,
                "dropout": self.dropout,
                "denoiser_norm": self.denoiser_norm,
                "query_residual": self.query_residual,
                "loss": self.loss,
                "input_dropout": self.input_dropout,
                "noise": self.noise,
                "training": self.training_mode,
                "input_gradient": self.input_gradient,
                "recency": self.recency,
                "max_length": self.max_length,
            }
        )
        return config


def _check_rank(name: str, tensor: tf.Tensor, rank: int, layout: str) -> None:
    """Raises ValueError unless ``tensor`` has static rank ``rank``."""
    if tensor.shape.rank != rank:
        raise ValueError(f"`{name}` must have rank {rank} {layout}, got shape {tensor.shape}")


def _safe_norm(difference: tf.Tensor) -> tf.Tensor:
    """Euclidean norm over the last axis whose gradient at 0 is 0 instead of NaN."""
    squared = tf.reduce_sum(tf.square(difference), axis=-1)
    positive = squared > 0.0
    return tf.where(
        positive, tf.sqrt(tf.where(positive, squared, tf.ones_like(squared))), tf.zeros_like(squared)
    )


def _per_user_normal(
    seed: tf.Tensor, batch_size: tf.Tensor, num_interests: tf.Tensor, dim: tf.Tensor
) -> tf.Tensor:
    """Standard normal noise ``(batch, K, dim)`` whose row ``b`` depends only on ``seed[b]``.

    Args:
      seed: int64 scalar (shared by every user) or ``(batch,)`` seeds.
      batch_size: Number of users.
      num_interests: ``K``.
      dim: Embedding size.

    Returns:
      A float32 tensor ``(batch, K, dim)``.
    """
    seeds = tf.broadcast_to(seed, [batch_size])
    shape = tf.stack([num_interests, dim])
    return tf.map_fn(
        lambda user_seed: tf.random.stateless_normal(
            shape, seed=tf.stack([user_seed, tf.constant(0, tf.int64)])
        ),
        seeds,
        fn_output_signature=tf.float32,
    )
