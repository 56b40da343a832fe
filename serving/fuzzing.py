"""Malformed and hostile requests against the serving contract, for the fuzz tests and bench/reliability.py.

:func:`hostile_requests` yields a seeded, reproducible stream of requests in :data:`CATEGORIES`, each
already serialized (some are not even valid protobuf), with the gRPC method it goes to. Every one of them
must be answered with a status that blames the request (``INVALID_ARGUMENT``, ``NOT_FOUND``,
``RESOURCE_EXHAUSTED``) or, for the mutations that happen to stay valid, answered ``OK``; never
``INTERNAL`` or ``UNKNOWN``, never a crash. :func:`send` sends one over a channel without a client-side
serializer, so that bytes reach the server exactly as generated.

The cases follow the failures an outside tester found (issue 11): shape claims far beyond the payload
(``[2147483648, -1]``, ``[100000, 0]`` with no value, ``[30000, 1]`` with one value), negative
dimensions, value counts that disagree with the shape, contradictory value fields, bool bytes above 1,
oversized batches and histories, unknown names quoted back at length, and random or mutated bytes.
"""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import numpy as np
from tensorflow.core.framework import tensor_pb2, types_pb2
from tensorflow_serving.apis import get_model_metadata_pb2, get_model_status_pb2, predict_pb2

from serving.contract import EXCLUDE_HISTORY_INPUT, HISTORY_INPUT, TOP_N_INPUT

PREDICT = "/tensorflow.serving.PredictionService/Predict"
METADATA = "/tensorflow.serving.PredictionService/GetModelMetadata"
STATUS = "/tensorflow.serving.ModelService/GetModelStatus"
CATEGORIES = (
    "shape_claim",
    "negative_dimension",
    "value_count",
    "dtype",
    "contradictory_fields",
    "tensor_content",
    "oversized",
    "unknown_name",
    "bad_value",
    "undecodable",
    "mutated",
    "metadata_and_status",
)
_METHODS = (PREDICT, METADATA, STATUS)


def claimed_tensor(dtype: int, dims: list[int], **values: object) -> tensor_pb2.TensorProto:
    """A TensorProto that claims ``dims`` whatever ``values`` (proto fields) it carries."""
    tensor = tensor_pb2.TensorProto(dtype=dtype, **values)
    for size in dims:
        tensor.tensor_shape.dim.add(size=size)
    return tensor


def strings(rows: list[list[str]]) -> tensor_pb2.TensorProto:
    """A well-formed string tensor ``[len(rows), width]`` (rows padded with ``""``)."""
    width = max([0, *(len(row) for row in rows)])
    values = [item.encode() for row in rows for item in row + [""] * (width - len(row))]
    return claimed_tensor(types_pb2.DT_STRING, [len(rows), width], string_val=values)


def scalar_int32(value: int) -> tensor_pb2.TensorProto:
    """A well-formed int32 scalar."""
    return claimed_tensor(types_pb2.DT_INT32, [], int_val=[value])


def predict(model: str, inputs: dict[str, tensor_pb2.TensorProto], **spec: object) -> predict_pb2.PredictRequest:
    """A PredictRequest for ``model`` with raw TensorProto inputs (``signature_name=``, ``version=`` ...)."""
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    for field, value in spec.items():
        if field == "version":
            request.model_spec.version.value = value
        elif field == "output_filter":
            request.output_filter.extend(value)
        else:
            setattr(request.model_spec, field, value)
    for alias, tensor in inputs.items():
        request.inputs[alias].CopyFrom(tensor)
    return request


def send(channel: grpc.Channel, method: str, payload: bytes, timeout_s: float) -> grpc.StatusCode:
    """Sends serialized bytes to a method; returns the status code (OK when answered)."""
    call = channel.unary_unary(method, request_serializer=None, response_deserializer=None)
    try:
        call(payload, timeout=timeout_s)
    except grpc.RpcError as e:
        return e.code()
    return grpc.StatusCode.OK


