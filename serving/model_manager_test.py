"""Tests of serving/model_manager.py: scanning, version policy, failed loads, swaps and unloading."""

from __future__ import annotations

import os
import shutil
import threading
import time

import grpc
import pytest
import tensorflow as tf
from tensorflow_serving.apis import model_pb2

from serving.server_config import ServedModel, VersionPolicy
from serving.errors import StatusError
from serving.model_manager import ModelManager, ModelRegistry, VersionState, load_error_code, scan_versions
from serving.testing import ReferenceModel, write_broken_version


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> str:
    """Versions 1 and 2 of the reference model, written once and copied by each test."""
    base = str(tmp_path_factory.mktemp("pristine"))
    ReferenceModel.random(seed=1).save(base, 1)
    ReferenceModel.random(seed=2).save(base, 2)
    return base


def _copy_version(pristine: str, base: str, version: int, as_version: int | None = None) -> None:
    shutil.copytree(os.path.join(pristine, str(version)), os.path.join(base, str(as_version or version)))


def _spec(version: int | None = None, label: str | None = None) -> model_pb2.ModelSpec:
    spec = model_pb2.ModelSpec(name="dmi")
    if version is not None:
        spec.version.value = version
    if label is not None:
        spec.version_label = label
    return spec


def _served_version(manager: ModelManager, spec: model_pb2.ModelSpec | None = None) -> int:
    with manager.acquire(spec or _spec()) as servable:
        return servable.version


def _states(manager: ModelManager) -> dict[int, VersionState]:
    return {s.version: s.state for s in manager.statuses()}


def test_scan_keeps_complete_integer_versions_only(tmp_path, pristine):
    _copy_version(pristine, str(tmp_path), 1)
    os.makedirs(tmp_path / "2" / "variables")  # still being written: no saved_model.pb yet
    os.makedirs(tmp_path / "latest")
    (tmp_path / "3").write_text("a file, not a directory")
    assert scan_versions(str(tmp_path)) == {1: str(tmp_path / "1")}


def test_serves_newest_version_and_swaps_in_new_ones(tmp_path, pristine):
    _copy_version(pristine, str(tmp_path), 1)
    manager = ModelManager(ServedModel("dmi", str(tmp_path)))
    manager.poll()
    assert _served_version(manager) == 1
    _copy_version(pristine, str(tmp_path), 2)
    manager.poll()
    assert _served_version(manager) == 2
    assert _states(manager) == {2: VersionState.AVAILABLE, 1: VersionState.END}
    with pytest.raises(StatusError, match="version 1 is not available") as error:
        _served_version(manager, _spec(version=1))
    assert error.value.code.name == "NOT_FOUND"
    manager.stop()
    assert _states(manager) == {2: VersionState.END, 1: VersionState.END}


def test_broken_version_is_reported_and_previous_keeps_serving(tmp_path, pristine):
    _copy_version(pristine, str(tmp_path), 1)
    manager = ModelManager(ServedModel("dmi", str(tmp_path)))
    manager.poll()
    write_broken_version(str(tmp_path), 2)
    manager.poll()
    manager.poll()  # not retried before its retry interval has passed
    assert _served_version(manager) == 1
    broken, good = manager.statuses()
    assert (broken.version, broken.state, good.state) == (2, VersionState.END, VersionState.AVAILABLE)
    assert broken.failed and "saved_model.pb" in broken.error_message
    _copy_version(pristine, str(tmp_path), 2, as_version=3)
    manager.poll()
    assert _served_version(manager) == 3
    manager.stop()


def test_keeps_serving_when_versions_disappear(tmp_path, pristine):
    _copy_version(pristine, str(tmp_path), 1)
    _copy_version(pristine, str(tmp_path), 2)
    manager = ModelManager(ServedModel("dmi", str(tmp_path)))
    manager.poll()
    shutil.rmtree(tmp_path / "2")
    manager.poll()  # version 1 is loaded before version 2 goes
    assert _served_version(manager) == 1
    shutil.rmtree(tmp_path / "1")
    manager.poll()  # nothing left to replace it: version 1 keeps serving
    assert _served_version(manager) == 1
    manager.stop()


def test_base_path_created_after_start_is_picked_up(tmp_path, pristine, caplog):
    base = tmp_path / "not-yet"
    manager = ModelManager(ServedModel("dmi", str(base)))
    manager.poll()
    manager.poll()
    assert caplog.text.count("cannot list base path") == 1  # reported once, not at every poll
    with pytest.raises(StatusError, match="has no available version"):
        _served_version(manager)
    _copy_version(pristine, str(base), 1)
    manager.poll()
    assert _served_version(manager) == 1
    manager.stop()


