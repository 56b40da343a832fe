"""Tests for bench.arguments: the parsers of list values."""

import argparse

import pytest

from bench import arguments


def test_argument_parsers():
    assert arguments.parse_int_list("1, 2,5") == [1, 2, 5]
    parse = arguments.parse_name_list(("a", "b"))
    assert parse("b,a") == ["b", "a"]
    with pytest.raises(argparse.ArgumentTypeError):
        parse("c")


def test_names_and_resume_arguments():
    parser = argparse.ArgumentParser()
    arguments.add_names_argument(parser, "--models", ("dmi", "remi"))
    arguments.add_resume_argument(parser)
    assert vars(parser.parse_args([])) == {"models": ["dmi", "remi"], "resume": False}
    assert vars(parser.parse_args(["--models", "remi", "--resume"])) == {"models": ["remi"], "resume": True}
    assert "comma-separated models (default: dmi,remi)" in parser.format_help()
    with pytest.raises(SystemExit):
        parser.parse_args(["--models", "pop"])
