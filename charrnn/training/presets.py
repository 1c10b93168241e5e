"""Presets, starting settings named for the budget and device they were tuned on, and the rule
behind ``--preset auto`` (``resolve_defaults``): which preset, and what to change in it, for
the time limit or step count, the device, the corpus and whether the run is a fine-tune.

``resolve_defaults`` is pure: the caller (charrnn/training/launch.py) gathers the facts (the corpus's
size, the CPU's bf16 support) and passes them in, so every rule is unit-tested on plain values.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from charrnn import options
from charrnn.config import TrainConfig
from charrnn.errors import CharRNNError

# What every CPU preset adds (bench/TRIED.md, "Round three", LSTM 1x512 at 1,500 steps and
# 1x768 at 5,000 steps on tinyshakespeare): the output bias starts at the log character
# frequencies (1.5047 -> 1.4622 nats/char at 1,500 steps), and the weights are averaged
# (1.5111 -> 1.5047; at 5,000 steps 1.4204 -> 1.4050, and with both 1.3962). Weight drop,
# locked dropout, a random offset per epoch and linear or warmup-stable-decay schedules did not
# help at these budgets.
AVERAGED = dict(ema=0.999, head_bias="unigram")

# Presets are named for the budget and the device they were tuned on (see bench/RESULTS.md).
PRESETS: dict[str, dict[str, Any]] = {
    # 60 s on 2 CPU cores: one wide layer, short chunks and a high rate learn fastest per second;
    # AdamW with beta1 0.8 and weight decay 0.1 (bench/TRIED.md). The presets leave
    # --eval-interval to the plan for the run's length (charrnn/training/validations.py).
    "cpu-1m": dict(model=dict(cell="lstm", layers=1, hidden_size=512, embed_size=64, dropout=0.0),
                   batch_size=32, seq_len=32, lr=8e-3, warmup_steps=100, weight_decay=0.1,
                   beta1=0.8, time_limit=60.0, **AVERAGED),
    # 3 min on 2 CPU cores: between the two it is named after (width, rate and dropout
    # interpolated; not tuned by a sweep yet), for the budgets auto gives neither.
    "cpu-3m": dict(model=dict(cell="lstm", layers=1, hidden_size=640, embed_size=64, dropout=0.1),
                   batch_size=32, seq_len=32, lr=8e-3, warmup_steps=100, weight_decay=0.1,
                   beta1=0.8, time_limit=180.0, **AVERAGED),
    # 10 min on 2 CPU cores: still compute-bound, so one wide layer with many small updates
    # beats the classic 2x512 at batch 64; by 6 epochs of tinyshakespeare it overfits (train
    # 1.10 vs val 1.42 at dropout 0.1), hence dropout 0.25 (0.2 and 0.35 lost). With averaged
    # weights a higher rate pays: 5,000 steps at 5e-3 / 7e-3 / 1e-2: 1.3962 / 1.3903 / 1.3813
    # (bench/TRIED.md). Its ~11 epochs no longer cut the same chunks (--epoch-offset: 1.3671
    # -> 1.3589 at 11,000 steps, 10-minute median 1.368 -> 1.362; wider, deeper, more dropout
    # or weight decay gained less).
    "cpu-10m": dict(model=dict(cell="lstm", layers=1, hidden_size=768, embed_size=64, dropout=0.25),
                    batch_size=32, seq_len=32, lr=1e-2, warmup_steps=100, weight_decay=0.1,
                    beta1=0.8, time_limit=600.0, epoch_offset=True,
                    **AVERAGED),
    "gpu-3m": dict(model=dict(cell="lstm", layers=3, hidden_size=1024, embed_size=128, dropout=0.2),
                   batch_size=128, seq_len=256, lr=2e-3, warmup_steps=100, time_limit=180.0),
    "tiny": dict(model=dict(cell="lstm", layers=1, hidden_size=64, embed_size=16, dropout=0.0),
                 batch_size=8, seq_len=32, lr=1e-2, warmup_steps=5),
}


# A fine-tune starts from trained weights: its default peak rate is the preset's times this.
# Measured (bench/TRIED.md, cpu-1m, tinyshakespeare -> German, 900 steps): the full rate learns
# the new text best (1.356 nats/char) but forgets most of the old (3.41 from 1.58); x0.5: 1.383
# and 3.17; x0.25: 1.453 and 2.98, no better than a fresh run (1.456). x0.5 is the compromise.
FINE_TUNE_LR_SCALE = 0.5

# ---------------------------------------------------------------------------------------------
# The auto rule's numbers, all in one place (to be retuned from bench-full's corpus grid).
#
# The CPU ladder, smallest first: (preset, the budget from which auto picks it, in seconds of a
# CPU training with native bf16). The largest preset whose threshold the budget reaches wins;
# cpu-1m is the floor. Each threshold is at least its preset's own time limit, so auto never
# picks a preset tuned for more time than the run has (tests/training/test_presets.py checks it).
CPU_LADDER = (("cpu-1m", 0.0), ("cpu-3m", 180.0), ("cpu-10m", 600.0))
# Steps per second of each preset on 2 cores of an Intel Xeon with AVX512-BF16, bf16 autocast,
# with the paired dropout mask (bench/RESULTS.md): cpu-1m 42 (`make bench`, 2,500-2,637 steps in
# 60 s), cpu-3m 21 (bench-full's 3-minute grid: 3,623-3,839 steps in 180 s on code, German and
# Russian), cpu-10m 18 (bench-full's 10-minute medians: 10,841 and 10,981 steps in 600 s; the
# third seed 8,929). They turn --steps and --epochs into a budget in seconds, and a budget into
# epochs.
NOMINAL_STEPS_PER_S = {"cpu-1m": 42.0, "cpu-3m": 21.0, "cpu-10m": 18.0}
# bf16 autocast buys 1.75x in training on a CPU with native bf16 (issue 12, AVX512-BF16 Xeon):
# a wall-clock limit on a CPU training in fp32 (or emulated bf16, slower still) buys what
# 1/1.75 of it buys there. A step or epoch limit is the same work on any machine: not scaled.
FP32_SLOWDOWN = 1.75
# No limit at all: the default budget, 10 minutes (cpu-10m's own limit, auto's pick before).
DEFAULT_BUDGET = 600.0
DEFAULT_PRESET = "cpu-10m"    # when the budget cannot be known (epochs of a corpus of unknown size)
GPU_PRESET = "gpu-3m"         # CUDA: the one GPU preset, as before
# Epochs the preset would run = characters it sees in the budget / training characters.
# Under FEW_EPOCHS no character is seen twice and dropout only slows learning: dropout 0.
# Over MANY_EPOCHS the text is smaller for the budget than any preset was tuned on: the preset's
# dropout + EXTRA_DROPOUT, at most MAX_DROPOUT (AWD-LSTM's character models used 0.1-0.5).
# cpu-10m sees ~11 epochs of tinyshakespeare in its 10 minutes, and its dropout 0.25 still beats
# 0.4 there (bench/TRIED.md, round four: 1.3671 against 1.3715 at 11,000 steps), hence 12.
# Over SOME_EPOCHS, the dropout is at least EXTRA_DROPOUT: cpu-1m (tuned at dropout 0 for
# ~2.6 epochs of tinyshakespeare) on 300 KB texts (~10 epochs) gained 0.010-0.015 nats/char
# with 0.15 on prose, verse and code (0.3: 0.02-0.03, one seed; bench/RESULTS.md, Small texts).
# 8, not 6: an fp32 CPU gives tinyshakespeare ~7.5 epochs in cpu-1m and cpu-3m budgets, unmeasured.
FEW_EPOCHS = 1.0
SOME_EPOCHS = 8.0
MANY_EPOCHS = 12.0
EXTRA_DROPOUT = 0.15
MAX_DROPOUT = 0.5
# Over MANY_EPOCHS the model also learns the text by heart before the budget ends (issue 29: 80
# KB of man pages for 2 minutes, ~72 epochs, was best at ~6): early stopping after
# EARLY_STOP evaluations without a better validation loss (a user's --early-stop wins; 0: off).
EARLY_STOP = 3
# A vocabulary above LARGE_VOCAB characters (another alphabet, CJK, code) gets an embedding of
# LARGE_VOCAB_EMBED (the CPU presets' 64 was tuned on tinyshakespeare's 65 characters).
LARGE_VOCAB = 150
LARGE_VOCAB_EMBED = 128


def preset(name: str, fine_tune: bool = False) -> TrainConfig:
    """A TrainConfig filled from the named preset; ``fine_tune``: its training settings for a
    run with --init-from (the rate times FINE_TUNE_LR_SCALE; the shape comes from the source).
    Raises CharRNNError for an unknown name."""
    if name not in PRESETS:
        raise CharRNNError(f"unknown preset {name!r}{options.did_you_mean(name, PRESETS)}: "
                           f"choose one of {', '.join(PRESETS)}")
    config = TrainConfig.from_dict(PRESETS[name])
    if fine_tune:
        config.lr *= FINE_TUNE_LR_SCALE
    return config


@dataclass(frozen=True)
class Resolved:
    """What ``--preset auto`` resolved to: a preset, the settings changed on top of it
    (TrainConfig and ModelConfig field names -> values) and why, in one line."""
    preset: str
    overrides: dict = field(default_factory=dict)
    reason: str = ""

    def config(self) -> TrainConfig:
        """The preset's TrainConfig with the overrides applied (a fresh copy each time)."""
        config = preset(self.preset)
        for key, value in self.overrides.items():
            setattr(config.model if hasattr(config.model, key) else config, key, value)
        return config


