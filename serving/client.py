"""A client for DMI-Rec models behind any TF Serving gRPC endpoint (``tensorflow_model_server`` or ours).

    with RetrievalClient("127.0.0.1:8500", "dmi") as client:
        top = client.retrieve([["i1", "i7"], ["i3"]], top_n=5)   # [[("i42", 3.1), ...], [...]]

Every call has a deadline; gRPC failures are raised as :class:`ServingError`, whose message starts with the
status code name (``INVALID_ARGUMENT: ...``, ``UNAVAILABLE: no server at ...``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import grpc
import numpy as np
import tensorflow as tf
from google.protobuf.message import Message
from tensorflow.core.protobuf import meta_graph_pb2
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from serving.server_config import DEFAULT_MAX_MESSAGE_BYTES
from serving.contract import (
    HISTORY_INPUT,
    INTERESTS_OUTPUT,
    INTERESTS_SIGNATURE,
    ITEM_IDS_OUTPUT,
    RETRIEVAL_SIGNATURE,
    SCORES_OUTPUT,
    TOP_N_INPUT,
)

TopN = list[list[tuple[str, float]]]
"""Per history, the ``(item_id, score)`` pairs of a retrieval response, best first."""


class ServingError(Exception):
    """A failed call to the model server.

    Attributes:
        code: the gRPC status code.
        message: what the server (or the channel) said.
    """

    def __init__(self, code: grpc.StatusCode, message: str):
        self.code = code
        self.message = message
        super().__init__(f"{code.name}: {message}")

    @property
    def code_name(self) -> str:
        """The status code's name, e.g. ``INVALID_ARGUMENT``."""
        return self.code.name


@dataclasses.dataclass(frozen=True)
class ReportedVersionStatus:
    """One version's state as the server reports it to a client (``GetModelStatus``).

    The server builds the report from its manager's record, ``serving.model_manager.ManagedVersionStatus``.

    Attributes:
        version: the version number.
        state: ``LOADING``, ``AVAILABLE``, ``UNLOADING`` or ``END``.
        error: why the version failed to load; empty if it did not fail.
    """

    version: int
    state: str
    error: str = ""


@dataclasses.dataclass(frozen=True)
class ModelMetadata:
    """A model version's signatures.

    Attributes:
        version: the version that answered.
        signature_defs: its SignatureDefs by key.
    """

    version: int
    signature_defs: dict[str, meta_graph_pb2.SignatureDef]


class RetrievalClient:
    """Retrieval, user interests, status and metadata of one served model."""

    def __init__(self, target: str, model_name: str, timeout_s: float = 5.0):
        """Opens a channel (lazily: nothing is sent before the first call).

        Args:
            target: ``host:port`` of the server.
            model_name: the served model's name.
            timeout_s: deadline of every call, in seconds.
        """
        self.target = target
        self.model_name = model_name
        self.timeout_s = timeout_s
        self._channel = grpc.insecure_channel(
            target,
            options=[
                ("grpc.max_receive_message_length", DEFAULT_MAX_MESSAGE_BYTES),
                ("grpc.max_send_message_length", DEFAULT_MAX_MESSAGE_BYTES),
            ],
        )
        self._predictions = prediction_service_pb2_grpc.PredictionServiceStub(self._channel)
        self._models = model_service_pb2_grpc.ModelServiceStub(self._channel)

    def __enter__(self) -> RetrievalClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Closes the channel."""
        self._channel.close()

    def retrieve(
        self, histories: Sequence[Sequence[str]], top_n: int | None = None, version: int | None = None
    ) -> TopN:
        """The top items for each history, best first.

        Args:
            histories: one sequence of item ids per user (padded with ``""`` to a common length).
            top_n: how many items per user; None uses the model's default.
            version: the model version to ask; None asks the newest.

        Returns:
            Per history, ``(item_id, score)`` pairs in decreasing score.

        Raises:
            ServingError: the call failed (e.g. ``INVALID_ARGUMENT`` for a ``top_n`` out of range).
            TypeError: a history is a string rather than a sequence of ids.
        """
        if not histories:
            return []
        request = predict_request(self.model_name, histories, RETRIEVAL_SIGNATURE, top_n=top_n, version=version)
        return top_items(self._call(self._predictions.Predict, request))

    def predict(self, request: predict_pb2.PredictRequest) -> predict_pb2.PredictResponse:
        """Sends a ready-made ``PredictRequest`` (e.g. built once by :func:`predict_request` and sent many times).

        Args:
            request: any Predict request; its ``model_spec`` names the model, whatever ``model_name`` says.

        Returns:
            The server's response, unparsed (:func:`top_items` reads a retrieval response).

        Raises:
            ServingError: the call failed.
        """
        return self._call(self._predictions.Predict, request)

    def interests(self, histories: Sequence[Sequence[str]], version: int | None = None) -> np.ndarray:
        """The interest vectors of each history.

        Args:
            histories: one sequence of item ids per user.
            version: the model version to ask; None asks the newest.

        Returns:
            float32 array of shape ``[len(histories), K, d]``.

        Raises:
            ServingError: the call failed.
            TypeError: a history is a string rather than a sequence of ids.
        """
        request = predict_request(self.model_name, histories, INTERESTS_SIGNATURE, version=version)
        response = self._call(self._predictions.Predict, request)
        return tf.make_ndarray(response.outputs[INTERESTS_OUTPUT])

    def status(self) -> list[ReportedVersionStatus]:
        """The state of every version of the model the server knows, newest first.

        Raises:
            ServingError: the call failed (``NOT_FOUND`` for an unknown model).
        """
        request = get_model_status_pb2.GetModelStatusRequest(model_spec=model_spec(self.model_name))
        response = self._call(self._models.GetModelStatus, request)
        state_name = get_model_status_pb2.ModelVersionStatus.State.Name
        return [
            ReportedVersionStatus(s.version, state_name(s.state), s.status.error_message)
            for s in response.model_version_status
        ]

    def metadata(self, version: int | None = None) -> ModelMetadata:
        """The SignatureDefs of a model version.

        Args:
            version: the model version to ask; None asks the newest.

        Raises:
            ServingError: the call failed.
        """
        request = get_model_metadata_pb2.GetModelMetadataRequest(
            model_spec=model_spec(self.model_name, version), metadata_field=["signature_def"]
        )
        response = self._call(self._predictions.GetModelMetadata, request)
        signature_defs = get_model_metadata_pb2.SignatureDefMap()
        response.metadata["signature_def"].Unpack(signature_defs)
        return ModelMetadata(response.model_spec.version.value, dict(signature_defs.signature_def))

    def _call(self, method: Callable[..., Message], request: Message) -> Message:
        try:
            return method(request, timeout=self.timeout_s)
        except grpc.RpcError as e:
            raise _serving_error(e, self.target, self.timeout_s) from None


def model_spec(model_name: str, version: int | None = None, signature_name: str = "") -> model_pb2.ModelSpec:
    """TF Serving's ``ModelSpec``: a model, optionally one version and one signature."""
    spec = model_pb2.ModelSpec(name=model_name, signature_name=signature_name)
    if version is not None:
        spec.version.value = version
    return spec


