"""Tests of ServablePusher's push: TF Serving versioning, atomic copies, nothing pushed unless blessed."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pipeline.components import servable_pusher
from trainer import export


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


def test_a_failed_copy_leaves_no_partial_version(tmp_path, monkeypatch):
    serving = tmp_path / "serving"
    model = _model_artifact(tmp_path / "model", "m1")

    def failing_copytree(source, target, **kwargs):
        Path(target, "half-written").write_text("")
        raise OSError("disk full")

    monkeypatch.setattr(export.shutil, "copytree", failing_copytree)
    with pytest.raises(OSError, match="disk full"):
        servable_pusher.push(model, True, str(serving))
    assert _versions(serving, "dmi") == [] and _versions(serving, "dmi_exact") == []


def test_a_model_without_servables_is_an_error(tmp_path):
    (tmp_path / "model" / "Format-Serving").mkdir(parents=True)
    with pytest.raises(ValueError, match="holds no servable"):
        servable_pusher.push(str(tmp_path / "model"), True, str(tmp_path / "serving"))
