"""Tests for the exported servables: raw ids in, Eq. 20 top-N out, for the exact and the ScaNN graph."""

import os

import numpy as np
import pytest
import tensorflow as tf

import trainer  # noqa: F401
import scann  # noqa: F401  (registers the ScaNN ops before a ScaNN SavedModel is loaded)
from trainer import config, export, synthetic, train
from trainer.export_settings import ExportSettings
from trainer.sequences import SequenceData, Vocabulary, evaluation_set

TINY = {
    "embedding_dim": 16,
    "num_interests": 2,
    "max_length": 6,
    "batch_size": 32,
    "num_negatives": 32,
    "diffusion_steps": 4,
    "max_steps": 60,
    "eval_every": 30,
    "steps_per_call": 10,
}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    events = synthetic.generate(synthetic.SyntheticConfig(users=400, items=300, topics=8, seed=1))
    data = SequenceData.from_interactions(events)
    result = train.train(config.variant_config("dmi", TINY), data, verbose=0)
    export_dir = str(tmp_path_factory.mktemp("export"))
    paths = export.export_servables(result.model, data.vocabulary, export_dir, top_n=10, max_top_n=60)
    loaded = {name: tf.saved_model.load(path) for name, path in paths.items()}
    return result.model, data, export_dir, loaded


def _serve(servable, history, top_n=10, exclude_history=False):
    """Calls serving_default in-process. (TF Serving fills the recorded defaults; Python calls do not.)"""
    return servable.signatures["serving_default"](
        history=tf.constant(history), top_n=tf.constant(top_n), exclude_history=tf.constant(exclude_history)
    )


def _ids(data, rows):
    return np.array(
        [[data.vocabulary.item_ids[i - 1] if i else "" for i in row] for row in rows], dtype=object
    )


def _brute_force(model, history_indices, n, exclude=False):
    z = model.user_interests(tf.constant(history_indices)).numpy()
    table = model.item_table.numpy()[1:]
    scores = np.max(np.einsum("bkd,nd->bkn", z, table), axis=1)
    if exclude:
        for row, history in enumerate(history_indices):
            scores[row, history[history > 0] - 1] = -np.inf
    return np.argsort(-scores, axis=1, kind="stable")[:, :n] + 1, -np.sort(-scores, axis=1)[:, :n]


