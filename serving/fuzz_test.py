"""Fuzz suite: 1,560 seeded hostile requests over real gRPC on loopback (serving/fuzzing.py's categories).

Asserted for every request: the status blames the request (never INTERNAL or UNKNOWN); after every 100, a
good request still gets the brute-force answer; over the whole run the server's memory grows by less than
:data:`RSS_GROWTH_BOUND_MB`. Why that bound: the largest request the limits admit decodes to at most
262,144 strings (about 20 MB), so a server that frees what it decodes stays well under it, while each of
the failures this suite guards against costs far more (one claimed ``[100000, 0]`` took 8 GB, one new
compiled shape kept 21.5 MB for good; 1,560 requests of such leaks would be gigabytes).
"""

from __future__ import annotations

import collections

import grpc
import pytest
from tensorflow_serving.apis import prediction_service_pb2_grpc

from serving import fuzzing
from serving.server_config import ServedModel, ServerOptions
from serving.server import ModelServer
from serving.testing import ReferenceModel, predict_request, resident_memory_mb, top_items

REQUESTS = 1560
CHECK_EVERY = 100
RSS_GROWTH_BOUND_MB = 150.0
_BLAMELESS = (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN)
_HISTORIES = [["i1", "i2"], ["i7"], []]


@pytest.fixture(scope="module")
def model() -> ReferenceModel:
    return ReferenceModel.random(seed=5)


def test_hostile_requests_are_refused_cleanly_and_the_server_stays_correct(tmp_path, model):
    base = str(tmp_path / "dmi")
    model.save(base, 1)
    options = ServerOptions(
        models=(ServedModel("dmi", base),), port=0, file_system_poll_wait_seconds=0, max_workers=4
    )
    with ModelServer(options) as server, grpc.insecure_channel(server.address) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)

        def assert_correct() -> None:
            answer = top_items(stub.Predict(predict_request(_HISTORIES, top_n=3), timeout=10))
            expected = model.top_n(_HISTORIES, 3)
            assert [[item for item, _ in row] for row in answer] == [[item for item, _ in row] for row in expected]

        assert_correct()
        baseline = resident_memory_mb()
        codes: collections.Counter = collections.Counter()
        stream = fuzzing.hostile_requests(seed=11, count=REQUESTS, model="dmi", item_ids=list(model.item_ids))
        for index, (category, method, payload) in enumerate(stream):
            code = fuzzing.send(channel, method, payload, timeout_s=10)
            codes[category, code.name] += 1
            assert code not in _BLAMELESS, f"request {index} ({category}) got {code.name}"
            if index % CHECK_EVERY == CHECK_EVERY - 1:
                assert_correct()
        growth = resident_memory_mb() - baseline
    assert sum(codes.values()) == REQUESTS
    per_category = collections.Counter(category for category, _ in codes.elements())
    assert set(per_category) == set(fuzzing.CATEGORIES)
    assert min(per_category.values()) >= REQUESTS // len(fuzzing.CATEGORIES)
    refused = sum(n for (_, code), n in codes.items() if code != "OK")
    assert refused >= 0.9 * REQUESTS, codes
    assert growth < RSS_GROWTH_BOUND_MB, f"the server grew by {growth:.0f} MB over {REQUESTS} requests"
