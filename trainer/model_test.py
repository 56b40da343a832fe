"""Tests for the DMI model: interest selection, gradient routing, variants, overfitting, save/load."""

import dataclasses

import numpy as np
import pytest
import tensorflow as tf

import trainer  # noqa: F401
from trainer import batches, config, train
from trainer.model import DMIModel, PopularityModel, select_interest
from trainer.sequences import SequenceData

TINY = {
    "embedding_dim": 16,
    "num_interests": 2,
    "max_length": 6,
    "batch_size": 16,
    "num_negatives": 8,
    "diffusion_steps": 4,
    "max_steps": 20,
    "eval_every": 10,
    "steps_per_call": 5,
    "eval_batch_size": 64,
}


def _grouped_log(users: int = 120, groups: int = 4, group_size: int = 10, length: int = 12, seed: int = 0):
    """Each user cycles through the items of one group from a random start: a structure easy to overfit."""
    rng = np.random.default_rng(seed)
    sequences = {}
    for user in range(users):
        group = user % groups
        start = rng.integers(group_size)
        sequences[f"u{user}"] = [f"g{group}i{(start + k) % group_size}" for k in range(length)]
    return SequenceData.from_sequences(sequences, seed=seed)


def _vocabulary():
    return _grouped_log(users=40).vocabulary


def _batch(model_config, num_items, batch=4, seed=0):
    rng = np.random.default_rng(seed)
    history = rng.integers(1, num_items + 1, size=(batch, model_config.max_length)).astype(np.int32)
    history[0, 3:] = 0  # one short history
    return {
        batches.HISTORY: tf.constant(history),
        batches.TARGET: tf.constant(rng.integers(1, num_items + 1, size=batch).astype(np.int32)),
        batches.STEP_SEED: tf.constant([1, 2], tf.int64),
    }


def test_select_interest_picks_the_argmax_and_its_attention():
    interests = tf.constant([[[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]], [[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]]])
    attention = tf.constant([[[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]], [[0.2, 0.8], [0.3, 0.7], [0.4, 0.6]]])
    targets = tf.constant([[0.1, 2.0], [-3.0, 0.0]])  # user 0 -> interest 1, user 1 -> interest 2
    vector, row = select_interest(interests, attention, targets)
    np.testing.assert_array_equal(vector, [[0.0, 1.0], [-1.0, 0.0]])
    np.testing.assert_allclose(row, [[0.0, 1.0], [0.4, 0.6]])


def _gradients(model, batch, term):
    """Gradients of one loss term, grouped by the part of the model that owns each variable."""
    with tf.GradientTape(persistent=True) as tape:
        value = model.loss_terms(batch)[term]
    parts = {
        "embeddings": [model.item_embeddings.embeddings],
        "extractor": model.extractor.trainable_variables,
        "refiner": model.refiner.trainable_variables,
    }
    assert sum(len(v) for v in parts.values()) == len(model.trainable_variables)
    return {part: tape.gradient(value, variables) for part, variables in parts.items()}


def _nonzero(gradient):
    return gradient is not None and float(tf.reduce_sum(tf.abs(tf.convert_to_tensor(gradient)))) > 0


def test_diffusion_loss_trains_only_the_denoiser():
    model_config = config.variant_config("dmi", TINY)
    model = DMIModel(model_config, num_items=30)
    model.build_for_inputs()
    gradients = _gradients(model, _batch(model_config, 30), "diffusion")
    assert not any(_nonzero(g) for g in gradients["embeddings"] + gradients["extractor"])
    assert any(_nonzero(g) for g in gradients["refiner"])


def test_recommendation_loss_reaches_extractor_embeddings_and_denoiser():
    model_config = config.variant_config("dmi", TINY)
    model = DMIModel(model_config, num_items=30)
    model.build_for_inputs()
    gradients = _gradients(model, _batch(model_config, 30), "softmax")
    assert _nonzero(gradients["embeddings"][0])
    assert any(_nonzero(g) for g in gradients["extractor"])
    assert any(_nonzero(g) for g in gradients["refiner"])


def test_without_stop_gradient_the_diffusion_loss_reaches_the_extractor():
    model_config = config.variant_config("dmi-GD", TINY)
    model = DMIModel(model_config, num_items=30)
    model.build_for_inputs()
    gradients = _gradients(model, _batch(model_config, 30), "diffusion")
    assert any(_nonzero(g) for g in gradients["extractor"])


