"""What the training loop (charrnn/training/trainer.py) does at an evaluation and when it stops:
validate, append the record to metrics.jsonl, save ``best`` when it is the best yet and
``last`` (or a snapshot) with everything --resume needs.

Under torchrun every process takes part in the collectives first (the validation loss, the
hidden rows and random states to save); then only rank 0 writes, inside ``ctx.deferred()``,
so that a failed write stops every process together with rank 0's message.
"""
from __future__ import annotations

import math
from typing import Optional

import torch

from charrnn.model.checkpoint import complete_cards
from charrnn.model.evaluate import LN2, evaluate
from charrnn.training.run import Run
from charrnn.training.resume import rng_state, trainer_state
from charrnn.training.schedule import fraction_done, planned_steps, scheduled_rate
from charrnn.training.signals import LIMITS


def validate_and_save(run: Run, train_loss: float, chars_per_sec: float) -> dict:
    """Validate, append to metrics.jsonl, save ``best`` if it is the best yet, and ``last``;
    count the evaluations since the best (--early-stop). With --ema all of it on the average
    (average.py's rule). The record written. Raises CharRNNError (on every process) when
    training diverged or the folder cannot be written."""
    with run.average.applied():
        return _validate_and_save(run, train_loss, chars_per_sec)


def _validate_and_save(run: Run, train_loss: float, chars_per_sec: float) -> dict:
    state, ctx = run.state, run.ctx
    state.val_loss = ctx.broadcast(evaluate(run.model, run.val_batches, run.device))
    run.model.train()
    if not (math.isfinite(state.val_loss) and math.isfinite(train_loss)):
        diverged(run, f"validation loss {state.val_loss}, training loss {train_loss}")
    record = metrics(run, train_loss, chars_per_sec)
    state.evals_since_best += 1
    best = math.isfinite(state.val_loss) and state.val_loss < state.best_val_loss
    if best:
        state.best_val_loss, state.evals_since_best, state.best_step = state.val_loss, 0, state.step
    last = last_state(run)   # (collectives first, and never record or save a broken model)
    with ctx.deferred():     # under torchrun a failed write stops every process together
        run.folder.log(record)
        run.folder.board.record(record)      # --tensorboard: the same record as events
        if best:
            _save(run, "best", record)
        _save(run, "last", record, last)
    return record


def save_last(run: Run, record: dict, name: str = "last") -> None:
    """Save ``last`` (or the snapshot ``name``) with everything --resume needs (every
    process's hidden rows and RNG); with --ema, the average as the model. Raises CharRNNError
    as ``validate_and_save`` does."""
    with run.average.applied():
        last = last_state(run)
        with run.ctx.deferred():
            _save(run, name, record, last)


def _save(run: Run, name: str, record: dict, trainer_state: Optional[dict] = None) -> None:
    """Write checkpoint ``name`` of the run (``RunFolder.save``): its metrics are ``record``
    and the best validation loss so far; ``trainer_state`` only for ``last`` and snapshots."""
    run.folder.save(name, model=run.model, tokenizer=run.tokenizer, config=run.config,
                    metrics={**record, "best_val_loss": run.state.best_val_loss},
                    corpus=run.corpus, state=trainer_state)


def finish(run: Run, stopped_by: str, losses, chars_per_sec: float, skip_validation: bool
           ) -> None:
    """Once stopped: a run that reached its limit ends with a validation (unless it has just
    had one, or no time is left for one: ``skip_validation``); one stopped by a signal or the
    callback saves ``last``. Then the model cards of ``best`` and ``last`` get a sample if
    they lack one (checkpoint.py's ``complete_cards``). Under torchrun a write that failed on rank 0 fails every
    process here."""
    if stopped_by in LIMITS and not skip_validation:
        if run.state.loss_count:
            validate_and_save(run, losses.take_mean(), chars_per_sec)
    else:
        losses.read()
        save_last(run, between_evaluations(run))
    if run.folder.writer:   # cards without a --sample-every sample get one, after the loop
        complete_cards(run.folder.path)
    run.ctx.settle()


def last_state(run: Run) -> dict:
    """trainer_state.pt's contents, every process's hidden rows and RNG gathered."""
    check_weights(run)      # never write a broken model over a good one
    run.grad_norms.read()   # the gradient norms since the last evaluation, for --resume
    hidden = run.ctx.gather_rows(run.state.hidden)
    rng_ranks = run.ctx.gather(rng_state()) if run.ctx.enabled else None
    return trainer_state(run.optimizer, run.state, hidden, rng_ranks, run.average.state())


def between_evaluations(run: Run) -> dict:
    """The metrics of a checkpoint saved between evaluations (a signal, the callback, a
    snapshot): the step, the training seconds and the latest validation loss (nats/char)."""
    state = run.state
    return {"step": state.step, "elapsed": round(state.elapsed, 2), "val_loss": state.val_loss}


def metrics(run: Run, train_loss: float, chars_per_sec: float) -> dict:
    """The record of an evaluation (losses in nats/char, bpc in bits/char; the mean and the
    maximum of the steps' gradient L2 norms, before clipping, since the last evaluation).
    Starts the next stretch of gradient norms (gradients.py)."""
    state, config = run.state, run.config
    done = fraction_done(state.step, state.elapsed,
                    planned_steps(config.steps, config.epochs, run.batches.num_chunks),
                    config.time_limit)
    return {"step": state.step, "epoch": round(state.step / run.batches.num_chunks, 4),
            "elapsed": round(state.elapsed, 2), "train_loss": round(train_loss, 5),
            "val_loss": round(state.val_loss, 5), "val_bpc": round(state.val_loss / LN2, 5),
            "lr": scheduled_rate(config, state.step, done),
            "chars_per_sec": round(chars_per_sec, 1), **run.grad_norms.take()}


def check_weights(run: Run) -> None:
    """Raise (on every process) when a weight is nan or inf."""
    finite = torch.stack([torch.isfinite(p).all() for p in run.model.parameters()]).all()
    if not bool(finite):
        diverged(run, "the weights hold nan or inf")


def diverged(run: Run, what: str) -> None:
    run.ctx.raise_everywhere(f"training diverged at step {run.state.step} ({what}): lower "
                             f"--lr or --clip; {kept(run)}")


def kept(run: Run) -> str:
    """What is left of the run when it fails: the last good checkpoint, or none."""
    if run.folder.has_checkpoint:
        return f"the last good checkpoint in {run.folder.path} is kept"
    first = f"at step {run.config.eval_interval}" if run.config.eval_interval else \
        "planned after the first steps"
    return f"no checkpoint was saved before (the first evaluation is {first})"
