"""Tests of ServablePusher's push: TF Serving versioning, atomic copies, nothing pushed unless blessed."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import tensorflow as tf

from pipeline.components import servable_pusher
from trainer import export
from trainer import filesystem as fs


def _model_artifact(root: Path, marker: str) -> str:
    """A Trainer model artifact directory with both servables (stand-in SavedModels) under Format-Serving."""
    for name in export.SERVABLES:
        servable = root / "Format-Serving" / name
        (servable / "variables").mkdir(parents=True)
        (servable / "saved_model.pb").write_text(f"{marker} {name}")
        (servable / "variables" / "variables.index").write_text(marker)
    return str(root)


def _versions(serving: Path, name: str) -> list[str]:
    return sorted(os.listdir(serving / name)) if (serving / name).exists() else []


def test_not_blessed_copies_nothing(tmp_path):
    model = _model_artifact(tmp_path / "model", "m1")
    assert servable_pusher.push(model, blessed=False, serving_base=str(tmp_path / "serving")) is None
    assert not (tmp_path / "serving").exists()


def test_blessed_pushes_every_servable_as_the_next_integer_version(tmp_path):
    serving = tmp_path / "serving"
    first = servable_pusher.push(_model_artifact(tmp_path / "m1", "m1"), True, str(serving))
    assert first.version == 1
    assert first.servables == {name: str(serving / name / "1") for name in export.SERVABLES}
    assert (serving / "dmi_exact" / "1" / "saved_model.pb").read_text() == "m1 dmi_exact"
    assert (serving / "dmi" / "1" / "variables" / "variables.index").read_text() == "m1"

    # Versions need not be contiguous, and other entries (a server's temporary files) are ignored.
    (serving / "dmi" / "7").mkdir()
    (serving / "dmi" / "not-a-version").mkdir()
    second = servable_pusher.push(_model_artifact(tmp_path / "m2", "m2"), True, str(serving))
    assert second.version == 8
    assert (serving / "dmi" / "8" / "saved_model.pb").read_text() == "m2 dmi"
    assert (serving / "dmi_exact" / "8" / "saved_model.pb").read_text() == "m2 dmi_exact"
    assert (serving / "dmi" / "1" / "saved_model.pb").read_text() == "m1 dmi"  # earlier versions kept
    # Atomic copies: no temporary directory is left beside the versions.
    assert _versions(serving, "dmi") == ["1", "7", "8", "not-a-version"]
    assert _versions(serving, "dmi_exact") == ["1", "8"]


@pytest.mark.parametrize("remote", [False, True])
def test_a_model_already_served_is_not_copied_again(tmp_path, ram_root, remote):
    serving = f"{ram_root}/serving" if remote else str(tmp_path / "serving")
    model = _model_artifact(tmp_path / "m1", "m1")
    first = servable_pusher.push(model, True, serving)
    again = servable_pusher.push(model, True, serving)  # a re-run blessed the same model again
    assert (first.version, first.new) == (1, True)
    assert (again.version, again.new, again.servables) == (1, False, first.servables)
    assert fs.listdir(fs.join(serving, "dmi")) == ["1"]
    # One byte different in one file of one servable: a new version.
    (tmp_path / "m1" / "Format-Serving" / "dmi" / "variables" / "variables.index").write_text("m1!")
    changed = servable_pusher.push(model, True, serving)
    assert (changed.version, changed.new) == (2, True)
    # Only the latest version counts: the model of version 1 is pushed again as version 3.
    assert servable_pusher.push(_model_artifact(tmp_path / "m1b", "m1"), True, serving).version == 3


def test_a_failed_copy_leaves_no_partial_version(tmp_path, monkeypatch):
    serving = tmp_path / "serving"
    model = _model_artifact(tmp_path / "model", "m1")

    def failing_copytree(source, target, **kwargs):
        Path(target, "half-written").write_text("")
        raise OSError("disk full")

    monkeypatch.setattr(shutil, "copytree", failing_copytree)
    with pytest.raises(OSError, match="disk full"):
        servable_pusher.push(model, True, str(serving))
    assert _versions(serving, "dmi") == [] and _versions(serving, "dmi_exact") == []


def test_a_model_without_servables_is_an_error(tmp_path):
    (tmp_path / "model" / "Format-Serving").mkdir(parents=True)
    with pytest.raises(ValueError, match="holds no servable"):
        servable_pusher.push(str(tmp_path / "model"), True, str(tmp_path / "serving"))


def _remote_model_artifact(root: str, marker: str) -> str:
    """:func:`_model_artifact` on a TensorFlow file system URI."""
    for name in export.SERVABLES:
        servable = fs.join(root, "Format-Serving", name)
        fs.write_text(fs.join(servable, "variables", "variables.index"), marker)
        fs.write_text(fs.join(servable, "saved_model.pb"), f"{marker} {name}")
    return root


def test_pushes_to_a_remote_serving_base(tmp_path, ram_root):
    serving = fs.join(ram_root, "serving")
    first = servable_pusher.push(_model_artifact(tmp_path / "m1", "m1"), True, serving)  # local model
    second = servable_pusher.push(_remote_model_artifact(fs.join(ram_root, "m2"), "m2"), True, serving)
    assert (first.version, second.version) == (1, 2)
    assert second.servables == {name: f"{serving}/{name}/2" for name in export.SERVABLES}
    for name in export.SERVABLES:
        assert sorted(fs.listdir(fs.join(serving, name))) == ["1", "2"]
        assert fs.read_text(fs.join(serving, name, "1", "saved_model.pb")) == f"m1 {name}"
        assert fs.read_text(fs.join(serving, name, "2", "saved_model.pb")) == f"m2 {name}"
        assert fs.read_text(fs.join(serving, name, "2", "variables", "variables.index")) == "m2"


def test_a_failed_remote_copy_leaves_no_partial_version(ram_root, monkeypatch):
    serving = fs.join(ram_root, "serving")
    model = _remote_model_artifact(fs.join(ram_root, "model"), "m1")

    def failing_copy(source, target, overwrite=False):
        raise tf.errors.ResourceExhaustedError(None, None, "quota exceeded")

    monkeypatch.setattr(tf.io.gfile, "copy", failing_copy)
    with pytest.raises(tf.errors.ResourceExhaustedError, match="quota"):
        servable_pusher.push(model, True, serving)
    assert fs.listdir(fs.join(serving, export.SCANN)) == []
    assert not fs.exists(fs.join(serving, export.EXACT))
