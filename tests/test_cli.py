"""The ``dmirec`` dispatcher: each command loads only what it needs, and the terminal stays quiet.

Each check runs a fresh interpreter, as a user's shell does: what a command imports is only visible in a
process that imported nothing before it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from pipeline import cli

# What each kind of command must never load (top-level package names).
HEAVY = ("tensorflow", "tfx", "apache_beam", "tensorflow_transform", "kfp")
SERVING_FORBIDDEN = ("tfx", "apache_beam", "tensorflow_transform", "kfp", "trainer", "pipeline.local_runner")


def _run_and_list_modules(argv: list[str]) -> tuple[int, set[str], str]:
    """Runs ``dmirec ARGV`` in a fresh interpreter; returns its status, loaded modules and stderr.

    The environment is the test's without ``TF_CPP_MIN_LOG_LEVEL`` (conftest.py sets it), as in a shell.
    """
    script = textwrap.dedent(
        f"""
        import sys
        from pipeline import cli
        try:
            status = cli.main({argv!r})
        except SystemExit as e:
            status = e.code
        print("\\n".join(sorted(sys.modules)), file=sys.__stdout__)
        sys.exit(status)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        check=False,
        env={name: value for name, value in os.environ.items() if name != "TF_CPP_MIN_LOG_LEVEL"},
        timeout=120,
    )
    return result.returncode, set(result.stdout.split()), result.stderr


def _loaded(modules: set[str], names: tuple[str, ...]) -> list[str]:
    return sorted(name for name in names if name in modules or any(m.startswith(name + ".") for m in modules))


@pytest.fixture(scope="module")
def log(tmp_path_factory) -> str:
    path = str(tmp_path_factory.mktemp("cli") / "log.csv")
    assert cli.main(["data", "synth", "--out", path, "--users", "40", "--items", "30", "--topics", "5"]) == 0
    return path


def test_every_declared_command_is_registered_and_documented():
    declared = cli.declared_commands()
    assert {"data", "train", "evaluate", "export", "run", "compile-kfp", "serve", "query", "demo", "bench"} <= set(declared)
    help_text = cli.build_parser().format_help()
    for name in declared:
        assert f"    {name}" in help_text, name


@pytest.mark.parametrize("argv", [["--help"], ["serve", "--help"], ["run", "--help"], ["data", "stats", "--help"]])
def test_help_loads_no_heavy_package(argv):
    status, modules, stderr = _run_and_list_modules(argv)
    assert status == 0, stderr
    assert _loaded(modules, HEAVY) == []


@pytest.mark.parametrize("command", [["stats", "{log}", "--json"], ["convert", "{log}", "{out}", "--min-user", "2"]])
def test_data_commands_never_import_tensorflow(log, tmp_path, command):
    argv = ["data", *(arg.format(log=log, out=str(tmp_path / "out.csv")) for arg in command)]
    status, modules, stderr = _run_and_list_modules(argv)
    assert status == 0, stderr
    assert _loaded(modules, HEAVY) == []
    assert stderr == ""  # quiet: nothing but the answer


def test_query_loads_neither_tfx_nor_the_trainer():
    # No server listens on port 1: the handler runs its whole path to the gRPC call and reports the failure.
    argv = ["query", "--server", "127.0.0.1:1", "--history", "a,b", "--timeout", "0.5"]
    status, modules, stderr = _run_and_list_modules(argv)
    assert status == 1
    assert "dmirec query: error" in stderr
    assert "tensorflow" in modules  # the client does use TensorFlow's protos
    assert _loaded(modules, SERVING_FORBIDDEN) == []
    # Quiet by default: no CUDA-factory lines, no absl preamble, no third-party warnings.
    for noise in ("cuda", "absl::InitializeLog", "Warning"):
        assert noise not in stderr, stderr


def test_serve_loads_neither_tfx_nor_the_trainer():
    script = textwrap.dedent(
        """
        import sys
        import serving.cli, serving.server, serving.client, serving.model_manager
        print("\\n".join(sorted(sys.modules)))
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=120)
    assert _loaded(set(result.stdout.split()), SERVING_FORBIDDEN) == []


@pytest.mark.parametrize("verbose", [False, True])
def test_quiet_hides_only_third_party_warnings_and_verbose_shows_them(verbose):
    script = textwrap.dedent(
        f"""
        import logging, os, warnings
        os.environ.pop("TF_CPP_MIN_LOG_LEVEL", None)
        os.environ.pop("PYTHONWARNINGS", None)
        from pipeline import cli
        cli.quiet_third_party({verbose})
        print(os.environ["TF_CPP_MIN_LOG_LEVEL"], "PYTHONWARNINGS" in os.environ)
        warnings.warn_explicit("third-party notice", DeprecationWarning, "x.py", 1, module="somelib.sub")
        warnings.warn_explicit("our notice", UserWarning, "y.py", 1, module="serving.server_config")
        logging.basicConfig()
        for name in ("absl", "tensorflow", "apache_beam"):
            logging.getLogger(name).warning("third-party log line")
        logging.getLogger("tensorflow").error("third-party error")
        logging.getLogger("pipeline.demo").warning("our log line")
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60)
    # TensorFlow's C++ log level, and the warning filter Beam's worker processes inherit.
    assert result.stdout.split() == (["0", "False"] if verbose else ["3", "True"])
    assert "our notice" in result.stderr and "our log line" in result.stderr
    assert "third-party error" in result.stderr  # errors always reach the user
    assert ("third-party notice" in result.stderr) is verbose
    assert result.stderr.count("third-party log line") == (3 if verbose else 0)


def test_verbose_is_taken_off_the_command_line(log, capsys):
    assert cli.main(["data", "stats", log, "--verbose"]) == 0
    assert "users" in capsys.readouterr().out


def test_unknown_command_lists_the_commands(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["no-such-command"])
    assert exit_info.value.code == 2
    assert "invalid choice: 'no-such-command'" in capsys.readouterr().err
