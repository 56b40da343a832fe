"""What the diffusion refinement does to a trained model's interests, measured on validation users.

Logged every evaluation by :func:`trainer.train.train` (TensorBoard and ``metrics.json``), so that every
experiment on the refiner reports how far it moves the interests and what that is worth:

- ``refinement_size``: mean over users and interests of ``||Z - v|| / ||v||`` (``Z`` the served
  representation of Eq. 13, ``v`` the extractor's coarse interest), after the last DDIM step, and
  ``refinement_size_by_step`` after each step (``S`` values);
- ``refinement_cosine`` / ``refinement_cosine_by_step``: the mean cosine between ``Z`` and ``v``;
- ``interest_norm``: mean ``||v||``; ``item_norm``: mean ``||e_i||`` over the real items;
- (from the caller) validation Recall@50 with and without refinement on the same weights.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from trainer.model import DMIModel

# Users whose interests are measured (the first ones of the validation set: the same users every time).
DIAGNOSTIC_USERS = 1024


def refinement_diagnostics(model: DMIModel, histories: np.ndarray) -> dict[str, float | list[float]]:
    """Size and direction of the refinement, and the interest / item norms.

    Args:
      model: a DMI model with a refiner.
      histories: (users, L) int item indices, 0-padded; at most :data:`DIAGNOSTIC_USERS` are used.

    Returns:
      The quantities of the module docstring; the ``*_by_step`` entries are lists of ``S`` floats.

    Raises:
      ValueError: for a model without a refiner or an empty ``histories``.
    """
    if model.refiner is None:
        raise ValueError("refinement diagnostics need a model with a diffusion refiner")
    histories = np.asarray(histories)[:DIAGNOSTIC_USERS]
    if len(histories) == 0:
        raise ValueError("refinement diagnostics need at least one history")
    interests, attention, embeddings, mask = model.extract(tf.constant(histories, tf.int32))
    seed = tf.zeros([len(histories)], tf.int64) if model.config.serving_noise == "random" else None
    trajectory = model.refiner.refinement_trajectory(interests, attention, embeddings, mask, seed=seed)
    coarse = interests.numpy().astype(np.float64)
    coarse_norm = np.linalg.norm(coarse, axis=-1)
    valid = coarse_norm > 0
    sizes, cosines = [], []
    for refined in trajectory:
        refined = refined.numpy().astype(np.float64)
        refined_norm = np.linalg.norm(refined, axis=-1)
        sizes.append(float(np.mean(np.linalg.norm(refined - coarse, axis=-1)[valid] / coarse_norm[valid])))
        dot = np.sum(refined * coarse, axis=-1)
        norms = np.maximum(refined_norm[valid] * coarse_norm[valid], 1e-12)
        cosines.append(float(np.mean(dot[valid] / norms)))
    items = model.item_table.numpy()[1:]
    return {
        "refinement_size": sizes[-1],
        "refinement_cosine": cosines[-1],
        "refinement_size_by_step": sizes,
        "refinement_cosine_by_step": cosines,
        "interest_norm": float(np.mean(coarse_norm)),
        "item_norm": float(np.mean(np.linalg.norm(items, axis=-1))),
    }
