"""The Python API: everything the CLI does, a script can do.

    import charrnn
    model = charrnn.load("checkpoints/shakespeare")
    print(model.generate("ROMEO:", length=200, temperature=0.8, seed=1))
    loss, bpc = model.evaluate(open("play.txt").read())
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Callable, Optional, Union

import torch

from .checkpoint import load_checkpoint
from .config import TrainConfig
from .device import resolve_device
from .errors import CharRNNError
from .model import CharRNN
from .sampler import SampleOptions, generate
from .tokenizer import CharTokenizer
from .trainer import TrainResult, eval_streams, evaluate
from .trainer import train as _train


class Model:
    """A trained CharRNN with its tokenizer and the configuration it was saved with."""

    def __init__(self, net: CharRNN, tokenizer: CharTokenizer, config: Optional[dict] = None):
        self.net, self.tokenizer, self.config = net, tokenizer, config or {}

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    def generate(self, prime: str = "", length: int = 500, temperature: float = 1.0,
                 top_k: Optional[int] = None, top_p: Optional[float] = None, greedy: bool = False,
                 seed: Optional[int] = None, n: Optional[int] = None, stop: Optional[str] = None,
                 on_text: Optional[Callable[[int, str], None]] = None,
                 precision: str = "fp32") -> Union[str, list[str]]:
        """``prime`` followed by ``length`` sampled characters; with ``n``, a list of n texts
        generated together as one batch. ``precision="bf16"`` samples faster from bf16 weights
        (logits within a few hundredths of fp32's)."""
        options = SampleOptions(length=length, temperature=temperature, top_k=top_k, top_p=top_p,
                                greedy=greedy, seed=seed, num_samples=1 if n is None else n,
                                stop=stop, precision=precision)
        texts = generate(self.net, self.tokenizer, prime, options, on_text)
        return texts if n is not None else texts[0]

    def evaluate(self, text: str, seq_len: int = 256) -> tuple[float, float]:
        """(loss in nats per character, bits per character) of predicting ``text``."""
        if len(text) < 2:
            raise CharRNNError("text to evaluate needs at least 2 characters")
        ids = self.tokenizer.encode(text)
        seq_len = min(seq_len, len(ids) - 1)
        loss = evaluate(self.net, eval_streams(ids, seq_len), self.device)
        return loss, loss / math.log(2)


def load(path: str | Path, device: str = "auto") -> Model:
    """A checkpoint folder, or a training run's folder (its best model)."""
    net, tokenizer, config = load_checkpoint(path, resolve_device(device))
    return Model(net, tokenizer, config)


def train(corpus: str, config: Optional[TrainConfig] = None,
          callback: Optional[Callable[[int, dict], bool]] = None) -> Model:
    """Train on ``corpus`` (file, folder, glob or hf:DATASET); the best model, loaded.

    The run folder is ``config.out`` (default checkpoints/<corpus name>); the figures of the run
    are in ``model.result``.
    """
    result = train_run(corpus, config or TrainConfig(), callback)
    model = load(result.out, device=(config or TrainConfig()).device)
    model.result = result
    return model


def train_run(corpus: str, config: TrainConfig,
              callback: Optional[Callable[[int, dict], bool]] = None) -> TrainResult:
    """Train and return the run's figures without loading the model (what the CLI uses)."""
    return _train(corpus, config, callback)
