"""Stage 6: the trainer. Truncated BPTT over contiguous streams, AdamW with warmup and cosine
decay, gradient clipping, periodic validation in bits per character, best/last checkpoints and
exact resume.
"""
from __future__ import annotations

import json
import math
import shutil
import signal
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from . import distributed
from .cache import load_ids
from .checkpoint import (load_checkpoint, load_trainer_state, read_config,
                         recover, save_checkpoint)
from .config import TrainConfig
from .corpus import Corpus
from .device import autocast, resolve_device
from .errors import CharRNNError
from .model import CharRNN, Hidden, detach
from .streams import Streams, split_train_val
from .tokenizer import CharTokenizer

LN2 = math.log(2)
LOSS_READ_EVERY = 25    # CUDA: steps between reads of the training loss (host syncs)


@dataclass
class TrainResult:
    out: Path
    step: int
    val_loss: float
    val_bpc: float
    best_val_loss: float
    elapsed: float
    stopped_by: str          # "steps", "epochs", "time", "callback" or a signal name

    @property
    def interrupted(self) -> bool:
        return self.stopped_by.startswith("SIG")


@dataclass
class LoopState:
    """Everything beyond model and optimizer that an exact resume needs."""
    step: int = 0
    chunk: int = 0                  # next chunk of the current epoch
    epoch: int = 0
    elapsed: float = 0.0            # training seconds so far, over all resumed sessions
    best_val_loss: float = math.inf
    val_loss: float = math.nan
    loss_sum: float = 0.0           # training loss summed since the last evaluation
    loss_count: int = 0
    hidden: Optional[Hidden] = None


def saved_config(out: str | Path) -> TrainConfig:
    """The training configuration stored in a run folder's ``last`` checkpoint (for --resume)."""
    folder = Path(out) / "last"
    saved = read_config(folder).get("train", {})
    # Paths in a checkpoint are never trusted: the run stays in the folder the user named, and
    # the token cache in the default place (or --cache-dir).
    saved = {k: v for k, v in saved.items() if k not in ("out", "cache_dir")} \
        if isinstance(saved, dict) else {}
    try:
        TrainConfig.from_dict(saved).validate()     # a check only: validate() fills in defaults
    except (TypeError, ValueError, AttributeError, CharRNNError) as err:
        raise CharRNNError(f"checkpoint {folder}: bad training configuration in config.json "
                           f"({err}); start again with --overwrite") from None
    return TrainConfig.from_dict(saved)


def train(corpus: str, config: TrainConfig,
          callback: Optional[Callable[[int, dict], bool]] = None) -> TrainResult:
    """Train a CharRNN on ``corpus`` (file, folder, glob or hf:DATASET) into ``config.out``.

    ``callback(step, metrics)`` runs after every step; returning True stops training as Ctrl-C
    does (``last`` is saved, and ``resume=True`` continues exactly).
    """
    config.validate()
    device = resolve_device(config.device)
    ctx, device = distributed.setup(device)   # under torchrun: join the process group
    try:
        return _train_on(ctx, device, corpus, config, callback)
    finally:
        ctx.close()


