"""Model versions on disk, loaded and swapped while the server runs (TF Serving's manager, in small).

Each configured model gets a :class:`ModelManager`. A poll scans the model's base path for integer-named
version directories that hold a complete SavedModel (``saved_model.pb`` is the last file TensorFlow writes),
asks the version policy which to serve, loads the missing ones (replaying their warm-up requests) and only
then unloads the versions they replace, so the model never stops answering:

- a new version is loaded in the background and swapped in atomically; a request holds the
  :class:`~serving.servable.Servable` it started with (:meth:`ModelManager.acquire`), and an unloaded
  version stays UNLOADING until its in-flight requests have finished;
- a version that fails to load is reported (state END with its error code and message) and tried again at
  later polls, up to ``max_num_load_retries`` times with an interval doubling from
  ``load_retry_interval_s`` (TF Serving's flags of those names); a version whose files change (a copy
  still in progress when it was first tried) is tried afresh at once. Until it loads, the policy chooses
  among the other versions, so the previous version keeps serving;
- a version removed from disk is unloaded once the policy's choice among the remaining ones is loaded,
  and a failed version that is removed is forgotten;
- if the base path becomes empty or unreadable, the loaded versions keep serving (a safer choice than TF
  Serving's unloading for an empty path: a mistaken ``rm`` or a storage outage must not stop the model).

:class:`ModelRegistry` holds the managers by model name and applies (re)configurations.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import logging
import os
import re
import threading
import time
from collections.abc import Iterator, Sequence

import tensorflow as tf
from google.protobuf import message as message_lib
from tensorflow_serving.apis import get_model_status_pb2, model_pb2

from serving.server_config import ServedModel
from serving.errors import StatusError, not_found
from serving.servable import SAVED_MODEL_FILENAMES, Servable
from serving.warmup import replay_warmup_requests

_LOG = logging.getLogger(__name__)

_VERSION_DIR = re.compile(r"[0-9]+")
_DRAIN_TIMEOUT_S = 30.0
_MAX_RETRY_INTERVAL_S = 300.0
_OK = 0
_State = get_model_status_pb2.ModelVersionStatus.State


class VersionState(enum.IntEnum):
    """Lifecycle of one version, numbered as ``ModelVersionStatus.State``."""

    LOADING = _State.LOADING
    AVAILABLE = _State.AVAILABLE
    UNLOADING = _State.UNLOADING
    END = _State.END


@dataclasses.dataclass(frozen=True)
class ManagedVersionStatus:
    """Where one version stands, as its manager records it (the server reports it from this record).

    The client's view of the same report is ``serving.client.ReportedVersionStatus``.

    Attributes:
        version: the version number.
        state: its lifecycle state.
        error_code: ``tensorflow.error.Code`` of a failed load (0, OK, otherwise).
        error_message: why the load failed; empty otherwise.
    """

    version: int
    state: VersionState
    error_code: int = _OK
    error_message: str = ""

    @property
    def failed(self) -> bool:
        """Whether this version failed to load."""
        return self.error_code != _OK


def scan_versions(base_path: str) -> dict[int, str]:
    """The complete SavedModel versions under a base path.

    Args:
        base_path: the model's base path (local or any TensorFlow file system, e.g. ``gs://``).

    Returns:
        Version number to directory, for integer-named subdirectories holding ``saved_model.pb`` (or
        ``.pbtxt``); directories still being written (no ``saved_model.pb`` yet) are left out.

    Raises:
        tf.errors.OpError: the base path cannot be listed (e.g. it does not exist).
    """
    versions = {}
    for entry in tf.io.gfile.listdir(base_path):
        name = entry.rstrip("/")
        path = os.path.join(base_path, name)
        if _VERSION_DIR.fullmatch(name) and any(
            tf.io.gfile.exists(os.path.join(path, f)) for f in SAVED_MODEL_FILENAMES
        ):
            versions[int(name)] = path
    return versions


class _InFlight:
    """Counts the requests using one servable, so that unloading it can wait for them to finish."""

    def __init__(self) -> None:
        self._count = 0
        self._changed = threading.Condition()

    def enter(self) -> None:
        with self._changed:
            self._count += 1

    def exit(self) -> None:
        with self._changed:
            self._count -= 1
            self._changed.notify_all()

    def wait_idle(self, timeout_s: float) -> bool:
        """Waits until no request uses the servable; returns False on timeout."""
        with self._changed:
            return self._changed.wait_for(lambda: self._count == 0, timeout_s)


def load_error_code(error: BaseException) -> int:
    """The ``tensorflow.error.Code`` a failed load reports (never UNKNOWN for an error we can name).

    Args:
        error: what loading (or warming up) the version raised.

    Returns:
        TensorFlow's own code for TensorFlow errors and request statuses of a failed warm-up; NOT_FOUND for
        missing files, DATA_LOSS for files that do not parse, RESOURCE_EXHAUSTED for memory, UNAVAILABLE
        for other I/O errors, INTERNAL otherwise.
    """
    codes = tf.errors
    if isinstance(error, tf.errors.OpError):
        return error.error_code
    if isinstance(error, StatusError):
        return error.code.value[0]
    if isinstance(error, FileNotFoundError):
        return codes.NOT_FOUND
    if isinstance(error, (ValueError, message_lib.DecodeError)):
        return codes.DATA_LOSS
    if isinstance(error, MemoryError):
        return codes.RESOURCE_EXHAUSTED
    if isinstance(error, OSError):
        return codes.UNAVAILABLE
    return codes.INTERNAL


def version_fingerprint(path: str) -> tuple[tuple[str, int], ...]:
    """The files of a version directory with their sizes: what changes while a copy is in progress."""
    files = []
    for directory, _, names in tf.io.gfile.walk(path):
        for name in names:
            full = os.path.join(directory, name)
            try:
                size = tf.io.gfile.stat(full).length
            except tf.errors.OpError:  # removed while listing
                size = -1
            files.append((os.path.relpath(full, path), size))
    return tuple(sorted(files))


@dataclasses.dataclass(frozen=True)
class _Failure:
    """A version that failed to load: its failed tries, when it may be tried again, its files at the time."""

    attempts: int
    retry_at: float
    fingerprint: tuple[tuple[str, int], ...]


@dataclasses.dataclass(frozen=True)
class _Loaded:
    """A serving version and the requests using it."""

    servable: Servable
    in_flight: _InFlight


class ModelManager:
    """Loads, serves and unloads the versions of one model, polling its base path in a background thread."""

    def __init__(self, config: ServedModel, max_num_load_retries: int = 5, load_retry_interval_s: float = 1.0):
        """Creates a manager that serves nothing until its first :meth:`poll`.

        Args:
            config: the model's name, base path, version policy and labels.
            max_num_load_retries: how many times a failed version is tried again (unless its files change).
            load_retry_interval_s: seconds before the first retry; each further one waits twice as long.
        """
        self.config = config
        self._max_retries = max_num_load_retries
        self._retry_interval_s = load_retry_interval_s
        self._failures: dict[int, _Failure] = {}
        self._lock = threading.Lock()
        self._poll_lock = threading.Lock()
        self._loaded: dict[int, _Loaded] = {}
        self._statuses: dict[int, ManagedVersionStatus] = {}
        self._scan_problem = ""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def name(self) -> str:
        """The model name."""
        return self.config.name

    def start_polling(self, interval_s: float) -> None:
        """Polls the base path every ``interval_s`` seconds in a daemon thread until :meth:`stop`.

        Args:
            interval_s: seconds between polls; 0 starts no thread.
        """
        if interval_s <= 0 or self._thread is not None:
            return
        self._thread = threading.Thread(
            target=self._poll_loop, args=(interval_s,), name=f"poll-{self.name}", daemon=True
        )
        self._thread.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stops polling (waiting up to ``timeout_s`` for a load in progress) and unloads every version."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            if self._thread.is_alive():
                _LOG.warning(
                    "model %r: poller still busy after %.0f s; unloading anyway", self.name, timeout_s
                )
        with self._lock:
            versions = sorted(self._loaded)
        for version in versions:
            self._unload(version)

    def poll(self) -> None:
        """Scans the base path once and loads and unloads versions to match the version policy."""
        with self._poll_lock:
            try:
                on_disk = scan_versions(self.config.base_path)
            except tf.errors.OpError as e:
                self._report_scan_problem(f"cannot list base path {self.config.base_path}: {e.message}")
                return
            empty = f"no version under base path {self.config.base_path}"
            self._report_scan_problem("" if on_disk else empty)
            self._review_failures(on_disk)
            while not self._stop.is_set():
                with self._lock:
                    missing = sorted(self._target_versions(on_disk) - self._loaded.keys())
                    if not missing:
                        break
                    version = missing[-1]
                    self._statuses[version] = ManagedVersionStatus(version, VersionState.LOADING)
                self._load(version, on_disk[version])
            with self._lock:
                target = self._target_versions(on_disk)
                replaced = bool(target) and target <= self._loaded.keys()
                stale = sorted(self._loaded.keys() - target) if replaced else []
            for version in stale:
                self._unload(version)

    @contextlib.contextmanager
    def acquire(self, model_spec: model_pb2.ModelSpec) -> Iterator[Servable]:
        """Holds the loaded version a request asks for while the request runs.

        Args:
            model_spec: the request's model spec; with neither ``version`` nor ``version_label``, the
                newest loaded version.

        Yields:
            The servable; it is not unloaded before the ``with`` block ends.

        Raises:
            StatusError: ``NOT_FOUND`` for an unknown label or a version that is not loaded.
        """
        with self._lock:
            version = self._requested_version(model_spec)
            loaded = self._loaded.get(version)
            if loaded is None:
                available = ", ".join(map(str, sorted(self._loaded))) or "none"
                raise not_found(
                    f"model {self.name!r} version {version} is not available (available: {available})"
                )
            loaded.in_flight.enter()
        try:
            yield loaded.servable
        finally:
            loaded.in_flight.exit()

    def statuses(self) -> list[ManagedVersionStatus]:
        """Every version seen so far (loading, available, unloading, unloaded or failed), newest first."""
        with self._lock:
            return [self._statuses[v] for v in sorted(self._statuses, reverse=True)]

    def _requested_version(self, model_spec: model_pb2.ModelSpec) -> int:
        choice = model_spec.WhichOneof("version_choice")
        if choice == "version":
            return model_spec.version.value
        if choice == "version_label":
            label = model_spec.version_label
            if label not in self.config.version_labels:
                raise not_found(f"model {self.name!r} has no version label {label!r}")
            return self.config.version_labels[label]
        if not self._loaded:
            raise not_found(f"model {self.name!r} has no available version")
        return max(self._loaded)

    def _target_versions(self, on_disk: dict[int, str]) -> frozenset[int]:
        """The policy's choice among the versions on disk that are not waiting for a retry."""
        now = time.monotonic()
        waiting = {
            v for v, f in self._failures.items() if f.attempts > self._max_retries or now < f.retry_at
        }
        return self.config.version_policy.select(on_disk.keys() - waiting)

    def _review_failures(self, on_disk: dict[int, str]) -> None:
        """Forgets failed versions that are gone; makes those whose files changed eligible at once."""
        for version, failure in list(self._failures.items()):
            if version not in on_disk:
                with self._lock:
                    del self._failures[version]
                    if version not in self._loaded:
                        self._statuses.pop(version, None)
                _LOG.info("model %r version %d: removed from disk, forgotten", self.name, version)
            elif version_fingerprint(on_disk[version]) != failure.fingerprint:
                with self._lock:
                    self._failures[version] = _Failure(0, 0.0, failure.fingerprint)
                _LOG.info("model %r version %d: files changed since its failed load, trying again", self.name, version)

    def _load(self, version: int, path: str) -> None:
        start = time.monotonic()
        _LOG.info("model %r version %d: loading from %s", self.name, version, path)
        fingerprint = version_fingerprint(path)
        try:
            servable = Servable.load(self.name, version, path)
            warmups = replay_warmup_requests(servable)
        except Exception as e:  # a broken version must never stop the model or the poller
            code = load_error_code(e)
            detail = e.message if isinstance(e, (tf.errors.OpError, StatusError)) else str(e)
            message = f"{type(e).__name__}: {detail}"[:2048]
            retries = self._failures[version].attempts if version in self._failures else 0  # done so far
            interval = min(_MAX_RETRY_INTERVAL_S, self._retry_interval_s * 2**retries)
            with self._lock:
                self._statuses[version] = ManagedVersionStatus(version, VersionState.END, code, message)
                self._failures[version] = _Failure(retries + 1, time.monotonic() + interval, fingerprint)
            retry = (
                f"retry {retries + 1} of {self._max_retries} in {interval:.1f} s"
                if retries < self._max_retries
                else "no retries left until its files change"
            )
            _LOG.error(
                "model %r version %d failed to load from %s after %.0f ms (%s): %s",
                self.name, version, path, _elapsed_ms(start), retry, message,
            )
            return
        with self._lock:
            self._failures.pop(version, None)
            if self._stop.is_set():  # stopped while loading: drop the version instead of serving it
                self._statuses[version] = ManagedVersionStatus(version, VersionState.END)
                return
            self._loaded[version] = _Loaded(servable, _InFlight())
            self._statuses[version] = ManagedVersionStatus(version, VersionState.AVAILABLE)
        _LOG.info(
            "model %r version %d loaded from %s in %.0f ms (%d warm-up requests)",
            self.name, version, path, _elapsed_ms(start), warmups,
        )

    def _unload(self, version: int) -> None:
        start = time.monotonic()
        with self._lock:
            loaded = self._loaded.pop(version, None)
            if loaded is None:  # already unloaded by a concurrent stop()
                return
            self._statuses[version] = ManagedVersionStatus(version, VersionState.UNLOADING)
        if not loaded.in_flight.wait_idle(_DRAIN_TIMEOUT_S):
            _LOG.warning(
                "model %r version %d: requests still running after %.0f s; unloading anyway",
                self.name, version, _DRAIN_TIMEOUT_S,
            )
        with self._lock:
            self._statuses[version] = ManagedVersionStatus(version, VersionState.END)
        _LOG.info("model %r version %d unloaded in %.0f ms", self.name, version, _elapsed_ms(start))

    def _report_scan_problem(self, problem: str) -> None:
        if problem != self._scan_problem and problem:
            _LOG.warning("model %r: %s", self.name, problem)
        self._scan_problem = problem

    def _poll_loop(self, interval_s: float) -> None:
        while not self._stop.wait(interval_s):
            try:
                self.poll()
            except Exception:  # keep polling: the next scan may succeed
                _LOG.exception("model %r: poll failed", self.name)


