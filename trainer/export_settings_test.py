"""ExportSettings: its checks, its JSON form and the catalogue check made before training."""

import pytest

from trainer.config import variant_config
from trainer.export_settings import ExportSettings

CONFIG = variant_config("dmi", {"max_length": 20, "diffusion_steps": 10})


def test_defaults_are_the_exporters_and_serialize_to_nothing():
    assert ExportSettings() == ExportSettings(None, None, True, None)
    assert ExportSettings().to_dict() == {}
    assert ExportSettings.from_dict(None) == ExportSettings.from_dict({}) == ExportSettings()


def test_to_dict_keeps_only_what_differs_and_round_trips():
    settings = ExportSettings(scann_leaves=100, scann_leaves_to_search=10, xla=False, sampling_steps=1)
    assert settings.to_dict() == {
        "scann_leaves": 100,
        "scann_leaves_to_search": 10,
        "xla": False,
        "sampling_steps": 1,
    }
    assert ExportSettings.from_dict(settings.to_dict()) == settings
    assert ExportSettings(scann_leaves_to_search=7).to_dict() == {"scann_leaves_to_search": 7}


@pytest.mark.parametrize(
    "values, message",
    [
        ({"scann_leaves": 0}, "scann_leaves must be a positive integer, got 0"),
        ({"scann_leaves": True}, "scann_leaves must be a positive integer"),
        ({"scann_leaves": 1}, "scann_leaves must be at least 2: ScaNN's tree of one leaf answers the first item"),
        ({"scann_leaves_to_search": 2.5}, "scann_leaves_to_search must be a positive integer"),
        ({"scann_leaves": 10, "scann_leaves_to_search": 11}, r"scann_leaves_to_search \(11\) must be at most"),
        ({"xla": "no"}, "xla must be true or false"),
        ({"sampling_steps": 0}, "sampling_steps must be a positive integer, got 0"),
        ({"leaves": 10}, "unknown export setting"),
    ],
)
def test_bad_settings_are_refused_with_their_name(values, message):
    with pytest.raises(ValueError, match=message):
        ExportSettings.from_dict(values)


def test_the_catalogue_check_bounds_the_leaves_by_the_items_and_the_search_by_the_leaves():
    ExportSettings(scann_leaves=1_000, scann_leaves_to_search=1_000).check_model(CONFIG, 1_000)
    with pytest.raises(ValueError, match=r"scann_leaves must be between 2 and the number of items \(1,000\)"):
        ExportSettings(scann_leaves=1_001).check_model(CONFIG, 1_000)
    # Without scann_leaves the index has about sqrt(N) leaves: 32 for 1,000 items.
    ExportSettings(scann_leaves_to_search=32).check_model(CONFIG, 1_000)
    with pytest.raises(ValueError, match="scann_leaves_to_search must be between 1 and the index's 32 leaves"):
        ExportSettings(scann_leaves_to_search=33).check_model(CONFIG, 1_000)


def test_the_ddim_steps_must_fit_the_models_refiner():
    ExportSettings(sampling_steps=10).check_config(CONFIG)
    ExportSettings(sampling_steps=1).check_model(CONFIG, 1_000)
    with pytest.raises(ValueError, match=r"sampling_steps \(11\) must be at most the model's diffusion_steps T = 10"):
        ExportSettings(sampling_steps=11).check_model(CONFIG, 1_000)
    with pytest.raises(ValueError, match="the 'remi' model has no diffusion refiner"):
        ExportSettings(sampling_steps=1).check_config(variant_config("remi", {}))
    ExportSettings().check_config(variant_config("remi", {}))  # the default applies to every model