def test_version_policy_and_labels(tmp_path, pristine):
    _copy_version(pristine, str(tmp_path), 1)
    _copy_version(pristine, str(tmp_path), 2)
    config = ServedModel(
        "dmi", str(tmp_path), VersionPolicy("all"), version_labels={"stable": 1, "gone": 9}
    )
    manager = ModelManager(config)
    manager.poll()
    assert _served_version(manager) == 2
    assert _served_version(manager, _spec(version=1)) == 1
    assert _served_version(manager, _spec(label="stable")) == 1
    with pytest.raises(StatusError, match="no version label 'canary'"):
        _served_version(manager, _spec(label="canary"))
    with pytest.raises(StatusError, match="version 9 is not available"):
        _served_version(manager, _spec(label="gone"))
    manager.stop()


def test_unloading_waits_for_in_flight_requests(tmp_path, pristine):
    _copy_version(pristine, str(tmp_path), 1)
    manager = ModelManager(ServedModel("dmi", str(tmp_path)))
    manager.poll()
    with manager.acquire(_spec()) as servable:
        _copy_version(pristine, str(tmp_path), 2)
        poller = threading.Thread(target=manager.poll)
        poller.start()
        deadline = threading.Event()
        for _ in range(100):  # at most ~10 s
            if _states(manager).get(1) == VersionState.UNLOADING:
                break
            deadline.wait(0.1)
        assert _states(manager) == {2: VersionState.AVAILABLE, 1: VersionState.UNLOADING}
        assert servable.version == 1 and servable.signature("").name == "serving_default"
    poller.join(10)
    assert _states(manager)[1] == VersionState.END
    manager.stop()


def test_registry_adds_replaces_and_removes_models(tmp_path, pristine):
    for name in ("a", "b"):
        _copy_version(pristine, str(tmp_path / name), 1)
    registry = ModelRegistry(poll_interval_s=0)
    registry.apply([ServedModel("a", str(tmp_path / "a"))])
    first = registry.manager("a")
    registry.apply([ServedModel("a", str(tmp_path / "a")), ServedModel("b", str(tmp_path / "b"))])
    assert registry.manager("a") is first  # unchanged config: untouched
    registry.apply([ServedModel("b", str(tmp_path / "b"), VersionPolicy("all"))])
    with pytest.raises(StatusError, match="no model named 'a'"):
        registry.manager("a")
    assert _states(first) == {1: VersionState.END}
    assert [m.name for m in registry.managers()] == ["b"]
    registry.stop()


def test_a_version_copied_non_atomically_is_loaded_once_complete(tmp_path, pristine):
    """``saved_model.pb`` first, ``variables/`` later (as a plain recursive copy may write them)."""
    _copy_version(pristine, str(tmp_path), 1)
    manager = ModelManager(ServedModel("dmi", str(tmp_path)), load_retry_interval_s=3600)
    manager.poll()
    source, target = os.path.join(pristine, "2"), tmp_path / "2"
    os.makedirs(target)
    shutil.copy(os.path.join(source, "saved_model.pb"), target)
    manager.poll()
    assert _served_version(manager) == 1 and manager.statuses()[0].failed
    for name in sorted(os.listdir(source)):
        path = os.path.join(source, name)
        if name != "saved_model.pb":
            (shutil.copytree if os.path.isdir(path) else shutil.copy)(path, target / name)
    manager.poll()  # the files changed: tried again at once, well before the retry interval
    assert _served_version(manager) == 2
    assert not manager.statuses()[0].failed
    manager.stop()


def test_a_failed_load_is_retried_with_back_off_then_given_up(tmp_path, pristine, caplog):
    _copy_version(pristine, str(tmp_path), 1)
    write_broken_version(str(tmp_path), 2)
    manager = ModelManager(ServedModel("dmi", str(tmp_path)), max_num_load_retries=2, load_retry_interval_s=0.05)
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline:
        manager.poll()
        time.sleep(0.02)
    assert caplog.text.count("version 2 failed to load") == 3  # the first try and 2 retries
    assert "retry 1 of 2 in 0.1 s" in caplog.text and "retry 2 of 2 in 0.1 s" in caplog.text
    assert "no retries left" in caplog.text
    assert _served_version(manager) == 1
    status = manager.statuses()[0]
    assert status.error_code == tf.errors.DATA_LOSS and "cannot parse" in status.error_message
    shutil.rmtree(tmp_path / "2")
    manager.poll()  # a failed version that is removed is forgotten
    assert [s.version for s in manager.statuses()] == [1]
    manager.stop()


def test_load_error_codes():
    assert load_error_code(FileNotFoundError("gone")) == tf.errors.NOT_FOUND
    assert load_error_code(ValueError("cannot parse")) == tf.errors.DATA_LOSS
    assert load_error_code(MemoryError()) == tf.errors.RESOURCE_EXHAUSTED
    assert load_error_code(PermissionError("no")) == tf.errors.UNAVAILABLE
    assert load_error_code(tf.errors.FailedPreconditionError(None, None, "x")) == tf.errors.FAILED_PRECONDITION
    assert load_error_code(StatusError(grpc.StatusCode.INVALID_ARGUMENT, "bad warm-up")) == tf.errors.INVALID_ARGUMENT
    assert load_error_code(RuntimeError("bug")) == tf.errors.INTERNAL