def predict_request(
    model_name: str,
    histories: Sequence[Sequence[str]],
    signature_name: str = RETRIEVAL_SIGNATURE,
    top_n: int | None = None,
    version: int | None = None,
) -> predict_pb2.PredictRequest:
    """The ``PredictRequest`` of a retrieval servable's signature: the one place such requests are built.

    Args:
        model_name: the served model.
        histories: one sequence of raw item ids per user (padded with ``""`` to a common length).
        signature_name: ``serving_default`` (top items) or ``user_interests``.
        top_n: items per user (``serving_default`` only); None leaves the model's default.
        version: a version to ask; None asks the newest.

    Raises:
        TypeError: a history is a string rather than a sequence of ids.
    """
    request = predict_pb2.PredictRequest(model_spec=model_spec(model_name, version, signature_name))
    request.inputs[HISTORY_INPUT].CopyFrom(tf.make_tensor_proto(history_array(histories)))
    if top_n is not None:
        request.inputs[TOP_N_INPUT].CopyFrom(tf.make_tensor_proto(top_n, dtype=tf.int32))
    return request


def top_items(response: predict_pb2.PredictResponse) -> TopN:
    """The item ids and scores of a retrieval response, as ``(item_id, score)`` pairs per row.

    Args:
        response: a ``serving_default`` response, outputs ``item_ids`` and ``scores`` ``[batch, top_n]``.

    Returns:
        Per row, the pairs best first.
    """
    item_ids = tf.make_ndarray(response.outputs[ITEM_IDS_OUTPUT])
    scores = tf.make_ndarray(response.outputs[SCORES_OUTPUT])
    return [
        [(item.decode("utf-8"), float(score)) for item, score in zip(row_items, row_scores)]
        for row_items, row_scores in zip(item_ids, scores)
    ]


def history_array(histories: Sequence[Sequence[str]]) -> np.ndarray:
    """Histories as a ``[batch, max_len]`` bytes array padded with ``""`` (at least one column).

    Args:
        histories: one sequence of item ids per user.

    Returns:
        The padded array (dtype object, UTF-8 bytes).

    Raises:
        TypeError: a history is a string rather than a sequence of ids.
    """
    for history in histories:
        if isinstance(history, (str, bytes)):
            raise TypeError(f"a history must be a sequence of item ids, not a string: {history!r}")
    width = max([1, *(len(h) for h in histories)])
    array = np.full((len(histories), width), b"", dtype=object)
    for row, history in enumerate(histories):
        array[row, : len(history)] = [item.encode("utf-8") for item in history]
    return array


def _serving_error(error: grpc.RpcError, target: str, timeout_s: float) -> ServingError:
    code, details = error.code(), error.details() or ""
    if code == grpc.StatusCode.UNAVAILABLE:
        return ServingError(code, f"no server at {target} ({details})")
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return ServingError(code, f"no answer from {target} within {timeout_s:g} s")
    return ServingError(code, details)
