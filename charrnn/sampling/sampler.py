"""Stage 8: sampling. ``generate`` is one request to the sampling engine (engine.py):
the prime is read (a long one's start through the fused network, its last characters one
step at a time), then each sampled character is fed back in, one step at a time, through
``FastStep`` (fast_step.py, the optimised ``CharRNN.step``), and ``sample_rows``
(choice.py) chooses the next character from its logits. ``stream`` and the HTTP server
(charrnn/serve/app.py) run the same engine.

The seed rule (choice.py): sample i of a request with seed s draws its random numbers from
its own generator, seeded with ``sample_seed(s, i)``, so a sample's text depends on
(model, prime, options, s, i) only, never on the other samples of its batch (in fp32 on CPU).
seed=None draws s from torch's global generator.
"""
from __future__ import annotations

from typing import Callable, Iterator, Optional

import torch

from charrnn.config import SampleConfig
from charrnn.sampling.engine import Engine, Request
from charrnn.errors import CharRNNError
from charrnn.model.network import CharRNN
from charrnn.data.tokenizer import CharTokenizer


@torch.inference_mode()
def generate(model: CharRNN, tokenizer: CharTokenizer, prime: str, config: SampleConfig,
             on_text: Optional[Callable[[int, str], None]] = None) -> list[str]:
    """``config.num_samples`` continuations of ``prime``, generated together as one batch.

    Returns one str per sample: ``prime`` followed by ``config.length`` characters, or fewer if
    the sample produced ``config.stop`` (which ends it, included). ``on_text(sample, char)``
    receives each sample's characters as they come (an exception it raises ends the samples
    and is raised here). ``prime == ""`` starts after "\\n" (or the first character of the
    vocabulary, if it has no newline). The model is put in eval mode. Raises
    OptionError/CharRNNError for a bad option (``SampleConfig.validate``), CharRNNError for a
    prime holding characters the model never saw or for nan logits (``sample_next``).
    """
    engine = Engine(model, tokenizer, max_batch=config.validate().num_samples,
                    precision=config.precision)
    request = engine.submit(Request(prime, config, on_text))
    engine.step_until_done()
    return request.result()


def stream(model: CharRNN, tokenizer: CharTokenizer, prime: str, config: SampleConfig
           ) -> Iterator[str]:
    """One sample as it is generated: ``prime``, then pieces of text (one per step, so one
    character each; ``"".join`` of them is what ``generate`` returns for the same options and
    seed). The engine runs in the caller's thread, a step per piece; closing the iterator
    early ends the sample. Raises as ``generate`` does, and CharRNNError for num_samples other
    than 1."""
    if config.validate().num_samples != 1:
        raise CharRNNError(f"stream gives one sample: num_samples must be 1, got "
                           f"{config.num_samples} (use generate for several)")
    pieces: list[str] = []
    engine = Engine(model, tokenizer, max_batch=1, precision=config.precision)
    request = engine.submit(Request(prime, config, lambda _, text: pieces.append(text)))
    return _pieces(engine, request, pieces)


def _pieces(engine: Engine, request: Request, pieces: list[str]) -> Iterator[str]:
    yield request.prime
    try:
        more = True
        while more:
            with torch.inference_mode():
                more = engine.step()
            if request.error is not None:
                raise request.error
            yield from pieces
            pieces.clear()
    finally:
        request.cancel()
