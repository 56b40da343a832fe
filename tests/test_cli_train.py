"""`dmirec train`, `dmirec evaluate`, `dmirec serve` and `dmirec query` end to end on a small log."""

import json
import os
import threading

import pytest

from pipeline import cli

TINY = [
    "--set",
    "embedding_dim=16",
    "--set",
    "num_interests=2",
    "--set",
    "max_length=8",
    "--set",
    "batch_size=32",
    "--set",
    "num_negatives=32",
    "--set",
    "diffusion_steps=4",
    "--set",
    "max_steps=40",
    "--set",
    "eval_every=20",
    "--set",
    "steps_per_call=10",
]


@pytest.mark.slow
def test_train_evaluate_and_serve_through_grpc(tmp_path, capsys):
    log = str(tmp_path / "log.csv")
    assert cli.main(["data", "synth", "--out", log, "--users", "300", "--items", "200", "--topics", "6"]) == 0
    out = str(tmp_path / "run")
    serving = str(tmp_path / "serving")
    assert (
        cli.main(["train", "--log", log, "--model", "dmi", "--out", out, "--serving-base", serving, *TINY])
        == 0
    )
    printed = capsys.readouterr().out
    assert "test (rank order NDCG)" in printed and "pushed version 1" in printed
    metrics = json.load(open(os.path.join(out, "metrics.json")))
    assert metrics["steps"] == 40 and 0 <= metrics["test"]["recall@50"] <= 1
    assert sorted(os.listdir(serving)) == ["dmi", "dmi_exact"]

    assert cli.main(["evaluate", "--log", log, "--model-dir", out, "--split", "test", "--ndcg", "remi"]) == 0
    evaluation = json.load(open(os.path.join(out, "evaluation_test_remi.json")))
    assert evaluation["metrics"]["recall@50"] == pytest.approx(metrics["test"]["recall@50"])

    # Serve the pushed dmi_exact model and query it through gRPC on loopback.
    from serving.server_config import ServedModel, ServerOptions
    from serving.server import ModelServer
    from serving.client import RetrievalClient

    options = ServerOptions(
        models=(ServedModel(name="dmi_exact", base_path=os.path.join(serving, "dmi_exact")),), port=0
    )
    with ModelServer(options) as server:
        with RetrievalClient(server.address, "dmi_exact") as client:
            items = client.retrieve([["i1", "i2", "i3"]], top_n=5)
        assert len(items[0]) == 5
        assert (
            cli.main(
                [
                    "query",
                    "--server",
                    server.address,
                    "--model",
                    "dmi_exact",
                    "--history",
                    "i1,i2",
                    "--top-n",
                    "3",
                ]
            )
            == 0
        )
        assert capsys.readouterr().out.count("\n") >= 3
