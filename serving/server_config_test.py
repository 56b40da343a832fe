"""Tests of serving/server_config.py: model config files, version policies and the ``dmirec serve`` flags."""

from __future__ import annotations

import argparse
import os

import pytest

from serving import server_config


def _write(tmp_path, text: str) -> str:
    path = tmp_path / "models.config"
    path.write_text(text)
    return str(path)


def test_reads_model_config_file_with_policies_and_labels(tmp_path):
    path = _write(
        tmp_path,
        """
        model_config_list {
          config { name: "dmi" base_path: "/models/dmi" model_platform: "tensorflow" }
          config {
            name: "baseline" base_path: "rel/baseline"
            model_version_policy { specific { versions: 2 versions: 5 } }
            version_labels { key: "stable" value: 2 }
          }
        }
        """,
    )
    dmi, baseline = server_config.read_model_config_file(path)
    assert dmi == server_config.ServedModel("dmi", "/models/dmi", server_config.VersionPolicy("latest", num_versions=1))
    assert baseline.base_path == os.path.abspath("rel/baseline")
    assert baseline.version_policy == server_config.VersionPolicy("specific", versions=frozenset({2, 5}))
    assert baseline.version_labels == {"stable": 2}


def test_written_model_config_file_reads_back_the_same_models(tmp_path):
    VersionPolicy, ServedModel = server_config.VersionPolicy, server_config.ServedModel
    models = [
        ServedModel("dmi", str(tmp_path / "dmi")),
        ServedModel("two", str(tmp_path / "two"), VersionPolicy("latest", num_versions=2)),
        ServedModel("pinned", str(tmp_path / "p"), VersionPolicy("specific", versions=frozenset({5, 2})), {"a": 2}),
        ServedModel("every", str(tmp_path / "e"), VersionPolicy("all")),
    ]
    path = str(tmp_path / "conf" / "models.config")
    assert server_config.write_model_config_file(path, models) == path
    assert server_config.read_model_config_file(path) == models
    assert os.listdir(tmp_path / "conf") == ["models.config"]  # no temporary file left behind
    with pytest.raises(ValueError, match="duplicate model name"):
        server_config.write_model_config_file(path, models[:1] * 2)
    assert server_config.read_model_config_file(path) == models  # the old file is intact


@pytest.mark.parametrize(
    "text, message",
    [
        ("model_config_list { config { name: 'a' base_path: '/a' } config { name: 'a' base_path: '/b' } }",
         "duplicate model name"),
        ("model_config_list { config { name: 'a' } }", "no base_path"),
        ("model_config_list { config { name: 'a' base_path: '/a' model_platform: 'onnx' } }",
         "model_platform"),
        ("model_config_list { }", "lists no model"),
        ("custom_model_config { }", "custom_model_config"),
        ("model_config_list { config { name: 'a' base_path: '/a' ", "models.config"),
    ],
)
def test_rejects_bad_model_config_file(tmp_path, text, message):
    with pytest.raises(ValueError, match=message):
        server_config.read_model_config_file(_write(tmp_path, text))


def test_version_policies_select_among_available_versions():
    available = {1, 3, 7, 9}
    assert server_config.VersionPolicy().select(available) == {9}
    assert server_config.VersionPolicy("latest", num_versions=2).select(available) == {7, 9}
    assert server_config.VersionPolicy("all").select(available) == available
    assert server_config.VersionPolicy("specific", versions=frozenset({3, 4})).select(available) == {3}
    assert server_config.VersionPolicy().select(set()) == frozenset()
    with pytest.raises(ValueError):
        server_config.VersionPolicy("latest", num_versions=0)


def _parse_flags(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    server_config.add_server_flags(parser)
    return parser.parse_args(argv)


def test_flags_mirror_tensorflow_model_server(tmp_path):
    args = _parse_flags(
        ["--model_name", "dmi", "--model_base_path", str(tmp_path), "--port", "0", "--enable_batching",
         "--batching_max_batch_size", "8", "--batching_timeout_micros", "500"]
    )
    options = server_config.server_options_from_flags(args)
    assert options.models == (server_config.ServedModel("dmi", str(tmp_path)),)
    assert (options.host, options.port, options.file_system_poll_wait_seconds) == ("127.0.0.1", 0, 1.0)
    assert options.batching == server_config.BatchingOptions(max_batch_size=8, timeout_s=0.0005)


def test_flags_need_exactly_one_model_source(tmp_path):
    with pytest.raises(ValueError, match="exactly one"):
        server_config.server_options_from_flags(_parse_flags([]))
    both = ["--model_base_path", str(tmp_path), "--model_config_file", str(tmp_path / "x.config")]
    with pytest.raises(ValueError, match="exactly one"):
        server_config.server_options_from_flags(_parse_flags(both))
    with pytest.raises(SystemExit):
        _parse_flags(["--model_base_path", str(tmp_path), "--port", "70000"])


def test_remote_base_paths_are_kept_as_given_and_local_ones_made_absolute(tmp_path):
    path = _write(
        tmp_path,
        """
        model_config_list {
          config { name: "gcs" base_path: "gs://bucket/models/dmi" }
          config { name: "ram" base_path: "ram://models/dmi_exact" }
          config { name: "local" base_path: "rel/dmi" }
        }
        """,
    )
    assert [c.base_path for c in server_config.read_model_config_file(path)] == [
        "gs://bucket/models/dmi",
        "ram://models/dmi_exact",
        os.path.join(os.getcwd(), "rel", "dmi"),
    ]
    options = server_config.server_options_from_flags(_parse_flags(["--model_base_path", "gs://bucket/models/dmi"]))
    assert options.models == (server_config.ServedModel("default", "gs://bucket/models/dmi"),)


def test_reads_a_model_config_file_on_a_tensorflow_file_system(ram_root):
    import tensorflow as tf

    path = f"{ram_root}/models.config"
    tf.io.gfile.makedirs(ram_root)
    with tf.io.gfile.GFile(path, "w") as f:
        f.write('model_config_list { config { name: "dmi" base_path: "ram://models/dmi" } }')
    assert server_config.read_model_config_file(path) == [server_config.ServedModel("dmi", "ram://models/dmi")]
    with pytest.raises(FileNotFoundError):
        server_config.read_model_config_file(f"{ram_root}/missing.config")
