"""Tests of trainer/filesystem.py on a local directory and on TensorFlow's in-process ``ram://``.

Each test runs on both: the local path through ``os``/``shutil``, the URI through ``tf.io.gfile``.
Expected contents are written and read back with ``tf.io.gfile`` directly, which handles both.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Callable

import pytest

import trainer  # noqa: F401  (selects Keras 2 before anything imports TensorFlow)
import tensorflow as tf

from trainer import filesystem as fs


@pytest.fixture
def root(any_root) -> str:
    """An empty directory: a local one, or one on ``ram://`` (conftest.py)."""
    return any_root


def _put(path: str, text: str) -> None:
    tf.io.gfile.makedirs(os.path.dirname(path))
    with tf.io.gfile.GFile(path, "w") as f:
        f.write(text)


def _get(path: str) -> str:
    with tf.io.gfile.GFile(path) as f:
        return f.read()


def _tree(top: str) -> dict[str, str]:
    """Relative file path -> text, for every file under ``top``."""
    return {
        os.path.relpath(fs.join(directory, name), top): _get(fs.join(directory, name))
        for directory, _, files in fs.walk(top)
        for name in files
    }


SAVED_MODEL = {
    "saved_model.pb": "graph",
    "fingerprint.pb": "fp",
    "variables/variables.index": "index",
    "variables/variables.data-00000-of-00001": "data",
    "assets.extra/tf_serving_warmup_requests": "warm-up",
}


def _saved_model(directory: str) -> str:
    """A stand-in SavedModel with the layout of an export (``assets/`` empty beside ``assets.extra/``)."""
    for name, text in SAVED_MODEL.items():
        _put(fs.join(directory, name), text)
    fs.makedirs(fs.join(directory, "assets"))
    return directory


@pytest.mark.parametrize(
    "path, expected",
    [
        ("gs://bucket/x", True),
        ("ram://x", True),
        ("s3://b/k", True),
        ("hdfs://namenode:8020/x", True),
        ("file:///tmp/x", True),
        ("/tmp/x", False),
        ("relative/x", False),
        ("c:/x", False),
        ("odd name://x", False),
    ],
)
def test_is_uri(path, expected):
    assert fs.is_uri(path) is expected


def test_join_and_parent(root):
    path = fs.join(root, "a", "b.txt")
    assert path == f"{root}/a/b.txt"
    assert fs.parent(path) == f"{root}/a"
    assert fs.parent(f"{root}/a/") == root
    assert fs.parent("relative/b.txt") == os.path.join(os.getcwd(), "relative")


def test_text_and_binary_round_trip(root):
    path = fs.join(root, "sub", "notes.txt")
    fs.makedirs(fs.parent(path))
    with fs.open_file(path, "w") as f:
        f.write("a\nb\r\nü\n")
    assert _get(path) == "a\nb\r\nü\n"
    with fs.open_file(path) as f:
        assert list(f) == ["a\n", "b\r\n", "ü\n"]  # by line, never translated
    assert fs.read_text(path) == _get(path)
    binary = fs.join(root, "blob")
    with fs.open_file(binary, "wb") as f:
        f.write(b"\x00\xff")
    with fs.open_file(binary, "rb") as f:
        assert f.read() == b"\x00\xff"
    _put(fs.join(root, "v.json"), '{"a": [1, 2]}')
    assert fs.read_json(fs.join(root, "v.json")) == {"a": [1, 2]}


def test_missing_paths_raise_file_not_found(root):
    missing = fs.join(root, "missing")
    for call in (fs.open_file, fs.read_text, fs.listdir, fs.remove, fs.rmtree):
        with pytest.raises(FileNotFoundError):
            call(missing)
    fs.rmtree(missing, ignore_errors=True)
    assert not fs.exists(missing) and not fs.isdir(missing)


def test_names_are_exact_where_ram_matches_prefixes(root):
    """``ram://`` alone answers by string prefix; the module must not (dmi vs dmi_exact, 1 vs 10)."""
    _put(fs.join(root, "dmi_exact", "10", "saved_model.pb"), "exact")
    _put(fs.join(root, "cd"), "file")
    assert not fs.exists(fs.join(root, "dmi")) and not fs.isdir(fs.join(root, "dmi"))
    assert not fs.exists(fs.join(root, "dmi_exact", "1"))
    assert not fs.exists(fs.join(root, "c"))
    assert fs.exists(fs.join(root, "cd")) and not fs.isdir(fs.join(root, "cd"))
    assert fs.isdir(fs.join(root, "dmi_exact", "10"))
    assert sorted(fs.listdir(root)) == ["cd", "dmi_exact"]

    fs.makedirs(fs.join(root, "dmi", "1"))
    fs.makedirs(fs.join(root, "dmi", "1"))  # exists already: nothing to do
    _put(fs.join(root, "dmi", "1", "saved_model.pb"), "scann")
    assert fs.listdir(fs.join(root, "dmi")) == ["1"]  # not "_exact", the tail of the sibling dmi_exact
    assert list(fs.walk(fs.join(root, "dmi"))) == [
        (fs.join(root, "dmi"), ["1"], []),
        (fs.join(root, "dmi", "1"), [], ["saved_model.pb"]),
    ]
    fs.rmtree(fs.join(root, "dmi"))
    assert not fs.exists(fs.join(root, "dmi"))
    assert sorted(fs.listdir(root)) == ["cd", "dmi_exact"]
    assert _tree(fs.join(root, "dmi_exact")) == {"10/saved_model.pb": "exact"}
    fs.remove(fs.join(root, "cd"))
    assert fs.listdir(root) == ["dmi_exact"]


