import re

import pytest

from charrnn import CharRNNError
from charrnn.config import TrainConfig, parse_duration
from charrnn.training.presets import PRESETS, preset


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_is_valid_and_survives_a_round_trip(name):
    config = preset(name).validate()
    again = TrainConfig.from_dict(config.to_dict())
    assert again == config


BUDGETS = {"1m": 60.0, "3m": 180.0, "10m": 600.0}


@pytest.mark.parametrize("name", sorted(n for n in PRESETS if "-" in n))
def test_a_preset_named_for_a_budget_trains_for_that_budget(name):
    assert preset(name).time_limit == BUDGETS[name.split("-")[1]]


def test_a_preset_is_a_fresh_copy_each_time():
    first = preset("cpu-1m")
    first.model.hidden_size, first.lr = 7, 1.0
    assert preset("cpu-1m").model.hidden_size != 7 and preset("cpu-1m").lr != 1.0


def test_a_step_limit_given_by_the_user_replaces_the_presets_time_limit(corpus, tmp_path):
    from charrnn.api import train_config
    config = train_config(str(corpus), str(tmp_path / "run"), "cpu-1m", steps=100)
    assert (config.steps, config.time_limit) == (100, None)
    config = train_config(str(corpus), str(tmp_path / "run"), "cpu-1m", epochs=2,
                          time_limit=30.0)
    assert (config.epochs, config.time_limit) == (2, 30.0)


def test_a_config_saved_before_betas_existed_gets_the_old_defaults():
    saved = TrainConfig().to_dict()
    del saved["beta1"], saved["beta2"]
    loaded = TrainConfig.from_dict(saved)
    assert (loaded.beta1, loaded.beta2) == (0.9, 0.99)


@pytest.mark.parametrize("changes, message", [(dict(beta1=1.0), "beta1 must be in [0, 1)"),
                                              (dict(beta2=-0.1), "beta2 must be in [0, 1)"),
                                              (dict(lr=0.0), "lr must be > 0")])
def test_bad_optimiser_settings_are_clear_errors(changes, message):
    with pytest.raises(CharRNNError, match=re.escape(message)):
        TrainConfig(**changes).validate()


def test_durations():
    assert parse_duration("1h30m") == 5400 and parse_duration("90s") == 90
    with pytest.raises(CharRNNError, match="cannot read time 'soon'"):
        parse_duration("soon")


def test_stop_text_from_the_command_line_reads_backslash_escapes():
    from charrnn.config import unescape
    assert unescape("a\\nb\\tc") == "a\nb\tc"
    assert unescape("\\\\n stays") == "\\n stays"        # an escaped backslash
    assert unescape("\\x and é") == "\\x and é"           # anything else is left as it is
