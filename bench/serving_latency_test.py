"""Tests for bench.serving_latency's floors, its result rows and the model every serving benchmark
measures."""

from __future__ import annotations

import copy
import json
import os

import numpy as np
import pytest

from bench import reliability, report, run_record, serving_capacity, serving_latency, serving_profile

RESULTS = os.path.join(run_record.RESULTS_DIR, "serving_latency.json")


def test_the_serving_floor_answers_the_real_requests_with_a_real_sized_response(tmp_path):
    ids = np.array(
        [[f"B{row:03d}{i:06d}".encode() for i in range(serving_latency.TOP_N)] for row in range(32)]
    )
    responses = serving_latency.floor_responses(ids, [1, 32])
    histories = [[["a", "b"]]] * 3
    with serving_latency.FloorServerProcess(responses, str(tmp_path / "floor.log")) as floor:
        requests = serving_latency.predict_requests("dmi_exact", histories)
        latency = serving_latency.grpc_latency(floor.address, requests, duration=0.2)
        batched = serving_latency.predict_requests("dmi", [[["a"]] * 32])
        assert serving_latency.grpc_latency(floor.address, batched, duration=0.2)["count"] >= 20
        throughput = serving_latency.grpc_throughput(floor.address, requests, clients=2, duration=0.2)
    assert latency["count"] >= 20 and latency["p50_ms"] > 0
    assert throughput["clients"] == 2 and throughput["requests"] > 0


def test_floor_responses_have_the_real_answers_ids_and_shape():
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    ids = np.array([[b"x%d" % i for i in range(50)], [b"y%d" % i for i in range(50)]], dtype=object)
    response = predict_pb2.PredictResponse.FromString(serving_latency.floor_responses(ids, [1, 3])[3])
    got = tf.make_ndarray(response.outputs["item_ids"])
    assert got.shape == (3, 50) and list(got[2]) == list(ids[0])
    scores = tf.make_ndarray(response.outputs["scores"])
    assert scores.dtype == np.float32 and scores.shape == (3, 50)
    assert np.all(np.diff(scores, axis=1) <= 0)


def test_the_scoring_floor_ranks_as_exact_retrieval():
    rng = np.random.default_rng(0)
    embeddings = rng.standard_normal((500, 8)).astype(np.float32)
    interests = [rng.standard_normal((3, 8)).astype(np.float32) for _ in range(4)]
    latency = serving_latency.scoring_floor_latency(interests, embeddings, duration=0.05, threads=1, top_n=10)
    assert latency["count"] >= 20 and latency["items"] == 500
    assert latency["blas_threads"] in (1, None)


def _with_floors(result: dict) -> dict:
    """The committed result with floor figures added as a run of today's bench would write them."""
    result = copy.deepcopy(result)
    for catalogue in result["catalogues"].values():
        one = catalogue["grpc"]["dmi_exact"]["batch_1"]
        floor = {
            "batch_1": {**one, "p50_ms": 1.0, "p99_ms": 2.0},
            "batch_32": {**catalogue["grpc"]["dmi_exact"]["batch_32"], "p50_ms": 4.0},
            "throughput_batch_1": [
                {**t, "latency": {**t["latency"], "p50_ms": 2.0}}
                for t in catalogue["grpc"]["dmi_exact"]["throughput_batch_1"]
            ],
        }
        catalogue["serving_floor"] = floor
        serving_latency.add_floor_ratios(catalogue["grpc"], floor)
        catalogue["server_overhead_above_floor_p50_ms"] = {
            k: v - 1.0 for k, v in catalogue["server_overhead_p50_ms"].items()
        }
        catalogue["scoring_floor"] = {**one, "p50_ms": 0.5, "items": catalogue["items"], "blas_threads": 1}
        catalogue["dmi_exact_over_scoring_floor_p50"] = serving_latency.scoring_floor_ratios(catalogue)
    result["targets"] = serving_latency.targets(result)
    return result


FLOOR_FIELDS = (
    "serving_floor",
    "scoring_floor",
    "dmi_exact_over_scoring_floor_p50",
    "server_overhead_above_floor_p50_ms",
)


def _without_floors(value):
    """A result as the benchmark wrote it before the floors existed: every floor field removed."""
    if isinstance(value, dict):
        return {
            k: _without_floors(v) for k, v in value.items() if k not in FLOOR_FIELDS + ("p50_over_floor",)
        }
    if isinstance(value, list):
        return [_without_floors(v) for v in value]
    return value


