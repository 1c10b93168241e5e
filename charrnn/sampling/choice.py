"""Choosing the next character from the logits: the seed rule and ``sample_next``.

The seed rule: sample i of a request with seed s draws its random numbers from its own
generator, seeded with ``sample_seed(s, i)`` (``RowUniforms``). A sample's text therefore
depends on (model, prime, options, s, i) only, never on the other samples of its batch, on
num_samples, or on the other requests stepped beside it by the engine (in fp32 on CPU, where
each row's arithmetic is also independent of the batch: tests/sampling/test_sampler.py, test_engine.py).
This rule is new in 0.2: texts for a given seed differ from charrnn 0.1.0's (once).

Each row of a batch may have its own options (``RowOptions``): the engine steps requests with
different temperatures, top-k, top-p and greedy settings together. ``sample_next`` (one config
for every row) is ``sample_rows`` with the same options in every row, and a row's choice does
not depend on the other rows' options.
"""
from __future__ import annotations

import hashlib
import math
from typing import Optional, Sequence

import torch
import torch.nn.functional as F

from charrnn.config import SampleConfig
from charrnn.errors import CharRNNError
from charrnn.data.tokenizer import UNK_ID

UNIFORM_BLOCK = 256   # numbers drawn from each row's generator at a time (at most)


