"""Fine-tuning: a new run that starts from the weights of another model (``--init-from``).

The source is a run folder (its ``best`` weights: the lowest validation loss it reached) or any
checkpoint folder (``last``, a snapshot ``step-001000``). The model's shape comes from it; the
optimizer, the learning-rate schedule and the step count start afresh, and the training
settings (rate, limits, dropout, batch, chunk length) are the new run's own.

Characters of the new corpus that the source never saw are appended to its vocabulary
(``--vocab extend``, CharTokenizer.extended): every old character keeps its id, and the
embedding and the output layer grow by one row per new character (``adapted``). ``--vocab
keep`` maps them to <unk> instead. ``--resume`` never changes a vocabulary: it refuses such a
corpus and names --init-from.
"""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Optional

import torch

from charrnn.data.cache import NewChars
from charrnn.model.checkpoint import find_checkpoint, load_checkpoint
from charrnn.config import TrainConfig
from charrnn.errors import CharRNNError, note
from charrnn.model.network import CharRNN
from charrnn.data.tokenizer import CharTokenizer, listed_chars


def check_source(config: TrainConfig) -> None:
    """Refuse an --init-from inside the run folder it would write (``--overwrite`` would
    delete it; ``best`` would be replaced while it is read). Raises CharRNNError."""
    if not config.init_from or config.resume:
        return
    source, out = Path(config.init_from).resolve(), Path(config.out).resolve()
    if source == out or out in source.parents:
        raise CharRNNError(f"--init-from {config.init_from} is inside --out {config.out}, the "
                           "folder this run writes: give the new run another --out")


def load_source(config: TrainConfig, device: torch.device, tell: bool
                ) -> tuple[CharRNN, CharTokenizer]:
    """The model and tokenizer to start from: the checkpoint ``config.init_from`` names (a run
    folder gives its ``best``). Raises CharRNNError for a missing or unreadable checkpoint."""
    folder = find_checkpoint(config.init_from, prefer="best")
    model, tokenizer, saved = load_checkpoint(folder, device)
    if tell:
        metrics = saved.get("metrics") or {}
        loss = metrics.get("best_val_loss", metrics.get("val_loss"))
        figures = f"step {metrics.get('step', '?')}" + \
            (f", val loss {loss:.4f}" if isinstance(loss, (int, float)) else "")
        note(f"fine-tuning from {folder} ({figures}; {model.config.cell} "
             f"{model.config.layers}x{model.config.hidden_size}, {tokenizer.vocab_size} ids)")
    return model, tokenizer


def on_new_chars(config: TrainConfig, resuming: bool, tell: bool) -> NewChars:
    """What to do with characters of the corpus outside the vocabulary (``cache.load_ids``'s
    ``on_new``): refuse on --resume, extend the vocabulary, or keep it (they become <unk>)."""
    def handle(tokenizer: CharTokenizer, chars: list) -> CharTokenizer:
        listed = listed_chars(chars)
        if resuming:
            raise CharRNNError(
                f"the corpus holds {len(chars)} characters the run's vocabulary lacks "
                f"({listed}); --resume would train them as <unk>: start a new run from this "
                f"one with --init-from {config.out} --out NEW_FOLDER, which adds them")
        if config.vocab == "keep":
            if tell:
                note(f"--vocab keep: {len(chars)} characters of the corpus are not in the "
                     f"model's vocabulary and are trained as <unk>: {listed}")
            return tokenizer
        if tell:
            note(f"added {len(chars)} characters to the vocabulary ({tokenizer.vocab_size} -> "
                 f"{tokenizer.vocab_size + len(chars)} ids): {listed}")
        return tokenizer.extended(chars)
    return handle


def adapted(source: CharRNN, dropout: float, vocab_size: int,
            regularisers: Optional[dict] = None) -> CharRNN:
    """A new CharRNN with ``source``'s shape and weights, ``dropout`` (and ``regularisers``:
    values of the ModelConfig fields named in config.REGULARISERS), and ``vocab_size`` ids
    (>= the source's; ids beyond it are the appended characters), on the source's device.

    Each new character's embedding row is the mean of the old characters' rows (ids 1..; not
    <unk>); its output row and bias are the mean of theirs, the bias lowered by ln(new count).
    The logits of old characters are therefore unchanged for any text of old characters, and
    each new character's logit is the old ones' mean minus ln(m) (m new characters): by Jensen's
    inequality the new characters together start with at most 1/n of the probability (n old
    characters), never zero. Raises CharRNNError for a smaller ``vocab_size``."""
    old = source.config.vocab_size
    if vocab_size < old:
        raise CharRNNError(f"cannot shrink a vocabulary ({old} -> {vocab_size} ids)")
    config = dataclasses.replace(source.config, vocab_size=vocab_size,
                                 **{"dropout": dropout, **(regularisers or {})})
    model = CharRNN(config)
    weights = {name: tensor.detach().clone() for name, tensor in source.state_dict().items()}
    added = vocab_size - old
    if added:
        for name in ("embed.weight", "head.weight", "head.bias"):
            rows = weights[name]
            mean = rows[1:old].mean(0, keepdim=True)          # the old characters' rows
            weights[name] = torch.cat([rows, mean.expand(added, *rows.shape[1:])])
        weights["head.bias"][old:] -= math.log(added)
    model.load_state_dict(weights)
    return model.to(source.head.weight.device)

