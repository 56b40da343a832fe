"""Tests of serving/cli.py: ``dmirec serve`` and ``dmirec query``, parsed as pipeline/cli.py parses them."""

from __future__ import annotations

import argparse
import os
import signal
import threading
import time
from collections.abc import Iterator

import pytest

from serving.cli import add_query_command, add_serve_command
from serving.client import RetrievalClient, ServingError
from serving.server_config import ServedModel, ServerOptions
from serving.server import ModelServer
from serving.testing import ReferenceModel, unused_port


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dmirec")
    commands = parser.add_subparsers(dest="command", required=True)
    add_serve_command(commands)
    add_query_command(commands)
    return parser


@pytest.fixture(scope="module")
def model() -> ReferenceModel:
    return ReferenceModel.random(seed=3)


@pytest.fixture(scope="module")
def base_path(tmp_path_factory, model) -> str:
    base = str(tmp_path_factory.mktemp("dmi"))
    model.save(base, 1)
    return base


@pytest.fixture(scope="module")
def address(base_path) -> Iterator[str]:
    options = ServerOptions(models=(ServedModel("dmi", base_path),), port=0, file_system_poll_wait_seconds=0)
    with ModelServer(options) as server:
        yield server.address


def test_query_prints_top_items_with_scores(address, model, capsys):
    args = _parser().parse_args(
        ["query", "--server", address, "--model", "dmi", "--history", "i1,i2", "--history", "",
         "--top-n", "3"]
    )
    assert args.handler(args) == 0
    lines = capsys.readouterr().out.splitlines()
    expected = model.top_n([["i1", "i2"], []], 3)
    assert lines[0] == "history: i1,i2"
    ranked = enumerate(expected[0], start=1)
    assert lines[1:4] == [f"  {rank:>3}. {item}  {score:.4f}" for rank, (item, score) in ranked]
    assert lines[4] == "history: (empty)"
    assert len(lines) == 8


def test_query_reports_server_errors(address, capsys):
    args = _parser().parse_args(["query", "--server", address, "--history", "i1", "--top-n", "500"])
    assert args.handler(args) == 1
    error = capsys.readouterr().err
    assert "dmirec query: error: INVALID_ARGUMENT: assertion failed: [top_n must be at most" in error


def test_help_documents_the_flags(capsys):
    for command, flags in [
        ("serve", ["--model_base_path", "--model_config_file", "--file_system_poll_wait_seconds",
                   "--enable_batching"]),
        ("query", ["--server", "--history", "--top-n", "--timeout"]),
    ]:
        with pytest.raises(SystemExit):
            _parser().parse_args([command, "--help"])
        out = capsys.readouterr().out
        assert all(flag in out for flag in flags)


def test_serve_runs_until_sigint(base_path, model, capsys):
    port = unused_port()
    args = _parser().parse_args(
        ["serve", "--model_name", "dmi", "--model_base_path", base_path, "--port", str(port)]
    )
    answers: list[list[list[tuple[str, float]]]] = []
    handler_returned = threading.Event()

    def query_then_interrupt() -> None:
        deadline = time.monotonic() + 30.0
        with RetrievalClient(f"127.0.0.1:{port}", "dmi", timeout_s=2.0) as client:
            while time.monotonic() < deadline and not answers and not handler_returned.is_set():
                try:
                    answers.append(client.retrieve([["i1"]], top_n=2))
                except ServingError:
                    time.sleep(0.1)
        if not handler_returned.is_set():
            os.kill(os.getpid(), signal.SIGINT)

    helper = threading.Thread(target=query_then_interrupt)
    helper.start()
    try:
        assert args.handler(args) == 0
    finally:
        handler_returned.set()
        helper.join(35)
    assert len(answers) == 1
    assert [item for item, _ in answers[0][0]] == [item for item, _ in model.top_n([["i1"]], 2)[0]]
    out = capsys.readouterr().out
    assert f"serving at 127.0.0.1:{port}:" in out and f"dmi: {base_path}" in out
