"""The `dmirec data` commands as a user runs them: exit codes, messages and files."""

import argparse
import os
import subprocess
import sys

import pytest

from pipeline import cli


def _subcommand_paths(parser: argparse.ArgumentParser, prefix=()):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield prefix + (name,)
                yield from _subcommand_paths(sub, prefix + (name,))


def test_every_subcommand_has_help(capsys):
    paths = list(_subcommand_paths(cli.build_parser()))
    assert ("data", "convert") in paths and ("data", "stats") in paths and ("data", "synth") in paths
    for path in paths:
        with pytest.raises(SystemExit) as exit_info:
            cli.main([*path, "--help"])
        assert exit_info.value.code == 0
        assert "usage: dmirec " + " ".join(path) in capsys.readouterr().out


def test_console_script_is_installed():
    script = os.path.join(os.path.dirname(sys.executable), "dmirec")
    result = subprocess.run([script, "data", "--help"], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert "convert" in result.stdout


def test_synth_convert_stats(tmp_path, capsys):
    log = str(tmp_path / "log.csv")
    assert cli.main(["data", "synth", "--out", log, "--users", "50", "--items", "40", "--topics", "5"]) == 0
    assert cli.main(["data", "stats", log, "--json"]) == 0
    out = capsys.readouterr().out
    assert '"users": 50' in out
    filtered = str(tmp_path / "filtered.csv")
    assert cli.main(["data", "convert", log, filtered, "--min-item", "3", "--min-user", "5"]) == 0
    assert "wrote" in capsys.readouterr().out


def test_bad_line_exits_2_with_file_and_line(tmp_path, capsys):
    log = tmp_path / "log.csv"
    log.write_text("user_id,item_id,timestamp\nu1,i1,1\nu1,i2\n")
    assert cli.main(["data", "stats", str(log)]) == 2
    err = capsys.readouterr().err
    assert "log.csv line 3: expected 3 fields, got 2: 'u1,i2'" in err
    assert cli.main(["data", "stats", str(log), "--skip-bad"]) == 0
    captured = capsys.readouterr()
    assert "interactions  1" in captured.out
    assert "skipped 1 malformed line(s)" in captured.err


def test_missing_file_is_a_clear_error(tmp_path, capsys):
    assert cli.main(["data", "stats", str(tmp_path / "absent.csv")]) == 2
    assert "absent.csv" in capsys.readouterr().err