@pytest.mark.skipif(not os.path.exists(RESULTS), reason="no committed serving result")
def test_the_report_reads_results_with_and_without_floors():
    with open(RESULTS, encoding="utf-8") as f:
        old = _without_floors(json.load(f))
    old_text = "\n".join(report.section_serving(old))
    assert "| p50 / floor |" in old_text and serving_latency.SERVING_FLOOR_ROW not in old_text

    new = _with_floors(old)
    beauty = new["catalogues"]["beauty"]
    p50 = beauty["grpc"]["dmi_exact"]["batch_1"]["p50_ms"]
    assert beauty["grpc"]["dmi_exact"]["batch_1"]["p50_over_floor"] == round(p50 / 1.0, 2)
    text = "\n".join(report.section_serving(new))
    assert f"| {p50:.2f} | {p50:.2f}x |" in text
    assert f"| beauty (12,101) | {serving_latency.SERVING_FLOOR_ROW} | grpc | 1 | 1.00 | 1.00x |" in text
    assert (
        f"| beauty (12,101) | {serving_latency.SCORING_FLOOR_ROW} | in-process | 1 | 0.50 | 1.00x |" in text
    )
    in_process = beauty["in_process"]["dmi_exact"]["batch_1"]["p50_ms"]
    assert f"| in-process | 1 | {in_process:.2f} | {in_process / 0.5:.2f}x |" in text
    assert "serving floor p50 1.00 ms" in text
    first = new["targets"][0]
    assert (first["over_floor"], first["floor_ms"], first["floor_stat"]) == (round(p50 / 1.0, 2), 1.0, "p50")
    results = {**{stem: (None, None) for stem, _ in report.SECTIONS}, "serving_latency": (new, "s.json")}
    targets = "\n".join(report.targets_section(results))
    assert f"| {first['value']} ({first['over_floor']:.2f}x the serving floor's p50 1.0 ms) |" in targets


@pytest.mark.skipif(not os.path.exists(RESULTS), reason="no committed serving result")
def test_beauty_targets_say_when_the_servables_refine_with_other_ddim_steps():
    with open(RESULTS, encoding="utf-8") as f:
        result = json.load(f)
    config = result["model"]["config"]
    assert config["sampling_steps"] in (0, config["diffusion_steps"])  # the committed run: the default S = T
    assert not any("DDIM" in t["target"] for t in serving_latency.targets(result))
    result["model"]["config"] = {**config, "sampling_steps": 1}
    beauty = [t["target"] for t in serving_latency.targets(result) if t["target"].startswith("Beauty")]
    assert beauty and all("at S = 1 DDIM steps (not the default)" in t for t in beauty)


def test_argument_helpers():
    assert serving_latency.parse_sweep("1000:50,2000:100") == [(1000, 50), (2000, 100)]
    assert serving_latency.size_label(1_000_000) == "1m"
    assert serving_latency.size_label(20_000) == "20k"


def test_recall_vs_exact():
    exact = [np.array([[b"a", b"b"], [b"c", b"d"]])]
    approximate = [np.array([[b"b", b"x"], [b"c", b"d"]])]
    assert serving_latency.recall_vs_exact(exact, approximate) == pytest.approx(0.75)


def test_the_server_process_serves_every_servable_of_a_layout_from_the_written_config(tmp_path):
    from serving.testing import ReferenceModel

    layout = {}
    for name in ("one", "two"):
        base = str(tmp_path / "serving" / name)
        ReferenceModel.random(seed=len(name)).save(base, 3)
        layout[name] = os.path.join(base, "3")
    with serving_latency.ServerProcess(layout, str(tmp_path / "server.log"), threads=(1, 1)) as server:
        with serving_latency.client_for(server.address) as client:
            for name in layout:
                response = client.predict(serving_latency.predict_requests(name, [[["i1", "i2"]]])[0])
                assert response.model_spec.name == name and response.model_spec.version.value == 3
    from serving.server_config import read_model_config_file

    assert [m.name for m in read_model_config_file(str(tmp_path / "models.config"))] == ["one", "two"]


def _scann_row(searched: int, recall: float, p50: float, exact_p50: float = 80.0) -> dict:
    return {
        "scann_leaves": 1000,
        "scann_leaves_to_search": searched,
        "default": False,
        "recall_at_50_vs_exact": recall,
        "in_process_batch_1": {"p50_ms": p50},
        "speedup_p50": exact_p50 / p50,
    }