def test_user_interests_shapes_and_determinism():
    model_config = config.variant_config("dmi", TINY)
    model = DMIModel(model_config, num_items=30)
    model.build_for_inputs()
    history = _batch(model_config, 30)[batches.HISTORY]
    interests = model.user_interests(history)
    assert interests.shape == (4, 2, 16)
    np.testing.assert_array_equal(interests, model.user_interests(history))
    scores, ids = model.recommend(history, 5)
    assert ids.shape == (4, 5) and np.all(ids.numpy() > 0)
    assert np.all(np.diff(scores.numpy(), axis=1) <= 0)


def test_a_model_with_random_serving_noise_builds_and_serves_per_seed():
    model = train.build_model(config.variant_config("dmi", {**TINY, "serving_noise": "random"}), _vocabulary())
    history = tf.constant([[1, 2, 3, 0, 0, 0]])
    first = model.user_interests(history, seed=tf.constant([1], tf.int64))
    np.testing.assert_array_equal(first, model.user_interests(history, seed=tf.constant([1], tf.int64)))
    assert not np.allclose(first, model.user_interests(history, seed=tf.constant([2], tf.int64)))


def test_popularity_model_ranks_by_count_and_can_exclude_history():
    model = PopularityModel(np.array([5, 9, 1, 7]))
    _, ids = model.recommend(np.array([[0, 0], [2, 0]]), 3)
    np.testing.assert_array_equal(ids, [[2, 4, 1], [2, 4, 1]])
    _, ids = model.recommend(np.array([[0, 0], [2, 0]]), 3, exclude_history=True)
    np.testing.assert_array_equal(ids, [[2, 4, 1], [4, 1, 3]])


@pytest.mark.parametrize("variant", list(config.VARIANTS))
def test_every_variant_trains_a_few_steps_and_evaluates_the_same_once_loaded(variant, tmp_path):
    data = _grouped_log(users=80)
    result = train.train(config.variant_config(variant, TINY), data, str(tmp_path), verbose=0)
    assert set(result.test) >= {"recall@20", "hit_rate@50", "ndcg@50"}
    if variant != "pop":
        assert result.steps == 20
        assert [entry["step"] for entry in result.history] == [10, 20]
        assert np.isfinite(result.history[-1]["loss"])
    # What `dmirec evaluate` does with the written directory: the test metrics of training, exactly.
    from trainer.evaluation import Evaluator
    from trainer.sequences import evaluation_set

    loaded_config, _, loaded = train.load_model(str(tmp_path))
    metrics = Evaluator(loaded, evaluation_set(data.test, loaded_config.max_length))()
    assert metrics == pytest.approx(result.test, abs=1e-6)


def test_a_small_model_overfits_a_tiny_log():
    data = _grouped_log(users=160)
    model_config = config.variant_config(
        "dmi", {**TINY, "max_steps": 300, "eval_every": 100, "learning_rate": 0.01, "num_negatives": 16}
    )
    result = train.train(model_config, data, verbose=0)
    # Every target lies in the user's group of 10 items: recall@10 on the training users themselves.
    from trainer.evaluation import Evaluator
    from trainer.sequences import evaluation_set

    metrics = Evaluator(result.model, evaluation_set(data.train, model_config.max_length), cutoffs=(10,))()
    assert metrics["recall@10"] > 0.9


def test_save_load_round_trip_and_resume(tmp_path):
    data = _grouped_log(users=80)
    model_config = config.variant_config("dmi", TINY)
    out = str(tmp_path / "run")
    result = train.train(model_config, data, out, verbose=0)
    loaded_config, vocabulary, model = train.load_model(out)
    assert loaded_config == model_config
    assert vocabulary == data.vocabulary
    history = _batch(model_config, data.num_items)[batches.HISTORY]
    np.testing.assert_allclose(model.user_interests(history), result.model.user_interests(history), atol=1e-6)
    # Running again with the same arguments resumes: nothing left to train, same best step.
    again = train.train(model_config, data, out, verbose=0)
    assert again.best_step == result.best_step and again.steps == result.steps
    # A longer schedule continues from the checkpoint instead of starting over.
    longer = train.train(dataclasses.replace(model_config, max_steps=30), data, out, verbose=0)
    assert longer.steps == 30
    assert [entry["step"] for entry in longer.history] == [10, 20, 30]
    with pytest.raises(ValueError, match="different config"):
        train.train(dataclasses.replace(model_config, learning_rate=0.1), data, out, verbose=0)


