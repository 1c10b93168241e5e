"""Stage 8: sampling. The prime text goes through the fused network once; then each sampled
character is fed back in, one step at a time, through ``FastStep`` (charrnn/fast_step.py, the
optimised ``CharRNN.step``), and ``sample_next`` chooses the next character from its logits.

The seed rule: sample i of a request with seed s draws its random numbers from its own
generator, seeded with ``sample_seed(s, i)`` (``RowUniforms``). A sample's text therefore
depends on (model, prime, options, s, i) only, never on the other samples of its batch or on
num_samples (in fp32 on CPU, where each row's arithmetic is also independent of the batch:
tests/test_sampler.py). seed=None draws s from torch's global generator. This rule is new in
0.2: texts for a given seed differ from charrnn 0.1.0's (once).
"""
from __future__ import annotations

import hashlib
import math
from typing import Callable, Optional, Sequence

import torch
import torch.nn.functional as F

from .config import SEED_MAX, SampleConfig, SampleOptions  # noqa: F401 (SampleOptions: old name)
from .errors import CharRNNError
from .fast_step import FastStep, to_layers
from .model import CharRNN, Hidden, map_hidden
from .tokenizer import UNK_ID, CharTokenizer

UNIFORM_BLOCK = 256   # numbers drawn from each row's generator at a time (at most)


