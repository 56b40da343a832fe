"""Fault injection: ``kill -9`` during training, during a push and during a server's version load.

Each test kills a real subprocess at a point where it is writing or loading, then checks that nothing
already written is lost and that starting again gives what an uninterrupted run gives.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import grpc
import numpy as np
import pytest
from tensorflow_serving.apis import get_model_status_pb2, model_service_pb2_grpc, prediction_service_pb2_grpc

from pipeline import cli
from serving.server_config import ServedModel
from serving.model_manager import ModelManager, scan_versions
from serving.servable import Servable
from serving.testing import ReferenceModel, predict_request, top_items, unused_port, wait_for

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN = [
    "--model", "remi",
    *("--set", "embedding_dim=16", "--set", "num_interests=2", "--set", "max_length=8"),
    *("--set", "batch_size=32", "--set", "num_negatives=32", "--set", "max_steps=200"),
    *("--set", "eval_every=20", "--set", "steps_per_call=10", "--set", "patience=100"),
]


def _python(code: str, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.Popen([sys.executable, "-c", code], cwd=REPO, env=env, **kwargs)


def _kill(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)


@pytest.mark.slow
def test_training_killed_mid_run_resumes_to_the_uninterrupted_result(tmp_path):
    log = str(tmp_path / "log.csv")
    assert cli.main(["data", "synth", "--out", log, "--users", "300", "--items", "200", "--topics", "6"]) == 0
    whole, killed = str(tmp_path / "whole"), str(tmp_path / "killed")
    run = "from pipeline import cli; import sys; sys.exit(cli.main({args!r}))"
    assert _python(run.format(args=["train", "--log", log, "--out", whole, *TRAIN])).wait(timeout=600) == 0

    process = _python(run.format(args=["train", "--log", log, "--out", killed, *TRAIN]))
    state = os.path.join(killed, "checkpoints", "state.json")

    def mid_run() -> bool:
        assert process.poll() is None, "training finished before it could be killed"
        try:
            with open(state, encoding="utf-8") as f:
                return json.load(f)["epoch"] >= 4
        except (OSError, ValueError):
            return False

    wait_for(mid_run, "four evaluations", timeout_s=300)
    time.sleep(float(np.random.default_rng(0).uniform(0.0, 0.5)))  # somewhere inside a period or a save
    _kill(process)
    assert _python(run.format(args=["train", "--log", log, "--out", killed, *TRAIN])).wait(timeout=600) == 0

    expected = json.load(open(os.path.join(whole, "metrics.json")))
    resumed = json.load(open(os.path.join(killed, "metrics.json")))
    assert resumed["best_step"] == expected["best_step"] and resumed["steps"] == expected["steps"] == 200
    for split in ("validation", "test"):
        for metric, value in expected[split].items():
            assert resumed[split][metric] == pytest.approx(value, abs=1e-6), (split, metric)


@pytest.mark.slow
def test_a_push_killed_at_any_point_never_leaves_a_version_the_server_would_load_half(tmp_path):
    export_dir, base = tmp_path / "export", tmp_path / "serving"
    ReferenceModel.random(seed=1).save(str(tmp_path / "model"), 1)
    os.makedirs(export_dir)
    shutil.copytree(tmp_path / "model" / "1", export_dir / "dmi_exact")
    pushes = (
        "from trainer.push import push_servables\n"
        f"while True: push_servables({str(export_dir)!r}, {str(base)!r})\n"
    )
    rng = np.random.default_rng(7)
    for _ in range(4):
        process = _python(pushes)
        before = len(scan_versions(str(base / "dmi_exact"))) if (base / "dmi_exact").exists() else 0
        wait_for(
            lambda: (base / "dmi_exact").exists() and len(scan_versions(str(base / "dmi_exact"))) > before,
            "a push",
            timeout_s=120,
        )
        time.sleep(float(rng.uniform(0.0, 0.3)))
        _kill(process)
    versions = scan_versions(str(base / "dmi_exact"))
    assert len(versions) >= 4
    for version, path in sorted(versions.items()):
        Servable.load("dmi_exact", version, path)  # every version the server would see is complete
    manager = ModelManager(ServedModel("dmi_exact", str(base / "dmi_exact")))
    manager.poll()
    assert not any(status.failed for status in manager.statuses())
    manager.stop()


@pytest.mark.slow
def test_a_server_killed_while_loading_a_version_serves_the_newest_good_one_after_restart(tmp_path):
    base = str(tmp_path / "dmi")
    old, new = ReferenceModel.random(seed=1), ReferenceModel.random(seed=2)
    old.save(base, 1)
    port = unused_port()
    serve = (
        "from pipeline import cli; import sys; sys.exit(cli.main(['serve', '--model_name', 'dmi', "
        f"'--model_base_path', {base!r}, '--port', '{port}', '--file_system_poll_wait_seconds', '0.2']))"
    )
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    models = model_service_pb2_grpc.ModelServiceStub(channel)
    predictions = prediction_service_pb2_grpc.PredictionServiceStub(channel)

    def available(version: int) -> bool:
        request = get_model_status_pb2.GetModelStatusRequest()
        request.model_spec.name = "dmi"
        try:
            statuses = models.GetModelStatus(request, timeout=2).model_version_status
        except grpc.RpcError:
            return False
        return any(s.version == version and s.state == s.AVAILABLE for s in statuses)

    stderr = open(tmp_path / "server.log", "w+", encoding="utf-8")
    process = _python(serve, stderr=stderr, stdout=subprocess.DEVNULL)
    wait_for(lambda: available(1), "version 1", timeout_s=120)
    warmups = [predict_request([["i1", "i2"]], top_n=3)] * 1000  # a slow load: 1,000 warm-up requests
    new.save(base, 2, warmups)
    wait_for(lambda: "version 2: loading" in open(tmp_path / "server.log").read(), "the load", timeout_s=60)
    _kill(process)
    assert "version 2 loaded" not in open(tmp_path / "server.log").read()

    restarted = _python(serve, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: available(2), "version 2 after the restart", timeout_s=180)
        answer = top_items(predictions.Predict(predict_request([["i1", "i2"]], top_n=3), timeout=10))
        assert [item for item, _ in answer[0]] == [item for item, _ in new.top_n([["i1", "i2"]], 3)[0]]
    finally:
        restarted.send_signal(signal.SIGTERM)
        restarted.wait(timeout=60)
        channel.close()
