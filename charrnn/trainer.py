"""Stage 6: the training loop. Truncated back-propagation through time over contiguous streams,
AdamW with warmup and cosine decay, gradient clipping, validation in bits per character,
best/last checkpoints, exact resume.

``loop`` reads top to bottom; ``bench/baseline.py`` is the same algorithm as a plain loop with
none of the run-folder, resume or multi-process care. What the loop uses lives beside it:
run.py builds the run, schedule.py is the learning rate, runfolder.py writes the run folder,
evaluate.py validates, progress.py reports, signals.py stops, distributed.py joins processes.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import torch
import torch.nn.functional as F

from . import distributed
from .config import TrainConfig
from .device import autocast, resolve_device
from .errors import CharRNNError
from .evaluate import LN2, evaluate
from .intervals import at_step, prime_hint
from .model import detach
from .progress import Bar, LossMeter, Speed
from .run import Run, prepare
from .runfolder import trainer_state, rng_state
from .schedule import learning_rate, planned_steps, progress
from .signals import stop_on_signals

Callback = Callable[[int, dict], bool]


@dataclass
class TrainResult:
    out: Path
    step: int
    val_loss: float            # nats per character at the last evaluation (nan: none yet)
    val_bpc: float             # the same in bits per character
    best_val_loss: float
    elapsed: float             # training seconds, over all resumed sessions
    stopped_by: str            # "steps", "epochs", "time", "early-stop", "callback" or a
                               # signal's name
    limit: str = ""            # the limit that applied, in words ("600 s", "5000 steps")
    is_main: bool = True       # False on every process but the first under torchrun
    world_size: int = 1        # processes that trained together (torchrun)
    prime_hint: str = ""       # a short text of the corpus to prime samples with

    @property
    def interrupted(self) -> bool:
        return self.stopped_by.startswith("SIG")


def train(corpus: str, config: TrainConfig, callback: Optional[Callback] = None) -> TrainResult:
    """Train a CharRNN on ``corpus`` (file, folder, glob or hf:DATASET) into ``config.out``.

    ``callback(step, metrics)`` runs after every step with ``{"loss": ...}``, and at an
    evaluation also the record written to metrics.jsonl (val_loss, val_bpc, train_loss, lr,
    ...); returning True stops training as Ctrl-C does (``last`` is saved, and ``resume=True``
    continues exactly). Raises CharRNNError for bad input and for a run that diverges (nan loss
    or weights)."""
    config.validate()
    ctx, device = distributed.setup(resolve_device(config.device))  # under torchrun: join
    try:
        return loop(prepare(corpus, config, ctx, device), callback)
    finally:
        ctx.close()


def loop(run: Run, callback: Optional[Callback] = None) -> TrainResult:
    """Train until a limit, a signal or the callback says stop; save and report."""
    config, state, model, ctx = run.config, run.state, run.model, run.ctx
    total_steps = planned_steps(config.steps, config.epochs, run.streams.num_chunks)
    _refuse_a_finished_run(run)
    losses = LossMeter(state, run.device, every_step=callback is not None)
    speed = Speed(run.streams.batch_size * config.seq_len * ctx.world_size)
    bar, clock = Bar(config.progress and ctx.is_main), Clock(state.elapsed)
    model.train()
    with stop_on_signals() as stop:
        while True:
            # Stop? A limit, a signal or the callback; under torchrun one decision for all.
            reason = _limit_reached(config, state, run.streams.num_chunks) or stop.reason
            stopped_by, state.elapsed = ctx.agree_stop(reason, stop.reason, clock.read())
            if stopped_by:
                break
            # The learning rate for this step, from the fraction of the run done.
            done = progress(state.step, state.elapsed, total_steps, config.time_limit)
            lr = learning_rate(state.step, done, config.lr, config.warmup_steps,
                               config.min_lr_ratio)
            for group in run.optimizer.param_groups:
                group["lr"] = lr
            # The next chunk of every stream; a new epoch starts the streams from zeros.
            if state.next_chunk >= run.streams.num_chunks:
                state.next_chunk, state.epoch, state.hidden = 0, state.epoch + 1, None
            inputs, targets = _to_device(run.streams.chunk(state.next_chunk), run.device)
            # Forward, backward, clip, step; the hidden state carries on without its graph.
            with autocast(run.device, config.precision):
                logits, hidden = run.net(inputs, state.hidden)
            loss = F.cross_entropy(logits.float().flatten(0, 1), targets.flatten())
            run.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if config.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            run.optimizer.step()
            state.hidden = detach(hidden)
            state.step, state.next_chunk = state.step + 1, state.next_chunk + 1
            last_loss = losses.add(ctx.all_reduce_mean(loss.detach()))
            if not math.isfinite(last_loss):
                raise CharRNNError(f"loss became {last_loss} at step {state.step}: lower --lr "
                                   f"or --clip; {_kept(run)}")
            # Every eval_interval steps: validate, record, save best and last.
            record = validate_and_save(run, losses.take_mean(), speed.value) \
                if state.step % config.eval_interval == 0 else {}
            # Every --sample-every / --save-every steps: a sample, a snapshot checkpoint.
            at_step(run, bar, save_last)
            # Progress, and the callback's say.
            bar.show(progress(state.step, state.elapsed, total_steps, config.time_limit),
                     state.step, last_loss, state.val_loss, speed.tick())
            if callback and callback(state.step, {"loss": last_loss, **record}):
                stop.reason = "callback"
    # A run that reached its limit ends with an evaluation; a stopped one saves `last`.
    bar.close()
    return finish(run, stopped_by, losses, speed.value)


def finish(run: Run, stopped_by: str, losses: LossMeter, chars_per_sec: float) -> TrainResult:
    """Once stopped: a run that reached its limit ends with an evaluation (unless it has just
    had one); one stopped by a signal or the callback saves ``last``. The run's figures."""
    state, config, ctx = run.state, run.config, run.ctx
    if stopped_by in ("steps", "epochs", "time", "early-stop"):
        if state.loss_count:
            validate_and_save(run, losses.take_mean(), chars_per_sec)
    else:
        losses.read()
        save_last(run, _metrics(run))
    limit = _limits(config) if stopped_by != "early-stop" else \
        f"{config.early_stop} evaluations without a better validation loss"
    return TrainResult(run.folder.path, state.step, state.val_loss, state.val_loss / LN2,
                       state.best_val_loss, state.elapsed, stopped_by, limit,
                       ctx.is_main, ctx.world_size, prime_hint(run))


