"""The learning-rate schedule: linear warmup, then cosine decay to a floor, as pure functions.

Progress is the fraction of the planned run done, by steps or by time, whichever is further,
so a run bounded by ``--time-limit`` reaches the floor when its time runs out (nanoGPT decays
over a fixed number of iterations; a time budget needs the clock instead).
"""
from __future__ import annotations

import math
from typing import Optional


def planned_steps(steps: Optional[int], epochs: Optional[float],
                  chunks_per_epoch: int) -> Optional[int]:
    """The step count a run is bounded by (the smaller of --steps and --epochs), or None."""
    plans = [p for p in (steps, epochs and math.ceil(epochs * chunks_per_epoch)) if p]
    return min(plans) if plans else None


def progress(step: int, elapsed: float, total_steps: Optional[int],
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
                  min_ratio: float) -> float:
    """The rate for step ``step`` (0-based) at progress ``done`` in [0, 1]:
    ``peak * warmup * (min_ratio + (1 - min_ratio) * (1 + cos(pi * done)) / 2)`` where warmup
    rises linearly from 1/warmup_steps to 1 over the first ``warmup_steps`` steps."""
    warmup = min(1.0, (step + 1) / max(1, warmup_steps))
    cosine = 0.5 * (1.0 + math.cos(math.pi * done))
    return peak * warmup * (min_ratio + (1.0 - min_ratio) * cosine)
