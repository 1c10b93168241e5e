import pytest

from charrnn import CharRNNError
from charrnn.config import PRESETS, TrainConfig, parse_duration, preset


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_is_valid_and_survives_a_round_trip(name):
    config = preset(name).validate()
    again = TrainConfig.from_dict(config.to_dict())
    assert again == config


def test_cpu_presets_carry_their_tuned_optimiser_settings():
    quick = preset("cpu-1m")
    assert (quick.beta1, quick.beta2, quick.weight_decay) == (0.8, 0.99, 0.1)
    assert quick.time_limit == 60.0


def test_a_config_saved_before_betas_existed_gets_the_old_defaults():
    saved = TrainConfig().to_dict()
    del saved["beta1"], saved["beta2"]
    loaded = TrainConfig.from_dict(saved)
    assert (loaded.beta1, loaded.beta2) == (0.9, 0.99)


@pytest.mark.parametrize("changes", [dict(beta1=1.0), dict(beta2=-0.1), dict(lr=0.0)])
def test_bad_optimiser_settings_are_clear_errors(changes):
    with pytest.raises(CharRNNError):
        TrainConfig(**changes).validate()


def test_durations():
    assert parse_duration("1h30m") == 5400 and parse_duration("90s") == 90
    with pytest.raises(CharRNNError):
        parse_duration("soon")
