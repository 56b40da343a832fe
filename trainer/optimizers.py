"""The Adam that trains every model, and how the item table's rows are updated: densely or lazily.

The item table is the one large variable of the model ((N + 1) x d). A training step reads only the rows
of its batch (the users' history and target items and the shared sampled negatives: about 2,500 rows at
batch 128), so its gradient is sparse. Two ways to apply it:

- ``dense``: the gradient is scattered into a full-table tensor and Adam's fused update passes over the
  whole table (and its two moment slots) every step. This is exact Adam: the moments of every row decay
  each step and rows keep moving on their momentum. It costs O(N d) per step: measured (one thread,
  ``bench/train_speed.py --catalogue``) as fast as the lazy update at Beauty's 12k items, 2.4x slower
  than it at 100k and 12x slower at 400k.
- ``lazy``: only the rows in the gradient are read and written (m, v and the row itself), as
  TensorFlow Addons' ``LazyAdam`` and PyTorch's ``SparseAdam`` do; rows not in the batch keep their
  moments and do not move. O(rows in the batch x d) per step, whatever N is. The bias correction uses the
  global step, as in both of those.

``auto`` picks ``dense`` below :data:`LAZY_MIN_ITEMS` items, where it costs little (Beauty's 12k items: as
fast; 30k: 10 % slower) and keeps exact Adam and every committed result (Beauty, the 40k-item
``synthetic-long`` regime), and ``lazy`` from it on.
"""

from __future__ import annotations

from typing import Literal

import tensorflow as tf
import tf_keras as keras

# The catalogue size from which `auto` updates the item table lazily. Measured: dense and lazy equally fast
# at Beauty's 12k items, lazy 10 % faster at 30k and 2.4x at 100k; below 50k exact Adam costs little.
LAZY_MIN_ITEMS = 50_000


def item_table_update(choice: str, num_items: int) -> Literal["dense", "lazy"]:
    """The update a model with ``num_items`` items uses for config ``item_table_update = choice``.

    Args:
      choice: ``auto``, ``dense`` or ``lazy``.
      num_items: N, items in the catalogue.

    Returns:
      ``dense`` or ``lazy``.

    Raises:
      ValueError: ``choice`` is none of the three.
    """
    if choice == "auto":
        return "lazy" if num_items >= LAZY_MIN_ITEMS else "dense"
    if choice in ("dense", "lazy"):
        return choice  # type: ignore[return-value]
    raise ValueError(f"item_table_update must be auto, dense or lazy, got {choice!r}")


class LazyAdam(keras.optimizers.legacy.Adam):
    """Adam whose sparse (``IndexedSlices``) gradients update only their rows.

    Dense gradients take legacy Adam's fused update unchanged, so a model whose gradients are all dense
    trains exactly as with ``keras.optimizers.legacy.Adam``; the slots (``m``, ``v``) have the same names,
    so checkpoints are interchangeable. Duplicate indices are summed by the base class before
    :meth:`_resource_apply_sparse` sees them.
    """

    def _resource_apply_sparse(
        self, grad: tf.Tensor, var: tf.Variable, indices: tf.Tensor, apply_state: dict | None = None
    ) -> tf.Operation:
        """Adam on rows ``indices`` of ``var`` only.

        Args:
          grad: (R, d) gradient rows, one per unique index.
          var: the (N + 1, d) table.
          indices: (R,) unique row indices.
          apply_state: the base class's per-device coefficients (``lr`` includes the bias correction).
        """
        device, dtype = var.device, var.dtype.base_dtype
        coefficients = (apply_state or {}).get((device, dtype)) or self._fallback_apply_state(device, dtype)
        m = self.get_slot(var, "m")
        v = self.get_slot(var, "v")
        m_rows = coefficients["beta_1_t"] * tf.gather(m, indices) + coefficients["one_minus_beta_1_t"] * grad
        v_rows = coefficients["beta_2_t"] * tf.gather(v, indices) + coefficients["one_minus_beta_2_t"] * (
            grad * grad
        )
        step = coefficients["lr"] * m_rows / (tf.sqrt(v_rows) + coefficients["epsilon"])
        return tf.group(
            m.scatter_update(tf.IndexedSlices(m_rows, indices)),
            v.scatter_update(tf.IndexedSlices(v_rows, indices)),
            var.scatter_sub(tf.IndexedSlices(step, indices)),
        )