def sample_seed(seed: int, index: int) -> int:
    """The seed (an int in [0, 2**63)) of sample ``index`` (0, 1, ..) of a request with ``seed``:
    the first 63 bits of blake2b(f"{seed}:{index}"). Deterministic across runs and machines;
    raises nothing (any ints are accepted)."""
    digest = hashlib.blake2b(f"{seed}:{index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> 1


class RowUniforms:
    """Uniform random numbers in [0, 1), one independent stream per row.

    ``RowUniforms(seeds, device)``: row i's t-th number is the t-th of ``torch.rand(n,
    dtype=torch.float64, generator=torch.Generator().manual_seed(seeds[i]))``, the same on every
    device (the generators live on the CPU). Give it ``sample_seed``s; rows of different
    requests may share one batch. ``next()`` returns the next number of every row, [rows] on
    ``device`` (float64; float32 on MPS, which has no float64). Each stream is read in blocks,
    so a step costs one indexing op. Raises RuntimeError for a seed outside [0, 2**64).
    """

    def __init__(self, seeds: Sequence[int], device: torch.device | str = "cpu"):
        self.device = torch.device(device)
        self.generators = [torch.Generator().manual_seed(s) for s in seeds]
        # Blocks of at most 32 MB: the streams do not depend on the block size.
        self.size = max(1, min(UNIFORM_BLOCK, (1 << 22) // max(1, len(seeds))))
        self.block, self.used = [], 0

    def next(self) -> torch.Tensor:
        """The next number of every row: [rows] in [0, 1) (see the class docstring)."""
        if self.used == len(self.block):
            block = torch.stack([torch.rand(self.size, generator=g, dtype=torch.float64)
                                 for g in self.generators], 1)   # [size, rows]
            self.block = block.to(self.device, _float_type(self.device)).unbind(0)
            self.used = 0
        self.used += 1
        return self.block[self.used - 1]


def _float_type(device: torch.device) -> torch.dtype:
    """The dtype in which sampling computes: float64, or float32 where there is none (MPS)."""
    return torch.float32 if device.type == "mps" else torch.float64


def sample_next(logits: torch.Tensor, config: SampleConfig, uniform: torch.Tensor
                ) -> torch.Tensor:
    """The next character of every row, chosen from its logits: a pure function of its inputs.

    logits [batch, vocab] float (any float dtype); uniform [batch] float in [0, 1), the row's
    random number; returns ids [batch] int64 on the logits' device. Of ``config`` it reads
    greedy, temperature, top_k and top_p (not validated here). Id 0 (``UNK_ID``, <unk>) is never
    chosen. The probabilities, computed in float64 (float32 on MPS):

    * greedy: the largest logit (the first of ties); the rest of the options are ignored.
    * temperature T: p ~ exp((logits - max) / T). Subtracting the row's max first keeps every
      T > 0 finite: a tiny T (1e-300) is its limit, greedy (ties share the probability).
    * top_k: keep the characters whose probability is at least the k-th largest (ties with the
      k-th are all kept).
    * top_p (after top_k): keep characters in decreasing probability until the kept mass
      reaches p (the smallest such set); characters tied with the last one kept are kept too.

    The draw is the inverse CDF: the first id whose cumulative probability exceeds uniform, so
    a probability-0 id is never chosen and the same uniforms give the same ids. Raises
    CharRNNError if the logits hold nan or +inf (a broken checkpoint) or if a row has no
    finite logit besides <unk>'s (<unk>'s own logit is not looked at).
    """
    dtype = _float_type(logits.device)
    scores = logits.to(dtype) if logits.dtype != dtype else logits.clone()   # a copy: the
    scores[:, UNK_ID].fill_(-float("inf"))     # caller's logits stay; <unk> is never useful
    row_max = scores.amax(-1, keepdim=True)    # nan if any (other) logit is nan
    if not math.isfinite(row_max.sum().item()):   # one sync instead of an all() per row
        raise _broken_logits(scores)
    if config.greedy:
        return scores.argmax(-1)
    scores.sub_(row_max)                       # <= 0; the most likely is 0, never nan
    if config.temperature != 1:         # (at least the dtype's tiny: 0 / 0 would be nan)
        scores.div_(max(config.temperature, torch.finfo(scores.dtype).tiny))
    if config.top_k is not None and config.top_k < scores.shape[-1]:
        kth = torch.topk(scores, config.top_k, dim=-1).values[:, -1:]
        scores.masked_fill_(scores < kth, -float("inf"))
    weights = scores.exp_()              # unnormalised probabilities, the largest is 1
    if config.top_p is not None and config.top_p < 1:
        weights = _nucleus(weights, config.top_p)
    cumulative = weights.cumsum_(-1)
    target = uniform.unsqueeze(-1) * cumulative[:, -1:]    # (in the wider of the two dtypes)
    ids = torch.searchsorted(cumulative, target, right=True).squeeze(-1)
    return ids.clamp_(max=logits.shape[-1] - 1)


def _broken_logits(scores: torch.Tensor) -> CharRNNError:
    if torch.isnan(scores).any():
        return CharRNNError("the model's logits hold nan (not a number): the checkpoint is "
                            "broken; load an earlier checkpoint or train again")
    return CharRNNError("the model's logits hold inf, or -inf for every character: the "
                        "checkpoint is broken; load an earlier checkpoint or train again")


def _nucleus(weights: torch.Tensor, top_p: float) -> torch.Tensor:
    """``weights`` [batch, vocab] (>= 0, unnormalised) with everything outside the top-p set
    (see ``sample_next``) set to 0."""
    ordered = weights.sort(-1, descending=True).values
    cumulative = ordered.cumsum(-1)
    before = F.pad(cumulative[:, :-1], (1, 0))           # the mass of the more likely ones
    kept = (before < top_p * cumulative[:, -1:]).sum(-1, keepdim=True)   # >= 1
    smallest = ordered.gather(-1, kept - 1)
    return weights.masked_fill_(weights < smallest, 0.0)


@torch.inference_mode()
def generate(model: CharRNN, tokenizer: CharTokenizer, prime: str, config: SampleConfig,
             on_text: Optional[Callable[[int, str], None]] = None) -> list[str]:
    """``config.num_samples`` continuations of ``prime``, generated together as one batch.

    Returns one str per sample: ``prime`` followed by ``config.length`` characters, or fewer if
    the sample produced ``config.stop`` (which ends it, included). ``on_text(sample, char)``
    receives each sample's characters as they come. ``prime == ""`` starts after "\\n" (or the
    first character of the vocabulary, if it has no newline). The model is put in eval mode.
    Raises OptionError/CharRNNError for a bad option (``SampleConfig.validate``), CharRNNError
    for a prime holding characters the model never saw or for nan logits (``sample_next``).
    """
    config.validate()
    unknown = tokenizer.unknown_chars(prime)
    if unknown:
        shown = ", ".join(repr(c) for c in unknown[:10])
        raise CharRNNError(f"the prime holds characters the model never saw: {shown}")
    device, rows = model.head.weight.device, config.num_samples
    seed = config.seed if config.seed is not None else int(torch.randint(SEED_MAX, ()).item())
    uniforms = RowUniforms([sample_seed(seed, i) for i in range(rows)], device)
    model.eval()
    current, hidden = _read_prime(model, tokenizer, prime, rows)
    fast, layers = FastStep(model, rows, config.precision), to_layers(hidden)
    texts = [[] for _ in range(rows)]
    running = set(range(rows))
    for _ in range(config.length):
        logits, layers = fast.step_layers(current, layers)
        current = sample_next(logits, config, uniforms.next())
        for row, token in enumerate(current.tolist()):
            if row not in running:
                continue
            char = tokenizer.id_to_char[token]
            texts[row].append(char)
            if on_text:
                on_text(row, char)
            if config.stop and _ends_with(texts[row], config.stop):
                running.discard(row)
        if not running:
            break
    return [prime + "".join(t) for t in texts]


def _read_prime(model: CharRNN, tokenizer: CharTokenizer, prime: str, rows: int
                ) -> tuple[torch.Tensor, Hidden]:
    """(last prime id repeated [rows] int64, the hidden state after the rest of the prime,
    [layers, rows, hidden] float32). The prime is shared: it runs once, as one row."""
    device = model.head.weight.device
    start = prime or ("\n" if "\n" in tokenizer.chars else tokenizer.chars[0])
    ids = torch.as_tensor(tokenizer.encode(start).astype("int64"), device=device)
    hidden = model.init_hidden(1, device)
    if len(ids) > 1:
        _, hidden = model(ids[:-1].unsqueeze(0), hidden)
    hidden = map_hidden(hidden, lambda h: h.expand(-1, rows, -1).contiguous())
    return ids[-1:].expand(rows).contiguous(), hidden


def _ends_with(chars: list[str], stop: str) -> bool:
    return "".join(chars[-len(stop):]).endswith(stop)
