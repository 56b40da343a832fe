"""A Python model server speaking TensorFlow Serving's gRPC API, for development and tests.

Production runs ``tensorflow_model_server``; this server implements the part of its API DMI-Rec uses, with
the same messages and status codes, so any TF Serving client works against either:

- ``PredictionService.Predict`` and ``PredictionService.GetModelMetadata`` (``signature_def``);
- ``ModelService.GetModelStatus`` and ``ModelService.HandleReloadConfigRequest``;
- ``Classify``, ``Regress`` and ``MultiInference`` answer ``UNIMPLEMENTED``.

Models and versions are managed by :mod:`serving.model_manager`; requests are validated by
:mod:`serving.signature` against the server's :class:`~serving.server_config.RequestLimits`. Every status a
client can get says what went wrong in at most :data:`MAX_MESSAGE_CHARS` characters:

- ``INVALID_ARGUMENT``: a malformed or oversized request, including bytes that do not decode as the
  method's request message (gRPC would otherwise answer those ``INTERNAL``);
- ``NOT_FOUND``: an unknown model, version or label;
- ``RESOURCE_EXHAUSTED``: the process ran out of memory (``MemoryError``, TensorFlow's
  ``ResourceExhaustedError``), or the response would exceed the message limit;
- ``INTERNAL``: a bug or a broken model, never a request's own fault.

Failures are logged at most once per :data:`LOG_INTERVAL_S` per kind (with the count of those not
logged), so hostile traffic cannot flood the log.
"""

from __future__ import annotations

import concurrent.futures
import functools
import logging
import signal
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import grpc
import tensorflow as tf
from google.protobuf.message import DecodeError, Message
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_management_pb2,
    model_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from serving import tensor_proto
from serving.batching import BatchingRunner
from serving.server_config import (
    DEFAULT_MAX_MESSAGE_BYTES,
    RequestLimits,
    ServedModel,
    ServerOptions,
    served_models_from_proto,
)
from serving.errors import StatusError, invalid_argument, not_found, resource_exhausted
from serving.model_manager import ModelRegistry
from serving.servable import Servable, register_custom_ops
from serving.signature import graph_error_message

_LOG = logging.getLogger(__name__)

_SIGNATURE_DEF_FIELD = "signature_def"
_Handler = Callable[[Any, Message, grpc.ServicerContext], Message]
MAX_MESSAGE_CHARS = 512
"""The longest status message sent to a client (longer ones are cut, so errors never outgrow metadata)."""
LOG_INTERVAL_S = 10.0
"""At most one log line per kind of failure in this many seconds."""


class _RateLimitedLog:
    """Logs one line per kind of event and interval; counts the lines it held back."""

    def __init__(self, interval_s: float = LOG_INTERVAL_S):
        self._interval_s = interval_s
        self._lock = threading.Lock()
        self._last: dict[str, float] = {}
        self._held: dict[str, int] = {}

    def __call__(self, kind: str, level: int, message: str, *args: object, exc_info: bool = False) -> None:
        now = time.monotonic()
        with self._lock:
            if now - self._last.get(kind, -self._interval_s) < self._interval_s:
                self._held[kind] = self._held.get(kind, 0) + 1
                return
            self._last[kind] = now
            held = self._held.pop(kind, 0)
        suffix = f" ({held} more since the last such line)" if held else ""
        _LOG.log(level, message + suffix, *args, exc_info=exc_info)


_log_limited = _RateLimitedLog()


def _bounded(message: str) -> str:
    return message if len(message) <= MAX_MESSAGE_CHARS else message[: MAX_MESSAGE_CHARS - 3] + "..."


