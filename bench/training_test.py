"""Tests for bench.training: which recorded runs train the same model as a current config."""

from bench import training


def test_runs_that_train_the_same_model_are_recognised():
    dmi = training.config_dict("dmi", {})
    old = {k: v for k, v in dmi.items() if k != "denoiser_dropout"}  # recorded before the field existed
    assert training.same_config(old, dmi)
    assert not training.same_config({**dmi, "eta": 0.2}, dmi)
    assert not training.same_config(old, {**dmi, "denoiser_dropout": 0.1})
    remi = training.config_dict("remi", {})
    assert training.same_config(
        {**remi, "noise_scale": 1.0, "denoiser_norm": "post"}, remi
    )  # unused without diffusion
    assert not training.same_config({**remi, "learning_rate": 0.002}, remi)