def _train_on(ctx: distributed.Context, device: torch.device, corpus: str, config: TrainConfig,
              callback: Optional[Callable[[int, dict], bool]]) -> TrainResult:
    source = Corpus(corpus, config.encoding, config.errors)
    out = Path(config.out) if config.out else Path("checkpoints") / source.name
    config.out = str(out)
    # Rank 0 checks (and recovers) the run folder before the other processes look at it.
    resume_folder = ctx.leaders_first(lambda: _check_out_dir(out, config), ctx.is_main)
    if not ctx.is_main:
        resume_folder = _check_out_dir(out, config)
    if device.type == "cuda":
        torch.backends.cudnn.enabled = True
        torch.backends.cudnn.benchmark = True    # every step has the same shape

    tokenizer, model, state, optimizer_state = None, None, LoopState(), None
    if resume_folder is not None:
        model, tokenizer, _ = load_checkpoint(resume_folder, device)
        saved = load_trainer_state(resume_folder, device)
        state, optimizer_state = _loop_state_from(saved, device), saved["optimizer"]
        _restore_rng(saved["rng"])
        if ctx.enabled:
            state.hidden = _rank_rows(state.hidden, ctx, config.batch_size)
            ranks = saved.get("rng_ranks")
            if ranks is not None and len(ranks) == ctx.world_size:
                _restore_rng(ranks[ctx.rank])
    tokenizer, ids = _shared_ids(ctx, source, tokenizer, config)
    train_ids, val_ids = split_train_val(ids, config.val_fraction)
    streams = Streams(train_ids, config.batch_size, config.seq_len, ctx.rank, ctx.world_size)
    val_streams = Streams(val_ids, _eval_batch(len(val_ids), config.seq_len), config.seq_len,
                          what="validation")

    if model is None:
        torch.manual_seed(config.seed)
        config.model.vocab_size = tokenizer.vocab_size
        model = CharRNN(config.model).to(device)
        if ctx.rank > 0:
            torch.manual_seed(config.seed + ctx.rank)   # same weights, own dropout masks
    else:
        config.model = model.config
    optimizer = _make_optimizer(model, config, device)
    if optimizer_state is not None:
        optimizer.load_state_dict(optimizer_state)
    if ctx.is_main:
        if config.overwrite and resume_folder is None:
            _clear_run(out)
        out.mkdir(parents=True, exist_ok=True)
        if resume_folder is not None:
            _trim_metrics(out / "metrics.jsonl", state.step)

    run = _Run(corpus, config, model, tokenizer, optimizer, streams, val_streams, device, out,
               state, callback, ctx)
    return run.loop()