def resolve_defaults(*, time_limit: Optional[float] = None, steps: Optional[int] = None,
                     epochs: Optional[float] = None, device_type: str = "cpu",
                     corpus_chars: Optional[int] = None, vocab_size: Optional[int] = None,
                     fine_tune: bool = False, native_bf16: bool = False,
                     precision: str = "auto", val_fraction: float = 0.1) -> Resolved:
    """The settings ``--preset auto`` starts from (pure: no I/O, no device queries); every
    argument by keyword.

    ``time_limit`` in seconds, ``steps``, ``epochs``: the limits the user gave (None: not
    given; several: the first reached holds). ``device_type``: "cpu", "cuda" or "mps".
    ``corpus_chars``, ``vocab_size``: the corpus's characters and distinct characters (None:
    unknown; their rules are then skipped). ``native_bf16``: the CPU has AVX512-BF16 or AMX;
    ``precision``: the user's --precision. Rules (constants above): CUDA takes gpu-3m; elsewhere
    the budget picks from CPU_LADDER (a fp32 CPU's limit counted as 1/FP32_SLOWDOWN of it), the
    epochs it buys set the dropout and, over MANY_EPOCHS, early stopping; a large vocabulary a
    wider embedding, a fine-tune the rate
    times FINE_TUNE_LR_SCALE (and keeps the source's embedding)."""
    train_chars = corpus_chars * (1 - val_fraction) if corpus_chars else None
    cpu_bf16 = device_type != "cpu" or (native_bf16 and precision != "fp32")
    slowdown = 1.0 if cpu_bf16 else FP32_SLOWDOWN
    limits = (time_limit, steps, epochs)
    if device_type == "cuda":
        name, seconds = GPU_PRESET, None
    else:
        name, seconds = _pick(limits, slowdown, train_chars)
    changes, notes = {}, []
    if device_type != "cuda" and limits == (None, None, None) \
            and PRESETS[name].get("time_limit") != DEFAULT_BUDGET:
        changes["time_limit"] = DEFAULT_BUDGET      # the default budget, whatever the preset
    seen = _epochs(name, seconds, train_chars)
    if seen is not None:
        dropout = _dropout(PRESETS[name]["model"]["dropout"], seen)
        if dropout != PRESETS[name]["model"]["dropout"]:
            changes["dropout"] = dropout
            notes.append(f"dropout {dropout:g} for ~{seen:.1f} epochs" if seen < 10 else
                         f"dropout {dropout:g} for ~{seen:,.0f} epochs")
        if seen > MANY_EPOCHS:
            changes["early_stop"] = EARLY_STOP
            notes.append(f"early stop after {EARLY_STOP} validations without a better loss")
    embed = PRESETS[name]["model"]["embed_size"]
    if vocab_size and vocab_size > LARGE_VOCAB and embed < LARGE_VOCAB_EMBED and not fine_tune:
        changes["embed_size"] = LARGE_VOCAB_EMBED
        notes.append(f"embedding {LARGE_VOCAB_EMBED} for {vocab_size} characters")
    if fine_tune:
        changes["lr"] = PRESETS[name]["lr"] * FINE_TUNE_LR_SCALE
        notes.append(f"rate x{FINE_TUNE_LR_SCALE:g} (a fine-tune)")
    reason = _reason(name, limits, seconds, notes, device_type=device_type,
                     corpus_chars=corpus_chars, precision=precision, cpu_bf16=cpu_bf16,
                     native_bf16=native_bf16)
    return Resolved(name, changes, reason)