def test_atomic_writer_replaces_the_file_only_on_success(root):
    path = fs.join(root, "out", "state.json")
    fs.write_text(path, "old")

    with pytest.raises(RuntimeError, match="killed"):
        with fs.atomic_writer(path) as f:
            f.write("half of the new")
            f.flush()
            raise RuntimeError("killed mid-write")
    assert _get(path) == "old"
    assert fs.listdir(fs.parent(path)) == ["state.json"]  # the temporary file is gone

    with fs.atomic_writer(path) as f:
        f.write("new\n")
        assert _get(path) == "old"  # nothing visible before the writer closes
    assert _get(path) == "new\n"
    assert fs.listdir(fs.parent(path)) == ["state.json"]


def test_a_failed_first_write_leaves_no_file(root):
    path = fs.join(root, "log.csv")
    with pytest.raises(ValueError):
        with fs.atomic_writer(path) as f:
            f.write("user_id,item_id,timestamp\n")
            raise ValueError("bad line")
    assert not fs.exists(path) and fs.listdir(root) == []


def test_write_json_and_text(root):
    fs.write_json(fs.join(root, "m.json"), {"recall@50": 0.25, "history": [1, 2]})
    assert _get(fs.join(root, "m.json")) == json.dumps({"recall@50": 0.25, "history": [1, 2]}, indent=2)
    fs.write_text(fs.join(root, "deep", "c.json"), "{}")
    assert _get(fs.join(root, "deep", "c.json")) == "{}"


def test_staged_directory_replaces_the_whole_target(root):
    target = fs.join(root, "export", "dmi")
    _put(fs.join(target, "stale.txt"), "old")
    _put(fs.join(target, "saved_model.pb"), "old graph")
    with fs.staged_directory(target, replace=True) as staging:
        _put(fs.join(staging, "saved_model.pb"), "new graph")
        _put(fs.join(staging, "variables", "variables.index"), "new index")
        assert _get(fs.join(target, "saved_model.pb")) == "old graph"  # untouched while staging
    assert _tree(target) == {"saved_model.pb": "new graph", "variables/variables.index": "new index"}
    assert fs.listdir(fs.join(root, "export")) == ["dmi"]  # the staging directory is gone


def test_a_failed_staging_keeps_the_old_target(root):
    target = fs.join(root, "export", "dmi")
    _saved_model(target)
    with pytest.raises(OSError, match="disk full"):
        with fs.staged_directory(target, replace=True) as staging:
            _put(fs.join(staging, "saved_model.pb"), "half")
            raise OSError("disk full")
    assert _tree(target) == SAVED_MODEL
    assert fs.listdir(fs.join(root, "export")) == ["dmi"]


def test_staged_directory_refuses_an_existing_target_unless_replacing(root):
    target = _saved_model(fs.join(root, "dmi"))
    with pytest.raises(FileExistsError):
        with fs.staged_directory(target):
            pass
    with fs.staged_directory(fs.join(root, "dmi_exact")) as staging:  # a new target next to it
        _put(fs.join(staging, "saved_model.pb"), "exact")
    assert _tree(fs.join(root, "dmi_exact")) == {"saved_model.pb": "exact"}
    assert _tree(target) == SAVED_MODEL


def _before_each_copy(monkeypatch, hook: Callable[[], None]) -> None:
    """Calls ``hook`` before every file copy, local (``shutil.copytree``'s) or through ``tf.io.gfile``."""
    copytree, gfile_copy = shutil.copytree, tf.io.gfile.copy

    def hooked_copy2(source, target, **kwargs):
        hook()
        return shutil.copy2(source, target, **kwargs)

    def hooked_gfile_copy(source, target, overwrite=False):
        hook()
        return gfile_copy(source, target, overwrite)

    def hooked_copytree(source, target, *args, **kwargs):
        if args:  # copytree's call for a subdirectory, hooked already
            return copytree(source, target, *args, **kwargs)
        return copytree(source, target, copy_function=hooked_copy2, **kwargs)

    monkeypatch.setattr(shutil, "copytree", hooked_copytree)
    monkeypatch.setattr(tf.io.gfile, "copy", hooked_gfile_copy)


