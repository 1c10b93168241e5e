"""Stage 6: the training loop. Truncated back-propagation through time over contiguous rows,
AdamW with warmup and cosine decay, gradient clipping, validation in bits per character,
best/last checkpoints, exact resume.

``loop`` reads top to bottom; ``bench/baseline.py`` is the same algorithm as a plain loop with
none of the run-folder, resume or multi-process care. What the loop uses lives beside it:
run.py builds the run, schedule.py is the learning rate, saving.py validates and saves
(runfolder.py is the folder), intervals.py samples and snapshots, deadline.py keeps a time
limit, progress.py reports, signals.py stops, distributed.py joins processes.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import torch
import torch.nn.functional as F

from charrnn.training import board, distributed
from charrnn.training import memory
from charrnn.config import TrainConfig
from charrnn.training.deadline import Deadline
from charrnn.model.device import autocast, resolve_device
from charrnn.errors import CharRNNError, PeerError
from charrnn.model.evaluate import LN2
from charrnn.training.gradients import clip_and_measure
from charrnn.training.intervals import at_step, prime_hint
from charrnn.model.network import detach
from charrnn.training.presets import MANY_EPOCHS
from charrnn.training.progress import Bar, LossMeter, Speed
from charrnn.training.run import Run, prepare
from charrnn.training.saving import finish, kept, validate_and_save
from charrnn.training.schedule import fraction_done, planned_steps, scheduled_rate
from charrnn.training.signals import LIMITS, STOP_REASONS, stop_on_signals
from charrnn.training.validations import Validations

Callback = Callable[[int, dict], bool]
OVERFIT_NOTE = 2      # evaluations without a better validation loss before the note says so
# ... and steps since the best: with an evaluation every step or two, two evaluations without
# a better loss are noise, not overfitting.
OVERFIT_STEPS = 20


@dataclass
class TrainResult:
    """The figures of a finished (or stopped) run."""
    out: Path
    step: int
    val_loss: float            # nats per character at the last evaluation (nan: none yet)
    val_bpc: float             # the same in bits per character
    best_val_loss: float
    elapsed: float             # training seconds, over all resumed sessions
    stopped_by: str            # a key of signals.STOP_REASONS ("steps", "epochs", "time",
                               # "early-stop", "callback") or a signal's name ("SIGINT")
    limit: str = ""            # the limit that applied, in words ("600 s", "5000 steps")
    is_main: bool = True       # False on every process but the first under torchrun
    world_size: int = 1        # processes that trained together (torchrun)
    prime_hint: str = ""       # a short text of the corpus to prime samples with
    epochs: float = 0.0        # passes over the training text (this process's rows)
    fine_tune: bool = False    # started from another model (--init-from)

    @property
    def small_text(self) -> bool:
        """Whether the text was small for the budget: more than presets.MANY_EPOCHS passes
        over it, from scratch (fine-tuning a model of a larger text then does better)."""
        return self.epochs > MANY_EPOCHS and not self.fine_tune

    @property
    def interrupted(self) -> bool:
        """Stopped by a signal (Ctrl-C, SIGTERM): the CLI exits 128 + its number."""
        return self.stopped_by.startswith("SIG")

    @property
    def reached_limit(self) -> bool:
        """Stopped by one of its limits (steps, epochs, time, early-stop; ``limit`` says which
        applied), not by a signal or the callback."""
        return self.stopped_by in LIMITS

    @property
    def stop_reason(self) -> str:
        """Why it stopped, in words: "the time limit", "early stopping", "SIGINT"."""
        return STOP_REASONS.get(self.stopped_by, self.stopped_by)


def train(corpus: str, config: TrainConfig, callback: Optional[Callback] = None) -> TrainResult:
    """Train a CharRNN on ``corpus`` (file, folder, glob or hf:DATASET) into ``config.out``.

    ``callback(step, metrics)`` runs after every step with ``{"loss": ...}``, and at an
    evaluation also the record written to metrics.jsonl (val_loss, val_bpc, train_loss, lr,
    grad_norm_mean, grad_norm_max, ...); returning True stops training as Ctrl-C does
    (``last`` is saved, and ``resume=True`` continues exactly). Raises CharRNNError for bad
    input and for a run that diverges (nan loss or weights), and when ``config.tensorboard``
    is set without the tensorboard extra."""
    config.validate()
    if config.tensorboard:
        board.require()        # a missing extra: one line, before any work
    ctx, device = distributed.setup(resolve_device(config.device))  # under torchrun: join
    together = False       # whether every process leaves at this point (no one waits)
    try:
        run = prepare(corpus, config, ctx, device)     # the writer holds the folder's lock
        try:
            _refuse_a_finished_run(run)
            result = loop(run, callback)
        except BaseException:
            run.folder.release(failed=True)
            raise
        run.folder.release()
        together = True
        return result
    except (distributed.AgreedError, PeerError):
        together = True
        raise
    except Exception as err:
        raise _one_line(err, ctx) from None
    finally:
        ctx.close(together)


def _one_line(error: Exception, ctx: distributed.Context) -> Exception:
    """An allocator's failure or, under torchrun, a collective that failed because another
    process ended, as a one-line CharRNNError; any other error as it is."""
    explained = memory.explain(error) or (ctx.peer_gone(error) if ctx.enabled else None)
    return explained or error


def loop(run: Run, callback: Optional[Callback] = None) -> TrainResult:
    """Train until a limit, a signal or the callback says stop; save and report."""
    config, state, model, ctx = run.config, run.state, run.model, run.ctx
    parameters = list(model.parameters())
    total_steps = planned_steps(config.steps, config.epochs, run.batches.num_chunks)
    losses = LossMeter(state, run.device, every_step=callback is not None)
    speed = Speed(run.batches.batch_size * config.seq_len * ctx.world_size)
    bar, clock, deadline = Bar(config.progress and ctx.is_main), Clock(state.elapsed), \
        Deadline.of(run)
    validations = Validations(run)     # every --eval-interval steps, or planned (validations.py)
    model.train()
    with stop_on_signals() as stop:
        while True:
            # Stop? A limit (a time limit keeps time for the final validation), a signal or
            # the callback; under torchrun one decision for all (or one error for all).
            state.elapsed = clock.read()
            reason = _limit_reached(config, state, run.batches.num_chunks) or \
                deadline.reason(state.elapsed) or stop.reason
            stopped_by, state.elapsed = ctx.agree_stop(reason, stop.reason, state.elapsed)
            if stopped_by:
                break
            # The learning rate for this step, from the fraction of the run done.
            _set_rate(run, total_steps)
            # The next chunk of every row; a new epoch starts the rows from zeros (and,
            # with --epoch-offset, a random shift in).
            if state.next_chunk >= run.batches.num_chunks:
                state.next_chunk, state.epoch, state.hidden = 0, state.epoch + 1, None
            inputs, targets = _to_device(run.batches.chunk(state.next_chunk, state.epoch),
                                         run.device)
            # Forward, backward, clip, step; the hidden state carries on without its graph. The
            # gradient norm before clipping is measured (also with --grad-clip 0) and summed on
            # the device until the next evaluation reads it (gradients.py).
            with autocast(run.device, config.precision):
                logits, hidden = run.ddp(inputs, state.hidden)
            loss = F.cross_entropy(logits.float().flatten(0, 1), targets.flatten())
            run.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            run.grad_norms.add(clip_and_measure(parameters, config.grad_clip))
            run.optimizer.step()
            state.hidden = detach(hidden)
            state.step, state.next_chunk = state.step + 1, state.next_chunk + 1
            run.average.update(state.step)       # --ema: the weights' moving average
            last_loss = losses.add(ctx.all_reduce_mean(loss.detach()))
            if not math.isfinite(last_loss):
                ctx.raise_everywhere(f"loss became {last_loss} at step {state.step}: lower "
                                     f"--lr or --clip; {kept(run)}")
            # Every --eval-interval steps, or as planned: validate, record, save best and last.
            record = _validate(run, deadline, losses, speed, bar) \
                if validations.due(state.step) else {}
            # Every --sample-every / --save-every steps: a sample, a snapshot checkpoint.
            at_step(run, bar)
            # Progress, and the callback's say.
            bar.show(fraction_done(state.step, state.elapsed, total_steps, config.time_limit),
                     state.step, last_loss, state.val_loss, speed.tick())
            if callback and callback(state.step, {"loss": last_loss, **record}):
                stop.reason = "callback"
    # A run that reached its limit ends with an evaluation; a stopped one saves `last`.
    finish(run, stopped_by, losses, speed.value, deadline.skips(stopped_by))
    bar.close()
    return _result(run, stopped_by)


def _validate(run: Run, deadline: Deadline, losses: LossMeter, speed: Speed, bar: Bar) -> dict:
    """Validate and save (timed: the final one's cost), and say when it looks like
    overfitting; the record written."""
    with deadline.timing():
        record = validate_and_save(run, losses.take_mean(), speed.value)
    _say_if_overfitting(run, bar)
    return record


def _say_if_overfitting(run: Run, bar: Bar) -> None:
    """One line when OVERFIT_NOTE evaluations in a row, OVERFIT_STEPS steps at least, have not
    beaten the best validation loss (once per best): the model may have begun to learn the
    training text by heart."""
    state = run.state
    if state.evals_since_best >= OVERFIT_NOTE and state.step - state.best_step >= OVERFIT_STEPS \
            and run.overfit_noted != state.best_step and run.ctx.is_main:
        run.overfit_noted = state.best_step
        bar.note(f"val loss has not beaten {state.best_val_loss:.4f} (step {state.best_step}) "
                 f"for {OVERFIT_NOTE} evaluations (now {state.val_loss:.4f}): the model may be "
                 f"starting to overfit; best/ holds step {state.best_step}")


def _set_rate(run: Run, total_steps: Optional[int]) -> None:
    """Set the optimizer's rate for step ``run.state.step`` (schedule.py)."""
    config, state = run.config, run.state
    done = fraction_done(state.step, state.elapsed, total_steps, config.time_limit)
    lr = scheduled_rate(config, state.step, done)
    for group in run.optimizer.param_groups:
        group["lr"] = lr


def _result(run: Run, stopped_by: str) -> TrainResult:
    state, config = run.state, run.config
    limit = _limits(config) if stopped_by != "early-stop" else \
        f"{config.early_stop} evaluations without a better validation loss"
    return TrainResult(out=run.folder.path, step=state.step, val_loss=state.val_loss,
                       val_bpc=state.val_loss / LN2, best_val_loss=state.best_val_loss,
                       elapsed=state.elapsed, stopped_by=stopped_by, limit=limit,
                       is_main=run.ctx.is_main, world_size=run.ctx.world_size,
                       prime_hint=prime_hint(run),
                       epochs=round(state.step / run.batches.num_chunks, 2),
                       fine_tune=bool(config.init_from))


class Clock:
    """Training seconds: those of earlier sessions plus this one's."""

    def __init__(self, before: float):
        self.before, self.started = before, time.monotonic()

    def read(self) -> float:
        """Seconds of training so far, over all sessions."""
        return self.before + time.monotonic() - self.started


def _limit_reached(config: TrainConfig, state, chunks_per_epoch: int) -> Optional[str]:
    if config.steps is not None and state.step >= config.steps:
        return "steps"
    if config.epochs is not None and state.step >= config.epochs * chunks_per_epoch:
        return "epochs"
    if config.time_limit is not None and state.elapsed >= config.time_limit:
        return "time"
    if config.early_stop and state.evals_since_best >= config.early_stop:
        return "early-stop"
    return None


def _limits(config: TrainConfig) -> str:
    """The limits of a run in words: "5000 steps or 600 s"."""
    limits = [f"{config.steps} steps" if config.steps else "",
              f"{config.epochs:g} epochs" if config.epochs else "",
              f"{config.time_limit:g} s" if config.time_limit else ""]
    return " or ".join(limit for limit in limits if limit)


def _refuse_a_finished_run(run: Run) -> None:
    """--resume on a run that already reached its limits would do nothing: say so. (A time
    limit counts as reached when no time is left to train before the final validation.)"""
    if not run.config.resume:
        return
    reason = _limit_reached(run.config, run.state, run.batches.num_chunks)
    if reason is None and run.config.time_limit is not None:
        deadline = Deadline.of(run)
        deadline.speak = False
        reason = deadline.reason(run.state.elapsed)
    if reason == "early-stop":
        raise CharRNNError(
            f"the run in {run.folder.path} stopped early: {run.state.evals_since_best} "
            "evaluations without a better validation loss; pass a larger --early-stop with "
            "--resume to train it further")
    if reason:
        raise CharRNNError(
            f"the run in {run.folder.path} already reached its limit ({_limits(run.config)}; "
            f"it trained {run.state.step} steps in {run.state.elapsed:.0f} s, counted over all "
            "its sessions): pass a larger --steps, --epochs or --time-limit with --resume to "
            "train it further")


def _to_device(batch: tuple[torch.Tensor, torch.Tensor], device: torch.device):
    if device.type == "cuda":   # pinned pages: the copies below run asynchronously
        batch = tuple(t.pin_memory() for t in batch)
    return tuple(t.to(device, non_blocking=True) for t in batch)
