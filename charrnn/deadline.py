"""When a time-limited run stops training. With ``--time-limit T`` the whole command ends by
T + max(10 s, 5% of T): its start (imports, reading the corpus), training, the final validation
and save, and what the CLI prints after. So training stops as soon as what must follow it
would no longer fit: the expected cost of the final validation and save (first estimated from
the time of one validation chunk, then measured at each validation) is kept in hand.
"""
from __future__ import annotations

import os
import time
from contextlib import contextmanager
from typing import Iterator, Optional

from .evaluate import seconds_to_evaluate

AFTER_TRAINING = 1.0      # seconds the CLI needs after the loop: load the model, a short sample
SAVE_GUESS = 0.5          # seconds to save best and last, before a save has been timed
IMPORTS = 5.0             # at most this much of a process's life before training is counted


def slack(time_limit: float) -> float:
    """Seconds a command with this time limit may run past it: max(10 s, 5%)."""
    return max(10.0, 0.05 * time_limit)


def command_start() -> float:
    """When the command that asks for training started (time.monotonic()): this process's
    start if that was at most IMPORTS seconds ago (charrnn train: its imports), else now (a
    script that calls charrnn.train later in its life)."""
    return time.monotonic() - min(process_age(), IMPORTS)


def process_age() -> float:
    """Seconds since this process started (Linux /proc; 0 elsewhere)."""
    try:
        with open("/proc/self/stat", encoding="ascii") as handle:
            started = int(handle.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/uptime", encoding="ascii") as handle:
            uptime = float(handle.read().split()[0])
        return max(0.0, uptime - started / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return 0.0


class Deadline:
    """The moment training must stop for the command to end by T + slack(T).

    ``time_limit`` T: training seconds over all sessions, ``before`` of them spent in earlier
    sessions; ``started``: the command's start (``command_start``); ``validation``: expected
    seconds of one validation. None: no time limit."""

    def __init__(self, time_limit: Optional[float], before: float, started: float = 0.0,
                 validation: float = 0.0):
        self.end = None
        if time_limit is not None:
            self.end = started + (time_limit - before) + slack(time_limit) - AFTER_TRAINING
        self.final = validation + SAVE_GUESS     # expected seconds of the final evaluation

    @classmethod
    def of(cls, run) -> "Deadline":
        """A run's deadline (charrnn.run.Run); the first validation's cost is estimated by
        timing one chunk of it."""
        if run.config.time_limit is None:
            return cls(None, run.state.elapsed)
        seconds = seconds_to_evaluate(run.model, run.val_streams, run.device)
        run.model.train()
        return cls(run.config.time_limit, run.state.elapsed, run.started, seconds)

    def reason(self) -> Optional[str]:
        """"time" when the final validation and save would no longer end in time, else None."""
        if self.end is not None and time.monotonic() + self.final >= self.end:
            return "time"
        return None

    @contextmanager
    def timing(self) -> Iterator[None]:
        """Around a validation and save: what the final one is expected to take."""
        started = time.monotonic()
        yield
        self.final = time.monotonic() - started