def sample_seed(seed: int, index: int) -> int:
    """The seed (an int in [0, 2**63)) of sample ``index`` (0, 1, ..) of a request with ``seed``:
    the first 63 bits of blake2b(f"{seed}:{index}"). Deterministic across runs and machines;
    raises nothing (any ints are accepted)."""
    digest = hashlib.blake2b(f"{seed}:{index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> 1


def float_type(device: torch.device) -> torch.dtype:
    """The dtype in which sampling computes: float64, or float32 where there is none (MPS)."""
    return torch.float32 if device.type == "mps" else torch.float64


class RowUniforms:
    """Uniform random numbers in [0, 1), one independent stream per row (slot).

    ``RowUniforms(seeds, device, slots=len(seeds))``: row i's t-th number is the t-th of
    ``torch.rand(n, dtype=torch.float64, generator=torch.Generator().manual_seed(seeds[i]))``,
    the same on every device (the generators live on the CPU). Give it ``sample_seed``s; rows
    of different requests may share one batch. ``next()`` returns the next number of every slot,
    [slots] on ``device`` (float64; float32 on MPS, which has no float64); an empty slot gives
    0. ``set(slot, seed)`` starts a new stream in a slot (its first number comes with the next
    ``next()``), ``move(src, dst)`` moves a stream, ``clear(slot)`` empties a slot. Streams are
    read in blocks, so a step costs one indexing op. Raises RuntimeError for a seed outside
    [0, 2**64).
    """

    def __init__(self, seeds: Sequence[int], device: torch.device | str = "cpu",
                 slots: Optional[int] = None):
        self.device = torch.device(device)
        slots = len(seeds) if slots is None else slots
        self.generators: list[Optional[torch.Generator]] = [None] * slots
        # Blocks of at most 32 MB: the streams do not depend on the block size.
        self.size = max(1, min(UNIFORM_BLOCK, (1 << 22) // max(1, slots)))
        self.block = torch.zeros(self.size, slots, dtype=float_type(self.device),
                                 device=self.device)
        self.used = self.size          # the next next() draws a new block
        for slot, seed in enumerate(seeds):
            self.set(slot, seed)

    def set(self, slot: int, seed: int) -> None:
        generator = torch.Generator().manual_seed(seed)
        self.generators[slot] = generator
        if self.used < self.size:      # the rest of this block comes from the new stream
            self.block[self.used:, slot] = self._draw(generator, self.size - self.used)

    def move(self, src: int, dst: int) -> None:
        self.generators[dst], self.generators[src] = self.generators[src], None
        self.block[self.used:, dst] = self.block[self.used:, src]

    def clear(self, slot: int) -> None:
        self.generators[slot] = None

    def next(self) -> torch.Tensor:
        """The next number of every slot: [slots] in [0, 1) (see the class docstring)."""
        if self.used == self.size:     # a new block: the numbers already given stay as they are
            self.block = torch.zeros_like(self.block)
            for slot, generator in enumerate(self.generators):
                if generator is not None:
                    self.block[:, slot] = self._draw(generator, self.size)
            self.rows, self.used = self.block.unbind(0), 0
        self.used += 1
        return self.rows[self.used - 1]

    def _draw(self, generator: torch.Generator, count: int) -> torch.Tensor:
        numbers = torch.rand(count, generator=generator, dtype=torch.float64)
        return numbers.to(self.device, self.block.dtype)


class RowOptions:
    """Per-row sampling options for ``sample_rows``, kept in slots like ``RowUniforms``.

    ``RowOptions(slots, vocab, device)``; ``set(slot, config)`` reads a SampleConfig's greedy,
    temperature, top_k and top_p (not validated here), ``move(src, dst)`` moves a row. Tensors:
    temperature [slots, 1] (clamped to the dtype's tiny, so 0 / 0 never happens), top_k [slots,
    1] int64 (vocab - 1, every character but <unk>: none), top_p [slots, 1] (inf: none),
    greedy [slots] bool. The ``any_*`` flags say which steps a batch needs, so a batch that
    uses none of them pays for none."""

    def __init__(self, slots: int, vocab: int, device: torch.device | str = "cpu"):
        dtype, self.vocab = float_type(torch.device(device)), vocab
        self.temperature = torch.ones(slots, 1, dtype=dtype, device=device)
        self.top_k = torch.full((slots, 1), max(1, vocab - 1), dtype=torch.int64, device=device)
        self.top_p = torch.full((slots, 1), math.inf, dtype=dtype, device=device)
        self.greedy = torch.zeros(slots, dtype=torch.bool, device=device)
        self.configs: list[Optional[SampleConfig]] = [None] * slots
        self._flags()

    @classmethod
    def of(cls, config: SampleConfig, vocab: int, device: torch.device | str = "cpu"
           ) -> "RowOptions":
        """One row of ``config``'s options (it broadcasts over any number of rows)."""
        options = cls(1, vocab, device)
        options.set(0, config)
        return options

    def set(self, slot: int, config: Optional[SampleConfig]) -> None:
        self.configs[slot] = config
        config = config or SampleConfig()
        tiny = torch.finfo(self.temperature.dtype).tiny
        self.temperature[slot] = max(config.temperature, tiny)
        # k counts characters, <unk> aside (sample_rows leaves its column out)
        self.top_k[slot] = max(1, min(config.top_k or self.vocab, self.vocab - 1))
        self.top_p[slot] = config.top_p if config.top_p is not None and config.top_p < 1 \
            else math.inf
        self.greedy[slot] = bool(config.greedy)
        self._flags()

    def move(self, src: int, dst: int) -> None:
        for tensor in (self.temperature, self.top_k, self.top_p, self.greedy):
            tensor[dst] = tensor[src]
        self.configs[dst], self.configs[src] = self.configs[src], None
        self._flags()

    def _flags(self) -> None:
        used = [c for c in self.configs if c is not None]
        self.any_greedy = any(c.greedy for c in used)
        self.all_greedy = bool(used) and all(c.greedy for c in used)
        self.any_temperature = any(c.temperature != 1 for c in used)
        self.any_top_k = any(c.top_k is not None and c.top_k < self.vocab - 1 for c in used)
        self.any_top_p = any(c.top_p is not None and c.top_p < 1 for c in used)


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
    return sample_rows(logits, RowOptions.of(config, logits.shape[-1], logits.device), uniform)


def sample_rows(logits: torch.Tensor, options: RowOptions, uniform: torch.Tensor
                ) -> torch.Tensor:
    """``sample_next`` with each row's own options: ``options`` holds one row per row of
    ``logits`` (or one row for all). Row i's id depends on row i's logits, options and uniform
    only. Raises CharRNNError as ``sample_next`` does."""
    dtype, rows = options.temperature.dtype, logits.shape[0]     # float_type(device)
    # <unk> (UNK_ID 0, the first column) is never useful: the scores leave its column out, so
    # score j is id j + 1 (one operation fewer per step than masking it; the same sums).
    chars = logits.narrow(-1, UNK_ID + 1, logits.shape[-1] - 1)
    if chars.shape[-1] == 0:
        raise _broken_logits(chars)
    scores = chars.to(dtype) if chars.dtype != dtype else chars.clone()   # a copy: the
    row_max = scores.amax(-1, keepdim=True)    # caller's logits stay; nan if any is nan
    if not math.isfinite((row_max if rows == 1 else row_max.sum()).item()):   # one sync
        raise _broken_logits(scores)
    if options.any_greedy:
        greedy = scores.argmax(-1).add_(1)
        if options.all_greedy:
            return greedy
    scores.sub_(row_max)                       # <= 0; the most likely is 0, never nan
    if options.any_temperature:                # (dividing by 1 changes nothing)
        scores.div_(options.temperature[:rows])
    if options.any_top_k:                      # k = vocab - 1 keeps every row's scores
        kth = scores.sort(-1, descending=True).values.gather(
            -1, options.top_k[:rows].expand(rows, 1) - 1)
        scores.masked_fill_(scores < kth, -float("inf"))
    weights = scores.exp_()              # unnormalised probabilities, the largest is 1
    if options.any_top_p:
        weights = _nucleus(weights, options.top_p[:rows])
    cumulative = weights.cumsum_(-1)
    target = uniform.unsqueeze(-1) * cumulative[:, -1:]    # (in the wider of the two dtypes)
    ids = torch.searchsorted(cumulative, target, right=True).squeeze(-1)
    ids = ids.clamp_(max=scores.shape[-1] - 1).add_(1)      # (clamp: u * total may round up)
    if options.any_greedy:
        ids = torch.where(options.greedy[:rows], greedy, ids)
    return ids


def _broken_logits(scores: torch.Tensor) -> CharRNNError:
    if torch.isnan(scores).any():
        return CharRNNError("the model's logits hold nan (not a number): the checkpoint is "
                            "broken; load an earlier checkpoint or train again")
    return CharRNNError("the model's logits hold inf, or -inf for every character: the "
                        "checkpoint is broken; load an earlier checkpoint or train again")


def _nucleus(weights: torch.Tensor, top_p: torch.Tensor) -> torch.Tensor:
    """``weights`` [batch, vocab] (>= 0, unnormalised) with everything outside each row's
    top-p set (see ``sample_next``) set to 0; top_p [batch or 1, 1] (inf keeps the row)."""
    ordered = weights.sort(-1, descending=True).values
    cumulative = ordered.cumsum(-1)
    before = F.pad(cumulative[:, :-1], (1, 0))           # the mass of the more likely ones
    kept = (before < top_p * cumulative[:, -1:]).sum(-1, keepdim=True)   # >= 1
    smallest = ordered.gather(-1, kept - 1)
    return weights.masked_fill_(weights < smallest, 0.0)
