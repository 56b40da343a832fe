"""The one definition of every choice list of the model: the config validates against these and the
layers accept exactly these (pure Python, so reading the config does not import TensorFlow)."""

from __future__ import annotations

from typing import Literal, get_args

UserTower = Literal["self_attentive", "mean_pooling", "popularity"]
Denoiser = Literal["transformer", "mlp"]
DenoiserNorm = Literal["post", "pre"]
Sampler = Literal["log_uniform", "uniform"]
ServingNoise = Literal["zero", "random"]
# L_dm (Eq. 18) as the paper writes it (`norm`), squared, or averaged over dimensions (`mse`).
DiffusionLoss = Literal["norm", "squared", "mse"]
# What the forward noise is measured against: absolute (Eq. 7) or each interest's RMS value.
DiffusionNoise = Literal["absolute", "relative"]
# Training refines with one denoiser call at a random step (Algorithm 1) or runs the serving DDIM chain.
DiffusionTraining = Literal["one_step", "chain"]
# The refiner trains together with the extractor (the paper) or on a frozen, first-trained `remi`.
RefinerSchedule = Literal["joint", "two_stage"]
# How Adam updates the item table: by catalogue size, every row every step, or only the batch's rows.
ItemTableUpdate = Literal["auto", "dense", "lazy"]

USER_TOWERS: tuple[str, ...] = get_args(UserTower)
DENOISERS: tuple[str, ...] = get_args(Denoiser)
DENOISER_NORMS: tuple[str, ...] = get_args(DenoiserNorm)
SAMPLERS: tuple[str, ...] = get_args(Sampler)
SERVING_NOISES: tuple[str, ...] = get_args(ServingNoise)
DIFFUSION_LOSSES: tuple[str, ...] = get_args(DiffusionLoss)
DIFFUSION_NOISES: tuple[str, ...] = get_args(DiffusionNoise)
DIFFUSION_TRAININGS: tuple[str, ...] = get_args(DiffusionTraining)
REFINER_SCHEDULES: tuple[str, ...] = get_args(RefinerSchedule)
ITEM_TABLE_UPDATES: tuple[str, ...] = get_args(ItemTableUpdate)
