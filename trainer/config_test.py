"""Tests for the configuration object and its variant presets."""

import pytest

from trainer import config


def test_defaults_are_the_papers_but_the_tuned_values():
    c = config.variant_config("dmi")
    assert (c.embedding_dim, c.num_interests, c.max_length, c.batch_size) == (64, 4, 20, 128)
    assert (c.num_negatives, c.diffusion_steps, c.num_sampling_steps) == (1280, 10, 10)
    assert (c.alpha_min, c.alpha_max, c.gamma, c.eta) == (1e-4, 0.004, 0.5, 0.4)
    assert (c.diffusion_weight, c.routing_weight) == (5.0, 100.0)
    assert c.pruned_length == 10
    # Chosen on Beauty's validation users (bench/tune.py); the paper: layout and s unsaid, lr 2e-3.
    assert (c.denoiser_norm, c.learning_rate, c.noise_scale) == ("pre", 0.001, 4.0)
    # Issue 10 (docs/refinement.md): the refiner trains second, on the remi of the same config.
    assert (c.refiner_schedule, c.backbone_learning_rate, c.denoiser_query_residual) == ("two_stage", 3e-5, False)
    assert (c.diffusion_loss, c.denoiser_input_dropout, c.diffusion_training) == ("norm", 0.0, "one_step")
    assert {config.variant_config(m).learning_rate for m in config.VARIANTS if m != "dmi-paper"} == {0.001}


def test_dmi_paper_is_the_paper_read_literally():
    c = config.variant_config("dmi-paper")
    assert (c.denoiser_norm, c.learning_rate, c.noise_scale, c.eta, c.diffusion_weight) == (
        "post", 0.002, 1.0, 0.4, 5.0
    )
    assert (c.diffusion_loss, c.denoiser_input_dropout, c.refiner_schedule, c.coarse_loss_weight) == (
        "norm", 0.0, "joint", 0.0
    )
    assert (c.diffusion_training, c.diffusion_noise, c.denoiser_query_residual) == ("one_step", "absolute", True)


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
    for field, value in [
        ("diffusion_loss", "l1"),
        ("diffusion_noise", "pink"),
        ("diffusion_training", "two_step"),
        ("refiner_schedule", "three_stage"),
        ("denoiser_input_dropout", 1.0),
        ("coarse_loss_weight", -1.0),
        ("refiner_learning_rate", -1e-3),
    ]:
        with pytest.raises(ValueError, match=field):
            config.variant_config("dmi", {field: value})
    with pytest.raises(ValueError, match="denoiser_query_residual"):
        config.variant_config("dmi", {"denoiser_query_residual": False, "denoiser_norm": "post"})
    with pytest.raises(ValueError, match="refiner_learning_rate needs refiner_schedule=two_stage"):
        config.variant_config("dmi", {"refiner_learning_rate": 1e-4, "refiner_schedule": "joint"})


def test_without_diffusion_is_the_remi_of_the_same_config():
    tuned = config.variant_config("dmi", {"gamma": 0.2, "denoiser_input_dropout": 0.5, "num_interests": 8})
    assert config.without_diffusion(tuned) == config.variant_config("remi", {"num_interests": 8})
    assert set(config.DIFFUSION_FIELDS) < {f for f in config.ModelConfig.__dataclass_fields__}


def test_every_variant_but_pop_has_a_servable():
    assert config.servable_variants() == tuple(name for name in config.VARIANTS if name != "pop")
    assert not config.has_servable(config.variant_config("pop"))
    with pytest.raises(ValueError, match="pop"):
        config.require_servable(config.variant_config("pop"))