def test_exact_servable_equals_numpy_brute_force(exported):
    model, data, _, loaded = exported
    histories = evaluation_set(data.test, model.config.max_length).histories[:16]
    out = _serve(loaded[export.EXACT], _ids(data, histories))
    expected_ids, expected_scores = _brute_force(model, histories, 10)
    np.testing.assert_allclose(out["scores"].numpy(), expected_scores, rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(out["item_ids"].numpy().astype(str), _ids(data, expected_ids))
    out = _serve(loaded[export.EXACT], _ids(data, histories), top_n=5, exclude_history=True)
    expected_ids, _ = _brute_force(model, histories, 5, exclude=True)
    np.testing.assert_array_equal(out["item_ids"].numpy().astype(str), _ids(data, expected_ids))


def test_every_batch_size_runs_at_an_allowed_size_with_the_same_results(exported, tmp_path):
    """Rows padded to 1, 2 or 4, chunks of 4 beyond: every row count gives each row's own answer."""
    model, data, _, _ = exported
    path = export.export_servables(
        model, data.vocabulary, str(tmp_path), top_n=10, max_top_n=60, scann=False, batch_sizes=(1, 2, 4)
    )[export.EXACT]
    serve = tf.saved_model.load(path)
    histories = evaluation_set(data.test, model.config.max_length).histories[:9]
    expected_ids, expected_scores = _brute_force(model, histories, 10)
    for rows in range(10):
        batch = _ids(data, histories[:rows]).reshape(rows, model.config.max_length)
        out = _serve(serve, batch)
        assert out["item_ids"].shape == (rows, 10)
        np.testing.assert_allclose(out["scores"].numpy(), expected_scores[:rows], rtol=1e-4, atol=1e-5)
        expected = _ids(data, expected_ids[:rows]).reshape(rows, 10)
        np.testing.assert_array_equal(out["item_ids"].numpy().astype(str), expected)
        interests = serve.signatures["user_interests"](history=tf.constant(batch))
        np.testing.assert_allclose(
            interests["interests"], model.user_interests(tf.constant(histories[:rows])), atol=1e-5
        )
    # The warm-up file covers each signature at each allowed size.
    from tensorflow_serving.apis import prediction_log_pb2

    warmed = []
    for record in tf.data.TFRecordDataset(os.path.join(path, export.WARMUP_FILE)):
        request = prediction_log_pb2.PredictionLog.FromString(record.numpy()).predict_log.request
        warmed.append((request.model_spec.signature_name, request.inputs["history"].tensor_shape.dim[0].size))
    assert warmed == [(s, n) for s in ("serving_default", "user_interests") for n in (1, 2, 4)]
    with pytest.raises(ValueError, match="ascending"):
        export.RetrievalServable(model, data.vocabulary, "unused.txt", 10, 60, False, batch_sizes=(4, 2))


def test_raw_unknown_long_and_empty_histories(exported):
    model, data, _, loaded = exported
    serve = loaded[export.EXACT]
    known = list(data.vocabulary.item_ids[:3])
    # Unknown ids are ignored; a history longer than L keeps its last L known items.
    with_unknown = _serve(serve, [known + ["never-seen", ""]])
    plain = _serve(serve, [known])
    np.testing.assert_array_equal(with_unknown["item_ids"], plain["item_ids"])
    long_history = list(data.vocabulary.item_ids[:20])
    np.testing.assert_array_equal(
        _serve(serve, [long_history])["item_ids"],
        _serve(serve, [long_history[-model.config.max_length :]])["item_ids"],
    )
    # Nothing known: the most popular items.
    empty = _serve(serve, [["", ""], ["nope", ""]], top_n=4)
    popular = np.array(data.vocabulary.item_ids[:4], dtype=object)
    for row in empty["item_ids"].numpy().astype(str):
        np.testing.assert_array_equal(row, popular)


def test_top_n_out_of_range_is_an_invalid_argument(exported):
    _, data, _, loaded = exported
    for bad in (0, 61):
        with pytest.raises(tf.errors.InvalidArgumentError, match="top_n must be"):
            _serve(loaded[export.EXACT], [[data.vocabulary.item_ids[0]]], top_n=bad)


def test_user_interests_signature_matches_the_model(exported):
    model, data, _, loaded = exported
    histories = evaluation_set(data.test, model.config.max_length).histories[:8]
    out = loaded[export.SCANN].signatures["user_interests"](history=tf.constant(_ids(data, histories)))
    np.testing.assert_allclose(out["interests"], model.user_interests(tf.constant(histories)), atol=1e-5)


def test_xla_is_used_only_when_asked(exported, tmp_path):
    from tensorflow.core.protobuf import saved_model_pb2

    model, data, export_dir, _ = exported

    def must_compile(path):
        saved = saved_model_pb2.SavedModel()
        with open(os.path.join(path, "saved_model.pb"), "rb") as f:
            saved.ParseFromString(f.read())
        functions = saved.meta_graphs[0].graph_def.library.function
        return any(f.attr["_XlaMustCompile"].b for f in functions)

    assert must_compile(os.path.join(export_dir, export.EXACT))
    plain = export.export_servables(model, data.vocabulary, str(tmp_path), ExportSettings(xla=False), scann=False)
    assert not must_compile(plain[export.EXACT])
    histories = evaluation_set(data.test, model.config.max_length).histories[:8]
    out = tf.saved_model.load(plain[export.EXACT]).signatures["user_interests"](
        history=tf.constant(_ids(data, histories))
    )
    np.testing.assert_allclose(out["interests"], model.user_interests(tf.constant(histories)), atol=1e-5)


def test_the_compiled_functions_hold_no_assertions(exported):
    # XLA drops assertions, logging a warning for each at every compilation (14 per version load).
    from tensorflow.core.protobuf import saved_model_pb2

    _, _, export_dir, _ = exported
    saved = saved_model_pb2.SavedModel()
    with open(os.path.join(export_dir, export.EXACT, "saved_model.pb"), "rb") as f:
        saved.ParseFromString(f.read())
    functions = {f.signature.name: f for f in saved.meta_graphs[0].graph_def.library.function}

    def called(function):
        for node in function.node_def:
            for value in node.attr.values():
                yield from ([value.func.name] if value.func.name else [f.name for f in value.list.func])

    compiled = [name for name, f in functions.items() if f.attr["_XlaMustCompile"].b]
    reached, todo = set(), list(compiled)
    while todo:
        name = todo.pop()
        if name in functions and name not in reached:
            reached.add(name)
            todo.extend(called(functions[name]))
    assert compiled and len(reached) > len(compiled)  # the conditional's branches and the layers' calls
    assert not [name for name in reached if any(n.op == "Assert" for n in functions[name].node_def)]


def test_scann_recall_against_exact(exported):
    model, data, _, loaded = exported
    histories = _ids(data, evaluation_set(data.test, model.config.max_length).histories)
    exact = _serve(loaded[export.EXACT], histories, top_n=50)
    approx = _serve(loaded[export.SCANN], histories, top_n=50)
    exact_ids, approx_ids = exact["item_ids"].numpy(), approx["item_ids"].numpy()
    recall = np.mean([len(set(a) & set(e)) / len(e) for a, e in zip(approx_ids, exact_ids)])
    assert recall >= 0.95


def test_each_request_asks_the_index_for_top_n_plus_its_exclusions():
    top_n = tf.constant(10)
    assert export.candidates_per_interest(top_n, tf.constant([[3, 4, 0], [5, 0, 0]]), 80).numpy() == 12
    assert export.candidates_per_interest(top_n, tf.constant([[4, 4, 4], [0, 0, 0]]), 80).numpy() == 13
    assert export.candidates_per_interest(top_n, tf.zeros([2, 3], tf.int32), 80).numpy() == 10
    assert export.candidates_per_interest(top_n, tf.constant([[1, 2, 3]]), 12).numpy() == 12  # the index's k
    assert export.candidates_per_interest(top_n, tf.zeros([0, 3], tf.int32), 80).numpy() == 10


def test_an_exhaustive_index_answers_exactly_with_the_fewest_candidates(exported, tmp_path):
    """Every leaf searched and a re-scoring depth (4 x 80) past the 300 items: every item is scored exactly, so the
    ScaNN servable's lists are the exact servable's only if top_n + exclusions candidates per interest
    suffice; with exclusions not counted, excluded items would take the places of the ones they hide."""
    model, data, _, loaded = exported
    settings = ExportSettings(scann_leaves=2, scann_leaves_to_search=2, xla=False)
    path = export.export_servables(model, data.vocabulary, str(tmp_path), settings, top_n=10, max_top_n=60)[
        export.SCANN
    ]
    scann_servable = tf.saved_model.load(path)
    histories = _ids(data, evaluation_set(data.test, model.config.max_length).histories)
    for top_n, exclude_history in [(10, False), (10, True), (60, True), (1, True)]:
        exact = _serve(loaded[export.EXACT], histories, top_n, exclude_history)
        approx = _serve(scann_servable, histories, top_n, exclude_history)
        np.testing.assert_array_equal(approx["item_ids"].numpy(), exact["item_ids"].numpy())
        np.testing.assert_allclose(approx["scores"].numpy(), exact["scores"].numpy(), rtol=1e-5, atol=1e-6)


def test_the_scann_servable_holds_the_index_it_was_asked_for(exported, tmp_path):
    model, data, export_dir, _ = exported
    _, leaves, searched = export.scann_parameters(model.num_items, 60, model.config.max_length)
    assert export.servable_scann_settings(f"{export_dir}/{export.SCANN}") == (leaves, searched)
    with pytest.raises(ValueError, match="holds no ScaNN index"):
        export.servable_scann_settings(f"{export_dir}/{export.EXACT}")
    settings = ExportSettings(scann_leaves=6, scann_leaves_to_search=2, xla=False)
    path = export.export_servables(model, data.vocabulary, str(tmp_path), settings)[export.SCANN]
    assert export.servable_scann_settings(path) == (6, 2)


def test_the_servables_refine_with_the_ddim_steps_asked_for(exported, tmp_path):
    """S = 1 on a model trained and evaluated with S = T = 4: the servable is the S = 1 model, not the T one."""
    model, data, export_dir, loaded = exported
    assert model.config.num_sampling_steps == 4
    histories = evaluation_set(data.test, model.config.max_length).histories[:8]
    one_step = model.with_sampling_steps(1)
    expected = one_step.user_interests(tf.constant(histories)).numpy()
    assert np.abs(expected - model.user_interests(tf.constant(histories)).numpy()).max() > 1e-3  # S matters
    assert model.config.sampling_steps == 0  # the trained model is unchanged
    settings = ExportSettings(xla=False, sampling_steps=1)
    path = export.export_servables(model, data.vocabulary, str(tmp_path), settings, scann=False)[export.EXACT]
    out = tf.saved_model.load(path).signatures["user_interests"](history=tf.constant(_ids(data, histories)))
    np.testing.assert_allclose(out["interests"], expected, atol=1e-5)
    default = loaded[export.EXACT].signatures["user_interests"](history=tf.constant(_ids(data, histories)))
    np.testing.assert_allclose(default["interests"], model.user_interests(tf.constant(histories)), atol=1e-5)


def test_ddim_steps_that_do_not_fit_the_model_are_refused_before_writing(exported, tmp_path):
    model, data, _, _ = exported
    target = tmp_path / "export"
    with pytest.raises(ValueError, match=r"sampling_steps \(5\) must be at most the model's diffusion_steps T = 4"):
        export.export_servables(model, data.vocabulary, str(target), ExportSettings(sampling_steps=5))
    remi = train.build_model(config.variant_config("remi", TINY), data.vocabulary)
    with pytest.raises(ValueError, match="the 'remi' model has no diffusion refiner"):
        export.export_servables(remi, data.vocabulary, str(target), ExportSettings(sampling_steps=1))
    assert not target.exists()


def test_saved_models_carry_defaults_and_warmup(exported):
    _, _, export_dir, _ = exported
    from tensorflow.core.protobuf import saved_model_pb2

    for name in export.SERVABLES:
        saved = saved_model_pb2.SavedModel()
        with open(os.path.join(export_dir, name, "saved_model.pb"), "rb") as f:
            saved.ParseFromString(f.read())
        signature = saved.meta_graphs[0].signature_def["serving_default"]
        assert set(signature.inputs) == {"history", "top_n", "exclude_history"}
        assert set(signature.defaults) == {"top_n", "exclude_history"}
        assert os.path.getsize(os.path.join(export_dir, name, export.WARMUP_FILE)) > 0


@pytest.mark.parametrize("bad", ["", "two\nlines", "carriage\rreturn"])
def test_ids_that_cannot_be_one_line_of_the_asset_are_refused(exported, tmp_path, bad):
    model, data, _, _ = exported
    vocabulary = Vocabulary((bad,) + data.vocabulary.item_ids[1:], data.vocabulary.counts)
    with pytest.raises(ValueError, match="cannot be served"):
        export.export_servables(model, vocabulary, str(tmp_path), scann=False)


def test_scann_parameters_default_to_two_fifths_of_sqrt_n_leaves_or_four_times_the_candidates():
    # (per_interest = max_top_n + L, leaves = round(sqrt(N)), searched = max(2/5 leaves, 4 x candidates))
    assert export.scann_parameters(1_000_000, 200, 20) == (220, 1000, 400)
    assert export.scann_parameters(12_101, 200, 20) == (220, 110, 44)
    assert export.scann_parameters(1_000, 200, 20) == (220, 32, 29)  # 4 x 220 candidates need 29 of 32
    assert export.scann_parameters(100, 200, 20) == (100, 10, 10)  # never more than the catalogue or leaves
    assert export.scann_parameters(1_000_000, 200, 20, leaves=500, leaves_to_search=50) == (220, 500, 50)


def test_scann_parameters_refuse_settings_outside_the_catalogue():
    with pytest.raises(ValueError, match="scann_leaves must be between 2 and the number of items"):
        export.scann_parameters(100, 200, 20, leaves=101)
    with pytest.raises(ValueError, match="tree of one leaf answers the first item to every query"):
        export.scann_parameters(100, 200, 20, leaves=1)
    with pytest.raises(ValueError, match="a ScaNN index needs at least 2 items, the catalogue has 1"):
        export.scann_parameters(1, 200, 20)
    assert export.scann_parameters(2, 200, 20) == (2, 2, 2)  # round(sqrt(2)) = 1 leaf would be refused
    with pytest.raises(ValueError, match="scann_leaves_to_search must be between 1 and the index's 10 leaves"):
        export.scann_parameters(100, 200, 20, leaves_to_search=11)
    with pytest.raises(ValueError, match="scann_leaves_to_search must be between 1"):
        export.scann_parameters(100, 200, 20, leaves=5, leaves_to_search=0)
