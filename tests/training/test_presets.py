"""The rule behind --preset auto (charrnn/training/presets.py resolve_defaults) and its wiring into
train_config and the CLI."""
import json

import pytest

from charrnn.training.presets import (CPU_LADDER, DEFAULT_BUDGET, EARLY_STOP, EXTRA_DROPOUT, FINE_TUNE_LR_SCALE,
                             FP32_SLOWDOWN, LARGE_VOCAB, LARGE_VOCAB_EMBED, NOMINAL_STEPS_PER_S,
                             PRESETS, nominal_seconds, preset, resolve_defaults)

from conftest import cli

SHAKESPEARE = 1_115_394      # tinyshakespeare's characters, where the CPU presets were tuned
LADDER = [name for name, _ in CPU_LADDER]


def auto(time_limit=None, steps=None, epochs=None, device="cpu", chars=SHAKESPEARE, vocab=65,
         fine_tune=False, bf16=True, **more):
    return resolve_defaults(time_limit=time_limit, steps=steps, epochs=epochs, device_type=device,
                            corpus_chars=chars, vocab_size=vocab, fine_tune=fine_tune,
                            native_bf16=bf16, **more)


@pytest.mark.parametrize("given, expected", [
    # The presets' own budgets on the corpus they were tuned on give them unchanged.
    (dict(time_limit=60.0), ("cpu-1m", {})),
    (dict(time_limit=180.0), ("cpu-3m", {})),
    (dict(time_limit=600.0), ("cpu-10m", {})),
    (dict(), ("cpu-10m", {})),                                  # no limit: 10 minutes, as before
    (dict(time_limit=90.0), ("cpu-1m", {})),
    (dict(time_limit=300.0), ("cpu-3m", {})),
    # A CPU without native bf16 trains in fp32, 1.75x slower: the budget buys a smaller preset.
    (dict(time_limit=300.0, bf16=False), ("cpu-1m", {})),
    (dict(time_limit=600.0, bf16=False), ("cpu-3m", {})),
    (dict(bf16=False), ("cpu-3m", {"time_limit": DEFAULT_BUDGET})),
    (dict(time_limit=600.0, precision="fp32"), ("cpu-3m", {})),  # fp32 asked for: the same
    # Steps and epochs are work, the same on any CPU: nominal steps per second turn them into time.
    (dict(steps=2000), ("cpu-1m", {})),
    (dict(steps=5000), ("cpu-3m", {})),
    (dict(steps=5000, bf16=False), ("cpu-3m", {})),
    (dict(steps=6000), ("cpu-3m", {})),        # 6,000 steps are ~5.6 minutes of cpu-10m
    (dict(steps=11000), ("cpu-10m", {})),
    (dict(steps=11000, time_limit=60.0), ("cpu-1m", {})),     # the first limit reached holds      # the first limit reached holds
    (dict(epochs=1.0), ("cpu-1m", {})),
    (dict(epochs=1.0, chars=None, vocab=None), ("cpu-10m", {})),   # of unknown size: as before
    # The corpus: seen less than once, no dropout; seen many times, more.
    (dict(time_limit=600.0, chars=50_000_000), ("cpu-10m", {"dropout": 0.0})),
    # 300 K characters seen ~10 times in a minute: cpu-1m's dropout 0 becomes EXTRA_DROPOUT.
    (dict(time_limit=60.0, chars=300_000), ("cpu-1m", {"dropout": EXTRA_DROPOUT})),
    (dict(time_limit=180.0, chars=450_000), ("cpu-3m", {"dropout": EXTRA_DROPOUT})),
    (dict(time_limit=60.0, chars=50_000), ("cpu-1m", {"dropout": EXTRA_DROPOUT,
                                                     "early_stop": EARLY_STOP})),
    (dict(time_limit=600.0, chars=200_000), ("cpu-10m", {"dropout": 0.25 + EXTRA_DROPOUT,
                                                        "early_stop": EARLY_STOP})),
    (dict(time_limit=60.0, vocab=LARGE_VOCAB + 15), ("cpu-1m", {"embed_size": LARGE_VOCAB_EMBED})),
    (dict(time_limit=60.0, vocab=LARGE_VOCAB), ("cpu-1m", {})),
    # A fine-tune: the preset's rate x FINE_TUNE_LR_SCALE; the embedding is the source's.
    (dict(time_limit=60.0, vocab=300, fine_tune=True), ("cpu-1m", {"lr": 8e-3 * FINE_TUNE_LR_SCALE})),
    # CUDA: gpu-3m, with its own time limit when none is given.
    (dict(device="cuda"), ("gpu-3m", {})),
    (dict(device="cuda", time_limit=60.0, bf16=False), ("gpu-3m", {})),
])
def test_auto_picks_by_budget_machine_and_corpus(given, expected):
    resolved = auto(**given)
    assert (resolved.preset, resolved.overrides) == (expected[0], pytest.approx(expected[1]))
    assert resolved.reason.startswith(f"auto: {expected[0]} for ") and "\n" not in resolved.reason


