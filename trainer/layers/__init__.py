"""Keras layers of the DMI user tower (one concept per module)."""

from trainer.layers.denoiser import InterestDenoiser, MLPDenoiser, prune_history
from trainer.layers.extractor import MultiInterestExtractor
from trainer.layers.noise_schedule import NoiseSchedule
from trainer.layers.refiner import DiffusionRefiner
from trainer.layers.routing import routing_regularization

__all__ = [
    "DiffusionRefiner",
    "InterestDenoiser",
    "MLPDenoiser",
    "MultiInterestExtractor",
    "NoiseSchedule",
    "prune_history",
    "routing_regularization",
]