def _rpc(method: _Handler) -> _Handler:
    """Turns a handler's exceptions into gRPC statuses; nothing a request does can stop the server."""

    @functools.wraps(method)
    def handler(self: Any, request: Message, context: grpc.ServicerContext) -> Message:
        try:
            return method(self, request, context)
        except StatusError as e:
            context.abort(e.code, _bounded(e.message))
        except tf.errors.InvalidArgumentError as e:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, _bounded(graph_error_message(e)))
        except (MemoryError, tf.errors.ResourceExhaustedError) as e:
            _log_limited("memory", logging.ERROR, "%s ran out of memory: %s", method.__name__, type(e).__name__)
            context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"the server ran out of memory answering this request ({type(e).__name__}); send fewer rows",
            )
        except Exception as e:  # a bug or a broken model: report it, keep serving
            _log_limited(f"internal:{method.__name__}", logging.ERROR, "%s failed", method.__name__, exc_info=True)
            context.abort(grpc.StatusCode.INTERNAL, _bounded(f"{type(e).__name__}: {e}"))

    return handler


class _Undecodable:
    """What the request deserializer returns for bytes that are not the method's request message."""

    def __init__(self, error: Exception, size: int):
        self.error = error
        self.size = size


def _safe_deserializer(deserialize: Callable[[bytes], Message]) -> Callable[[bytes], Any]:
    def safe(data: bytes) -> Any:
        try:
            return deserialize(data)
        except (DecodeError, ValueError, TypeError) as e:
            return _Undecodable(e, len(data))

    return safe


def _refuse_undecodable(behavior: Callable[[Any, grpc.ServicerContext], Message], method: str) -> Callable:
    def checked(request: Any, context: grpc.ServicerContext) -> Message:
        if isinstance(request, _Undecodable):
            _log_limited(
                "undecodable", logging.WARNING, "%s: refused %d bytes that do not decode (%s)",
                method, request.size, type(request.error).__name__,
            )
            context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"the {request.size}-byte request does not decode as the request message of {method}",
            )
        return behavior(request, context)

    return checked


class _DecodeCheckingHandler(grpc.GenericRpcHandler):
    """A generated service handler whose methods answer undecodable requests ``INVALID_ARGUMENT``.

    gRPC's own deserialization failure is an ``INTERNAL`` status and a logged traceback per request.
    """

    def __init__(self, inner: grpc.GenericRpcHandler):
        self._inner = inner

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        handler = self._inner.service(handler_call_details)
        if handler is None or handler.unary_unary is None or handler.request_deserializer is None:
            return handler
        return handler._replace(
            request_deserializer=_safe_deserializer(handler.request_deserializer),
            unary_unary=_refuse_undecodable(handler.unary_unary, handler_call_details.method),
        )


class _HandlerCollector:
    """Stands in for a ``grpc.Server`` to receive the handlers a generated ``add_*_to_server`` registers."""

    def __init__(self) -> None:
        self.handlers: list[grpc.GenericRpcHandler] = []

    def add_generic_rpc_handlers(self, handlers: Sequence[grpc.GenericRpcHandler]) -> None:
        self.handlers.extend(handlers)


def _response_bytes(arrays: Iterable[Any]) -> int:
    """A lower bound on the serialized size of a response's tensors (their payload bytes)."""
    total = 0
    for array in arrays:
        if array.dtype == object:
            total += sum(map(len, array.ravel().tolist())) + 2 * array.size
        else:
            total += array.nbytes
    return total


def _fill_model_spec(spec: model_pb2.ModelSpec, servable: Servable, signature_name: str = "") -> None:
    spec.name = servable.name
    spec.version.value = servable.version
    if signature_name:
        spec.signature_name = signature_name