def nominal_seconds(name: str, limits: tuple, slowdown: float,
                    train_chars: Optional[float]) -> Optional[float]:
    """The budget in seconds of a CPU with native bf16 that preset ``name`` trains for under
    ``limits`` = (time limit in seconds, steps, epochs), the first reached holding; a time limit
    is divided by ``slowdown``; no limit: DEFAULT_BUDGET. None: only epochs, of unknown size."""
    time_limit, steps, epochs = limits
    rate = NOMINAL_STEPS_PER_S[name]
    step_chars = PRESETS[name]["batch_size"] * PRESETS[name]["seq_len"]
    found = []
    if time_limit is not None:
        found.append(time_limit / slowdown)
    if steps is not None:
        found.append(steps / rate)
    if epochs is not None and train_chars:
        found.append(epochs * train_chars / step_chars / rate)
    if not found and epochs is None:
        found.append(DEFAULT_BUDGET / slowdown)
    return min(found) if found else None


def _pick(limits: tuple, slowdown: float, train_chars: Optional[float]
          ) -> tuple[str, Optional[float]]:
    """The largest preset of CPU_LADDER whose threshold its own budget reaches (a step limit
    lasts longer on a larger, slower preset, so each is asked for its own), and that budget."""
    choice = None
    for name, threshold in CPU_LADDER:
        seconds = nominal_seconds(name, limits, slowdown, train_chars)
        if seconds is None:
            return DEFAULT_PRESET, nominal_seconds(DEFAULT_PRESET, limits, slowdown, train_chars)
        if choice is None or seconds >= threshold:
            choice = (name, seconds)
    return choice