GRID = [10, 30, 60, 90, 120, 150, 179, 180, 200, 300, 450, 599, 600, 900, 3600, 36000]


@pytest.mark.parametrize("bf16", [True, False])
def test_a_larger_budget_never_picks_a_smaller_preset(bf16):
    for key, scale in (("time_limit", 1), ("steps", 30), ("epochs", 0.02)):
        picked = [LADDER.index(auto(**{key: value * scale}, bf16=bf16).preset) for value in GRID]
        assert picked == sorted(picked), key
        assert picked[0] == 0 and picked[-1] == len(LADDER) - 1, key


@pytest.mark.parametrize("bf16", [True, False])
@pytest.mark.parametrize("seconds", GRID)
def test_auto_never_picks_a_preset_tuned_for_more_time_than_the_run_has(bf16, seconds):
    for given in (dict(time_limit=seconds), dict(steps=int(seconds * 30))):
        name = auto(**given, bf16=bf16).preset
        budget = nominal_seconds(name, (given.get("time_limit"), given.get("steps"), None),
                                 1.0 if bf16 else FP32_SLOWDOWN, None)
        assert name == LADDER[0] or PRESETS[name]["time_limit"] <= budget, (given, name)


def test_the_ladders_thresholds_cover_the_presets_time_limits():
    thresholds = [threshold for _, threshold in CPU_LADDER]
    assert thresholds == sorted(thresholds) and thresholds[0] == 0
    for name, threshold in CPU_LADDER[1:]:
        assert threshold >= PRESETS[name]["time_limit"]
    rates = [NOMINAL_STEPS_PER_S[name] for name in LADDER]
    assert rates == sorted(rates, reverse=True)      # a larger preset makes fewer steps a second


def test_without_native_bf16_the_pick_is_that_for_a_shorter_budget():
    for seconds in GRID:
        slow = auto(time_limit=seconds, bf16=False)
        assert slow.preset == auto(time_limit=seconds / FP32_SLOWDOWN).preset
        assert "no native bf16" in slow.reason and f"1/{FP32_SLOWDOWN:g}" in slow.reason
    assert "bf16 native" in auto(time_limit=60.0).reason


def test_the_reason_names_the_budget_the_corpus_and_each_change():
    reason = auto(time_limit=60.0, chars=50_000, vocab=200).reason
    assert reason.startswith("auto: cpu-1m for a 60 s limit on 50 K characters, bf16 native")
    assert f"dropout {EXTRA_DROPOUT:g} for ~" in reason and "embedding 128 for 200" in reason
    assert "5,000 steps" in auto(steps=5000).reason


@pytest.mark.parametrize("fine_tune", [False, True])
def test_early_stopping_comes_with_many_epochs_from_scratch_or_fine_tuning(fine_tune):
    """Over MANY_EPOCHS passes, early stopping; a text the budget passes over fewer times
    trains to its limit (tinyshakespeare: ~11 epochs in cpu-10m's 10 minutes)."""
    small = auto(time_limit=60.0, chars=50_000, fine_tune=fine_tune)
    assert small.overrides["early_stop"] == EARLY_STOP
    assert f"early stop after {EARLY_STOP} validations" in small.reason
    assert "early_stop" not in auto(time_limit=600.0, fine_tune=fine_tune).overrides


