"""Tests of serving/client.py against an in-process server on loopback."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import grpc
import numpy as np
import pytest

from serving.client import RetrievalClient, ServingError, history_array, predict_request, top_items
from serving.server_config import ServedModel, ServerOptions
from serving.server import ModelServer
from serving.testing import ReferenceModel, unused_port

HISTORIES = [["i1", "i2", "i3"], [], ["i7", "unknown"]]


@pytest.fixture(scope="module")
def models() -> dict[int, ReferenceModel]:
    return {1: ReferenceModel.random(seed=1), 2: ReferenceModel.random(seed=2, default_top_n=4)}


@pytest.fixture(scope="module")
def address(tmp_path_factory, models) -> Iterator[str]:
    base = str(tmp_path_factory.mktemp("dmi"))
    for version, model in models.items():
        model.save(base, version)
    options = ServerOptions(models=(ServedModel("dmi", base),), port=0, file_system_poll_wait_seconds=0)
    with ModelServer(options) as server:
        yield server.address


@pytest.fixture
def client(address) -> Iterator[RetrievalClient]:
    with RetrievalClient(address, "dmi") as retrieval_client:
        yield retrieval_client


def _ids(top: list[list[tuple[str, float]]]) -> list[list[str]]:
    return [[item for item, _ in row] for row in top]


def test_retrieve_returns_the_newest_versions_top_items(client, models):
    top = client.retrieve(HISTORIES, top_n=6)
    assert _ids(top) == _ids(models[2].top_n(HISTORIES, 6))
    expected_scores = [s for _, s in models[2].top_n(HISTORIES, 6)[0]]
    np.testing.assert_allclose([s for _, s in top[0]], expected_scores, rtol=1e-5)
    assert [len(row) for row in client.retrieve(HISTORIES)] == [4, 4, 4]  # version 2's default top_n
    assert client.retrieve([]) == []


def test_retrieve_from_a_pinned_version(address, models):
    # The "latest" policy serves only version 2, so pinning version 1 is NOT_FOUND; the error names both.
    with RetrievalClient(address, "dmi") as client, pytest.raises(ServingError) as error:
        client.retrieve(HISTORIES, version=1)
    assert error.value.code_name == "NOT_FOUND"
    assert str(error.value).startswith("NOT_FOUND: model 'dmi' version 1 is not available (available: 2)")
    with RetrievalClient(address, "dmi") as client:
        assert _ids(client.retrieve(HISTORIES, top_n=3, version=2)) == _ids(models[2].top_n(HISTORIES, 3))


def test_predict_sends_a_prebuilt_request_to_the_model_it_names(address, models):
    request = predict_request("dmi", HISTORIES, top_n=5)
    with RetrievalClient(address, "another name") as client:  # the request's model_spec decides
        assert _ids(top_items(client.predict(request))) == _ids(models[2].top_n(HISTORIES, 5))
        with pytest.raises(ServingError) as error:
            client.predict(predict_request("nope", HISTORIES))
    assert error.value.code_name == "NOT_FOUND"


def test_interests_status_and_metadata(client, models):
    expected = models[2].interests(HISTORIES)
    np.testing.assert_allclose(client.interests(HISTORIES), expected, rtol=1e-5, atol=1e-6)
    assert [(s.version, s.state) for s in client.status()] == [(2, "AVAILABLE")]
    metadata = client.metadata()
    assert metadata.version == 2
    assert set(metadata.signature_defs) >= {"serving_default", "user_interests"}


def test_server_errors_carry_code_and_message(client, address):
    with pytest.raises(ServingError) as error:
        client.retrieve(HISTORIES, top_n=0)
    assert error.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert str(error.value).startswith("INVALID_ARGUMENT: assertion failed: [top_n must be at least 1]")
    with RetrievalClient(address, "nope") as unknown, pytest.raises(ServingError) as error:
        unknown.status()
    assert str(error.value) == "NOT_FOUND: no model named 'nope' (models: dmi)"


def test_no_server_is_unavailable():
    target = f"127.0.0.1:{unused_port()}"
    with RetrievalClient(target, "dmi", timeout_s=5.0) as client, pytest.raises(ServingError) as error:
        client.retrieve([["i1"]])
    assert str(error.value).startswith(f"UNAVAILABLE: no server at {target} (")


def test_silent_server_exceeds_the_deadline():
    with socket.socket() as silent:  # accepts connections (backlog) but never speaks HTTP/2
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        target = f"127.0.0.1:{silent.getsockname()[1]}"
        with RetrievalClient(target, "dmi", timeout_s=0.3) as client, pytest.raises(ServingError) as error:
            client.status()
    assert str(error.value) == f"DEADLINE_EXCEEDED: no answer from {target} within 0.3 s"


def test_histories_are_padded_and_strings_rejected():
    array = history_array([["a", "b"], [], ["c"]])
    assert array.tolist() == [[b"a", b"b"], [b"", b""], [b"c", b""]]
    assert history_array([[]]).tolist() == [[b""]]
    with pytest.raises(TypeError, match="not a string"):
        history_array(["i1,i2"])


def test_predict_request_carries_the_model_signature_version_and_top_n_only_when_given():
    request = predict_request("dmi", [["a", "b"], ["c"]], top_n=7, version=3)
    assert (request.model_spec.name, request.model_spec.signature_name) == ("dmi", "serving_default")
    assert request.model_spec.version.value == 3
    assert list(request.inputs["top_n"].int_val) == [7]
    assert [d.size for d in request.inputs["history"].tensor_shape.dim] == [2, 2]  # padded with ""
    plain = predict_request("dmi", [["a"]], signature_name="user_interests")
    assert set(plain.inputs) == {"history"} and not plain.model_spec.HasField("version")