class ModelRegistry:
    """The served models by name: starts, replaces and stops their managers as the configuration changes."""

    def __init__(self, poll_interval_s: float, max_num_load_retries: int = 5, load_retry_interval_s: float = 1.0):
        """Creates an empty registry.

        Args:
            poll_interval_s: seconds between polls of each base path; 0 polls once, when a model is added.
            max_num_load_retries: retries of a version that failed to load (see :class:`ModelManager`).
            load_retry_interval_s: seconds before the first retry.
        """
        self._poll_interval_s = poll_interval_s
        self._retries = (max_num_load_retries, load_retry_interval_s)
        self._managers: dict[str, ModelManager] = {}
        self._lock = threading.Lock()
        self._apply_lock = threading.Lock()

    def apply(self, configs: Sequence[ServedModel]) -> None:
        """Makes the registry serve exactly ``configs``.

        New models, and models whose config changed, get a new manager that loads its versions before it
        replaces the old one, so a changed model keeps answering; models no longer configured are stopped.

        Args:
            configs: the complete new list of models.
        """
        with self._apply_lock:
            with self._lock:
                current = dict(self._managers)
            wanted = {c.name: c for c in configs}
            fresh = {}
            for name, config in wanted.items():
                if name in current and current[name].config == config:
                    continue
                manager = ModelManager(config, *self._retries)
                manager.poll()
                manager.start_polling(self._poll_interval_s)
                fresh[name] = manager
            with self._lock:
                self._managers = {name: fresh.get(name) or current[name] for name in wanted}
            for name, manager in current.items():
                if name not in wanted or name in fresh:
                    manager.stop()

    def manager(self, name: str) -> ModelManager:
        """The manager of a model.

        Raises:
            StatusError: ``NOT_FOUND`` if no model has that name.
        """
        with self._lock:
            manager = self._managers.get(name)
            if manager is None:
                served = ", ".join(sorted(self._managers)) or "none"
                raise not_found(f"no model named {name!r} (models: {served})")
            return manager

    def acquire(self, model_spec: model_pb2.ModelSpec) -> contextlib.AbstractContextManager[Servable]:
        """Holds the servable a request's model spec names (see :meth:`ModelManager.acquire`)."""
        return self.manager(model_spec.name).acquire(model_spec)

    def managers(self) -> list[ModelManager]:
        """The managers, sorted by model name."""
        with self._lock:
            return [self._managers[name] for name in sorted(self._managers)]

    def stop(self) -> None:
        """Stops every manager and unloads every version."""
        with self._apply_lock:
            with self._lock:
                managers, self._managers = list(self._managers.values()), {}
            for manager in managers:
                manager.stop()


def _elapsed_ms(start: float) -> float:
    return (time.monotonic() - start) * 1000.0