def validate_and_save(run: Run, train_loss: float, chars_per_sec: float) -> dict:
    """Validate, append to metrics.jsonl, save ``best`` if it is the best yet, and ``last``;
    count the evaluations since the best (--early-stop). The record written."""
    state, ctx = run.state, run.ctx
    state.val_loss = ctx.broadcast(evaluate(run.model, run.val_streams, run.device))
    run.model.train()
    if not (math.isfinite(state.val_loss) and math.isfinite(train_loss)):
        _diverged(run, f"validation loss {state.val_loss}, training loss {train_loss}")
    _check_weights(run)      # never record or save a broken model
    record = _metrics(run, train_loss, chars_per_sec)
    run.folder.log(record)
    state.evals_since_best += 1
    if math.isfinite(state.val_loss) and state.val_loss < state.best_val_loss:
        state.best_val_loss, state.evals_since_best = state.val_loss, 0
        run.folder.save("best", run.model, run.tokenizer, run.config,
                        {**record, "best_val_loss": state.best_val_loss}, run.corpus)
    save_last(run, record)
    return record


def save_last(run: Run, record: dict, name: str = "last") -> None:
    """Save ``last`` (or a snapshot ``name``) with everything --resume needs (every process's
    rows and RNG)."""
    _check_weights(run)      # never write a broken model over a good one
    hidden = run.ctx.gather_rows(run.state.hidden)
    rng_ranks = run.ctx.gather(rng_state()) if run.ctx.enabled else None
    state = trainer_state(run.optimizer, run.state, hidden, rng_ranks)
    run.folder.save(name, run.model, run.tokenizer, run.config,
                    {**record, "best_val_loss": run.state.best_val_loss}, run.corpus, state)


