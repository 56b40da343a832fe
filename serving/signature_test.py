"""Signature: the flat call gives the keyword call's outputs, the scalar cache is bounded, checks keep
their order (the first problem of a request is the one reported)."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from serving import contract, signature
from serving.server_config import RequestLimits
from serving.errors import StatusError
from serving.servable import Servable
from serving.testing import ReferenceModel, predict_request

HISTORIES = [["i1", "i2"], ["i7"], []]


@pytest.fixture(scope="module")
def servable(tmp_path_factory) -> Servable:
    base = str(tmp_path_factory.mktemp("dmi"))
    ReferenceModel.random(seed=2).save(base, 1)
    return Servable.load("dmi", 1, f"{base}/1")


def test_the_flat_call_gives_the_keyword_calls_outputs(servable):
    for name in (contract.RETRIEVAL_SIGNATURE, contract.INTERESTS_SIGNATURE):
        wrapped = servable.signature(name)
        assert signature._flat_call(wrapped._function, wrapped.input_names) is not None
        request = predict_request(HISTORIES, top_n=4 if name == contract.RETRIEVAL_SIGNATURE else None)
        inputs = wrapped.prepare(request.inputs)
        got = wrapped(inputs)
        tensors = {k: tf.constant(v, dtype=wrapped._dtypes[k]) for k, v in inputs.items()}
        expected = {k: t.numpy() for k, t in wrapped._function(**tensors).items()}
        assert set(got) == set(expected)
        for alias in got:
            np.testing.assert_array_equal(got[alias], expected[alias])
        ready = wrapped.call_tensors(tensors)  # the same call on ready tensors (what benchmarks time)
        for alias in got:
            np.testing.assert_array_equal(ready[alias].numpy(), expected[alias])


def test_a_function_without_the_flat_call_is_called_with_keywords(servable):
    original = servable.signature("")

    def function(**tensors: tf.Tensor) -> dict[str, tf.Tensor]:
        return original._function(**tensors)

    assert signature._flat_call(function, original.input_names) is None
    assert signature._flat_call(original._function, ("history",)) is None  # not the function's parameters
    wrapped = signature.Signature(original.name, original.signature_def, function)
    inputs = wrapped.prepare(predict_request(HISTORIES, top_n=3).inputs)
    np.testing.assert_array_equal(wrapped(inputs)["item_ids"], original(inputs)["item_ids"])


def test_scalars_are_converted_once_and_the_cache_stays_bounded(servable, monkeypatch):
    monkeypatch.setattr(signature, "_MAX_CACHED_SCALARS", 3)
    original = servable.signature("")
    wrapped = signature.Signature(original.name, original.signature_def, original._function)
    five = wrapped._tensor(contract.TOP_N_INPUT, np.array(5, np.int32))
    assert wrapped._tensor(contract.TOP_N_INPUT, np.array(5, np.int32)) is five
    for value in range(10, 20):
        assert int(wrapped._tensor(contract.TOP_N_INPUT, np.array(value, np.int32))) == value
    assert len(wrapped._scalars) == 3
    history = np.array([[b"i1"]], dtype=object)
    assert wrapped._tensor(contract.HISTORY_INPUT, history).dtype == tf.string
    assert len(wrapped._scalars) == 3


def test_the_first_problem_of_a_request_is_reported(servable):
    wrapped = servable.signature("")
    request = predict_request([["i1"]] * 5, top_n=2)
    request.inputs[contract.TOP_N_INPUT].dtype = tf.int64.as_datatype_enum  # a dtype problem ...
    limits = RequestLimits(max_batch_rows=2)  # ... and too many rows: the claims come first
    with pytest.raises(StatusError, match="must be DT_INT32, got DT_INT64"):
        wrapped.prepare(request.inputs, limits)
    request = predict_request([["i1"]] * 5, top_n=2)
    request.inputs[contract.TOP_N_INPUT].int_val.append(3)  # malformed values: decoded after the limits
    with pytest.raises(StatusError, match="5 rows; this server accepts at most 2"):
        wrapped.prepare(request.inputs, limits)
    with pytest.raises(StatusError, match="shape \\[\\] has 1 elements but int_val holds 2 values"):
        wrapped.prepare(request.inputs)