def test_the_resolved_config_is_the_preset_with_the_overrides():
    resolved = auto(time_limit=600.0, chars=200_000, vocab=400, fine_tune=True)
    config = resolved.config().validate()
    base = preset(resolved.preset)
    assert config.model.dropout == resolved.overrides["dropout"] != base.model.dropout
    assert config.lr == base.lr * FINE_TUNE_LR_SCALE
    assert (config.model.hidden_size, config.model.embed_size) == \
        (base.model.hidden_size, base.model.embed_size)


def test_train_config_with_auto_follows_the_time_limit_and_the_users_options_win(
        corpus, tmp_path, capsys, monkeypatch):
    from charrnn.api import train_config
    monkeypatch.setenv("CHARRNN_NATIVE_BF16", "1")
    config = train_config(str(corpus), str(tmp_path / "run"), "auto", time_limit=60.0,
                          device="cpu")
    one = preset("cpu-1m")
    assert (config.model.hidden_size, config.time_limit, config.lr) == \
        (one.model.hidden_size, 60.0, one.lr)
    # 20 K characters seen ~100 times in a minute: more dropout than the preset's, said once.
    assert config.model.dropout == EXTRA_DROPOUT
    notes = [line for line in capsys.readouterr().err.splitlines() if line.startswith("note:")]
    assert len(notes) == 1 and notes[0].startswith("note: auto: cpu-1m for a 60 s limit on 20 K")
    config = train_config(str(corpus), str(tmp_path / "run"), "auto", time_limit=600.0,
                          dropout=0.05, hidden_size=100, device="cpu")
    assert (config.model.hidden_size, config.model.dropout, config.model.layers) == (100, 0.05, 1)


def test_train_config_without_native_bf16_picks_for_fp32(corpus, tmp_path, monkeypatch):
    from charrnn.api import train_config
    monkeypatch.setenv("CHARRNN_NATIVE_BF16", "0")
    config = train_config(str(corpus), str(tmp_path / "run"), "auto", device="cpu")
    assert config.model.hidden_size == preset("cpu-3m").model.hidden_size
    assert config.time_limit == DEFAULT_BUDGET


def test_the_cli_says_what_auto_picked_in_one_note(corpus, tmp_path, monkeypatch):
    monkeypatch.setenv("CHARRNN_NATIVE_BF16", "1")
    result = cli("train", corpus, "--out", tmp_path / "run", "--cache-dir", tmp_path / "cache",
                 "--steps", "2", "--device", "cpu", "--no-progress", "--sample-length", "0",
                 "--hidden-size", "16")       # (a given option wins, and keeps the test fast)
    assert result.exit_code == 0, result.output
    notes = [line for line in result.output.splitlines() if line.startswith("note: auto:")]
    assert notes == [next(line for line in result.output.splitlines() if "auto:" in line)]
    assert notes[0].startswith("note: auto: cpu-1m for 2 steps on 20 K characters")


@pytest.mark.parametrize("flags, expected", [((), True), (("--no-epoch-offset",), False)])
def test_a_presets_epoch_offset_can_be_turned_off_on_the_cli(corpus, tmp_path, flags, expected):
    assert PRESETS["cpu-10m"]["epoch_offset"] is True
    out = tmp_path / "run"
    result = cli("train", corpus, "--preset", "cpu-10m", "--out", out, "--cache-dir",
                 tmp_path / "cache", "--steps", "2", "--device", "cpu", "--no-progress",
                 "--sample-length", "0", "--hidden-size", "16", *flags)
    assert result.exit_code == 0, result.output
    saved = json.loads((out / "last" / "config.json").read_text())
    assert saved["train"]["epoch_offset"] is expected