class _Run:
    def __init__(self, corpus, config, model, tokenizer, optimizer, streams, val_streams,
                 device, out, state, callback, ctx=None):
        self.corpus, self.config, self.model, self.tokenizer = corpus, config, model, tokenizer
        self.optimizer, self.streams, self.val_streams = optimizer, streams, val_streams
        self.device, self.out, self.state, self.callback = device, out, state, callback
        self.ctx = ctx or distributed.Context()
        # Forward and backward go through DDP when there are several processes: it averages the
        # gradients, so the mean loss over each rank's rows gives the global batch's gradient.
        # self.model stays the plain module (evaluation, checkpoints without a "module." prefix).
        self.net = model
        if self.ctx.enabled:
            self.net = torch.nn.parallel.DistributedDataParallel(
                model, device_ids=[device.index] if device.type == "cuda" else None)
        self.total_steps = _planned_steps(config, streams.num_chunks)
        self.chars_per_step = streams.batch_size * config.seq_len * self.ctx.world_size
        # Training losses not yet read back to the host: on CUDA they are read every
        # LOSS_READ_EVERY steps (and at evaluations), not with an .item() per step.
        self._pending_loss, self._pending_steps, self._last_loss = None, 0, math.nan

    def loop(self) -> TrainResult:
        config, state, model = self.config, self.state, self.model
        started, session_start = time.monotonic(), state.elapsed
        window_start, window_steps = time.monotonic(), 0
        chars_per_sec, stopped_by = 0.0, None
        bar = tqdm(total=1000, disable=not config.progress or not self.ctx.is_main, leave=True,
                   dynamic_ncols=True,
                   bar_format="{l_bar}{bar}| {elapsed}<{remaining} {postfix}")
        model.train()
        with _stop_on_signals() as stop:
            while True:
                state.elapsed = session_start + time.monotonic() - started
                stopped_by = self._limit_reached() or stop.reason
                stopped_by = self._agree(stopped_by, stop.reason)
                if stopped_by:
                    break
                loss = self._train_step()
                window_steps += 1
                if not math.isfinite(loss):
                    bar.close()
                    raise CharRNNError(
                        f"loss became {loss} at step {state.step}: lower --lr or --clip; "
                        f"the last good checkpoint in {self.out} is kept")
                now = time.monotonic()
                if now - window_start >= 1.0:
                    chars_per_sec = window_steps * self.chars_per_step / (now - window_start)
                    window_start, window_steps = now, 0
                if state.step % config.eval_interval == 0:
                    self._evaluate_and_save(chars_per_sec)
                bar.n = int(1000 * self._progress())
                val_bpc = "-" if math.isnan(state.val_loss) else f"{state.val_loss / LN2:.3f}"
                bar.set_postfix_str(f"step {state.step} loss {loss:.3f} val bpc {val_bpc} "
                                    f"{chars_per_sec:,.0f} chars/s", refresh=False)
                bar.update(0)
                if self.callback and self.callback(state.step, {"loss": loss}):
                    stop.reason = "callback"
        if stopped_by in ("steps", "epochs", "time"):
            if state.loss_count:     # steps since the last evaluation
                self._evaluate_and_save(chars_per_sec)
        else:
            self._save_last()
        bar.close()
        return TrainResult(self.out, state.step, state.val_loss, state.val_loss / LN2,
                           state.best_val_loss, state.elapsed, stopped_by)

    def _limit_reached(self) -> Optional[str]:
        config, state = self.config, self.state
        if config.steps is not None and state.step >= config.steps:
            return "steps"
        if config.epochs is not None and state.step >= config.epochs * self.streams.num_chunks:
            return "epochs"
        if config.time_limit is not None and state.elapsed >= config.time_limit:
            return "time"
        return None

    def _progress(self) -> float:
        """Fraction of the planned run done: by steps, epochs or time, whichever is furthest."""
        fractions = [0.0]
        if self.total_steps:
            fractions.append(self.state.step / self.total_steps)
        if self.config.time_limit:
            fractions.append(self.state.elapsed / self.config.time_limit)
        return min(1.0, max(fractions))

    def _learning_rate(self) -> float:
        config = self.config
        warmup = min(1.0, (self.state.step + 1) / max(1, config.warmup_steps))
        cosine = 0.5 * (1.0 + math.cos(math.pi * self._progress()))
        return config.lr * warmup * (config.min_lr_ratio + (1.0 - config.min_lr_ratio) * cosine)

    def _train_step(self) -> float:
        state, config = self.state, self.config
        if state.chunk >= self.streams.num_chunks:   # end of the streams: a new epoch
            state.chunk, state.epoch, state.hidden = 0, state.epoch + 1, None
        inputs, targets = self.streams.chunk(state.chunk)
        if self.device.type == "cuda":   # pinned pages: the copies below run asynchronously
            inputs, targets = inputs.pin_memory(), targets.pin_memory()
        inputs, targets = inputs.to(self.device, non_blocking=True), targets.to(self.device, non_blocking=True)
        for group in self.optimizer.param_groups:
            group["lr"] = self._learning_rate()
        with autocast(self.device, self.config.precision):
            logits, hidden = self.net(inputs, state.hidden)
        loss = F.cross_entropy(logits.float().flatten(0, 1), targets.flatten())
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if config.clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), config.clip)
        self.optimizer.step()
        state.hidden = detach(hidden)
        state.step, state.chunk = state.step + 1, state.chunk + 1
        # The mean over the global batch (every process gets the same value), kept on the device.
        loss = self.ctx.all_reduce_mean(loss.detach())
        self._pending_loss = loss if self._pending_loss is None else self._pending_loss + loss
        self._pending_steps += 1
        state.loss_count += 1
        if (self.device.type != "cuda" or self.callback is not None or math.isnan(self._last_loss)
                or state.step % LOSS_READ_EVERY == 0 or state.step % config.eval_interval == 0):
            self._read_loss()
        return self._last_loss

    def _read_loss(self) -> None:
        """Bring the pending losses to the host (one sync); the last value is their mean."""
        if self._pending_loss is None:
            return
        total = float(self._pending_loss)
        self.state.loss_sum += total
        self._last_loss = total / self._pending_steps
        self._pending_loss, self._pending_steps = None, 0

    def _agree(self, reason: Optional[str], own_signal: Optional[str]) -> Optional[str]:
        """Under torchrun, one stop decision for all processes: rank 0's (limits, callback), or
        a signal any process received; every process also takes rank 0's clock."""
        if not self.ctx.enabled:
            return reason
        mine = reason if self.ctx.is_main else own_signal
        flag, elapsed = self.ctx.agree([1.0 if mine else 0.0,
                                        self.state.elapsed if self.ctx.is_main else 0.0])
        self.state.elapsed = elapsed     # the learning rate follows the clock: one clock for all
        if not flag:
            return None
        return next(r for r in self.ctx.gather(mine) if r)

    def _evaluate_and_save(self, chars_per_sec: float) -> None:
        state = self.state
        self._read_loss()
        train_loss = state.loss_sum / max(1, state.loss_count)
        state.loss_sum, state.loss_count = 0.0, 0
        state.val_loss = evaluate(self.model, self.val_streams, self.device)
        state.val_loss = self.ctx.broadcast(state.val_loss)   # every process: rank 0's figure
        self.model.train()
        if not (math.isfinite(state.val_loss) and math.isfinite(train_loss)):
            self._diverged(f"validation loss {state.val_loss}, training loss {train_loss}")
        if not _finite_weights(self.model):      # never save a broken model as best or last
            self._diverged("the weights hold nan or inf")
        record = {"step": state.step, "epoch": round(state.step / self.streams.num_chunks, 4),
                  "elapsed": round(state.elapsed, 2), "train_loss": round(train_loss, 5),
                  "val_loss": round(state.val_loss, 5), "val_bpc": round(state.val_loss / LN2, 5),
                  "lr": self._learning_rate(), "chars_per_sec": round(chars_per_sec, 1)}
        if self.ctx.is_main:
            try:
                with open(self.out / "metrics.jsonl", "a", encoding="utf-8") as handle:
                    handle.write(json.dumps(record) + "\n")
            except OSError as err:
                raise CharRNNError(f"cannot write {self.out / 'metrics.jsonl'}: "
                                   f"{err.strerror or err}; free disk space or make the folder "
                                   "writable, then --resume") from None
        if math.isfinite(state.val_loss) and state.val_loss < state.best_val_loss:
            state.best_val_loss = state.val_loss
            if self.ctx.is_main:
                save_checkpoint(self.out / "best", self.model, self.tokenizer, self._info(record))
        self._save_last(record)

    def _diverged(self, what: str) -> None:
        raise CharRNNError(f"training diverged at step {self.state.step} ({what}): lower --lr "
                           f"or --clip; the last good checkpoint in {self.out} is kept")

    def _save_last(self, record: Optional[dict] = None) -> None:
        state = self.state
        self._read_loss()
        if not _finite_weights(self.model):      # never write a broken model over a good one
            self._diverged("the weights hold nan or inf")
        if self.ctx.enabled:      # every process's hidden rows and RNG; rank 0 writes them
            hidden = _gather_rows(state.hidden, self.ctx)
            rng_ranks = self.ctx.gather(_rng_state())
            if not self.ctx.is_main:
                return
        record = record or {"step": state.step, "elapsed": round(state.elapsed, 2),
                            "val_loss": state.val_loss}
        trainer_state = {"optimizer": self.optimizer.state_dict(), "loop": _loop_state_dict(state),
                         "rng": _rng_state()}
        if state.hidden is not None:
            trainer_state["hidden"] = list(state.hidden) if isinstance(state.hidden, tuple) \
                else [state.hidden]
        if self.ctx.enabled:
            trainer_state["rng_ranks"] = rng_ranks
            if hidden is not None:
                trainer_state["hidden"] = hidden
        save_checkpoint(self.out / "last", self.model, self.tokenizer, self._info(record),
                        trainer_state)

    def _info(self, record: dict) -> dict:
        return {"tokenizer": {"type": "char", "vocab_size": self.tokenizer.vocab_size},
                "corpus": str(self.corpus), "train": self.config.to_dict(),
                "metrics": {**record, "best_val_loss": self.state.best_val_loss}}


