"""Tests for bench.serving_latency's floors and its result rows (no model, no training)."""

from __future__ import annotations

import copy
import json
import os

import numpy as np
import pytest

from bench import common, report, serving_latency

RESULTS = os.path.join(common.RESULTS_DIR, "serving_latency.json")


def test_the_serving_floor_answers_the_real_requests_with_a_real_sized_response(tmp_path):
    ids = np.array([[f"B{row:03d}{i:06d}".encode() for i in range(serving_latency.TOP_N)] for row in range(32)])
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
    "serving_floor", "scoring_floor", "dmi_exact_over_scoring_floor_p50", "server_overhead_above_floor_p50_ms"
)


def _without_floors(value):
    """A result as the benchmark wrote it before the floors existed: every floor field removed."""
    if isinstance(value, dict):
        return {k: _without_floors(v) for k, v in value.items() if k not in FLOOR_FIELDS + ("p50_over_floor",)}
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
    assert f"| beauty (12,101) | {serving_latency.SCORING_FLOOR_ROW} | in-process | 1 | 0.50 | 1.00x |" in text
    in_process = beauty["in_process"]["dmi_exact"]["batch_1"]["p50_ms"]
    assert f"| in-process | 1 | {in_process:.2f} | {in_process / 0.5:.2f}x |" in text
    assert "serving floor p50 1.00 ms" in text
    first = new["targets"][0]
    assert (first["over_floor"], first["floor_ms"], first["floor_stat"]) == (round(p50 / 1.0, 2), 1.0, "p50")
    results = {**{stem: (None, None) for stem, _ in report.SECTIONS}, "serving_latency": (new, "s.json")}
    targets = "\n".join(report.targets_section(results))
    assert f"| {first['value']} ({first['over_floor']:.2f}x the serving floor's p50 1.0 ms) |" in targets
