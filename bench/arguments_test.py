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