class PredictionServicer(prediction_service_pb2_grpc.PredictionServiceServicer):
    """``tensorflow.serving.PredictionService``: Predict and GetModelMetadata."""

    def __init__(
        self,
        registry: ModelRegistry,
        batcher: BatchingRunner | None,
        limits: RequestLimits = RequestLimits(),
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    ):
        """Creates the servicer.

        Args:
            registry: the served models.
            batcher: merges concurrent requests, or None to run each request on its own.
            limits: the largest request accepted.
            max_message_bytes: the largest response that can be sent.
        """
        self._registry = registry
        self._batcher = batcher
        self._limits = limits
        self._max_message_bytes = max_message_bytes

    @_rpc
    def Predict(
        self, request: predict_pb2.PredictRequest, context: grpc.ServicerContext
    ) -> predict_pb2.PredictResponse:
        """Runs one signature of one model version."""
        with self._registry.acquire(request.model_spec) as servable:
            signature = servable.signature(request.model_spec.signature_name)
            wanted = signature.select_outputs(request.output_filter)
            inputs = signature.prepare(request.inputs, self._limits)
            outputs = self._batcher.run(signature, inputs) if self._batcher else signature(inputs)
            size = _response_bytes(outputs[alias] for alias in wanted)
            if size > self._max_message_bytes:
                raise resource_exhausted(
                    f"the response would hold {size} bytes, over the {self._max_message_bytes}-byte message "
                    "limit (--grpc_max_message_bytes); ask for fewer rows or shorter lists"
                )
            response = predict_pb2.PredictResponse()
            _fill_model_spec(response.model_spec, servable, signature.name)
            for alias in wanted:  # written in place: no intermediate TensorProto to copy
                tensor_proto.encode(outputs[alias], response.outputs[alias])
            return response

    @_rpc
    def GetModelMetadata(
        self, request: get_model_metadata_pb2.GetModelMetadataRequest, context: grpc.ServicerContext
    ) -> get_model_metadata_pb2.GetModelMetadataResponse:
        """Returns the SignatureDefs of one model version (metadata field ``signature_def``)."""
        if not request.metadata_field:
            raise invalid_argument(f"metadata_field is empty; supported: {_SIGNATURE_DEF_FIELD}")
        unsupported = sorted(set(request.metadata_field) - {_SIGNATURE_DEF_FIELD})
        if unsupported:
            raise invalid_argument(
                f"unsupported metadata_field(s) {', '.join(map(repr, unsupported))}; supported: "
                f"{_SIGNATURE_DEF_FIELD}"
            )
        with self._registry.acquire(request.model_spec) as servable:
            response = get_model_metadata_pb2.GetModelMetadataResponse()
            _fill_model_spec(response.model_spec, servable)
            signature_defs = get_model_metadata_pb2.SignatureDefMap(signature_def=servable.signature_defs)
            response.metadata[_SIGNATURE_DEF_FIELD].Pack(signature_defs)
            return response


class ModelServicer(model_service_pb2_grpc.ModelServiceServicer):
    """``tensorflow.serving.ModelService``: GetModelStatus and HandleReloadConfigRequest."""

    def __init__(self, registry: ModelRegistry):
        """Creates the servicer.

        Args:
            registry: the served models.
        """
        self._registry = registry

    @_rpc
    def GetModelStatus(
        self, request: get_model_status_pb2.GetModelStatusRequest, context: grpc.ServicerContext
    ) -> get_model_status_pb2.GetModelStatusResponse:
        """Reports the state of every version of a model (or of the one version requested), newest first."""
        manager = self._registry.manager(request.model_spec.name)
        statuses = manager.statuses()
        which = ""
        if request.model_spec.HasField("version"):
            which = f" version {request.model_spec.version.value}"
            statuses = [s for s in statuses if s.version == request.model_spec.version.value]
        if not statuses:
            raise not_found(f"model {manager.name!r} has no{which} status yet")
        response = get_model_status_pb2.GetModelStatusResponse()
        for status in statuses:
            entry = response.model_version_status.add(version=status.version, state=int(status.state))
            entry.status.error_code = status.error_code
            entry.status.error_message = status.error_message
        return response

    @_rpc
    def HandleReloadConfigRequest(
        self, request: model_management_pb2.ReloadConfigRequest, context: grpc.ServicerContext
    ) -> model_management_pb2.ReloadConfigResponse:
        """Serves exactly the models of the new config; returns once new and changed models are loaded."""
        try:
            configs = served_models_from_proto(request.config)
        except ValueError as e:
            raise invalid_argument(f"invalid model server config: {e}") from e
        self._registry.apply(configs)
        _LOG.info("config reloaded: serving %s", ", ".join(c.name for c in configs))
        return model_management_pb2.ReloadConfigResponse()


