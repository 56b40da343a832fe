"""Tests of pushing servables: integer versions, atomic copies, nothing copied twice."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from trainer import export, push


def _export_dir(root: Path, marker: str) -> str:
    """An export directory with both servables (stand-in SavedModels: the push copies files only)."""
    for name in export.SERVABLES:
        (root / name / "variables").mkdir(parents=True)
        (root / name / "saved_model.pb").write_text(f"{marker} {name}")
        (root / name / "variables" / "variables.index").write_text(marker)
    return str(root)


def test_push_servables_writes_integer_versions_atomically(tmp_path):
    export_dir = _export_dir(tmp_path / "export", "m1")
    base = str(tmp_path / "serving")
    assert push.latest_version(os.path.join(base, export.SCANN)) == 0
    assert push.push_servables(export_dir, base) == 1
    assert push.push_servables(export_dir, base) == 2
    for name in export.SERVABLES:
        assert sorted(os.listdir(os.path.join(base, name))) == ["1", "2"]  # no temporary directory left
        assert (Path(base) / name / "2" / "saved_model.pb").read_text() == f"m1 {name}"
    assert push.latest_version(os.path.join(base, export.EXACT)) == 2
    with pytest.raises(FileExistsError):
        push.push_servables(export_dir, base, version=2)
    with pytest.raises(ValueError, match="holds no servable"):
        push.push_servables(str(tmp_path / "empty"), base)


def test_served_version_finds_the_latest_version_only_when_it_is_the_same_model(tmp_path):
    base = str(tmp_path / "serving")
    first = _export_dir(tmp_path / "m1", "m1")
    assert push.served_version(first, base) is None  # nothing served yet
    push.push_servables(first, base)
    assert push.served_version(first, base) == 1
    second = _export_dir(tmp_path / "m2", "m2")
    assert push.served_version(second, base) is None
    push.push_servables(second, base)
    assert push.served_version(first, base) is None  # version 1 holds it, but 2 is what is served
    assert push.served_version(second, base) == 2
