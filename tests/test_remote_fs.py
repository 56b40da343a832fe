"""Training -> export -> push -> serving on a remote file system, as on a local disk.

``ram://`` is TensorFlow's in-process file system: it goes through ``tf.io.gfile`` as ``gs://`` does, and
it cannot rename directories either. The same ``dmirec data synth`` and ``dmirec train --serving-base``
commands run once under a local directory and once under ``ram://``; the artifacts, the pushed versions
and the server's answers must be the same.
"""

from __future__ import annotations

import dataclasses
import os

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import prediction_service_pb2_grpc

from pipeline import cli
from serving.server_config import ServedModel, ServerOptions
from serving.model_manager import scan_versions
from serving.server import ModelServer
from serving.testing import assert_same_top, predict_request, top_items
from trainer import export, interactions, train
from trainer import filesystem as fs
from trainer.sequences import SequenceData

TRAIN = [
    "--model", "dmi", "--no-xla",  # XLA is no file-system matter; without it the server loads in seconds
    *("--set", "embedding_dim=16", "--set", "num_interests=2", "--set", "max_length=6"),
    *("--set", "batch_size=32", "--set", "num_negatives=32", "--set", "diffusion_steps=4"),
    *("--set", "max_steps=60", "--set", "eval_every=30", "--set", "steps_per_call=10"),
]
WHERE = ("local", "remote")


@pytest.fixture(scope="module")
def roots(tmp_path_factory, ram_root_factory) -> dict[str, str]:
    """Where each run wrote: ``<root>/log.csv``, ``<root>/run`` (with ``export/``) and ``<root>/serving``."""
    roots = {"local": str(tmp_path_factory.mktemp("local")), "remote": ram_root_factory()}
    for root in roots.values():
        log = fs.join(root, "log.csv")
        synth = ["data", "synth", "--out", log, "--users", "300", "--items", "200", "--topics", "6"]
        assert cli.main(synth) == 0
        run, serving = fs.join(root, "run"), fs.join(root, "serving")
        assert cli.main(["train", "--log", log, "--out", run, "--serving-base", serving, *TRAIN]) == 0
    return roots


def _files(top: str) -> list[tuple[str, int]]:
    """Every file under ``top``: its path relative to ``top`` and its size."""
    return sorted(
        (os.path.relpath(fs.join(directory, name), top), tf.io.gfile.stat(fs.join(directory, name)).length)
        for directory, _, names in fs.walk(top)
        for name in names
    )


def _metrics(root: str) -> dict:
    """metrics.json without the throughput, which varies between any two runs."""
    metrics = fs.read_json(fs.join(root, "run", train.METRICS_FILE))
    for entries in (metrics["history"], metrics["backbone"]["history"]):
        for entry in entries:
            entry.pop("examples_per_second")
    metrics.pop("examples_per_second")
    return metrics


@pytest.mark.slow
def test_a_run_on_ram_writes_what_a_local_run_writes(roots):
    local, remote = roots["local"], roots["remote"]
    assert fs.read_text(fs.join(remote, "log.csv")) == fs.read_text(fs.join(local, "log.csv"))
    for relative in ((), ("checkpoints",), ("backbone",), ("backbone", "checkpoints"), ("export",)):
        names = sorted(fs.listdir(fs.join(local, "run", *relative)))
        assert sorted(fs.listdir(fs.join(remote, "run", *relative))) == names  # nor temporary files left
    for name in (train.CONFIG_FILE, train.VOCABULARY_FILE, train.TRAIN_COUNTS_FILE):
        assert fs.read_text(fs.join(remote, "run", name)) == fs.read_text(fs.join(local, "run", name))
    assert _metrics(remote) == _metrics(local)
    (config, vocabulary, model), (local_config, local_vocabulary, local_model) = (
        train.load_model(fs.join(root, "run")) for root in (remote, local)
    )
    assert (config, vocabulary) == (local_config, local_vocabulary)
    for weights, local_weights in zip(model.get_weights(), local_model.get_weights()):
        np.testing.assert_array_equal(weights, local_weights)


@pytest.mark.slow
def test_the_push_to_ram_is_complete_and_serves_what_the_local_push_serves(roots):
    for name in export.SERVABLES:
        exported = fs.join(roots["remote"], "run", "export", name)
        pushed = fs.join(roots["remote"], "serving", name)
        assert scan_versions(pushed) == {1: fs.join(pushed, "1")}
        assert _files(fs.join(pushed, "1")) == _files(exported)

    vocabulary = train.load_model(fs.join(roots["remote"], "run"))[1].item_ids
    histories = [list(vocabulary[:3]), [vocabulary[7]], list(vocabulary[20:30]), ["never-seen", vocabulary[1]]]
    models = tuple(
        ServedModel(f"{where}-{name}", fs.join(roots[where], "serving", name))
        for where in WHERE
        for name in export.SERVABLES
    )
    options = ServerOptions(models=models, port=0, file_system_poll_wait_seconds=0)
    with ModelServer(options) as server, grpc.insecure_channel(server.address) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        for name in export.SERVABLES:
            local, remote = (
                top_items(stub.Predict(predict_request(histories, 10, f"{where}-{name}"), timeout=60))
                for where in WHERE
            )
            assert all(len({item for item, _ in row} & set(vocabulary)) == 10 for row in remote)
            assert_same_top(remote, local)


@pytest.mark.slow
def test_a_longer_run_on_ram_resumes_from_its_checkpoints_as_a_local_one_does(roots):
    first = fs.read_json(fs.join(roots["remote"], "run", train.METRICS_FILE))
    results = {}
    for where, root in roots.items():
        config = train.load_model(fs.join(root, "run"))[0]
        data = SequenceData.from_interactions(interactions.read_interactions(fs.join(root, "log.csv")))
        longer = dataclasses.replace(config, max_steps=config.max_steps + config.eval_every)
        results[where] = train.train(longer, data, fs.join(root, "run"), verbose=0)
    remote, local = results["remote"], results["local"]
    # Resumed, not started over: the first run's history, measured speeds included, then one more period.
    assert remote.history[:2] == first["history"] and [entry["step"] for entry in remote.history] == [30, 60, 90]
    assert (remote.validation, remote.test) == (local.validation, local.test)
    assert (remote.best_step, remote.steps) == (local.best_step, local.steps) and remote.steps == 90
    state = fs.read_json(fs.join(roots["remote"], "run", train.CHECKPOINT_DIR, train.STATE_FILE))
    assert state["epoch"] == 3 and state["best_weights"] == f"best-{remote.best_step}"
    names = fs.listdir(fs.join(roots["remote"], "run", train.CHECKPOINT_DIR))
    assert [name for name in names if name.startswith("best-")] == [state["best_weights"]]  # older ones deleted