def test_coarse_loss_adds_the_softmax_of_the_unrefined_interest():
    data = _grouped_log(users=40)
    weighted = config.variant_config("dmi", {**TINY, "coarse_loss_weight": 0.5})
    model = DMIModel(weighted, data.num_items)
    model.build_for_inputs()
    terms = model.loss_terms(_batch(weighted, data.num_items))
    assert float(terms["coarse_softmax"]) > 0
    expected = (
        terms["softmax"]
        + weighted.diffusion_weight * terms["diffusion"]
        + weighted.routing_weight * terms["routing"]
        + 0.5 * terms["coarse_softmax"]
    )
    np.testing.assert_allclose(terms["loss"], expected, rtol=1e-6)
    plain = DMIModel(config.variant_config("dmi", TINY), data.num_items)
    plain.build_for_inputs()
    assert float(plain.loss_terms(_batch(weighted, data.num_items))["coarse_softmax"]) == 0.0


def test_training_logs_the_refinement_diagnostics():
    data = _grouped_log(users=80)
    result = train.train(config.variant_config("dmi", TINY), data, verbose=0, evaluate_test=False)
    entry = result.history[-1]
    assert 0 <= entry["val_coarse_recall@50"] <= 1
    assert len(entry["refinement_size_by_step"]) == TINY["diffusion_steps"]
    assert entry["refinement_size"] == entry["refinement_size_by_step"][-1] > 0
    assert -1 <= entry["refinement_cosine"] <= 1
    assert entry["interest_norm"] > 0 and entry["item_norm"] > 0
    remi = train.train(config.variant_config("remi", TINY), data, verbose=0, evaluate_test=False)
    assert "refinement_size" not in remi.history[-1]


def test_two_stage_trains_the_refiner_on_a_frozen_remi(tmp_path):
    data = _grouped_log(users=80)
    two_stage = config.variant_config(
        "dmi", {**TINY, "refiner_schedule": "two_stage", "backbone_learning_rate": 0.0}
    )
    backbone_dir = str(tmp_path / "backbone")
    result = train.train(two_stage, data, verbose=0, backbone_dir=backbone_dir)
    assert result.backbone is not None and result.backbone.steps == TINY["max_steps"]
    _, _, remi = train.load_model(backbone_dir)
    shared = {k: v for k, v in TINY.items() if k not in config.DIFFUSION_FIELDS}
    assert train.load_model(backbone_dir)[0] == config.variant_config("remi", shared)
    for name in ("item_embeddings", "extractor"):
        for trained, frozen in zip(getattr(result.model, name).get_weights(), getattr(remi, name).get_weights()):
            np.testing.assert_array_equal(trained, frozen)
    untrained = DMIModel(two_stage, data.num_items)
    untrained.build_for_inputs()
    assert any(
        not np.allclose(a, b)
        for a, b in zip(result.model.refiner.get_weights(), untrained.refiner.get_weights())
    )
    # A second refiner on the same backbone loads it instead of training it again.
    other = dataclasses.replace(two_stage, denoiser_input_dropout=0.5)
    again = train.train(other, data, verbose=0, backbone_dir=backbone_dir)
    assert again.backbone.history == result.backbone.history
    assert "backbone" in result.metrics()
    # With a backbone rate the extractor and the items train on in the second stage.
    slow = dataclasses.replace(two_stage, backbone_learning_rate=1e-3)
    tuned = train.train(slow, data, str(tmp_path / "slow"), verbose=0, backbone_dir=backbone_dir)
    for name in ("item_embeddings", "extractor"):
        pairs = zip(getattr(tuned.model, name).get_weights(), getattr(remi, name).get_weights())
        assert any(not np.allclose(a, b) for a, b in pairs)
    resumed = train.train(slow, data, str(tmp_path / "slow"), verbose=0, backbone_dir=backbone_dir)
    assert resumed.best_step == tuned.best_step
    # The refiner trains at a rate of its own when one is set (the backbone's optimizer keeps its rate).
    assert float(tuned.model.optimizer.learning_rate) == pytest.approx(TINY.get("learning_rate", 1e-3))
    own = train.train(
        dataclasses.replace(slow, refiner_learning_rate=3e-4), data, verbose=0, backbone_dir=backbone_dir
    )
    assert float(own.model.optimizer.learning_rate) == pytest.approx(3e-4)
    assert float(own.model.backbone_optimizer.learning_rate) == pytest.approx(1e-3)


def test_loaded_pop_ranks_by_training_counts_only(tmp_path):
    data = _grouped_log(users=80)
    out = str(tmp_path / "pop")
    result = train.train(config.variant_config("pop", {}), data, out, verbose=0)
    _, vocabulary, model = train.load_model(out)
    train_counts = np.bincount(data.train.items, minlength=data.num_items + 1)[1:]
    assert not np.array_equal(train_counts, vocabulary.counts)  # eval / test users' items count there
    np.testing.assert_array_equal(model.scores[1:], train_counts)
    np.testing.assert_array_equal(model.ranking, result.model.ranking)
