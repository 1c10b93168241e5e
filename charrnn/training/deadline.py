"""When a time-limited run stops training. With ``--time-limit T`` the whole command ends by
T + max(10 s, 5% of T): its start (imports, reading the corpus), training, the final validation
and save, and what the CLI prints after. So training stops as soon as what must follow it
would no longer fit: the expected cost of the final validation and save (first estimated from
the time of one validation chunk, then measured at each validation) is kept in hand. When even
stopping at once would not leave time for it, the run trains for its time limit and skips the
final validation instead (saving ``last``), and says so.
"""
from __future__ import annotations

import os
import time
from contextlib import contextmanager
from typing import Iterator, Optional

from charrnn.errors import note
from charrnn.model.evaluate import seconds_to_evaluate

# Seconds the command needs after the loop: loss.png (matplotlib's import and drawing, ~1.5 s),
# loading the model, the short sample, the interpreter's exit. 1 s was too little: a 2-minute
# run ended 0.29 s past its 130 s bound (issue 29).
AFTER_TRAINING = 3.0
SAVE_GUESS = 0.5          # seconds to save best and last, before a save has been timed
IMPORTS = 5.0             # at most this much of a process's life before training is counted
ESTIMATE_MARGIN = 1.5     # a whole validation takes up to ~1.5x its first chunk's time x chunks


def slack(time_limit: float) -> float:
    """Seconds a command with this time limit may run past it: max(10 s, 5%)."""
    return max(10.0, 0.05 * time_limit)


def command_start() -> float:
    """When the command that asks for training started (time.monotonic()): this process's
    start, counting at most IMPORTS seconds before now (charrnn train: its imports; a script
    that calls charrnn.train late in its life is not charged for what it did before)."""
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

    ``time_limit`` T: training seconds over all sessions; ``started``: the command's start
    (``command_start``) when ``before`` of them were spent in earlier sessions; ``final``:
    expected seconds of the final validation and save. ``speak``: say so when training stops
    early (rank 0 only). No time limit: never reached."""

    def __init__(self, time_limit: Optional[float], before: float = 0.0, started: float = 0.0,
                 final: float = SAVE_GUESS, speak: bool = True):
        self.time_limit, self.final, self.speak = time_limit, final, speak
        self.end = started + (time_limit - before) + slack(time_limit) - AFTER_TRAINING \
            if time_limit is not None else 0.0
        # No time for the final validation even without training: train, skip it instead.
        self.hopeless = time_limit is not None and time.monotonic() + final >= self.end

    @classmethod
    def of(cls, run) -> "Deadline":
        """A run's deadline (charrnn.training.run.Run); the first validation's cost is estimated by
        timing one chunk of it."""
        if run.config.time_limit is None:
            return cls(None)
        seconds = seconds_to_evaluate(run.model, run.val_batches, run.device)
        run.model.train()
        deadline = cls(run.config.time_limit, run.state.elapsed, run.started,
                       ESTIMATE_MARGIN * seconds + SAVE_GUESS, run.ctx.is_main)
        deadline.hopeless = run.ctx.broadcast(deadline.hopeless)    # rank 0 decides for all
        return deadline

    def reason(self, elapsed: float) -> Optional[str]:
        """"time" when the final validation and save would no longer end in time (training
        ``elapsed`` seconds so far, over all sessions), else None."""
        if self.time_limit is None or self.hopeless or time.monotonic() + self.final < self.end:
            return None
        early = self.time_limit - elapsed
        if self.speak and early > 1.0:
            note(f"training stops {early:.0f} s before --time-limit so that the final "
                 f"validation and save (about {self.final:.0f} s) end within "
                 f"{slack(self.time_limit):.0f} s of it; a smaller --val-chars validates faster")
        return "time"

    def skips(self, stopped_by: str) -> bool:
        """Whether a run stopped by ``stopped_by`` skips its final validation (and says so)."""
        if not (self.hopeless and stopped_by == "time"):
            return False
        if self.speak:
            note(f"the final validation is skipped: it would take about {self.final:.0f} s, "
                 f"more than the {slack(self.time_limit):.0f} s a run may take past "
                 "--time-limit; `last` is saved (a smaller --val-chars validates faster)")
        return True

    @contextmanager
    def timing(self) -> Iterator[None]:
        """Around a validation and save: what the final one is expected to take."""
        started = time.monotonic()
        yield
        self.final = time.monotonic() - started
