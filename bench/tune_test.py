"""Tests for bench.tune: parsing trials."""

import argparse

import pytest

from bench import tune


def test_tune_trials_parse_and_reject_bad_ones():
    assert tune.parse_trial("x=dmi:eta=0.2,noise_scale=2") == ("x", "dmi", {"eta": 0.2, "noise_scale": 2.0})
    assert len({tune.parse_trial(t)[0] for t in tune.DEFAULT_TRIALS}) == len(tune.DEFAULT_TRIALS)
    for bad in ("nomodel", "x=nope", "x=dmi:eta", "x=dmi:unknown=1"):
        with pytest.raises(argparse.ArgumentTypeError):
            tune.parse_trial(bad)
