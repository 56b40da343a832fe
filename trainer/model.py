"""The DMI two-tower retrieval model and the baselines built from the same parts.

User tower: item embeddings of the history (the same table as the item tower, as in the paper) ->
multi-interest extractor (ComiRec-SA, Eq. 4-5) -> diffusion refiner (Eq. 6-13) -> K interest vectors Z.
Item tower: the item embedding table. Retrieval scores items by ``max_k Z_k . e_i`` (Eq. 1 / 20).

Training (Algorithm 1): the interest closest to the target is selected (Eq. 14), refined by one denoiser
call at a random diffusion step, and trained with sampled softmax (Eq. 15-16) plus ``lambda * L_dm``
(Eq. 18-19) plus REMI's routing regularization. Serving (Algorithm 2): every interest is refined by the
unrolled DDIM loop.

The variants of :mod:`trainer.config` switch parts off: ``remi`` has no refiner, ``comirec`` no refiner
and no routing regularization, ``ydnn`` a mean-pooling tower with one vector. ``pop`` is not a neural
model (:class:`PopularityModel`).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import tensorflow as tf
import tensorflow_recommenders as tfrs
import tf_keras as keras

from trainer import batches, optimizers, retrieval
from trainer.config import ModelConfig
from trainer.layers.extractor import MultiInterestExtractor
from trainer.layers.refiner import DiffusionRefiner
from trainer.layers.routing import routing_regularization
from trainer.sampled_softmax import SampledSoftmax


def select_interest(
    interests: tf.Tensor, attention: tf.Tensor | None, target_embedding: tf.Tensor
) -> tuple[tf.Tensor, tf.Tensor | None]:
    """Eq. 14: the interest most similar to the target, and its attention row.

    Args:
      interests: (batch, K, d).
      attention: (batch, K, L), or None for towers without attention.
      target_embedding: (batch, d).

    Returns:
      ``(v, a)``: the selected interest (batch, d) and its attention (batch, L) or None.
    """
    selected = tf.argmax(tf.einsum("bkd,bd->bk", interests, target_embedding), axis=1, output_type=tf.int32)
    vector = tf.gather(interests, selected, axis=1, batch_dims=1)
    if attention is None:
        return vector, None
    return vector, tf.gather(attention, selected, axis=1, batch_dims=1)


class MeanPoolingTower(keras.layers.Layer):
    """YouTube-DNN's user tower: the mean of the history embeddings through an MLP, one vector.

    Args:
      hidden_units: sizes of the hidden ReLU layers.
      output_dim: the size of the user vector (the item embedding size).
    """

    def __init__(self, hidden_units: tuple[int, ...], output_dim: int, **kwargs: Any):
        super().__init__(**kwargs)
        self.hidden_units = tuple(hidden_units)
        self.output_dim = output_dim
        self._layers = [keras.layers.Dense(units, activation="relu") for units in self.hidden_units]
        self._output = keras.layers.Dense(output_dim)

    def call(self, history_embeddings: tf.Tensor, mask: tf.Tensor) -> tf.Tensor:
        """Returns (batch, 1, d): one interest vector per user."""
        weights = tf.cast(mask, history_embeddings.dtype)[:, :, tf.newaxis]
        pooled = tf.reduce_sum(history_embeddings * weights, axis=1) / tf.maximum(
            tf.reduce_sum(weights, axis=1), 1.0
        )
        for layer in self._layers:
            pooled = layer(pooled)
        return self._output(pooled)[:, tf.newaxis, :]

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "hidden_units": self.hidden_units, "output_dim": self.output_dim}


class DMIModel(tfrs.Model):
    """DMI and its neural baselines: one model class, parts chosen by the config.

    Why ``tfrs.Model`` is still the base although :meth:`train_step` is replaced: it defines the loss
    contract ``compute_loss(inputs, training)`` that this class implements, and its ``test_step`` runs
    that contract, so Keras' ``evaluate`` works on the batches of :mod:`trainer.batches` (on a plain
    ``tf_keras.Model`` the same method would override Keras' ``compute_loss(x, y, y_pred,
    sample_weight)``, which Keras' own ``test_step`` calls with other arguments). Training and the
    protocol's evaluation (:mod:`trainer.evaluation`) do not call ``evaluate``; nothing else of
    ``tfrs.Model`` is used: :meth:`train_step` is this class's own (dense item-table gradient, the
    second Adam of ``two_stage``, every loss term in the logs). ``tfrs.Model`` is a ``tf_keras.Model``
    subclass that adds no variables or tracked attributes, so the checkpoints' variable paths are those
    of the layers set up here.

    Args:
      config: the model configuration (variant presets from :func:`trainer.config.variant_config`).
      num_items: N, the number of real items; item indices are 1..N by descending frequency, 0 is padding.
    """

    def __init__(self, config: ModelConfig, num_items: int, **kwargs: Any):
        super().__init__(**kwargs)
        if config.user_tower not in ("self_attentive", "mean_pooling"):
            raise ValueError(f"DMIModel has no {config.user_tower!r} user tower; use PopularityModel")
        if num_items < 1:
            raise ValueError(f"num_items must be >= 1, got {num_items}")
        self.config = config
        self.num_items = num_items
        # `dense` or `lazy` for this catalogue (trainer.optimizers): whether train_step hands the item
        # table's sparse gradient to the optimizer as it is (lazy: only its rows are updated).
        self.item_table_update = optimizers.item_table_update(config.item_table_update, num_items)
        d = config.embedding_dim
        self.item_embeddings = keras.layers.Embedding(
            num_items + 1,
            d,
            embeddings_initializer=keras.initializers.RandomNormal(stddev=d**-0.5),
            name="item_embeddings",
        )
        if config.user_tower == "self_attentive":
            self.extractor = MultiInterestExtractor(
                config.num_interests, config.max_length, config.attention_units or None, name="extractor"
            )
        else:
            self.pooling_tower = MeanPoolingTower(config.ydnn_hidden_units, d, name="mean_pooling")
        self.refiner = None
        if config.diffusion:
            self.refiner = DiffusionRefiner(
                diffusion_steps=config.diffusion_steps,
                alpha_min=config.alpha_min,
                alpha_max=config.alpha_max,
                noise_scale=config.noise_scale,
                gamma=config.gamma,
                eta=config.eta,
                sampling_steps=config.num_sampling_steps,
                denoiser=config.denoiser,
                stop_gradient=config.stop_gradient,
                serving_noise=config.serving_noise,
                num_heads=config.denoiser_heads,
                denoiser_norm=config.denoiser_norm,
                dropout=config.denoiser_dropout,
                query_residual=config.denoiser_query_residual,
                loss=config.diffusion_loss,
                input_dropout=config.denoiser_input_dropout,
                noise=config.diffusion_noise,
                training=config.diffusion_training,
                input_gradient=config.denoiser_input_gradient,
                recency=config.denoiser_recency,
                max_length=config.max_length,
                name="refiner",
            )
        # The second stage of a two-stage run with a training backbone (set by trainer.train): the extractor
        # and the item table are updated by this optimizer, the refiner by the compiled one.
        self.backbone_optimizer: optimizers.LazyAdam | None = None
        self.sampled_softmax = SampledSoftmax(
            num_items, min(config.num_negatives, num_items), sampler=config.sampler
        )

    # ----- towers --------------------------------------------------------------------------------------

    @property
    def item_table(self) -> tf.Tensor:
        """(N + 1, d) item embeddings; row 0 is padding."""
        return self.item_embeddings.embeddings

    def extract(self, history: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor | None, tf.Tensor, tf.Tensor]:
        """Coarse interests of a batch of histories.

        Args:
          history: (batch, L) int item indices, 0-padded.

        Returns:
          ``(V, A, H, mask)``: interests (batch, K, d), attention (batch, K, L) or None for the
          mean-pooling tower, history embeddings (batch, L, d) and the validity mask (batch, L).
        """
        history = tf.convert_to_tensor(history)
        if history.shape.rank != 2:
            raise ValueError(f"`history` must have shape (batch, max_length), got {history.shape}")
        mask = tf.not_equal(history, 0)
        embeddings = self.item_embeddings(history)
        if self.config.user_tower == "mean_pooling":
            return self.pooling_tower(embeddings, mask), None, embeddings, mask
        interests, attention = self.extractor(embeddings, mask)
        return interests, attention, embeddings, mask

    def user_interests(
        self, history: tf.Tensor, seed: tf.Tensor | None = None, refine: bool = True
    ) -> tf.Tensor:
        """The serving user tower: K refined interest vectors Z (Algorithm 2; Eq. 13 per interest).

        Args:
          history: (batch, L) int item indices, 0-padded.
          seed: per-request seed of the DDIM start noise when ``serving_noise == "random"``.
          refine: False returns the extractor's coarse interests (what the refinement adds, measured on
            the same weights).

        Returns:
          (batch, K, d) interest vectors (K = 1 for the mean-pooling tower).
        """
        interests, attention, embeddings, mask = self.extract(history)
        if self.refiner is None or not refine:
            return interests
        return self.refiner.serve_refine(interests, attention, embeddings, mask, seed=seed)

    def recommend(
        self, history: tf.Tensor, n: int, exclude_history: bool = False, refine: bool = True
    ) -> tuple[tf.Tensor, tf.Tensor]:
        """Top-``n`` items by ``max_k Z_k . e_i`` (Eq. 20): ``(scores, ids)``, both (batch, n).

        ``refine=False`` ranks by the coarse interests (see :meth:`user_interests`).
        """
        exclude = history if exclude_history else None
        interests = self.user_interests(history, refine=refine)
        return retrieval.top_n(interests, self.item_table, n, exclude=exclude)

    def call(self, history: tf.Tensor, seed: tf.Tensor | None = None) -> tf.Tensor:
        return self.user_interests(history, seed=seed)

    # ----- training ------------------------------------------------------------------------------------

    def compute_loss(self, inputs: dict[str, tf.Tensor], training: bool = False) -> tf.Tensor:
        """The training objective of Algorithm 1 for one batch (see :meth:`loss_terms`)."""
        return self.loss_terms(inputs, training=training)["loss"]

    def loss_terms(self, inputs: dict[str, tf.Tensor], training: bool = False) -> dict[str, tf.Tensor]:
        """Loss = L_S + lambda * L_dm + rlambda * RR, and its terms.

        Args:
          inputs: a batch from :class:`trainer.batches.BatchSampler`: ``history`` (B, L), ``target`` (B,)
            and ``seed`` (2,) for the diffusion step and noise and the sampled negatives.
          training: whether the denoiser's dropout (``denoiser_dropout``) is active.

        Returns:
          ``loss`` and its terms ``softmax``, ``diffusion``, ``routing`` and ``coarse_softmax`` (the
          sampled softmax of the unrefined interest, weighted by ``coarse_loss_weight``; 0 when unused).
        """
        history, target = inputs[batches.HISTORY], inputs[batches.TARGET]
        # Negatives drawn as a pure function of the step's seed (a resumed run draws the same ones).
        softmax_seed, coarse_seed = (
            tf.random.experimental.stateless_fold_in(inputs[batches.STEP_SEED], salt) for salt in (1, 2)
        )
        interests, attention, embeddings, mask = self.extract(history)
        user_vector, selected_attention = select_interest(interests, attention, self.item_embeddings(target))
        terms = {
            "diffusion": tf.constant(0.0),
            "routing": tf.constant(0.0),
            "coarse_softmax": tf.constant(0.0),
        }
        if self.refiner is not None and self.config.coarse_loss_weight > 0:
            terms["coarse_softmax"] = tf.reduce_mean(
                self.sampled_softmax(user_vector, target, self.item_table, seed=coarse_seed)
            )
        if self.refiner is not None:
            step_seed, noise_seed = tf.unstack(
                tf.random.experimental.stateless_split(inputs[batches.STEP_SEED], 2)
            )
            batch = tf.shape(target)[0]
            steps = tf.random.stateless_uniform(
                [batch], step_seed, minval=1, maxval=self.config.diffusion_steps + 1, dtype=tf.int32
            )
            noise = tf.random.stateless_normal(tf.shape(user_vector), noise_seed, dtype=user_vector.dtype)
            user_vector, terms["diffusion"] = self.refiner.train_refine(
                user_vector, selected_attention, embeddings, mask, steps, noise, training=training
            )
        if self.config.routing_weight > 0 and attention is not None:
            terms["routing"] = routing_regularization(attention, self.config.embedding_dim)
        terms["softmax"] = tf.reduce_mean(
            self.sampled_softmax(user_vector, target, self.item_table, seed=softmax_seed)
        )
        terms["loss"] = (
            terms["softmax"]
            + self.config.diffusion_weight * terms["diffusion"]
            + self.config.routing_weight * terms["routing"]
            + self.config.coarse_loss_weight * terms["coarse_softmax"]
        )
        return terms

    @tf.autograph.experimental.do_not_convert
    def train_step(self, inputs: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        """One optimizer step; the item table is updated densely or lazily (:mod:`trainer.optimizers`).

        The model has no data-dependent Python control flow, so AutoGraph is off: converting the Keras
        layers' code made tracing the training function take tens of seconds.

        The gather of history and target rows gives the table an IndexedSlices gradient. With the
        ``dense`` update it is made dense here, and Adam's fused update passes over the whole table (legacy
        Adam's own sparse update also decays every row's moments, in several passes, and is slower than
        one fused pass). With ``lazy`` it reaches :class:`trainer.optimizers.LazyAdam` as it is.
        """
        with tf.GradientTape() as tape:
            terms = self.loss_terms(inputs, training=True)
            loss = terms["loss"] + sum(self.losses) if self.losses else terms["loss"]
        variables = self.trainable_variables
        gradients = tape.gradient(loss, variables)
        if self.item_table_update == "dense":
            gradients = [tf.convert_to_tensor(g) if isinstance(g, tf.IndexedSlices) else g for g in gradients]
        if self.backbone_optimizer is None:
            self.optimizer.apply_gradients(zip(gradients, variables))
            return terms
        refiner = {v.ref() for v in self.refiner.trainable_variables}
        pairs = list(zip(gradients, variables))
        self.optimizer.apply_gradients([p for p in pairs if p[1].ref() in refiner])
        self.backbone_optimizer.apply_gradients([p for p in pairs if p[1].ref() not in refiner])
        return terms

    def with_sampling_steps(self, sampling_steps: int) -> "DMIModel":
        """A copy of this model with the same weights whose refiner samples with ``sampling_steps`` DDIM steps.

        The paper trains with T steps and, deployed online, serves with fewer through DDIM (section 4.6):
        S changes only the serving graph's unrolled loop, no weight, so a trained model can be served at
        another S without training again (``ExportSettings.sampling_steps``, ``bench/ddim_steps.py``).

        Args:
          sampling_steps: S, in ``1..T`` (``config.diffusion_steps``).

        Returns:
          A new model; this one is unchanged.

        Raises:
          ValueError: the model has no diffusion refiner, or S is outside ``1..T``.
        """
        if self.refiner is None:
            raise ValueError(
                f"the {self.config.model!r} model has no diffusion refiner: sampling_steps does not apply"
            )
        if isinstance(sampling_steps, bool) or not isinstance(sampling_steps, int) or sampling_steps < 1:
            raise ValueError(f"sampling_steps must be a positive integer, got {sampling_steps!r}")
        clone = DMIModel(dataclasses.replace(self.config, sampling_steps=sampling_steps), self.num_items)
        clone.build_for_inputs()
        clone.set_weights(self.get_weights())
        return clone

    def build_for_inputs(self) -> None:
        """Creates every variable (towers and refiner) by running one tiny batch; needed before restoring."""
        history = tf.zeros([1, self.config.max_length], tf.int32)
        self.loss_terms(
            {
                batches.HISTORY: history,
                batches.TARGET: tf.ones([1], tf.int32),
                batches.STEP_SEED: tf.zeros([2], tf.int64),
            }
        )
        # Through Keras' __call__, so the model records its input shape (needed to save it).
        self(history, seed=tf.zeros([1], tf.int64) if self.config.serving_noise == "random" else None)

    def get_config(self) -> dict[str, Any]:
        return {"config": self.config.to_json(), "num_items": self.num_items}


class PopularityModel:
    """PopRec: every user gets the most frequent training items.

    Args:
      item_counts: frequency of items 1..N in the training data (index 0 of the array is item 1).
    """

    def __init__(self, item_counts: np.ndarray):
        counts = np.asarray(item_counts, dtype=np.float64)
        self.num_items = len(counts)
        self.scores = np.concatenate([[-np.inf], counts]).astype(np.float32)
        self.ranking = np.argsort(-self.scores[1:], kind="stable").astype(np.int32) + 1

    def recommend(
        self, history: np.ndarray, n: int, exclude_history: bool = False
    ) -> tuple[np.ndarray, np.ndarray]:
        history = np.asarray(history)
        if not exclude_history:
            ids = np.broadcast_to(self.ranking[:n], (len(history), n))
            return self.scores[ids], ids
        ids = np.stack([self.ranking[~np.isin(self.ranking, row[row > 0])][:n] for row in history])
        return self.scores[ids], ids