@torch.inference_mode()
def evaluate(model: CharRNN, streams: Streams, device: torch.device,
             precision: str = "fp32") -> float:
    """Mean loss in nats per character over every chunk, hidden state carried across chunks."""
    model.eval()
    hidden, total, count = None, torch.zeros((), device=device, dtype=torch.float64), 0
    for i in range(streams.num_chunks_with_tail):
        inputs, targets = streams.chunk(i)
        inputs, targets = inputs.to(device), targets.to(device)
        with autocast(device, precision):
            logits, hidden = model(inputs, hidden)
        total += F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(),
                                 reduction="sum").double()
        count += targets.numel()
    return float(total) / count


def eval_streams(ids: np.ndarray, seq_len: int, what: str = "text") -> Streams:
    return Streams(ids, _eval_batch(len(ids), seq_len), seq_len, what=what)


def _eval_batch(num_ids: int, seq_len: int, most: int = 64) -> int:
    """As many streams as the text fills with at least one chunk each, at most ``most``."""
    return max(1, min(most, (num_ids - 1) // seq_len))


def _planned_steps(config: TrainConfig, chunks_per_epoch: int) -> Optional[int]:
    plans = [p for p in (config.steps, config.epochs and math.ceil(config.epochs * chunks_per_epoch))
             if p]
    return min(plans) if plans else None


def _make_optimizer(model: CharRNN, config: TrainConfig, device: torch.device):
    # No weight decay on biases and embeddings, as in nanoGPT.
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2 and not n.startswith("embed")]
    other = [p for n, p in model.named_parameters() if p.dim() < 2 or n.startswith("embed")]
    groups = [{"params": decay, "weight_decay": config.weight_decay},
              {"params": other, "weight_decay": 0.0}]
    # The fused kernel (CPU and CUDA) takes ~1 ms where the default foreach path takes ~15 ms on
    # 2 CPU cores for a 1.2M-parameter model: about a tenth of a small training step.
    return torch.optim.AdamW(groups, lr=config.lr, betas=(config.beta1, config.beta2),
                             fused=device.type in ("cpu", "cuda"))


def _check_out_dir(out: Path, config: TrainConfig) -> Optional[Path]:
    """The folder to resume from (or None); refuse to write over another model."""
    if out.exists() and not out.is_dir():
        raise CharRNNError(f"--out {out} is a file: give a folder")
    if out.is_dir():
        recover(out)
    has_model = out.is_dir() and any((out / n / "config.json").exists() for n in ("best", "last"))
    if config.resume:
        if not (out / "last" / "config.json").exists():
            raise CharRNNError(f"nothing to resume in {out}: it has no last checkpoint")
        return out / "last"
    if has_model and not config.overwrite:
        raise CharRNNError(f"{out} already holds a model: pass --resume to continue it, "
                           "--overwrite to replace it, or choose another --out")
    return None


def _finite_weights(model: CharRNN) -> bool:
    return bool(torch.stack([torch.isfinite(p).all() for p in model.parameters()]).all())


def _trim_metrics(path: Path, step: int) -> None:
    """On resume, drop the records of evaluations after the checkpoint (a run killed between
    logging an evaluation and saving it would otherwise log that step twice)."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    except OSError:
        return
    keep = []
    for line in lines:
        try:
            if int(json.loads(line)["step"]) > step:
                continue
        except (ValueError, KeyError, TypeError):
            continue          # a line cut short by a crash
        keep.append(line if line.endswith("\n") else line + "\n")
    if keep != lines:
        tmp = path.with_name(f".{path.name}.tmp")
        try:
            tmp.write_text("".join(keep), encoding="utf-8")
            tmp.replace(path)
        except OSError as err:
            raise CharRNNError(f"cannot write {path}: {err.strerror or err}; free disk space "
                               "or make the folder writable, then --resume") from None


def _clear_run(out: Path) -> None:
    for name in ("best", "last"):
        shutil.rmtree(out / name, ignore_errors=True)
    (out / "metrics.jsonl").unlink(missing_ok=True)


def _loop_state_dict(state: LoopState) -> dict:
    return {"step": state.step, "chunk": state.chunk, "epoch": state.epoch,
            "elapsed": state.elapsed, "best_val_loss": state.best_val_loss,
            "val_loss": state.val_loss, "loss_sum": state.loss_sum, "loss_count": state.loss_count}


def _loop_state_from(saved: dict, device: torch.device) -> LoopState:
    loop = saved["loop"]
    hidden = saved.get("hidden")
    if hidden is not None:
        hidden = tuple(h.to(device) for h in hidden) if len(hidden) == 2 else hidden[0].to(device)
    return LoopState(step=int(loop["step"]), chunk=int(loop["chunk"]), epoch=int(loop["epoch"]),
                     elapsed=float(loop["elapsed"]), best_val_loss=float(loop["best_val_loss"]),
                     val_loss=float(loop["val_loss"]), loss_sum=float(loop["loss_sum"]),
                     loss_count=int(loop["loss_count"]), hidden=hidden)


def _rng_state() -> dict:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _restore_rng(state: dict) -> None:
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


class _Stop:
    reason: Optional[str] = None


@contextmanager
def _stop_on_signals():
    """SIGINT/SIGTERM ask the loop to stop after the current step, so `last` can be saved."""
    stop = _Stop()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return

    def handler(signum, frame):
        if stop.reason:              # a second Ctrl-C while stopping: give up at once
            raise KeyboardInterrupt
        stop.reason = signal.Signals(signum).name

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _shared_ids(ctx: distributed.Context, source: Corpus, tokenizer: Optional[CharTokenizer],
                config: TrainConfig) -> tuple[CharTokenizer, np.ndarray]:
    """The token ids (memmap). Under torchrun the first process of each machine scans and encodes
    (or finds) the cache while the others wait, then they map the same file."""
    if not ctx.enabled:
        return load_ids(source, tokenizer, config.cache_dir, config.progress)
    built = ctx.leaders_first(
        lambda: load_ids(source, tokenizer, config.cache_dir, config.progress and ctx.is_main),
        ctx.is_local_main)
    meta = ctx.broadcast((Path(built[1].filename).name, len(built[1]), built[0].chars)
                         if ctx.is_main else None)
    if built is not None:
        return built
    name, num_chars, chars = meta
    tokenizer = tokenizer or CharTokenizer(chars)
    path = Path(config.cache_dir) / name
    if path.is_file() and path.stat().st_size == num_chars * np.dtype(tokenizer.dtype).itemsize:
        return tokenizer, np.memmap(path, dtype=tokenizer.dtype, mode="r", shape=(num_chars,))
    return load_ids(source, tokenizer, config.cache_dir, False)   # a cache this machine lacks


def _gather_rows(hidden: Optional[Hidden], ctx: distributed.Context) -> Optional[list]:
    """Every process's hidden rows, concatenated in rank order (the single-process layout)."""
    if hidden is None:
        return None
    parts = list(hidden) if isinstance(hidden, tuple) else [hidden]
    gathered = ctx.gather([p.detach().cpu() for p in parts])
    return [torch.cat([g[i] for g in gathered], dim=1) for i in range(len(parts))]


def _rank_rows(hidden: Optional[Hidden], ctx: distributed.Context,
               batch_size: int) -> Optional[Hidden]:
    """This process's rows of a saved hidden state; None when the batch does not match."""
    if hidden is None:
        return None
    parts = list(hidden) if isinstance(hidden, tuple) else [hidden]
    if parts[0].shape[1] != batch_size * ctx.world_size:
        return None
    rows = slice(ctx.rank * batch_size, (ctx.rank + 1) * batch_size)
    parts = [p[:, rows].contiguous() for p in parts]
    return tuple(parts) if isinstance(hidden, tuple) else parts[0]