class Clock:
    """Training seconds: those of earlier sessions plus this one's."""

    def __init__(self, before: float):
        self.before, self.started = before, time.monotonic()

    def read(self) -> float:
        return self.before + time.monotonic() - self.started


def _limit_reached(config: TrainConfig, state, chunks_per_epoch: int) -> Optional[str]:
    if config.steps is not None and state.step >= config.steps:
        return "steps"
    if config.epochs is not None and state.step >= config.epochs * chunks_per_epoch:
        return "epochs"
    if config.time_limit is not None and state.elapsed >= config.time_limit:
        return "time"
    if config.early_stop is not None and state.evals_since_best >= config.early_stop:
        return "early-stop"
    return None


def _limits(config: TrainConfig) -> str:
    """The limits of a run in words: "5000 steps or 600 s"."""
    limits = [f"{config.steps} steps" if config.steps else "",
              f"{config.epochs:g} epochs" if config.epochs else "",
              f"{config.time_limit:g} s" if config.time_limit else ""]
    return " or ".join(limit for limit in limits if limit)


def _refuse_a_finished_run(run: Run) -> None:
    """--resume on a run that already reached its limits would do nothing: say so."""
    reason = _limit_reached(run.config, run.state, run.streams.num_chunks)
    if run.config.resume and reason == "early-stop":
        raise CharRNNError(
            f"the run in {run.folder.path} stopped early: {run.state.evals_since_best} "
            "evaluations without a better validation loss; pass a larger --early-stop with "
            "--resume to train it further")
    if run.config.resume and reason:
        raise CharRNNError(
            f"the run in {run.folder.path} already reached its limit ({_limits(run.config)}; "
            f"it trained {run.state.step} steps in {run.state.elapsed:.0f} s, counted over all "
            "its sessions): pass a larger --steps, --epochs or --time-limit with --resume to "
            "train it further")


def _to_device(batch: tuple[torch.Tensor, torch.Tensor], device: torch.device):
    if device.type == "cuda":   # pinned pages: the copies below run asynchronously
        batch = tuple(t.pin_memory() for t in batch)
    return tuple(t.to(device, non_blocking=True) for t in batch)


def _metrics(run: Run, train_loss: Optional[float] = None, chars_per_sec: float = 0.0) -> dict:
    state = run.state
    if train_loss is None:       # a checkpoint between evaluations (a signal, the callback)
        return {"step": state.step, "elapsed": round(state.elapsed, 2),
                "val_loss": state.val_loss}
    done = progress(state.step, state.elapsed,
                    planned_steps(run.config.steps, run.config.epochs, run.streams.num_chunks),
                    run.config.time_limit)
    return {"step": state.step, "epoch": round(state.step / run.streams.num_chunks, 4),
            "elapsed": round(state.elapsed, 2), "train_loss": round(train_loss, 5),
            "val_loss": round(state.val_loss, 5), "val_bpc": round(state.val_loss / LN2, 5),
            "lr": learning_rate(state.step, done, run.config.lr, run.config.warmup_steps,
                                run.config.min_lr_ratio),
            "chars_per_sec": round(chars_per_sec, 1)}


def _check_weights(run: Run) -> None:
    finite = torch.stack([torch.isfinite(p).all() for p in run.model.parameters()]).all()
    if not bool(finite):
        _diverged(run, "the weights hold nan or inf")


def _diverged(run: Run, what: str) -> None:
    raise CharRNNError(f"training diverged at step {run.state.step} ({what}): lower --lr or "
                       f"--clip; {_kept(run)}")


def _kept(run: Run) -> str:
    if run.folder.has_checkpoint:
        return f"the last good checkpoint in {run.folder.path} is kept"
    return f"no checkpoint was saved before (the first evaluation is at step " \
           f"{run.config.eval_interval})"
