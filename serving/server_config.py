"""What the server serves and how: model configs (TF Serving's ``model_config_file``) and server options.

The ``dmirec serve`` flags mirror ``tensorflow_model_server``'s (``--port``, ``--model_name`` with
``--model_base_path`` or ``--model_config_file``, ``--file_system_poll_wait_seconds``, ``--enable_batching``
...), so a command line or config file written for one works with the other. The config file is a text
``tensorflow.serving.ModelServerConfig``::

    model_config_list {
      config { name: "dmi" base_path: "/models/dmi" model_platform: "tensorflow" }
      config {
        name: "baseline" base_path: "/models/baseline" model_platform: "tensorflow"
        model_version_policy { latest { num_versions: 2 } }
        version_labels { key: "stable" value: 3 }
      }
    }
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import re
from collections.abc import Iterable, Mapping

from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

_LOG = logging.getLogger(__name__)

DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024
_PLATFORMS = ("", "tensorflow")
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")  # gs://, s3://, hdfs://, ram://: TensorFlow file systems


def _is_uri(path: str) -> bool:
    """Whether ``path`` names a TensorFlow file system by scheme (``gs://b/m``) rather than a local path.

    The rule of ``trainer.filesystem.is_uri``, which serving cannot import (serving knows no trainer code).
    """
    return bool(_SCHEME.match(path))


def _absolute_base_path(path: str) -> str:
    """A base path as the server keeps it: local paths made absolute, URIs (``gs://b/m``) as given.

    ``os.path.abspath`` would turn ``gs://b/m`` into ``<cwd>/gs:/b/m``.
    """
    return path if _is_uri(path) else os.path.abspath(path)


@dataclasses.dataclass(frozen=True)
class VersionPolicy:
    """Which of the versions found on disk a model serves (TF Serving's ``ServableVersionPolicy``).

    Attributes:
        kind: ``"latest"`` (the ``num_versions`` highest), ``"all"``, or ``"specific"`` (``versions``).
        num_versions: how many of the newest versions ``"latest"`` serves.
        versions: the versions ``"specific"`` serves.
    """

    kind: str = "latest"
    num_versions: int = 1
    versions: frozenset[int] = frozenset()

    def __post_init__(self) -> None:
        if self.kind not in ("latest", "all", "specific"):
            raise ValueError(f"unknown version policy {self.kind!r}")
        if self.kind == "latest" and self.num_versions < 1:
            raise ValueError(f"version policy 'latest' needs num_versions >= 1, got {self.num_versions}")
        if self.kind == "specific" and not self.versions:
            raise ValueError("version policy 'specific' needs at least one version")

    def select(self, available: Iterable[int]) -> frozenset[int]:
        """The versions to serve among ``available``.

        Args:
            available: versions that exist on disk and have not failed to load.

        Returns:
            The subset of ``available`` this policy serves.
        """
        available = sorted(set(available), reverse=True)
        if self.kind == "latest":
            return frozenset(available[: self.num_versions])
        if self.kind == "specific":
            return frozenset(v for v in available if v in self.versions)
        return frozenset(available)


@dataclasses.dataclass(frozen=True)
class ServedModel:
    """One served model: its name, where its versions live and which of them to serve.

    One entry of a TF Serving ``models.config`` (``model_config_list.config``, the proto's ``ModelConfig``);
    not to be confused with ``trainer.config.ModelConfig``, the training configuration.

    Attributes:
        name: the name clients put in ``ModelSpec.name``.
        base_path: directory holding one SavedModel per integer-named version subdirectory.
        version_policy: which versions to serve.
        version_labels: labels clients may put in ``ModelSpec.version_label`` instead of a version.
    """

    name: str
    base_path: str
    version_policy: VersionPolicy = VersionPolicy()
    version_labels: Mapping[str, int] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class BatchingOptions:
    """Server-side batching of concurrent Predict requests (see ``serving/batching.py``).

    Attributes:
        max_batch_size: the most rows (summed batch dimensions) one merged run holds.
        timeout_s: how long the first request of a batch waits for others to join.
    """

    max_batch_size: int = 64
    timeout_s: float = 0.002


@dataclasses.dataclass(frozen=True)
class RequestLimits:
    """The largest Predict request the server accepts, checked on the claimed shapes before decoding.

    The defaults admit any realistic retrieval request (1,024 users of 256-item histories) and bound the
    memory and time one request can take: about 20 MB of decoded strings at the element limit, and a
    response of 1,024 x ``max_top_n`` entries, far below the default message limit. Rows beyond what a
    servable compiles for run in chunks of its largest compiled batch (trainer/export.py).

    Attributes:
        max_batch_rows: most rows (size of the batch dimension) of a batch input.
        max_row_elements: most elements per row of a batch input (the history length for DMI-Rec).
        max_request_elements: most elements of all inputs of one request together.
    """

    max_batch_rows: int = 1024
    max_row_elements: int = 4096
    max_request_elements: int = 262_144

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            if getattr(self, field.name) < 1:
                raise ValueError(f"{field.name} must be at least 1, got {getattr(self, field.name)}")


@dataclasses.dataclass(frozen=True)
class ServerOptions:
    """Everything ``ModelServer`` needs to start.

    Attributes:
        models: the models to serve.
        host: interface to bind; the loopback interface unless deliberately exposed.
        port: TCP port; 0 picks a free one (``ModelServer.port`` tells which).
        max_workers: size of the thread pool answering RPCs (bounds concurrent requests in flight).
        grpc_max_message_bytes: largest request or response message accepted.
        file_system_poll_wait_seconds: seconds between scans of each base path for new versions; 0 scans
            once, at start-up.
        batching: server-side batching, or None to run every request on its own.
        limits: the largest request accepted.
        max_num_load_retries: how many times a version that failed to load is tried again (with
            ``load_retry_interval_s`` doubling between tries), as ``tensorflow_model_server``'s flag; a
            version whose files change is tried afresh.
        load_retry_interval_s: seconds before the first retry.
    """

    models: tuple[ServedModel, ...]
    host: str = "127.0.0.1"
    port: int = 8500
    max_workers: int = 16
    grpc_max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    file_system_poll_wait_seconds: float = 1.0
    batching: BatchingOptions | None = None
    limits: RequestLimits = RequestLimits()
    max_num_load_retries: int = 5
    load_retry_interval_s: float = 1.0


def served_models_from_proto(proto: model_server_config_pb2.ModelServerConfig) -> list[ServedModel]:
    """Validates a ``ModelServerConfig`` and turns it into :class:`ServedModel` values.

    Args:
        proto: the config, as read from a ``model_config_file`` or a ``ReloadConfigRequest``.

    Returns:
        One :class:`ServedModel` per configured model, in file order.

    Raises:
        ValueError: a custom config, no model, a duplicate or empty name, an empty base path, a platform
            other than ``tensorflow``, or an invalid version policy.
    """
    if proto.WhichOneof("config") != "model_config_list":
        raise ValueError("only model_config_list is supported (custom_model_config is not)")
    configs = []
    for entry in proto.model_config_list.config:
        if not entry.name:
            raise ValueError("a model config has no name")
        if not entry.base_path:
            raise ValueError(f"model {entry.name!r} has no base_path")
        if entry.model_platform not in _PLATFORMS:
            raise ValueError(f"model {entry.name!r}: unsupported model_platform {entry.model_platform!r}")
        if entry.HasField("logging_config"):
            _LOG.warning("model %r: logging_config is not supported and is ignored", entry.name)
        configs.append(
            ServedModel(
                name=entry.name,
                base_path=_absolute_base_path(entry.base_path),
                version_policy=_version_policy_from_proto(entry),
                version_labels=dict(entry.version_labels),
            )
        )
    if not configs:
        raise ValueError("the model config lists no model")
    names = [c.name for c in configs]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"duplicate model name(s): {', '.join(duplicates)}")
    return configs


def model_server_config(models: Iterable[ServedModel]) -> model_server_config_pb2.ModelServerConfig:
    """The ``ModelServerConfig`` of ``models``: the inverse of :func:`served_models_from_proto`.

    Args:
        models: the models to configure (validated as a config file is, names unique).

    Returns:
        A ``model_config_list`` with one ``tensorflow`` entry per model, in order.

    Raises:
        ValueError: what :func:`served_models_from_proto` rejects (no model, duplicate names...).
    """
    proto = model_server_config_pb2.ModelServerConfig()
    entries = proto.model_config_list.config
    for model in models:
        entry = entries.add(name=model.name, base_path=model.base_path, model_platform="tensorflow")
        policy = model.version_policy
        if policy.kind == "latest":
            entry.model_version_policy.latest.num_versions = policy.num_versions
        elif policy.kind == "specific":
            entry.model_version_policy.specific.versions.extend(sorted(policy.versions))
        else:
            entry.model_version_policy.all.SetInParent()
        entry.version_labels.update(model.version_labels)
    served_models_from_proto(proto)  # the same checks as a file read back
    return proto


def write_model_config_file(path: str, models: Iterable[ServedModel]) -> str:
    """Writes ``models`` as a text ``ModelServerConfig`` (``--model_config_file``), atomically.

    The file is written beside ``path`` and renamed into place, so that a reader (a starting server,
    TF Serving's ``--model_config_file_poll_wait_seconds``) never sees half a file.

    Args:
        path: the local file to (over)write.
        models: the models to configure.

    Returns:
        ``path``.

    Raises:
        ValueError: as :func:`model_server_config`.
    """
    text = text_format.MessageToString(model_server_config(models))
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    temporary = os.path.join(directory, f".{os.path.basename(path)}.{os.getpid()}.tmp")
    with open(temporary, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(temporary, path)
    return path


def _version_policy_from_proto(entry: model_server_config_pb2.ModelConfig) -> VersionPolicy:
    policy = entry.model_version_policy
    kind = policy.WhichOneof("policy_choice") or "latest"
    try:
        if kind == "latest":
            return VersionPolicy("latest", num_versions=policy.latest.num_versions or 1)
        if kind == "specific":
            return VersionPolicy("specific", versions=frozenset(policy.specific.versions))
        return VersionPolicy("all")
    except ValueError as e:
        raise ValueError(f"model {entry.name!r}: {e}") from e


def read_model_config_file(path: str) -> list[ServedModel]:
    """Reads a text ``ModelServerConfig`` file (``--model_config_file``).

    Args:
        path: the file, local or on a TensorFlow file system (``gs://...``), as TF Serving accepts.

    Returns:
        The models it configures.

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file does not parse or fails :func:`served_models_from_proto`'s checks.
    """
    text = _read_text(path)
    proto = model_server_config_pb2.ModelServerConfig()
    try:
        text_format.Parse(text, proto)
        return served_models_from_proto(proto)
    except (text_format.ParseError, ValueError) as e:
        raise ValueError(f"{path}: {e}") from e


def _read_text(path: str) -> str:
    """A UTF-8 file's text; TensorFlow (``tf.io.gfile``) is imported only for a URI.

    Raises:
        FileNotFoundError: no such file.
    """
    if not _is_uri(path):
        with open(path, encoding="utf-8") as f:
            return f.read()
    import tensorflow as tf

    try:
        with tf.io.gfile.GFile(path) as f:
            return f.read()
    except tf.errors.NotFoundError:
        raise FileNotFoundError(f"no such file: {path}") from None


def add_server_flags(parser: argparse.ArgumentParser) -> None:
    """Registers the ``tensorflow_model_server``-style flags of ``dmirec serve`` on ``parser``."""
    parser.add_argument(
        "--port",
        type=_port,
        default=8500,
        metavar="PORT",
        help="gRPC port (default: 8500; 0 picks any free one)",
    )
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        metavar="HOST",
        help="interface to bind (default: 127.0.0.1; use 0.0.0.0 only on a trusted network)",
    )
    parser.add_argument(
        "--model_name",
        default="default",
        metavar="NAME",
        help="name of the model given by --model_base_path (default: default)",
    )
    parser.add_argument(
        "--model_base_path",
        metavar="DIR",
        help="directory of integer-named SavedModel versions to serve under --model_name",
    )
    parser.add_argument(
        "--model_config_file",
        metavar="FILE",
        help="text ModelServerConfig (model_config_list) naming one or more models; "
        "replaces --model_name and --model_base_path",
    )
    parser.add_argument(
        "--file_system_poll_wait_seconds",
        type=_non_negative_float,
        default=1.0,
        metavar="SECONDS",
        help="seconds between scans of each base path for new versions; 0 scans once, at start-up "
        "(default: 1, as tensorflow_model_server)",
    )
    parser.add_argument(
        "--max_workers", type=_positive_int, default=16, metavar="N", help="RPC worker threads (default: 16)"
    )
    parser.add_argument(
        "--grpc_max_message_bytes",
        type=_positive_int,
        default=DEFAULT_MAX_MESSAGE_BYTES,
        metavar="BYTES",
        help=f"largest request/response message in bytes (default: {DEFAULT_MAX_MESSAGE_BYTES})",
    )
    parser.add_argument(
        "--tensorflow_intra_op_parallelism",
        type=_non_negative_int,
        default=0,
        metavar="N",
        help="threads of one TensorFlow op (default: 0 = TensorFlow's choice, as tensorflow_model_server); "
        "1 gives the lowest batch-1 latency for the DMI servables on 2 cores",
    )
    parser.add_argument(
        "--tensorflow_inter_op_parallelism",
        type=_non_negative_int,
        default=0,
        metavar="N",
        help="ops run in parallel (default: 0 = TensorFlow's choice, as tensorflow_model_server); 1 takes "
        "~0.1 ms off a batch-1 DMI request on 2 cores, for up to 15 %% of the throughput at 16 concurrent "
        "clients (docs/performance.md)",
    )
    parser.add_argument(
        "--enable_batching",
        action="store_true",
        help="merge concurrent Predict requests for the same model and signature into one run",
    )
    parser.add_argument(
        "--batching_max_batch_size",
        type=_positive_int,
        default=BatchingOptions.max_batch_size,
        metavar="ROWS",
        help=f"most rows in one merged run (default: {BatchingOptions.max_batch_size})",
    )
    parser.add_argument(
        "--batching_timeout_micros",
        type=_non_negative_int,
        default=int(BatchingOptions.timeout_s * 1e6),
        metavar="MICROS",
        help="how long a batch waits for more requests, in microseconds "
        f"(default: {int(BatchingOptions.timeout_s * 1e6)})",
    )


    parser.add_argument(
        "--max_batch_rows",
        type=_positive_int,
        default=RequestLimits.max_batch_rows,
        metavar="ROWS",
        help=f"most rows (users) per request (default: {RequestLimits.max_batch_rows})",
    )
    parser.add_argument(
        "--max_row_elements",
        type=_positive_int,
        default=RequestLimits.max_row_elements,
        metavar="N",
        help=f"most elements per row of a batch input, i.e. history length (default: "
        f"{RequestLimits.max_row_elements})",
    )
    parser.add_argument(
        "--max_request_elements",
        type=_positive_int,
        default=RequestLimits.max_request_elements,
        metavar="N",
        help=f"most elements of all inputs of a request (default: {RequestLimits.max_request_elements})",
    )
    parser.add_argument(
        "--max_num_load_retries",
        type=_non_negative_int,
        default=ServerOptions.max_num_load_retries,
        metavar="N",
        help="retries of a version that failed to load, with doubling intervals (default: "
        f"{ServerOptions.max_num_load_retries}, as tensorflow_model_server); changed files reset the count",
    )
    parser.add_argument(
        "--load_retry_interval_micros",
        type=_non_negative_int,
        default=int(ServerOptions.load_retry_interval_s * 1e6),
        metavar="MICROS",
        help="wait before the first load retry, in microseconds (default: "
        f"{int(ServerOptions.load_retry_interval_s * 1e6)})",
    )


def server_options_from_flags(args: argparse.Namespace) -> ServerOptions:
    """Builds :class:`ServerOptions` from the flags :func:`add_server_flags` registered.

    Args:
        args: the parsed command line.

    Returns:
        The server options.

    Raises:
        ValueError: neither or both of ``--model_base_path`` and ``--model_config_file``, or a bad
            config file.
        FileNotFoundError: the config file does not exist.
    """
    if bool(args.model_base_path) == bool(args.model_config_file):
        raise ValueError("give exactly one of --model_base_path and --model_config_file")
    if args.model_config_file:
        models = read_model_config_file(args.model_config_file)
    else:
        models = [ServedModel(name=args.model_name, base_path=_absolute_base_path(args.model_base_path))]
    batching = None
    if args.enable_batching:
        batching = BatchingOptions(
            max_batch_size=args.batching_max_batch_size, timeout_s=args.batching_timeout_micros / 1e6
        )
    return ServerOptions(
        models=tuple(models),
        host=args.host,
        port=args.port,
        max_workers=args.max_workers,
        grpc_max_message_bytes=args.grpc_max_message_bytes,
        file_system_poll_wait_seconds=args.file_system_poll_wait_seconds,
        batching=batching,
        limits=RequestLimits(args.max_batch_rows, args.max_row_elements, args.max_request_elements),
        max_num_load_retries=args.max_num_load_retries,
        load_retry_interval_s=args.load_retry_interval_micros / 1e6,
    )


def _port(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port in 0..65535, got {text}")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text}")
    return value


def _non_negative_float(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative number, got {text}")
    return value
