"""The learning-rate schedule: linear warmup, then a decay to a floor, as pure functions. The
decay (``--schedule``) is cosine (nanoGPT's), linear, or warmup-stable-decay ("wsd": flat at the
peak, then linear to the floor over the last ``decay_fraction`` of the run; Hu et al. 2024,
MiniCPM).

Progress (``fraction_done``) is the fraction of the planned run done, by steps or by time,
whichever is further, so a run bounded by ``--time-limit`` reaches the floor when its time runs
out (nanoGPT decays over a fixed number of iterations; a time budget needs the clock instead).
"""
from __future__ import annotations

import math
from typing import Optional

from charrnn.config import SCHEDULES


def planned_steps(steps: Optional[int], epochs: Optional[float],
                  chunks_per_epoch: int) -> Optional[int]:
    """The step count a run is bounded by (the smaller of --steps and --epochs), or None."""
    plans = [p for p in (steps, epochs and math.ceil(epochs * chunks_per_epoch)) if p]
    return min(plans) if plans else None


def fraction_done(step: int, elapsed: float, total_steps: Optional[int],
             time_limit: Optional[float]) -> float:
    """Fraction in [0, 1] of the run done: ``step`` of ``total_steps``, ``elapsed`` seconds of
    ``time_limit``, whichever is further (0 when neither bound is given)."""
    fractions = [0.0]
    if total_steps:
        fractions.append(step / total_steps)
    if time_limit:
        fractions.append(elapsed / time_limit)
    return min(1.0, max(fractions))


def learning_rate(step: int, done: float, peak: float, warmup_steps: int,
                  min_ratio: float, schedule: str = "cosine",
                  decay_fraction: float = 0.2) -> float:
    """The rate for step ``step`` (0-based) at progress ``done`` in [0, 1]:
    ``peak * warmup * (min_ratio + (1 - min_ratio) * decay(done))`` where warmup rises linearly
    from 1/warmup_steps to 1 over the first ``warmup_steps`` steps and ``decay`` falls from 1
    to 0 as ``schedule`` says (``decay``). Raises ValueError for an unknown schedule."""
    warmup = min(1.0, (step + 1) / max(1, warmup_steps))
    return peak * warmup * (min_ratio + (1.0 - min_ratio) * decay(done, schedule,
                                                                  decay_fraction))


def decay(done: float, schedule: str = "cosine", decay_fraction: float = 0.2) -> float:
    """The share of the way from the floor to the peak at progress ``done`` in [0, 1]: 1 at 0,
    0 at 1, never rising. cosine: (1 + cos(pi * done)) / 2; linear: 1 - done; wsd: 1 until
    1 - decay_fraction (the knee), then linear to 0. Raises ValueError for another schedule."""
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * done))
    if schedule == "linear":
        return 1.0 - done
    if schedule == "wsd":
        return 1.0 if done <= 1.0 - decay_fraction else (1.0 - done) / decay_fraction
    raise ValueError(f"unknown schedule {schedule!r}: one of {', '.join(SCHEDULES)}")


def scheduled_rate(config, step: int, done: float) -> float:
    """``learning_rate`` with a TrainConfig's lr, warmup_steps, min_lr_ratio, schedule and
    decay_fraction."""
    return learning_rate(step, done, config.lr, config.warmup_steps, config.min_lr_ratio,
                         config.schedule, config.decay_fraction)