def test_index_builds_are_summarised_and_judged_by_their_worst_build(tmp_path):
    builds = [_scann_row(400, r, p) for r, p in ((0.97, 4.0), (0.949, 5.0), (0.98, 4.5))]
    summary = serving_latency.build_summary(builds)
    assert summary["builds"] == 3 and (summary["scann_leaves"], summary["scann_leaves_to_search"]) == (
        1000,
        400,
    )
    assert summary["recall_at_50_vs_exact"] == {"min": 0.949, "median": 0.97, "max": 0.98}
    assert summary["in_process_p50_ms"] == {"min": 4.0, "median": 4.5, "max": 5.0}
    assert summary["over_exact_p50"] == {"min": 0.05, "median": 0.0562, "max": 0.0625}

    catalogue = {
        "kind": "grown",
        "items": 1_000_000,
        "scann_recall_at_50_vs_exact": 0.97,
        "speedup_p50_batch_1": {"grpc": 12.0, "in_process": 16.0},
        "scann_builds": summary,
    }
    (target,) = [
        t for t in serving_latency.targets({"catalogues": {"1m": catalogue}}) if "index builds" in t["target"]
    ]
    assert not target["reached"]  # one build of three has recall 0.949 < 0.95
    assert "min 0.9490 / median 0.9700 / max 0.9800" in target["value"]
    catalogue["scann_builds"] = serving_latency.build_summary(builds[:1] + builds[2:])
    (target,) = [
        t for t in serving_latency.targets({"catalogues": {"1m": catalogue}}) if "index builds" in t["target"]
    ]
    assert target["reached"]


@pytest.mark.skipif(not os.path.exists(RESULTS), reason="no committed serving result")
def test_the_plot_adds_the_scann_curve_when_measured(tmp_path):
    with open(RESULTS, encoding="utf-8") as f:
        result = json.load(f)
    result = copy.deepcopy(result)
    grown = next(c for c in result["catalogues"].values() if c.get("kind") == "grown")
    grown["scann_curve"] = [_scann_row(s, 0.9 + s / 10_000, 1 + s / 100) for s in (50, 200, 1000)]
    grown["scann_builds"] = serving_latency.build_summary(
        [_scann_row(400, 0.97, 4.0), _scann_row(400, 0.96, 5.0)]
    )
    path = serving_latency.plot(result, str(tmp_path / "latency.png"))
    import matplotlib.image

    assert matplotlib.image.imread(path).shape[1] > 3 * 5.5 * 90  # three panels wide


def test_a_grown_catalogue_keeps_the_trained_rows_and_grows_the_rows_asked_for():
    import trainer  # noqa: F401  (Keras 2 before TensorFlow)
    from trainer import config
    from trainer.sequences import Vocabulary
    from trainer.train import build_model

    small = {"embedding_dim": 8, "num_interests": 2, "max_length": 4, "num_negatives": 8, "diffusion_steps": 2}
    vocabulary = Vocabulary(tuple(f"i{i}" for i in range(50)), tuple(range(50, 0, -1)))
    model = build_model(config.variant_config("dmi", small), vocabulary)
    rng = np.random.default_rng(3)
    trained = model.item_table.numpy()
    trained[1:] = rng.normal(2.0, 0.5, size=(50, 8)) * rng.choice([-1.0, 1.0], size=(50, 1))
    model.item_table.assign(trained)
    known = trained[1:]
    grown = {}
    for rows in ("clustered", "gaussian"):
        big, big_vocabulary = serving_latency.grown_catalogue(model, vocabulary, 20_051, seed=0, rows=rows)
        table = big.item_table.numpy()
        assert table.shape == (20_052, 8) and np.array_equal(table[:51], trained)
        assert big_vocabulary.item_ids[:50] == vocabulary.item_ids and big_vocabulary.item_ids[-1] == "synthetic-20051"
        others = [(a, b) for a, b in zip(big.get_weights(), model.get_weights()) if a.shape != table.shape]
        assert len(others) == len(model.get_weights()) - 1 and all(np.array_equal(a, b) for a, b in others)
        grown[rows] = table[51:]
    # Gaussian rows: the trained table's per-dimension mean and std.
    np.testing.assert_allclose(grown["gaussian"].mean(0), known.mean(0), atol=0.05)
    np.testing.assert_allclose(grown["gaussian"].std(0), known.std(0), rtol=0.05)
    # Clustered rows: a trained row plus noise of the same std, so the variance doubles, and the two clusters
    # of the trained rows (at +-2 along the diagonal, 5.66 from the origin) stay apart: few rows project near
    # the origin (P(|5.66 + N(0, ~2.1)| < 1.5) ~ 0.02), where Gaussian rows have their mode (~0.5 of them).
    np.testing.assert_allclose(grown["clustered"].std(0), np.sqrt(2) * known.std(0), rtol=0.05)
    axis = np.ones(8) / np.sqrt(8)
    near_origin = {rows: float(np.mean(np.abs(table @ axis) < 1.5)) for rows, table in grown.items()}
    assert near_origin["clustered"] < 0.1 and near_origin["gaussian"] > 0.3, near_origin
    with pytest.raises(ValueError, match="must exceed"):
        serving_latency.grown_catalogue(model, vocabulary, 50, seed=0)
    with pytest.raises(ValueError, match="unknown grown rows"):
        serving_latency.grown_catalogue(model, vocabulary, 100, seed=0, rows="uniform")


