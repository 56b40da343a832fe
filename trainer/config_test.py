"""Tests for the configuration object and its variant presets."""

import pytest

from trainer import config


def test_defaults_are_the_papers_but_three_tuned_values():
    c = config.variant_config("dmi")
    assert (c.embedding_dim, c.num_interests, c.max_length, c.batch_size) == (64, 4, 20, 128)
    assert (c.num_negatives, c.diffusion_steps, c.num_sampling_steps) == (1280, 10, 10)
    assert (c.alpha_min, c.alpha_max, c.gamma, c.eta) == (1e-4, 0.004, 0.5, 0.4)
    assert (c.diffusion_weight, c.routing_weight) == (5.0, 100.0)
    assert c.pruned_length == 10
    # Chosen on Beauty's validation users (bench/tune.py); the paper: layout and s unsaid, lr 2e-3.
    assert (c.denoiser_norm, c.learning_rate, c.noise_scale) == ("pre", 0.001, 4.0)
    assert {config.variant_config(m).learning_rate for m in config.VARIANTS} == {0.001}


@pytest.mark.parametrize("name", list(config.VARIANTS))
def test_every_variant_round_trips_through_json(name):
    c = config.variant_config(name, {"seed": 3})
    assert config.ModelConfig.from_json(c.to_json()) == c


def test_variant_presets():
    assert not config.variant_config("remi").diffusion
    assert config.variant_config("comirec").routing_weight == 0
    assert config.variant_config("dmi-T").denoiser == "mlp"
    assert config.variant_config("dmi-IP").gamma == 1.0
    assert not config.variant_config("dmi-GD").stop_gradient
    assert config.variant_config("ydnn").user_tower == "mean_pooling"


def test_parse_overrides_types_values():
    overrides = config.parse_overrides(
        ["alpha_max=0.008", "diffusion=false", "max_steps=10", "ydnn_hidden_units=32,16"]
    )
    assert overrides == {
        "alpha_max": 0.008,
        "diffusion": False,
        "max_steps": 10,
        "ydnn_hidden_units": (32, 16),
    }
    assert config.variant_config("dmi", overrides).alpha_max == 0.008


@pytest.mark.parametrize(
    "assignment, message",
    [
        ("nope=1", "unknown config field"),
        ("max_steps", "key=value"),
        ("max_steps=ten", "expected a int"),
        ("diffusion=maybe", "expected a bool"),
    ],
)
def test_parse_overrides_rejects_bad_input(assignment, message):
    with pytest.raises(ValueError, match=message):
        config.parse_overrides([assignment])


def test_invalid_values_are_rejected():
    with pytest.raises(ValueError, match="sampling_steps"):
        config.variant_config("dmi", {"sampling_steps": 11})
    with pytest.raises(ValueError, match="gamma"):
        config.variant_config("dmi", {"gamma": 0.0})
    with pytest.raises(ValueError, match="unknown model"):
        config.variant_config("bert4rec")
