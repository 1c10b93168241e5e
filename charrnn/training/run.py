"""Everything the training loop needs, built once: the run folder checked, the token ids
cached, the batches cut, the model and optimizer made or restored from ``last``.

The loop itself is in charrnn/training/trainer.py.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from charrnn.training import distributed
from charrnn.training import memory
from charrnn.training.average import WeightAverage
from charrnn.training.compiled import compiled
from charrnn.data.cache import NewChars, cached_digest, load_ids
from charrnn.model.checkpoint import load_checkpoint, load_trainer_state, read_config
from charrnn.config import REGULARISERS, TrainConfig
from charrnn.data.corpus import Corpus
from charrnn.training.deadline import command_start
from charrnn.model.device import warn_if_bf16_is_emulated
from charrnn.errors import note
from charrnn.training.gradients import GradNorms
from charrnn.training.finetune import adapted, check_source, load_source, on_new_chars
from charrnn.model.network import CharRNN, hidden_batch, unigram_head_bias
from charrnn.training.resume import LoopState, restore_rng, resumed_state
from charrnn.training.runfolder import RunFolder
from charrnn.training.validations import validation_batches
from charrnn.data.batches import Batches, split_train_val
from charrnn.data.tokenizer import CharTokenizer


@dataclass
class Run:
    """A training run, ready for the loop (charrnn/training/trainer.py)."""
    corpus: str
    config: TrainConfig
    device: torch.device
    ctx: distributed.Context
    folder: RunFolder
    tokenizer: CharTokenizer
    model: CharRNN                 # the plain module: evaluation and checkpoints
    ddp: torch.nn.Module           # what training calls: DDP around the model under torchrun,
                                   # else the model itself
    optimizer: torch.optim.Optimizer
    batches: Batches               # training: this process's rows
    val_batches: Batches           # validation: the held-out text read (validations.py), on
                                   # every process
    val_ids: np.ndarray            # all of the held-out text
    state: LoopState
    average: WeightAverage         # --ema: the weights' moving average (average.py)
    grad_norms: GradNorms          # the steps' gradient norms since the last evaluation
    started: float = 0.0           # the command's start, time.monotonic() (deadline.py)
    overfit_noted: int = -1        # the best step the overfitting note last named


def prepare(corpus: str, config: TrainConfig, ctx: distributed.Context,
            device: torch.device) -> Run:
    """Build the run; raises CharRNNError for bad input (corpus, folder, checkpoint, a run
    too large for memory). From here the writer holds the run folder's lock (released by
    the caller, or here on an error, which also removes a folder this run made)."""
    started = command_start()
    source = Corpus(corpus, config.encoding, config.errors)
    config.out = str(Path(config.out) if config.out else Path("checkpoints") / source.name)
    folder = RunFolder(Path(config.out), writer=ctx.is_main)
    check_source(config)                 # --init-from must not be inside --out
    try:
        run = _build(corpus, source, config, ctx, device, folder)
        run.started = started
        return run
    except BaseException:
        folder.release(failed=True)
        raise


def _build(corpus: str, source: Corpus, config: TrainConfig, ctx: distributed.Context,
           device: torch.device, folder: RunFolder) -> Run:
    # Rank 0 locks, checks (and recovers) the run folder before the other processes look.
    first = ctx.leaders_first(lambda: folder.check(config), ctx.is_main)
    others = ctx.leaders_first(lambda: folder.check(config), not ctx.is_main)
    resume_from = first if ctx.is_main else others
    if config.precision == "bf16" and ctx.is_main:
        warn_if_bf16_is_emulated(device, "training")
    if device.type == "cuda":
        torch.backends.cudnn.enabled = True
        torch.backends.cudnn.benchmark = True    # every step has the same shape

    model, tokenizer, state, saved = None, None, LoopState(), None
    if resume_from is not None:
        model, tokenizer, _ = load_checkpoint(resume_from, device)
        saved = load_trainer_state(resume_from, device)
        state = resumed_state(saved, device)
        restore_rng(saved["rng"])
    elif config.init_from:               # a fine-tune: the source's model and vocabulary
        model, tokenizer = load_source(config, device, ctx.is_main)
    tokenizer, ids = _shared_ids(ctx, source, tokenizer, config,
                                 on_new_chars(config, resume_from is not None, ctx.is_main))
    # Before anything large is allocated: will it fit? (Every process checks; one answer.)
    shape = dataclasses.replace(model.config if model is not None else config.model,
                                vocab_size=tokenizer.vocab_size)
    ctx.leaders_first(lambda: memory.check(shape, config.batch_size, config.seq_len, device,
                                           _sharing(ctx, device)), True)
    train_ids, val_ids = split_train_val(ids, config.val_fraction)
    folder.corpus_record = corpus_record(corpus, ids)    # what novelty checks find it by
    batches = Batches(train_ids, config.batch_size, config.seq_len, ctx.rank, ctx.world_size,
                      shift_seed=config.seed if config.epoch_offset else None)
    val_batches = validation_batches(val_ids, config.val_chars, config.seq_len)

    if resume_from is None:
        torch.manual_seed(config.seed)
        config.model.vocab_size = tokenizer.vocab_size
        if model is None:
            model = CharRNN(config.model).to(device)
            if config.head_bias == "unigram":
                unigram_head_bias(model, train_ids)
        else:                            # fine-tune: the source's shape, grown vocabulary
            model = adapted(model, config.model.dropout, tokenizer.vocab_size,
                            {name: getattr(config.model, name) for name in REGULARISERS})
            config.model = model.config
        if ctx.rank > 0:
            torch.manual_seed(config.seed + ctx.rank)   # same weights, own dropout masks
    else:
        config.model = model.config
        _resumed_layout(saved, state, resume_from, batches, len(train_ids), ctx)
    optimizer, average = make_optimizer(model, config, device), WeightAverage(model, config.ema)
    if saved is not None:
        optimizer.load_state_dict(saved["optimizer"])
        average.restore(saved)           # the raw weights (last/ held the average) and it
    folder.start(config.overwrite, state.step if resume_from is not None else None,
                 tensorboard=config.tensorboard)
    return Run(corpus=corpus, config=config, device=device, ctx=ctx, folder=folder,
               tokenizer=tokenizer, model=model,
               ddp=compiled(ctx.wrap(model, device), model, config.compile),
               optimizer=optimizer, batches=batches, val_batches=val_batches, val_ids=val_ids,
               state=state, average=average, grad_norms=GradNorms(state, device))


def corpus_record(corpus: str, ids: np.ndarray) -> dict:
    """config.json's record of the corpus beside its spec: the contents' digest
    (``cache.scan``) and, for files, the absolute path (the spec may be relative)."""
    record = {"corpus_digest": cached_digest(ids)}
    if not str(corpus).startswith("hf:"):
        record["corpus_path"] = os.path.abspath(os.path.expanduser(str(corpus)))
    return record


def _sharing(ctx: distributed.Context, device: torch.device) -> int:
    """Processes that share this device's memory: on the CPU, torchrun's local processes."""
    return memory.processes_per_machine() if ctx.enabled and device.type == "cpu" else 1


def make_optimizer(model: CharRNN, config: TrainConfig, device: torch.device):
    """AdamW; no weight decay on biases and embeddings, as in nanoGPT."""
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2 and not n.startswith("embed")]
    other = [p for n, p in model.named_parameters() if p.dim() < 2 or n.startswith("embed")]
    groups = [{"params": decay, "weight_decay": config.weight_decay},
              {"params": other, "weight_decay": 0.0}]
    # The fused kernel (CPU and CUDA) takes ~1 ms where the default foreach path takes ~15 ms on
    # 2 CPU cores for a 1.2M-parameter model: about a tenth of a small training step.
    return torch.optim.AdamW(groups, lr=config.lr, betas=(config.beta1, config.beta2),
                             fused=device.type in ("cpu", "cuda"))


def _resumed_layout(saved: dict, state: LoopState, folder: Path, batches: Batches,
                    num_train_ids: int, ctx: distributed.Context) -> None:
    """Fit the saved position and hidden state to this run's batches. Under torchrun each
    process takes its own rows. When --batch-size, --seq-len or the process count changed,
    the rows are cut differently: the hidden state starts again from zeros and the data
    position moves to the same fraction of the epoch."""
    config = read_config(folder).get("train", {})
    old_seq = int(config.get("seq_len", batches.seq_len))
    old_rows = hidden_batch(state.hidden) if state.hidden is not None else \
        int(config.get("batch_size", batches.batch_size)) * len(saved.get("rng_ranks") or [1])
    new_rows = batches.batch_size * ctx.world_size
    if (old_rows, old_seq) == (new_rows, batches.seq_len):
        state.hidden = ctx.own_rows(state.hidden, batches.batch_size)
        ranks = saved.get("rng_ranks")
        if ctx.enabled and ranks is not None and len(ranks) == ctx.world_size:
            restore_rng(ranks[ctx.rank])
        return
    old_chunks = max(1, ((num_train_ids - 1) // old_rows) // old_seq)
    state.next_chunk = state.next_chunk * batches.num_chunks // old_chunks
    state.hidden = None
    if ctx.is_main:
        note(f"the streams changed ({old_rows} x {old_seq} -> {new_rows} x {batches.seq_len} "
             "streams x seq_len): the hidden state starts again from zeros, at the same "
             "place in the epoch")


def _shared_ids(ctx: distributed.Context, source: Corpus, tokenizer: Optional[CharTokenizer],
                config: TrainConfig, on_new: NewChars) -> tuple[CharTokenizer, np.ndarray]:
    """The token ids (memmap). Under torchrun the first process of each machine scans and encodes
    (or finds) the cache while the others wait, then they map the same file with rank 0's
    tokenizer (its characters in id order: an extended vocabulary is not code-point order)."""
    if not ctx.enabled:
        return load_ids(source, tokenizer, config.cache_dir, config.progress, on_new=on_new)
    built = ctx.leaders_first(
        lambda: load_ids(source, tokenizer, config.cache_dir, config.progress and ctx.is_main,
                         on_new=on_new), ctx.is_local_main)
    meta = ctx.broadcast((Path(built[1].filename).name, len(built[1]), built[0].chars)
                         if ctx.is_main else None)
    if built is not None:
        return built
    name, num_chars, chars = meta
    tokenizer = CharTokenizer(chars, in_order=True)
    path = Path(config.cache_dir) / name
    if path.is_file() and path.stat().st_size == num_chars * np.dtype(tokenizer.dtype).itemsize:
        return tokenizer, np.memmap(path, dtype=tokenizer.dtype, mode="r", shape=(num_chars,))
    return load_ids(source, tokenizer, config.cache_dir, False)   # a cache this machine lacks