class ModelServer:
    """The gRPC server with its models; usable as a context manager (``with ModelServer(options) as s``)."""

    def __init__(self, options: ServerOptions):
        """Configures a server; :meth:`start` loads the models and opens the port.

        Args:
            options: models, address, thread pool, message size, polling and batching settings.
        """
        self.options = options
        self._registry = ModelRegistry(
            options.file_system_poll_wait_seconds, options.max_num_load_retries, options.load_retry_interval_s
        )
        self._server: grpc.Server | None = None
        self._port = 0

    @property
    def port(self) -> int:
        """The bound port (the chosen one when ``options.port`` is 0)."""
        if self._server is None:
            raise RuntimeError("the server is not started")
        return self._port

    @property
    def address(self) -> str:
        """``host:port`` for clients."""
        return f"{_bracketed(self.options.host)}:{self.port}"

    @property
    def models(self) -> list[ServedModel]:
        """The models currently configured, sorted by name."""
        return [manager.config for manager in self._registry.managers()]

    def start(self) -> None:
        """Loads the current version(s) of every model, then starts answering on the port.

        Models with no version on disk yet are served as soon as one appears.

        Raises:
            OSError: the address cannot be bound.
        """
        if self._server is not None:
            raise RuntimeError("the server is already started")
        register_custom_ops()
        self._registry.apply(self.options.models)
        server = self._grpc_server()
        try:
            port = self._bind(server)
        except OSError:
            self._registry.stop()
            raise
        server.start()
        self._server, self._port = server, port
        _LOG.info("serving %s at %s", ", ".join(c.name for c in self.models), self.address)

    def stop(self, grace_s: float = 5.0) -> None:
        """Stops taking requests, lets in-flight ones finish for up to ``grace_s`` seconds, unloads models."""
        if self._server is None:
            return
        self._server.stop(grace_s).wait()
        self._server = None
        self._registry.stop()
        _LOG.info("server stopped")

    def __enter__(self) -> ModelServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _grpc_server(self) -> grpc.Server:
        limit = self.options.grpc_max_message_bytes
        workers = concurrent.futures.ThreadPoolExecutor(self.options.max_workers, thread_name_prefix="rpc")
        server = grpc.server(
            workers,
            options=[
                ("grpc.max_send_message_length", limit),
                ("grpc.max_receive_message_length", limit),
                ("grpc.so_reuseport", 0),  # a port in use is an error, not silently shared
            ],
        )
        batcher = BatchingRunner(self.options.batching) if self.options.batching else None
        collector = _HandlerCollector()
        prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
            PredictionServicer(self._registry, batcher, self.options.limits, limit), collector
        )
        model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelServicer(self._registry), collector)
        server.add_generic_rpc_handlers([_DecodeCheckingHandler(h) for h in collector.handlers])
        return server

    def _bind(self, server: grpc.Server) -> int:
        address = f"{_bracketed(self.options.host)}:{self.options.port}"
        try:
            port = server.add_insecure_port(address)
        except RuntimeError as e:  # recent grpcio raises, older versions return 0
            raise OSError(f"cannot bind {address} (in use or not a local address)") from e
        if port == 0:
            raise OSError(f"cannot bind {address} (in use or not a local address)")
        return port


def _bracketed(host: str) -> str:
    """``host`` as it goes before ``:port`` (IPv6 literals in brackets)."""
    return f"[{host}]" if ":" in host else host


def serve_until_signalled(
    server: ModelServer, signals: Sequence[int] = (signal.SIGINT, signal.SIGTERM)
) -> int:
    """Runs a started server until SIGINT or SIGTERM, then stops it gracefully.

    Must be called from the main thread (Python delivers signals there).

    Args:
        server: a started server.
        signals: the signals that stop it.

    Returns:
        The number of the signal that stopped the server.
    """
    received: list[int] = []
    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        received.append(signum)
        stop.set()

    previous = {signum: signal.signal(signum, on_signal) for signum in signals}
    try:
        stop.wait()
        _LOG.info("received %s: stopping", signal.Signals(received[0]).name)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        server.stop()
    return received[0]