class _Generator:
    """One seeded stream of hostile requests for a model and some of its item ids."""

    def __init__(self, seed: int, model: str, item_ids: list[str], max_rows: int, max_row_elements: int):
        self.rng = np.random.default_rng(seed)
        self.model = model
        self.items = item_ids
        self.max_rows = max_rows
        self.max_row_elements = max_row_elements

    def _history(self, rows: int | None = None) -> tensor_pb2.TensorProto:
        rows = int(self.rng.integers(1, 5)) if rows is None else rows
        return strings([list(self.rng.choice(self.items, int(self.rng.integers(0, 6)))) for _ in range(rows)])

    def _text(self, length: int) -> str:
        return "".join(chr(int(c)) for c in self.rng.integers(33, 0x2FF, length))

    def _dims(self) -> list[int]:
        huge = [2**31, 2**40, 100_000, 30_000, 10**9, 2**62]
        return [int(self.rng.choice(huge)), int(self.rng.choice([0, 1, 2, 1000]))]

    def _predict(self, inputs: dict[str, tensor_pb2.TensorProto], **spec: object) -> bytes:
        return predict(self.model, inputs, **spec).SerializeToString()

    def shape_claim(self) -> tuple[str, bytes]:
        dims = self._dims()
        kind = int(self.rng.integers(3))
        values = [] if kind == 0 else [b"i"] if kind == 1 else [s.encode() for s in self.items[:3]]
        if self.rng.random() < 0.5:
            dims = dims[::-1]
        history = claimed_tensor(types_pb2.DT_STRING, dims, string_val=values)
        return PREDICT, self._predict({HISTORY_INPUT: history})

    def negative_dimension(self) -> tuple[str, bytes]:
        dims = [int(self.rng.choice([-1, -2, -(2**31), 2**31])), int(self.rng.choice([-1, -5, 3]))]
        alias = str(self.rng.choice([HISTORY_INPUT, TOP_N_INPUT]))
        dtype = types_pb2.DT_STRING if alias == HISTORY_INPUT else types_pb2.DT_INT32
        tensor = claimed_tensor(dtype, dims)
        inputs = {HISTORY_INPUT: self._history(), alias: tensor}
        return PREDICT, self._predict(inputs)

    def value_count(self) -> tuple[str, bytes]:
        rows, width = int(self.rng.integers(1, 6)), int(self.rng.integers(1, 6))
        count = int(self.rng.choice([0, rows * width + int(self.rng.integers(1, 50)), max(0, rows * width - 1)]))
        if count in (1, rows * width):
            count = 0
        values = [str(self.rng.choice(self.items)).encode() for _ in range(count)]
        tensor = claimed_tensor(types_pb2.DT_STRING, [rows, width], string_val=values)
        return PREDICT, self._predict({HISTORY_INPUT: tensor})

    def dtype(self) -> tuple[str, bytes]:
        dtype = int(self.rng.choice([types_pb2.DT_INT64, types_pb2.DT_FLOAT, types_pb2.DT_RESOURCE,
                                     types_pb2.DT_VARIANT, 999, types_pb2.DT_COMPLEX64, types_pb2.DT_QINT8]))
        alias = str(self.rng.choice([HISTORY_INPUT, TOP_N_INPUT, EXCLUDE_HISTORY_INPUT]))
        inputs = {HISTORY_INPUT: self._history(), alias: claimed_tensor(dtype, [], int64_val=[3])}
        return PREDICT, self._predict(inputs)

    def contradictory_fields(self) -> tuple[str, bytes]:
        kind = int(self.rng.integers(4))
        if kind == 0:  # top_n in two value fields
            top_n = claimed_tensor(types_pb2.DT_INT32, [], int_val=[5], int64_val=[7])
            return PREDICT, self._predict({HISTORY_INPUT: self._history(), TOP_N_INPUT: top_n})
        if kind == 1:  # tensor_content and a typed field at once
            top_n = claimed_tensor(types_pb2.DT_INT32, [], int_val=[5], tensor_content=b"\x05\x00\x00\x00")
            return PREDICT, self._predict({HISTORY_INPUT: self._history(), TOP_N_INPUT: top_n})
        if kind == 2:  # strings in tensor_content
            history = claimed_tensor(types_pb2.DT_STRING, [1, 1], tensor_content=b"\x02i1")
            return PREDICT, self._predict({HISTORY_INPUT: history})
        flag = claimed_tensor(types_pb2.DT_BOOL, [], tensor_content=bytes([int(self.rng.integers(2, 256))]))
        return PREDICT, self._predict({HISTORY_INPUT: self._history(), EXCLUDE_HISTORY_INPUT: flag})

    def tensor_content(self) -> tuple[str, bytes]:
        length = int(self.rng.choice([0, 1, 3, 5, 8, 4096]))
        dims = [] if self.rng.random() < 0.5 else [int(self.rng.integers(2, 10**6))]
        top_n = claimed_tensor(types_pb2.DT_INT32, dims, tensor_content=bytes(length or 1))
        return PREDICT, self._predict({HISTORY_INPUT: self._history(), TOP_N_INPUT: top_n})

    def oversized(self) -> tuple[str, bytes]:
        kind = int(self.rng.integers(3))
        if kind == 0:
            rows = self.max_rows + int(self.rng.integers(1, 30_000))
            history = claimed_tensor(types_pb2.DT_STRING, [rows, 1], string_val=[b"i"])
        elif kind == 1:
            width = self.max_row_elements + int(self.rng.integers(1, 10**5))
            history = claimed_tensor(types_pb2.DT_STRING, [1, width], string_val=[self.items[0].encode()])
        else:
            rows = self.max_rows
            width = self.max_row_elements
            history = claimed_tensor(types_pb2.DT_STRING, [rows, width], string_val=[b"x"])
        return PREDICT, self._predict({HISTORY_INPUT: history})

    def unknown_name(self) -> tuple[str, bytes]:
        name = self._text(int(self.rng.choice([1, 20, 5000])))
        kind = int(self.rng.integers(6))
        history = {HISTORY_INPUT: self._history()}
        if kind == 0:
            return PREDICT, predict(name, history).SerializeToString()
        if kind == 1:
            return PREDICT, self._predict(history, signature_name=name)
        if kind == 2:
            return PREDICT, self._predict({**history, name: self._history()})
        if kind == 3:
            return PREDICT, self._predict(history, version_label=name)
        if kind == 4:
            return PREDICT, self._predict(history, version=int(self.rng.integers(1000, 2**62)))
        return PREDICT, self._predict(history, output_filter=[name])

    def bad_value(self) -> tuple[str, bytes]:
        top_n = int(self.rng.choice([0, -1, -(2**31), 2**31 - 1, 100_000]))
        return PREDICT, self._predict({HISTORY_INPUT: self._history(), TOP_N_INPUT: scalar_int32(top_n)})

    def undecodable(self) -> tuple[str, bytes]:
        payload = self.rng.bytes(int(self.rng.integers(1, 2000)))
        return str(self.rng.choice(_METHODS)), payload

    def mutated(self) -> tuple[str, bytes]:
        payload = bytearray(self._predict({HISTORY_INPUT: self._history(), TOP_N_INPUT: scalar_int32(5)}))
        for _ in range(int(self.rng.integers(1, 8))):
            payload[int(self.rng.integers(len(payload)))] = int(self.rng.integers(256))
        return PREDICT, bytes(payload)

    def metadata_and_status(self) -> tuple[str, bytes]:
        name = self.model if self.rng.random() < 0.5 else self._text(int(self.rng.choice([3, 3000])))
        if self.rng.random() < 0.5:
            request = get_model_metadata_pb2.GetModelMetadataRequest()
            request.model_spec.name = name
            request.metadata_field.extend([self._text(int(self.rng.integers(1, 200)))] * int(self.rng.integers(3)))
            return METADATA, request.SerializeToString()
        status = get_model_status_pb2.GetModelStatusRequest()
        status.model_spec.name = name
        status.model_spec.version.value = int(self.rng.integers(-(2**62), 2**62))
        return STATUS, status.SerializeToString()


def hostile_requests(
    seed: int,
    count: int,
    model: str,
    item_ids: list[str],
    max_rows: int = 1024,
    max_row_elements: int = 4096,
) -> Iterator[tuple[str, str, bytes]]:
    """A reproducible stream of hostile requests, cycling through :data:`CATEGORIES`.

    Args:
        seed: the stream's seed.
        count: how many requests.
        model: the served model's name (most requests target it, so they reach validation).
        item_ids: some known item ids of the model.
        max_rows: the server's ``--max_batch_rows``, so that oversized cases just exceed it.
        max_row_elements: the server's ``--max_row_elements``.

    Yields:
        ``(category, method, serialized_request)``.
    """
    generator = _Generator(seed, model, item_ids, max_rows, max_row_elements)
    for index in range(count):
        category = CATEGORIES[index % len(CATEGORIES)]
        method, payload = getattr(generator, category)()
        yield category, method, payload