def _epochs(name: str, seconds: Optional[float], train_chars: Optional[float]
            ) -> Optional[float]:
    """Passes over the training text that preset ``name`` makes in ``seconds`` (None: unknown)."""
    if seconds is None or not train_chars or name not in NOMINAL_STEPS_PER_S:
        return None
    step_chars = PRESETS[name]["batch_size"] * PRESETS[name]["seq_len"]
    return round(seconds * NOMINAL_STEPS_PER_S[name] * step_chars / train_chars, 6)


def _dropout(dropout: float, epochs: float) -> float:
    """The preset's dropout for a run of ``epochs`` passes over its text."""
    if epochs < FEW_EPOCHS:
        return 0.0
    if epochs > MANY_EPOCHS:
        return max(dropout, round(min(MAX_DROPOUT, dropout + EXTRA_DROPOUT), 4))
    if epochs > SOME_EPOCHS:
        return max(dropout, EXTRA_DROPOUT)
    return dropout


def _reason(name: str, limits: tuple, seconds: Optional[float], notes: list, *,
            device_type: str, corpus_chars: Optional[int], precision: str, cpu_bf16: bool,
            native_bf16: bool) -> str:
    """One line: the pick, the budget it was picked for, the machine, and the changes."""
    time_limit, steps, epochs = limits
    given = [text for value, text in (
        (time_limit, f"a {duration(time_limit)} limit" if time_limit else ""),
        (steps, f"{steps:,} steps" if steps else ""),
        (epochs, f"{epochs:g} epoch{'s' if epochs != 1 else ''}" if epochs else "")) if value is not None]
    budget = " or ".join(given) or (f"the default {duration(DEFAULT_BUDGET)}"
                                    if device_type != "cuda" else "its own time limit")
    text = f"auto: {name} for {budget}"
    if corpus_chars:
        text += f" on {_count(corpus_chars)} characters"
    if device_type == "cuda":
        text += " on CUDA"
    elif device_type == "cpu" and cpu_bf16:
        text += ", bf16 native"
    elif device_type == "cpu":
        why = "--precision fp32" if native_bf16 else \
            "no native bf16" + (": bf16 emulated" if precision == "bf16" else "")
        text += f", fp32 speed ({why}), so picked as for 1/{FP32_SLOWDOWN:g} of the time"
    if seconds is not None and (steps is not None or epochs is not None):
        text += f" (~{duration(seconds)} at its nominal rate)"
    return "; ".join([text, *notes])


def duration(seconds: float) -> str:
    """Seconds in words: '60 s', '3 min', '1.5 h'."""
    if seconds < 120:
        return f"{seconds:.3g} s"
    if seconds < 7200:
        return f"{seconds / 60:.3g} min"
    return f"{seconds / 3600:.3g} h"


def _count(chars: int) -> str:
    """1234567 -> '1.2 M', 48000 -> '48 K'."""
    if chars >= 1e6:
        return f"{chars / 1e6:.1f} M"
    return f"{chars / 1e3:.0f} K" if chars >= 1e3 else str(chars)
