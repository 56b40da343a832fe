"""Tests for bench.train_speed: the floor and the catalogue sweep on tiny runs."""

import trainer  # noqa: F401  (Keras 2 before TensorFlow)

import json

from bench import train_speed
from trainer import optimizers

TINY = [f"--set={field}" for field in ("embedding_dim=8", "batch_size=16", "num_negatives=16", "steps_per_call=5")]


def test_floor_and_catalogue_sweep(tmp_path, monkeypatch):
    monkeypatch.setattr(optimizers, "LAZY_MIN_ITEMS", 200)  # the 300-item catalogue updates lazily
    argv = ["--quick", "--data", "synthetic", "--models", "remi", "--period", "10", "--periods", "2"]
    argv += ["--catalogues", "300", "--out", str(tmp_path), *TINY]
    assert train_speed.main(argv) == 0
    result = json.loads((tmp_path / "train_speed_synthetic_quick.json").read_text())
    remi = result["models"]["remi"]
    assert remi["floor_ms_per_step"] > 0 and remi["over_floor"] > 0
    assert abs(remi["ms_per_step"] * remi["examples_per_second"] / 1e3 - 16) < 1e-6  # batch 16
    beauty_row, synthetic_row = result["catalogues"]
    assert beauty_row["models"]["remi"]["auto"]["vs_beauty"] == 1.0
    assert 250 <= synthetic_row["data"]["items"] <= 300
    updates = synthetic_row["models"]["remi"]
    assert (updates["auto"]["item_table_update"], updates["dense"]["item_table_update"]) == ("lazy", "dense")
    assert synthetic_row["data"]["users"]["eval"] <= train_speed.SWEEP_EVAL_USERS
    assert (tmp_path / "train_speed_synthetic_quick.png").exists()
    header, rows = train_speed.catalogue_rows(result)
    assert len(rows) == 3 and header[2] == "item table"
