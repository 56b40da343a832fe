"""End-to-end tests of serving/server.py over real gRPC on loopback, with raw TF Serving API stubs.

Using the generated stubs and messages directly (not ``serving.client``) shows that any TF Serving client
works against the server unchanged. Every request loop is bounded in count and time.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import threading
import time
from collections.abc import Iterator

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_management_pb2,
    model_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)
from tensorflow_serving.config import model_server_config_pb2

from serving import fuzzing, server_config
from serving.server_config import BatchingOptions, ServedModel, ServerOptions
from serving.server import ModelServer
from serving.testing import (
    ReferenceModel,
    TopN,
    assert_same_top,
    predict_request,
    top_items,
    wait_for,
    write_broken_version,
)

_TIMEOUT_S = 10.0
_INVALID = grpc.StatusCode.INVALID_ARGUMENT
_NOT_FOUND = grpc.StatusCode.NOT_FOUND
_AVAILABLE = get_model_status_pb2.ModelVersionStatus.AVAILABLE
_END = get_model_status_pb2.ModelVersionStatus.END
HISTORIES = [["i1", "i2", "i3"], ["i10"], ["i4", "i4", "i7", "i9", "i30"], ["i49", "i0"]]

@dataclasses.dataclass
class Served:
    """A running server and raw stubs talking to it."""

    server: ModelServer
    predictions: prediction_service_pb2_grpc.PredictionServiceStub
    models: model_service_pb2_grpc.ModelServiceStub
    channel: grpc.Channel

    def predict(self, request: predict_pb2.PredictRequest) -> predict_pb2.PredictResponse:
        return self.predictions.Predict(request, timeout=_TIMEOUT_S)

    def status(self, name: str = "dmi") -> get_model_status_pb2.GetModelStatusResponse:
        request = get_model_status_pb2.GetModelStatusRequest(model_spec=model_pb2.ModelSpec(name=name))
        return self.models.GetModelStatus(request, timeout=_TIMEOUT_S)


@contextlib.contextmanager
def serve(
    *models: ServedModel, poll_s: float = 0.0, batching: BatchingOptions | None = None, **options: object
) -> Iterator[Served]:
    """Starts a server on a free loopback port and stops it on exit (``options``: more ServerOptions)."""
    options = ServerOptions(
        models=models, port=0, file_system_poll_wait_seconds=poll_s, batching=batching, **options
    )
    with ModelServer(options) as server, grpc.insecure_channel(server.address) as channel:
        yield Served(
            server,
            prediction_service_pb2_grpc.PredictionServiceStub(channel),
            model_service_pb2_grpc.ModelServiceStub(channel),
            channel,
        )


@pytest.fixture(scope="module")
def model() -> ReferenceModel:
    return ReferenceModel.random(seed=1)


@pytest.fixture(scope="module")
def served(tmp_path_factory, model) -> Iterator[Served]:
    base = str(tmp_path_factory.mktemp("dmi"))
    model.save(base, 1)
    with serve(ServedModel("dmi", base)) as running:
        yield running


def test_status_reports_the_loaded_version(served):
    (status,) = served.status().model_version_status
    assert (status.version, status.state, status.status.error_code) == (1, _AVAILABLE, 0)
    request = get_model_status_pb2.GetModelStatusRequest(model_spec=model_pb2.ModelSpec(name="dmi"))
    request.model_spec.version.value = 5
    with pytest.raises(grpc.RpcError) as error:
        served.models.GetModelStatus(request, timeout=_TIMEOUT_S)
    assert error.value.code() == _NOT_FOUND and "version 5" in error.value.details()


def test_metadata_packs_the_signature_defs_as_tf_serving_does(served):
    request = get_model_metadata_pb2.GetModelMetadataRequest(
        model_spec=model_pb2.ModelSpec(name="dmi"), metadata_field=["signature_def"]
    )
    response = served.predictions.GetModelMetadata(request, timeout=_TIMEOUT_S)
    assert (response.model_spec.name, response.model_spec.version.value) == ("dmi", 1)
    signature_defs = get_model_metadata_pb2.SignatureDefMap()
    assert response.metadata["signature_def"].Unpack(signature_defs)
    default = signature_defs.signature_def["serving_default"]
    assert set(default.inputs) == {"history", "top_n"} and set(default.outputs) == {"item_ids", "scores"}
    assert tf.make_ndarray(default.defaults["top_n"]) == 10
    assert set(signature_defs.signature_def["user_interests"].outputs) == {"interests"}


def test_predict_returns_the_brute_force_top_n(served, model):
    response = served.predict(predict_request(HISTORIES, top_n=7))
    assert_same_top(top_items(response), model.top_n(HISTORIES, 7))
    spec = response.model_spec
    assert (spec.name, spec.version.value, spec.signature_name) == ("dmi", 1, "serving_default")


def test_omitted_top_n_uses_the_signature_default(served, model):
    top = top_items(served.predict(predict_request(HISTORIES)))
    assert [len(row) for row in top] == [model.default_top_n] * len(HISTORIES)
    assert_same_top(top, model.top_n(HISTORIES))


def test_unknown_ids_and_empty_histories_are_answered(served, model):
    histories = [["i3", "not-an-item", "i5"], [""], ["nope"]]
    assert_same_top(top_items(served.predict(predict_request(histories, top_n=5))), model.top_n(histories, 5))


def test_output_filter_and_second_signature(served, model):
    request = predict_request(HISTORIES, top_n=3)
    request.output_filter.append("item_ids")
    assert list(served.predict(request).outputs) == ["item_ids"]
    interests = predict_request(HISTORIES)
    interests.model_spec.signature_name = "user_interests"
    response = served.predict(interests)
    interests_got = tf.make_ndarray(response.outputs["interests"])
    np.testing.assert_allclose(interests_got, model.interests(HISTORIES), rtol=1e-5, atol=1e-6)


def _request(signature_name: str = "", **inputs: tensor_pb2.TensorProto) -> predict_pb2.PredictRequest:
    spec = model_pb2.ModelSpec(name="dmi", signature_name=signature_name)
    request = predict_pb2.PredictRequest(model_spec=spec)
    for alias, tensor in inputs.items():
        request.inputs[alias].CopyFrom(tensor)
    return request


def _history(values: object = (("i1", "i2"),), dtype: tf.DType = tf.string) -> tensor_pb2.TensorProto:
    return tf.make_tensor_proto(values, dtype=dtype)


def _top_n(value: object, dtype: tf.DType = tf.int32) -> tensor_pb2.TensorProto:
    return tf.make_tensor_proto(value, dtype=dtype)


def _with_spec(request: predict_pb2.PredictRequest, **spec: object) -> predict_pb2.PredictRequest:
    for field, value in spec.items():
        if field == "version":
            request.model_spec.version.value = value
        else:
            setattr(request.model_spec, field, value)
    return request


def _with_output_filter(request: predict_pb2.PredictRequest, *names: str) -> predict_pb2.PredictRequest:
    request.output_filter.extend(names)
    return request


def _malformed_history() -> tensor_pb2.TensorProto:
    tensor = _history([["a", "b"]])
    tensor.string_val.append(b"c")  # 3 values for shape [1, 2]
    return tensor


def _claimed(dims: list[int], *values: bytes) -> tensor_pb2.TensorProto:
    return fuzzing.claimed_tensor(tf.string.as_datatype_enum, dims, string_val=values)


def _with_int64(tensor: tensor_pb2.TensorProto) -> tensor_pb2.TensorProto:
    tensor.int64_val.append(7)
    return tensor


def _content(dtype: tf.DType, content: bytes) -> tensor_pb2.TensorProto:
    return tensor_pb2.TensorProto(dtype=dtype.as_datatype_enum, tensor_content=content)


BAD_REQUESTS = [
    pytest.param(lambda: _request(history=_history([[1, 2]], tf.int32)), _INVALID,
                 "must be DT_STRING, got DT_INT32", id="history-dtype"),
    pytest.param(lambda: _request(history=_history(["i1"])), _INVALID, "must have shape [?,?], got [1]",
                 id="history-rank"),
    pytest.param(lambda: _request(history=_history(), top_n=_top_n(5, tf.int64)), _INVALID,
                 "must be DT_INT32, got DT_INT64", id="top_n-dtype"),
    pytest.param(lambda: _request(history=_history(), top_n=_top_n([5])), _INVALID,
                 "must have shape [], got [1]", id="top_n-shape"),
    pytest.param(lambda: _request(top_n=_top_n(5)), _INVALID, "needs input 'history'", id="missing-input"),
    pytest.param(lambda: _request(history=_history(), user=_history()), _INVALID, "has no input(s) 'user'",
                 id="extra-input"),
    pytest.param(lambda: _request("nope", history=_history()), _INVALID, "has no signature 'nope'",
                 id="unknown-signature"),
    pytest.param(lambda: _request(history=_history(), top_n=_top_n(0)), _INVALID, "top_n must be at least 1",
                 id="top_n-zero"),
    pytest.param(lambda: _request(history=_history(), top_n=_top_n(51)), _INVALID,
                 "top_n must be at most the number of items (50)", id="top_n-too-large"),
    pytest.param(lambda: _with_output_filter(_request(history=_history()), "nope"), _INVALID,
                 "unknown output(s) 'nope'", id="unknown-output"),
    pytest.param(lambda: _request(history=_malformed_history()), _INVALID,
                 "shape [1,2] has 2 elements but string_val holds 3 values", id="malformed-tensor"),
    pytest.param(lambda: _request(history=_claimed([2147483648, -1])), _INVALID,
                 "shape [2147483648,-1] has a negative dimension (-1)", id="negative-dimension"),
    pytest.param(lambda: _request(history=_claimed([100000, 0])), _INVALID,
                 "'history' has 100000 rows; this server accepts at most 1024", id="rows-without-values"),
    pytest.param(lambda: _request(history=_claimed([300, 1000], b"i1")), _INVALID,
                 "the request's inputs have 300000 elements; this server accepts at most 262144",
                 id="one-value-broadcast-too-far"),
    pytest.param(lambda: _request(history=_claimed([2, 5000], b"i1")), _INVALID,
                 "has 5000 elements per row; this server accepts at most 4096", id="history-too-long"),
    pytest.param(lambda: _request(history=_claimed([2, 3])), _INVALID,
                 "shape [2,3] has 6 elements but string_val holds 0 values", id="values-missing"),
    pytest.param(lambda: _request(history=_history(), top_n=_with_int64(_top_n(5))), _INVALID,
                 "DT_INT32 tensor carries its values in int_val or tensor_content only, but int64_val is set",
                 id="contradictory-fields"),
    pytest.param(lambda: _request(history=_history(), top_n=_content(tf.int32, b"\x05\x00\x00")), _INVALID,
                 "needs 4 bytes of tensor_content, got 3", id="short-tensor-content"),
    pytest.param(lambda: _request(history=_history(), user=_history(), **{f"x{i}": _history() for i in range(9)}),
                 _INVALID, "'user', 'x0', 'x1' and 7 more", id="many-extra-inputs"),
    pytest.param(lambda: _request(history=_history([["x" * 5000]]), top_n=_top_n(0)), _INVALID,
                 "top_n must be at least 1", id="long-id-not-echoed"),
    pytest.param(lambda: _with_spec(_request(history=_history()), name="nope"), _NOT_FOUND,
                 "no model named 'nope'", id="unknown-model"),
    pytest.param(lambda: _with_spec(_request(history=_history()), version=7), _NOT_FOUND,
                 "version 7 is not available", id="unknown-version"),
    pytest.param(lambda: _with_spec(_request(history=_history()), version_label="canary"), _NOT_FOUND,
                 "no version label 'canary'", id="unknown-label"),
]


@pytest.mark.parametrize("make_request, code, message", BAD_REQUESTS)
def test_bad_request_gets_a_clear_status_and_the_server_keeps_answering(
    served, model, make_request, code, message
):
    with pytest.raises(grpc.RpcError) as error:
        served.predict(make_request())
    assert error.value.code() == code
    assert message in error.value.details()
    assert len(error.value.details()) <= 512
    assert_same_top(top_items(served.predict(predict_request(HISTORIES, top_n=2))), model.top_n(HISTORIES, 2))


def test_bad_status_and_metadata_requests(served):
    with pytest.raises(grpc.RpcError) as error:
        served.status("nope")
    assert error.value.code() == _NOT_FOUND
    request = get_model_metadata_pb2.GetModelMetadataRequest(model_spec=model_pb2.ModelSpec(name="dmi"))
    with pytest.raises(grpc.RpcError) as error:
        served.predictions.GetModelMetadata(request, timeout=_TIMEOUT_S)
    assert error.value.code() == _INVALID and "metadata_field" in error.value.details()


def test_unsupported_rpcs_are_unimplemented(served):
    with pytest.raises(grpc.RpcError) as error:
        served.predictions.Classify(classification_pb2.ClassificationRequest(), timeout=_TIMEOUT_S)
    assert error.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_twenty_concurrent_clients_get_correct_answers(served, model):
    expected = [model.top_n([history], 5) for history in HISTORIES]
    counts, errors = [0] * 20, []

    def client(index: int) -> None:
        deadline = time.monotonic() + 3.0
        with grpc.insecure_channel(served.server.address) as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            for n in range(2_000):
                if time.monotonic() > deadline:
                    return
                which = (index + n) % len(HISTORIES)
                try:
                    response = stub.Predict(predict_request([HISTORIES[which]], top_n=5), timeout=_TIMEOUT_S)
                    assert_same_top(top_items(response), expected[which])
                except Exception as e:  # collected and reported below
                    errors.append(e)
                counts[index] += 1

    threads = [threading.Thread(target=client, args=(i,)) for i in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not errors, errors[:3]
    assert all(count > 0 for count in counts)


def test_new_version_is_picked_up_under_load_without_failed_requests(tmp_path):
    v1, v2 = ReferenceModel.random(seed=1), ReferenceModel.random(seed=2)
    v1.save(str(tmp_path), 1)
    history = [["i1", "i2"]]
    expected = {1: v1.top_n(history, 5), 2: v2.top_n(history, 5)}
    seen: list[list[tuple[int, TopN]]] = [[] for _ in range(4)]
    errors: list[Exception] = []
    stop = threading.Event()
    with serve(ServedModel("dmi", str(tmp_path)), poll_s=0.1) as served:

        def send(index: int) -> None:
            deadline = time.monotonic() + 60.0
            for _ in range(20_000):
                if stop.is_set() or time.monotonic() > deadline:
                    return
                try:
                    response = served.predict(predict_request(history, top_n=5))
                except grpc.RpcError as e:
                    errors.append(e)
                    continue
                seen[index].append((response.model_spec.version.value, top_items(response)))

        threads = [threading.Thread(target=send, args=(i,)) for i in range(4)]
        for thread in threads:
            thread.start()
        try:
            wait_for(lambda: all(seen), "first responses")
            v2.save(str(tmp_path), 2)
            wait_for(lambda: all(s[-1][0] == 2 for s in seen), "every sender to see version 2")
        finally:
            stop.set()
            for thread in threads:
                thread.join(30)
        states = {2: _AVAILABLE, 1: _END}
        wait_for(
            lambda: {s.version: s.state for s in served.status().model_version_status} == states,
            "version 1 to end",
        )
    assert not errors, errors[:3]
    for responses in seen:
        versions = [version for version, _ in responses]
        assert versions[0] == 1 and versions[-1] == 2 and versions == sorted(versions)
        for version, top in responses:
            assert_same_top(top, expected[version])


def test_broken_newer_version_is_reported_and_does_not_replace_the_good_one(tmp_path, model):
    model.save(str(tmp_path), 1)
    with serve(ServedModel("dmi", str(tmp_path)), poll_s=0.1) as served:
        write_broken_version(str(tmp_path), 2)
        wait_for(lambda: len(served.status().model_version_status) == 2, "version 2 to be tried")
        broken, good = served.status().model_version_status
        response = served.predict(predict_request(HISTORIES, top_n=3))
    assert (broken.version, broken.state, good.version, good.state) == (2, _END, 1, _AVAILABLE)
    assert broken.status.error_code != 0 and "saved_model.pb" in broken.status.error_message
    assert response.model_spec.version.value == 1
    assert_same_top(top_items(response), model.top_n(HISTORIES, 3))


def test_model_config_file_serves_several_models(tmp_path):
    first, second = ReferenceModel.random(seed=1), ReferenceModel.random(seed=2)
    first.save(str(tmp_path / "first"), 1)
    second.save(str(tmp_path / "second"), 3)
    config_file = tmp_path / "models.config"
    config_file.write_text(
        f"""model_config_list {{
          config {{ name: "first" base_path: "{tmp_path / 'first'}" model_platform: "tensorflow" }}
          config {{ name: "second" base_path: "{tmp_path / 'second'}" model_platform: "tensorflow" }}
        }}"""
    )
    parser = argparse.ArgumentParser()
    server_config.add_server_flags(parser)
    args = parser.parse_args(["--model_config_file", str(config_file), "--port", "0"])
    options = server_config.server_options_from_flags(args)
    with ModelServer(options) as server, grpc.insecure_channel(server.address) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        responses = {
            name: stub.Predict(predict_request(HISTORIES, top_n=4, model_name=name), timeout=_TIMEOUT_S)
            for name in ("first", "second")
        }
    assert_same_top(top_items(responses["first"]), first.top_n(HISTORIES, 4))
    assert_same_top(top_items(responses["second"]), second.top_n(HISTORIES, 4))
    assert responses["second"].model_spec.version.value == 3


def test_reload_config_changes_the_served_models(tmp_path, model):
    model.save(str(tmp_path / "a"), 1)
    model.save(str(tmp_path / "b"), 1)
    new_config = model_server_config_pb2.ModelServerConfig()
    new_config.model_config_list.config.add(
        name="b", base_path=str(tmp_path / "b"), model_platform="tensorflow"
    )
    with serve(ServedModel("a", str(tmp_path / "a"))) as served:
        request = model_management_pb2.ReloadConfigRequest(config=new_config)
        response = served.models.HandleReloadConfigRequest(request, timeout=_TIMEOUT_S)
        assert response.status.error_code == 0
        assert served.status("b").model_version_status[0].state == _AVAILABLE
        with pytest.raises(grpc.RpcError) as error:
            served.status("a")
        assert error.value.code() == _NOT_FOUND
        bad = model_management_pb2.ReloadConfigRequest(config=model_server_config_pb2.ModelServerConfig())
        with pytest.raises(grpc.RpcError) as error:
            served.models.HandleReloadConfigRequest(bad, timeout=_TIMEOUT_S)
        assert error.value.code() == _INVALID


def test_batching_gives_the_same_results_as_unbatched(tmp_path, model, served):
    model.save(str(tmp_path), 1)
    requests = [predict_request([h], top_n=n) for h in HISTORIES for n in (3, 10)]
    requests.append(predict_request(HISTORIES))
    unbatched = [top_items(served.predict(r)) for r in requests]
    batched: list[TopN | Exception | None] = [None] * len(requests)
    start = threading.Barrier(len(requests))
    batching = BatchingOptions(max_batch_size=16, timeout_s=0.05)
    with serve(ServedModel("dmi", str(tmp_path)), batching=batching) as b:

        def send(index: int) -> None:
            start.wait(_TIMEOUT_S)
            try:
                batched[index] = top_items(b.predict(requests[index]))
            except Exception as e:  # reported below
                batched[index] = e

        threads = [threading.Thread(target=send, args=(i,)) for i in range(len(requests))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
    for got, want in zip(batched, unbatched):
        assert not isinstance(got, Exception), got
        assert_same_top(got, want)


def test_a_port_in_use_is_an_error(served):
    with pytest.raises(OSError, match="cannot bind"):
        ModelServer(dataclasses.replace(served.server.options, port=served.server.port)).start()


def test_undecodable_bytes_are_invalid_argument_with_one_log_line(served, model, caplog, monkeypatch):
    from serving import server as server_module

    monkeypatch.setattr(server_module, "_log_limited", server_module._RateLimitedLog())  # a fresh interval
    for method in (fuzzing.PREDICT, fuzzing.METADATA, fuzzing.STATUS):
        for _ in range(5):
            assert fuzzing.send(served.channel, method, b"\xff\xff\xff\x0f", 10) == _INVALID
    assert caplog.text.count("do not decode") == 1  # rate-limited: one line per 10 s
    assert_same_top(top_items(served.predict(predict_request(HISTORIES, top_n=2))), model.top_n(HISTORIES, 2))


def test_request_limits_are_configurable(tmp_path, model):
    model.save(str(tmp_path), 1)
    limits = server_config.RequestLimits(max_batch_rows=2, max_row_elements=3, max_request_elements=5)
    with serve(ServedModel("dmi", str(tmp_path)), limits=limits) as running:
        running.predict(predict_request([["i1", "i2", "i3"]], top_n=2))
        for histories, message in (
            ([["i1"]] * 3, "has 3 rows; this server accepts at most 2 per request (--max_batch_rows)"),
            ([["i1"] * 4], "has 4 elements per row; this server accepts at most 3 (--max_row_elements)"),
            ([["i1"] * 3] * 2, "have 7 elements; this server accepts at most 5 (--max_request_elements)"),
        ):
            with pytest.raises(grpc.RpcError) as error:
                running.predict(predict_request(histories, top_n=2))
            assert error.value.code() == _INVALID and message in error.value.details()


def test_a_response_over_the_message_limit_is_resource_exhausted(tmp_path, model):
    model.save(str(tmp_path), 1)
    with serve(ServedModel("dmi", str(tmp_path)), grpc_max_message_bytes=4096) as running:
        running.predict(predict_request([["i1"]], top_n=2))
        with pytest.raises(grpc.RpcError) as error:
            running.predict(predict_request([["i1"]] * 40, top_n=50))
        assert error.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "over the 4096-byte message limit" in error.value.details()


def test_running_out_of_memory_is_resource_exhausted(served, monkeypatch):
    from serving.signature import Signature

    def exhausted(self, inputs):
        raise MemoryError()

    monkeypatch.setattr(Signature, "__call__", exhausted)
    with pytest.raises(grpc.RpcError) as error:
        served.predict(predict_request(HISTORIES, top_n=2))
    assert error.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "ran out of memory" in error.value.details()