@pytest.mark.parametrize("source_on", ["local", "same"])
def test_publish_directory_never_shows_saved_model_before_the_rest(root, tmp_path, monkeypatch, source_on):
    source = _saved_model(str(tmp_path / "export") if source_on == "local" else fs.join(root, "export"))
    target = fs.join(root, "serving", "dmi", "1")
    seen: list[bool] = []  # at each file copy: could a server see the version yet?
    _before_each_copy(monkeypatch, lambda: seen.append(fs.exists(fs.join(target, "saved_model.pb"))))
    fs.publish_directory(source, target)
    assert len(seen) == len(SAVED_MODEL) and not any(seen)
    assert _tree(target) == SAVED_MODEL
    assert fs.isdir(fs.join(target, "assets")) and fs.listdir(fs.join(target, "assets")) == []
    assert fs.listdir(fs.join(root, "serving", "dmi")) == ["1"]  # no temporary name left
    with pytest.raises(FileExistsError):
        fs.publish_directory(source, target)


def test_publish_directory_to_a_local_target_from_ram(tmp_path, ram_root):
    source = _saved_model(fs.join(ram_root, "export"))
    fs.publish_directory(source, str(tmp_path / "serving" / "1"))
    assert _tree(str(tmp_path / "serving" / "1")) == SAVED_MODEL


def test_a_failed_publish_leaves_no_target(root, monkeypatch):
    source = _saved_model(fs.join(root, "export"))
    target = fs.join(root, "serving", "7")
    copies = []

    def fail_at_the_third() -> None:
        copies.append(1)
        if len(copies) == 3:
            raise OSError("disk full")

    _before_each_copy(monkeypatch, fail_at_the_third)
    with pytest.raises(OSError, match="disk full"):
        fs.publish_directory(source, target)
    assert len(copies) >= 3  # shutil.copytree copies the rest before raising (shutil.Error is an OSError)
    assert not fs.exists(target) and fs.listdir(fs.join(root, "serving")) == []


def test_a_failed_copy_out_of_a_remote_staging_leaves_no_partial_target(ram_root, monkeypatch):
    """Remote file systems have no directory swap: the old target is gone, and so is the half copy."""
    target = _saved_model(fs.join(ram_root, "export", "dmi"))
    copies = []

    def fail_at_the_third() -> None:
        copies.append(1)
        if len(copies) == 3:
            raise OSError("quota exceeded")

    with pytest.raises(OSError, match="quota"):
        with fs.staged_directory(target, replace=True) as staging:
            _saved_model(staging)
            _before_each_copy(monkeypatch, fail_at_the_third)
    assert len(copies) == 3
    assert fs.listdir(fs.join(ram_root, "export")) == []


def test_local_paths_never_import_tensorflow(tmp_path):
    script = textwrap.dedent(
        f"""
        import sys
        from trainer import filesystem as fs, interactions, sequences
        root = {str(tmp_path)!r}
        fs.write_json(fs.join(root, "a", "v.json"), [1])
        assert fs.read_json(fs.join(root, "a", "v.json")) == [1] and fs.listdir(root) == ["a"]
        with fs.staged_directory(fs.join(root, "b")) as staging:
            fs.write_text(fs.join(staging, "saved_model.pb"), "x")
        fs.publish_directory(fs.join(root, "b"), fs.join(root, "c", "1"))
        interactions.write_log(fs.join(root, "log.csv"), [interactions.Interaction("u", "i", 1)])
        assert len(list(interactions.read_interactions(fs.join(root, "log.csv")))) == 1
        fs.rmtree(fs.join(root, "b"))
        assert sorted(fs.listdir(root)) == ["a", "c", "log.csv"] and fs.isdir(fs.join(root, "c", "1"))
        print(sorted(m for m in sys.modules if m.split(".")[0] == "tensorflow"))
        """
    )
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=repo)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_same_tree_compares_names_and_bytes(any_root):
    def tree(name: str, files: dict[str, bytes]) -> str:
        top = fs.join(any_root, name)
        for relative, data in files.items():
            fs.makedirs(fs.parent(fs.join(top, relative)))
            with fs.open_file(fs.join(top, relative), "wb") as f:
                f.write(data)
        return top

    files = {"saved_model.pb": b"graph", "variables/variables.index": b"x" * 5000, "assets/v.txt": b""}
    first = tree("a", files)
    assert fs.same_tree(first, tree("b", files), chunk_bytes=1024)
    assert not fs.same_tree(first, tree("c", {**files, "variables/variables.index": b"x" * 4999 + b"y"}), 1024)
    assert not fs.same_tree(first, tree("d", {**files, "extra": b""}))
    assert not fs.same_tree(first, tree("e", {k: v for k, v in files.items() if k != "assets/v.txt"}))
    assert not fs.same_tree(first, fs.join(any_root, "missing"))
