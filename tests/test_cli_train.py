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

    from trainer import export

    # The default index: about sqrt(N) leaves, all searched in so small a catalogue (four times the 200
    # candidates per interest need them all).
    assert export.servable_scann_settings(os.path.join(out, "export", "dmi")) == (14, 14)
    # Exported again from the trained directory with another index, without training again.
    again = str(tmp_path / "again")
    assert (
        cli.main(
            ["export", "--model-dir", out, "--out", again, "--scann-leaves", "8", "--scann-leaves-to-search", "3",
             "--no-xla", "--sampling-steps", "1"]
        )
        == 0
    )
    assert f"dmi: {again}/dmi" in capsys.readouterr().out
    assert export.servable_scann_settings(os.path.join(again, "dmi")) == (8, 3)
    # ... and one DDIM step instead of the model's T = 4: its interests are the S = 1 model's.
    import numpy as np
    import tensorflow as tf

    from trainer import train as train_lib

    _, vocabulary, model = train_lib.load_model(out)
    history = tf.constant([list(vocabulary.item_ids[:3])])
    indices = tf.constant([[1, 2, 3] + [0] * (model.config.max_length - 3)])

    def interests(path):
        return tf.saved_model.load(path).signatures["user_interests"](history=history)["interests"].numpy()

    one_step = interests(os.path.join(again, "dmi_exact"))
    np.testing.assert_allclose(one_step, model.with_sampling_steps(1).user_interests(indices), atol=1e-5)
    default = interests(os.path.join(out, "export", "dmi_exact"))
    np.testing.assert_allclose(default, model.user_interests(indices), atol=1e-5)
    assert np.abs(one_step - model.user_interests(indices).numpy()).max() > 1e-4

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


def test_export_settings_that_do_not_fit_the_catalogue_fail_before_training(tmp_path, capsys):
    log = str(tmp_path / "log.csv")
    assert cli.main(["data", "synth", "--out", log, "--users", "60", "--items", "40", "--topics", "4"]) == 0
    out = tmp_path / "run"
    argv = ["train", "--log", log, "--out", str(out), *TINY]
    assert cli.main([*argv, "--scann-leaves", "41"]) == 2
    assert "scann_leaves must be between 2 and the number of items (40)" in capsys.readouterr().err
    assert cli.main([*argv, "--scann-leaves", "1"]) == 2
    assert "tree of one leaf answers the first item to every query" in capsys.readouterr().err
    assert cli.main([*argv, "--scann-leaves", "4", "--scann-leaves-to-search", "5"]) == 2
    assert "scann_leaves_to_search (5) must be at most scann_leaves (4)" in capsys.readouterr().err
    assert cli.main([*argv, "--sampling-steps", "5"]) == 2
    assert "sampling_steps (5) must be at most the model's diffusion_steps T = 4" in capsys.readouterr().err
    assert cli.main([*argv, "--model", "remi", "--sampling-steps", "1"]) == 2
    assert "the 'remi' model has no diffusion refiner" in capsys.readouterr().err
    assert not out.exists()  # nothing trained, nothing written
    assert cli.main(["export", "--model-dir", str(tmp_path / "missing")]) == 2
