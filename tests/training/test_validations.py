"""When a run validates (charrnn/training/validations.py): the pure plan, then real runs on tiny
data whose interval is planned from their steps or from a measured rate, saved for --resume."""
import json
import math

import pytest

from charrnn.training import validations
from charrnn.training.validations import (EPOCHS_PER_VALIDATION, MIN_VAL_CHARS, SHARE,
                                          VALIDATIONS, plan)
from conftest import make_corpus, tiny_config


def test_a_long_run_on_a_large_text_gets_ten_validations():
    made = plan(expected_steps=10_000, steps_per_epoch=50_000, val_chars=100_000)
    assert made.interval == 1_000 and made.val_chars == 100_000


def test_a_small_text_is_validated_every_two_epochs():
    made = plan(expected_steps=3_000, steps_per_epoch=17, val_chars=2_000)
    assert made.interval == math.ceil(EPOCHS_PER_VALIDATION * 17)


def test_a_short_run_validates_every_step_rather_than_never():
    assert plan(expected_steps=3, steps_per_epoch=100, val_chars=500).interval == 1


def test_validations_that_would_cost_too_much_are_spaced_out_first():
    # 60 s: 3 s for validating; 0.01 s each pays for 300, the small text wants ~1,470.
    made = plan(2_500, 17, 2_000, seconds=60, seconds_per_char=0.0, save_seconds=0.01)
    validations_made = 2_500 // made.interval + 1
    assert VALIDATIONS < validations_made <= SHARE * 60 / 0.01
    assert made.val_chars == 2_000


def test_then_each_reads_fewer_characters_but_no_fewer_than_the_floor():
    # A full validation costs 1 s: ten of them would take 11 s of a 60 s run's 3.
    made = plan(2_500, 2_000, 120_000, seconds=60, seconds_per_char=1 / 120_000,
                save_seconds=0.05)
    assert made.interval == 250
    assert MIN_VAL_CHARS <= made.val_chars < 120_000
    cost = (VALIDATIONS + 1) * (0.05 + made.val_chars / 120_000)
    assert cost <= SHARE * 60 + 1e-9


def test_only_then_fewer_validations():
    # 3 s for validating, 0.49 s for one of the fewest characters: 6, not 11.
    made = plan(2_500, 2_000, 120_000, seconds=60, seconds_per_char=3e-5, save_seconds=0.0)
    assert made.val_chars == MIN_VAL_CHARS
    assert 2_500 // made.interval + 1 <= SHARE * 60 / (3e-5 * MIN_VAL_CHARS) < VALIDATIONS
    # Not even one fits: the run validates at its end only.
    assert plan(2_500, 2_000, 120_000, seconds=10, seconds_per_char=1e-4).interval == 2_500


def test_the_users_val_chars_is_never_cut():
    made = plan(2_500, 2_000, 120_000, seconds=60, seconds_per_char=1 / 120_000,
                save_seconds=0.05, fixed_chars=True)
    assert made.val_chars == 120_000 and made.interval > 250


def validated_steps(out):
    lines = (out / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line)["step"] for line in lines]


def test_a_step_limited_run_plans_before_its_first_step(tmp_path):
    from charrnn.api import train_run
    corpus = make_corpus(tmp_path / "c.txt", chars=40_000)
    config = tiny_config(tmp_path / "run", steps=40, eval_interval=None)
    train_run(str(corpus), config)
    saved = json.loads((tmp_path / "run" / "last" / "config.json").read_text())["train"]
    assert saved["eval_interval"] == 4                    # 40 steps / 10
    assert validated_steps(tmp_path / "run") == list(range(4, 41, 4))


def test_a_time_limited_run_plans_from_its_rate_and_resume_keeps_the_plan(tmp_path):
    from charrnn.api import train_config, train_run
    corpus = make_corpus(tmp_path / "c.txt", chars=40_000)
    config = tiny_config(tmp_path / "run", time_limit=4.0, eval_interval=None, steps=None)
    result = train_run(str(corpus), config)
    saved = json.loads((tmp_path / "run" / "last" / "config.json").read_text())["train"]
    interval = saved["eval_interval"]
    assert interval and interval >= 1
    steps = validated_steps(tmp_path / "run")
    within = [s for s in steps if s % interval == 0]
    assert len(within) >= min(VALIDATIONS - 2, result.step // interval)
    # The first validation: the first multiple of the interval once the plan is made.
    assert steps[0] == interval * math.ceil(validations.WARM_STEPS / interval)
    resumed = train_config(str(corpus), str(tmp_path / "run"), resume=True, time_limit=6.0)
    assert resumed.eval_interval == interval


def test_the_users_eval_interval_wins(tmp_path):
    from charrnn.api import train_run
    corpus = make_corpus(tmp_path / "c.txt", chars=40_000)
    train_run(str(corpus), tiny_config(tmp_path / "run", steps=12, eval_interval=5))
    assert validated_steps(tmp_path / "run") == [5, 10, 12]


@pytest.mark.parametrize("given, expected", [(None, 3), (0, 0), (7, 7)])
def test_auto_stops_early_on_a_small_text_unless_told(tmp_path, given, expected):
    from charrnn.api import train_config
    corpus = make_corpus(tmp_path / "c.txt", chars=20_000)
    config = train_config(str(corpus), str(tmp_path / "run"), "auto", time_limit=60.0,
                          early_stop=given, device="cpu")
    assert config.early_stop == expected


def test_a_note_says_when_the_model_starts_to_overfit_and_where_best_is(tmp_path, capsys):
    from charrnn.api import train_run
    corpus = make_corpus(tmp_path / "c.txt", chars=3_000)       # learnt by heart in seconds
    config = tiny_config(tmp_path / "run", steps=150, eval_interval=10, val_fraction=0.3)
    config.model.hidden_size = 128
    train_run(str(corpus), config)
    notes = [line for line in capsys.readouterr().err.splitlines() if "overfit" in line]
    assert notes, "no overfitting note"
    best_step = json.loads((tmp_path / "run" / "best" / "config.json").read_text())["metrics"]["step"]
    assert all(n.startswith("note: val loss has not beaten") for n in notes)
    assert any(n.endswith(f"best/ holds step {best_step}") for n in notes)


@pytest.mark.parametrize("evals, steps_since, noted", [(2, 2, False), (5, 5, False),
                                                        (2, 20, True), (1, 100, False)])
def test_the_overfitting_note_needs_evaluations_and_steps_since_the_best(evals, steps_since,
                                                                          noted):
    from types import SimpleNamespace
    from charrnn.training.trainer import _say_if_overfitting
    notes = []
    state = SimpleNamespace(evals_since_best=evals, step=500 + steps_since, best_step=500,
                            best_val_loss=1.5, val_loss=1.6)
    run = SimpleNamespace(state=state, ctx=SimpleNamespace(is_main=True), overfit_noted=-1)
    bar = SimpleNamespace(note=notes.append)
    _say_if_overfitting(run, bar)
    _say_if_overfitting(run, bar)          # the same stretch: said once at most
    assert len(notes) == int(noted)
    if noted:
        assert "(step 500)" in notes[0] and notes[0].endswith("best/ holds step 500")