def test_interleaved_latency_times_every_call_in_every_round():
    order = []
    calls = {name: (lambda x, name=name: order.append(name)) for name in ("a", "b")}
    latency = serving_latency.interleaved_latency(calls, [0, 1], duration=0.0, rounds=3, warmup=2)
    assert set(latency) == {"a", "b"} and latency["a"]["count"] == latency["b"]["count"] == 3 * 7
    # Round by round: a's warm-up and turn, b's, then each again with one untimed call before its turn.
    turns = [name for i, name in enumerate(order) if i == 0 or order[i - 1] != name]
    assert turns == ["a", "b"] * 3


def test_a_scann_sweep_times_exact_beside_each_setting():
    import trainer  # noqa: F401  (Keras 2 before TensorFlow)
    import scann  # noqa: F401
    from trainer import config
    from trainer.sequences import Vocabulary
    from trainer.train import build_model

    small = {"embedding_dim": 8, "num_interests": 2, "max_length": 4, "num_negatives": 8, "diffusion_steps": 2}
    vocabulary = Vocabulary(tuple(f"i{i}" for i in range(300)), tuple(range(300, 0, -1)))
    model = build_model(config.variant_config("dmi", small), vocabulary)
    histories = [[f"i{(7 * u + j) % 300}" for j in range(3)] for u in range(40)]
    inputs = serving_latency.Inputs.from_histories(histories, recall_users=32)
    exact = serving_latency.servable_function(model, vocabulary, 60, None)
    exact_ids = serving_latency.top_ids(exact, inputs.recall)
    (row,) = serving_latency.sweep_scann(model, vocabulary, 60, [(10, 10)], inputs, exact_ids, duration=0.1)
    assert (row["scann_leaves"], row["scann_leaves_to_search"]) == (10, 10)
    assert row["speedup_p50"] == row["exact_in_process_batch_1"]["p50_ms"] / row["in_process_batch_1"]["p50_ms"]
    assert row["in_process_batch_1"]["count"] >= 20 and row["exact_in_process_batch_1"]["count"] >= 20
    assert 0.5 <= row["recall_at_50_vs_exact"] <= 1.0  # all 10 leaves searched: ScaNN's quantization only


def test_every_serving_benchmark_loads_the_model_and_serves_the_ddim_steps_asked_for(tmp_path):
    # serving_latency trains a tiny model; the benchmarks that share its model loading read it back.
    common = ["--data", "synthetic", "--work-dir", str(tmp_path)]
    args = serving_latency.parse_args([*common, "--train-steps", "2"])
    _, config, vocabulary, model, info, histories = serving_latency.model_and_test_histories(args)
    trained_steps = config.num_sampling_steps
    assert trained_steps == config.diffusion_steps > 1 and histories and "trained here" in info["source"]
    model_dir = os.path.join(str(tmp_path), "serving_latency", "model_2")
    for module in (serving_latency, serving_profile, serving_capacity, reliability):
        for flags, steps in (([], trained_steps), (["--sampling-steps", "1"], 1)):
            args = module.parse_args([*common, "--model-dir", model_dir, *flags])
            _, config, loaded_vocabulary, model, info, _ = serving_latency.model_and_test_histories(args)
            assert config.num_sampling_steps == model.config.num_sampling_steps == steps, module.__name__
            assert info["source"] == os.path.abspath(model_dir)
            assert list(loaded_vocabulary.item_ids) == list(vocabulary.item_ids)
    too_many = str(trained_steps + 1)
    args = serving_latency.parse_args([*common, "--model-dir", model_dir, "--sampling-steps", too_many])
    with pytest.raises(ValueError, match="sampling_steps"):
        serving_latency.model_and_test_histories(args)
