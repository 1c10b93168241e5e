"""When a run validates: every ``--eval-interval`` steps when given, else on a plan made for the
run's length.

The plan gives a run about VALIDATIONS validations, so that loss.png is a curve, the progress
bar shows a validation loss within the first tenth of the run and best/ holds the best model;
and at least one per EPOCHS_PER_VALIDATION passes over a small text, whose best point comes
early in a run of many epochs (issue 29: 80 KB for two minutes peaked ~25 s in). Validations
and their saves cost at most SHARE of a time-limited run: when the validations wanted would
cost more, they are spaced out down to VALIDATIONS; then each reads fewer held-out
characters (never under MIN_VAL_CHARS, the same characters every time, so that the losses
compare); only then are they spaced out further.

The plan needs the run's length in steps. Given by --steps or --epochs it is made before the
first step. Under --time-limit it is made after WARM_STEPS steps, from the rate measured over
them (after SKIPPED_STEPS, which pay one-time setup), by the first process for all. The plan
is written into the run's config (``eval_interval``, ``val_chars``), which best/ and last/ save:
``--resume`` follows the same plan, bit for bit.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Optional

from charrnn.config import VAL_CHARS
from charrnn.data.batches import Batches
from charrnn.errors import CharRNNError
from charrnn.model.evaluate import eval_batches, seconds_to_evaluate
from charrnn.training.deadline import ESTIMATE_MARGIN
from charrnn.training.schedule import planned_steps

VALIDATIONS = 10              # validations a run gets (besides its final one)
EPOCHS_PER_VALIDATION = 2.0   # at most this many passes over the text between two validations
SHARE = 0.05                  # of a time-limited run's seconds, at most, for validating and saving
MIN_VAL_CHARS = 16_384        # a validation reads at least this many characters (or all there are)
WARM_STEPS = 20               # steps whose rate estimates a time-limited run's length
SKIPPED_STEPS = 4             # of those, the first few, which pay one-time setup
# Seconds to write best/ and last/, per parameter: 4-byte weights, their average, AdamW's two
# moments (~24 bytes a parameter over both) at ~300 MB/s. Measured: cpu-1m (1.2 M parameters)
# 0.05-0.09 s for best/ and last/ together on this project's 2-core machine.
SAVE_SECONDS_PER_PARAM = 8e-8


@dataclass(frozen=True)
class Plan:
    """Validate every ``interval`` steps, on the first ``val_chars`` held-out characters."""
    interval: int
    val_chars: int


def plan(expected_steps: int, steps_per_epoch: int, val_chars: int,
         seconds: Optional[float] = None, seconds_per_char: float = 0.0,
         save_seconds: float = 0.0, fixed_chars: bool = False) -> Plan:
    """The plan for a run of about ``expected_steps`` steps, ``steps_per_epoch`` to a pass over
    the text, validating on ``val_chars`` characters (``fixed_chars``: the user's --val-chars,
    never cut). ``seconds``: the run's time limit (None: no bound on the cost); a validation
    then costs ``save_seconds + seconds_per_char * chars``. Pure."""
    expected = max(1, int(expected_steps))
    interval = max(1, min(math.ceil(expected / VALIDATIONS),
                          math.ceil(EPOCHS_PER_VALIDATION * steps_per_epoch)))
    if seconds is None:
        return Plan(interval, val_chars)
    budget = SHARE * seconds

    def affordable(chars: int) -> int:     # validations this budget pays for, the final one too
        return int(budget / (save_seconds + seconds_per_char * chars))

    wanted = expected // interval + 1
    if affordable(val_chars) >= wanted:
        return Plan(interval, val_chars)
    if affordable(val_chars) >= VALIDATIONS + 1:      # space out the extra ones
        return Plan(max(interval, math.ceil(expected / (affordable(val_chars) - 1))), val_chars)
    interval = max(interval, math.ceil(expected / VALIDATIONS))
    per_validation = budget / (VALIDATIONS + 1) - save_seconds
    chars = min(val_chars, int(per_validation / seconds_per_char)) if seconds_per_char else val_chars
    if chars >= MIN_VAL_CHARS and not fixed_chars:
        return Plan(interval, chars)
    chars = val_chars if fixed_chars else min(val_chars, MIN_VAL_CHARS)
    count = max(1, affordable(chars) - 1)
    return Plan(max(interval, math.ceil(expected / count)), chars)


class Validations:
    """Whether the loop (trainer.py) validates after a step. ``run``: charrnn.training.run.Run;
    its config's ``eval_interval`` None means "plan it" (the plan is then written there)."""

    def __init__(self, run):
        self.run = run
        config = run.config
        self.planned = planned_steps(config.steps, config.epochs, run.batches.num_chunks)
        self.first_step = run.state.step
        self.marked: Optional[tuple[int, float]] = None   # (step, time) the rate counts from
        if config.eval_interval is None and config.time_limit is None:
            self._apply(plan(self.planned or 1, run.batches.num_chunks, len(_val_ids(run))))

    def due(self, step: int) -> bool:
        """Whether to validate after step ``step`` (plans first when the time has come)."""
        interval = self.run.config.eval_interval
        if interval is None:
            self._measure(step)
            interval = self.run.config.eval_interval
        return interval is not None and step % interval == 0

    def _measure(self, step: int) -> None:
        done = step - self.first_step
        if done == SKIPPED_STEPS:
            self.marked = (step, time.monotonic())
        if done < WARM_STEPS or self.marked is None:
            return
        ctx = self.run.ctx
        made = self._plan_from_rate(step) if ctx.is_main else None
        self._apply(ctx.broadcast(made))

    def _plan_from_rate(self, step: int) -> Plan:
        run, config = self.run, self.run.config
        rate = (step - self.marked[0]) / max(1e-9, time.monotonic() - self.marked[1])
        left = max(0.0, config.time_limit - run.state.elapsed) * (1 - SHARE)
        expected = step + rate * left
        if self.planned:
            expected = min(expected, self.planned)
        seconds = seconds_to_evaluate(run.model, run.val_batches, run.device, config.precision)
        run.model.train()
        chars = max(1, run.val_batches.num_chunks_with_tail * run.val_batches.seq_len
                    * run.val_batches.batch_size)
        params = sum(p.numel() for p in run.model.parameters())
        return plan(int(expected), run.batches.num_chunks, len(_val_ids(run)),
                    config.time_limit, ESTIMATE_MARGIN * seconds / chars,
                    SAVE_SECONDS_PER_PARAM * params, fixed_chars=config.val_chars is not None)

    def _apply(self, made: Plan) -> None:
        run = self.run
        run.config.eval_interval = made.interval
        if made.val_chars < len(_val_ids(run)):
            run.config.val_chars = made.val_chars
            run.val_batches = validation_batches(run.val_ids, made.val_chars, run.config.seq_len)


def _val_ids(run):
    """The held-out ids a validation reads now (--val-chars, the plan's cut or VAL_CHARS)."""
    return run.val_ids[:run.config.val_chars or VAL_CHARS]


def validation_batches(val_ids, val_chars: Optional[int], seq_len: int) -> Batches:
    """The validation batches over the first ``val_chars`` held-out ids (None: VAL_CHARS).
    Raises CharRNNError when --val-chars is shorter than one chunk plus one."""
    if val_chars is not None and len(val_ids) > val_chars and val_chars < seq_len + 1:
        raise CharRNNError(f"--val-chars {val_chars} is shorter than one chunk of --seq-len "
                           f"{seq_len} plus one: raise --val-chars")
    return eval_batches(val_ids[:val_chars or VAL_CHARS], seq_len, what="validation")
