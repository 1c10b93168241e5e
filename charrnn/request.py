"""A request to the sampling engine (charrnn/engine.py), and one of its samples in the batch."""
from __future__ import annotations

import threading
from typing import Callable, Optional

import torch

from .config import SEED_MAX, SampleConfig
from .errors import CharRNNError
from .tokenizer import CharTokenizer


class Busy(CharRNNError):
    """The engine's queue is full, or it is closed: try again later."""


class Request:
    """``config.num_samples`` continuations of ``prime`` (see sampler.generate) for an Engine.

    ``on_text(sample, char)`` and ``on_end(request)`` are called on the engine's thread as
    characters come and once when the request ends. Once ``done`` is set: ``texts`` (each
    sample's generated characters, a list of str), ``stopped`` (why each sample ended:
    "length", "stop", "cancelled", "shutdown" or "error") and ``error`` (what ended it, or
    None). ``cancel()`` may be called from any thread: the rows leave at the next step."""

    def __init__(self, prime: str, config: SampleConfig,
                 on_text: Optional[Callable[[int, str], None]] = None,
                 on_end: Optional[Callable[["Request"], None]] = None):
        self.prime, self.config, self.on_text, self.on_end = prime, config, on_text, on_end
        self.seed = config.seed if config.seed is not None else \
            int(torch.randint(SEED_MAX, ()).item())
        self.texts: list[list[str]] = [[] for _ in range(config.num_samples)]
        self.stopped: list[Optional[str]] = [None] * config.num_samples
        self.error: Optional[BaseException] = None
        self.cancelled, self.done, self.engine = False, threading.Event(), None
        self.ids = self.hidden = None     # the prime, while it is read
        self.read = self.running = 0

    def cancel(self) -> None:
        self.cancelled = True
        if self.engine is not None:
            self.engine.changed = True

    def check(self, tokenizer: CharTokenizer, max_batch: int) -> None:
        """Raise OptionError/CharRNNError for an option out of range, more samples than
        ``max_batch`` or a prime with characters the model never saw."""
        if self.config.validate().num_samples > max_batch:
            raise CharRNNError(f"num_samples must be <= {max_batch} here (the most samples "
                               f"run at once), got {self.config.num_samples}")
        unknown = tokenizer.unknown_chars(self.prime)
        if unknown:
            shown = ", ".join(repr(c) for c in unknown[:10])
            raise CharRNNError(f"the prime holds characters the model never saw: {shown}")

    def finish(self, reason: str) -> None:
        """The end: samples not ended yet get ``reason``; ``done`` is set, ``on_end`` called."""
        self.stopped = [why or reason for why in self.stopped]
        self.done.set()
        if self.on_end is not None:
            self.on_end(self)

    def result(self) -> list[str]:
        """The samples, ``prime`` + generated text; raises the error that ended the request."""
        if self.error is not None:
            raise self.error
        return [self.prime + "".join(text) for text in self.texts]


class Row:
    """One sample of a request, in a slot of the batch."""

    def __init__(self, request: Request, index: int, feed: list[int]):
        self.request, self.index, self.left = request, index, request.config.length
        self.text, self.stop = request.texts[index], request.config.stop
        self.feed = feed        # prime ids still to read, one per step
