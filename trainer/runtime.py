"""Process-wide TensorFlow runtime settings."""

from __future__ import annotations

import logging

import tensorflow as tf

logger = logging.getLogger(__name__)


def configure_threads(intra_op: int, inter_op: int) -> None:
    """Sets TensorFlow's thread pools (0 = TensorFlow's default).

    On the 2-core machines this project targets, one intra-op and one inter-op thread train this model
    fastest: its ops are small, and thread hand-offs cost more than they save. Must run before
    TensorFlow executes its first op; later calls are ignored with a warning.
    """
    try:
        tf.config.threading.set_intra_op_parallelism_threads(intra_op)
        tf.config.threading.set_inter_op_parallelism_threads(inter_op)
    except RuntimeError as e:
        logger.warning("TensorFlow threads already configured, keeping them: %s", e)
