"""The sampling sections of bench/section.py (`python -m bench.section sample ...`,
`... sample_plain ...`): sampling speed beside its measured bound (memory bandwidth or matmul
peak, a roofline) and the fast step's rounding error; the plain loop's per-character sampling.
"""
from __future__ import annotations

import time

import torch

from bench import baseline


def _sampling_model():
    from charrnn import CharRNN, ModelConfig

    torch.manual_seed(0)
    return CharRNN(ModelConfig(vocab_size=67, cell="lstm", layers=2, hidden_size=512,
                               embed_size=64)).eval()


RUNS = 10   # sampling runs per figure: on a shared machine the best is the least disturbed


def sample(batch, length, device="cpu", precision="fp32"):
    """Sampling speed at ``batch`` rows (the best of RUNS runs of ``length`` / RUNS characters)
    beside its bound, measured in this process before and after (the higher bound is kept):
    at batch 1 one pass over the bytes of weights a step reads (``bound_kind`` "memory
    bandwidth"), at larger batches the matmul peak in the sampled precision over the FLOPs a
    character costs ("matmul peak"); the bound is the lower of the two (a roofline).
    ``share_of_bound`` = chars_per_sec / bound_chars_per_sec. ``max_tv``: the largest total
    variation between the step's next-character distribution and ``forward``'s."""
    model = _sampling_model()
    engine = _warm_engine(model, int(batch), precision)
    before = _sample_bounds(engine.fast, int(batch), precision)
    chars_per_sec = _best_rate(engine, int(batch), int(length), precision)
    after = _sample_bounds(engine.fast, int(batch), precision)
    bounds = max(before, after, key=lambda b: b["bound_chars_per_sec"])
    error, tv = _step_error(model, precision)
    return {"chars_per_sec": chars_per_sec, **bounds,
            "share_of_bound": chars_per_sec / bounds["bound_chars_per_sec"],
            "max_logit_diff": error, "max_tv": tv, "threads": torch.get_num_threads()}


def _warm_engine(model, batch: int, precision: str):
    """The server's Engine over ``model`` for ``batch`` rows, after one warm-up request. One
    engine for every run, as the server keeps one: its weights are prepared once."""
    from charrnn import CharTokenizer, SampleConfig
    from charrnn.sampling.engine import Engine, Request

    tokenizer = CharTokenizer([chr(c) for c in range(32, 97)] + ["a"])
    engine = Engine(model, tokenizer, max_batch=batch, precision=precision)
    engine.submit(Request("a", SampleConfig(length=50, num_samples=batch, seed=0,
                                            precision=precision)))
    engine.step_until_done()
    return engine


def _best_rate(engine, batch: int, length: int, precision: str) -> float:
    """Chars/s of the best of RUNS requests of ``length`` / RUNS characters per row: as for
    the bounds, the least disturbed run."""
    from charrnn import SampleConfig
    from charrnn.sampling.engine import Request

    options = SampleConfig(length=max(1, length // RUNS), num_samples=batch, seed=0,
                           precision=precision)
    best = 0.0
    for _ in range(RUNS):
        start = time.perf_counter()
        engine.submit(Request("a", options))
        engine.step_until_done()
        best = max(best, batch * options.length / (time.perf_counter() - start))
    return best


def _sample_bounds(fast, batch, precision):
    """The sampling step's bounds (chars/s), measured now (see ``sample``)."""
    nbytes = fast.weight_bytes()
    seconds = _stream_seconds(nbytes)
    rate = _matmul_peak(torch.bfloat16 if precision == "bf16" else torch.float32)
    memory = batch / seconds                       # a step reads the weights once per batch
    matmul = rate / fast.flops_per_row()
    kind = "memory bandwidth" if memory <= matmul else "matmul peak"
    return {"bound_chars_per_sec": min(memory, matmul), "bound_kind": kind,
            "weight_bytes": nbytes, "stream_gb_per_sec": nbytes / seconds / 1e9,
            "matmul_peak_gflops": rate / 1e9, "flops_per_char": fast.flops_per_row()}


def _stream_seconds(nbytes, repeats=30):
    """Best time of a streaming reduction over ``nbytes`` bytes (fp32 tensors in four pieces,
    as a step's weights are in a few tensors): the time one step needs to read its weights."""
    pieces = [torch.ones(max(1, nbytes // 16)) for _ in range(4)]
    for piece in pieces:
        piece.sum()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for piece in pieces:
            piece.sum()
        best = min(best, time.perf_counter() - start)
    return best


def _matmul_peak(dtype, n=2048, repeats=8):
    """Best FLOP/s of an n x n product in ``dtype``, best of ``repeats`` (bench/section.py
    ``peak`` reports it in GFLOP/s for the training rows)."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * n ** 3 / best


@torch.no_grad()
def _step_error(model, precision, batch=4, steps=100):
    """(largest |fast step logits - forward logits|, largest total variation between their
    next-character distributions) over ``steps`` steps, each fast step started from the exact
    state (so it measures one step's rounding, not a drifting trajectory)."""
    from charrnn.sampling.fast_step import FastStep

    ids = torch.randint(1, model.config.vocab_size, (batch, steps))
    expected, _ = model(ids)
    exact, fast = FastStep(model, batch), FastStep(model, batch, precision)
    zeros = torch.zeros(model.config.layers, batch, model.config.hidden_size)
    hidden, worst, tv = (zeros, zeros.clone()), 0.0, 0.0
    for t in range(steps):
        logits, _ = fast(ids[:, t], hidden)
        _, hidden = exact(ids[:, t], hidden)
        worst = max(worst, (logits - expected[:, t]).abs().max().item())
        gap = logits.double().softmax(-1) - expected[:, t].double().softmax(-1)
        tv = max(tv, gap.abs().sum(-1).max().item() / 2)
    return worst, tv


def sample_plain(batch, length, device="cpu"):
    model = baseline.PlainLSTM(66, hidden=512, layers=2, embed=64)
    baseline.sample_per_char(model, 50, int(batch))
    start = time.perf_counter()
    baseline.sample_per_char(model, int(length), int(batch))
    return {"chars_per_sec": int(batch) * int(length) / (time.perf_counter() - start)}


def sample_cell(batch, length, cell="mingru", layers=2, hidden=256, expansion=1, mlp_ratio=2,
                device="cpu", precision="fp32"):
    """Sampling chars/s of an untrained CharRNN of the shape given (any cell; issue 26 measures
    the min cells beside the LSTM) at ``batch`` rows through the server's Engine, the best of
    RUNS runs of ``length`` / RUNS characters, after one warm-up; its training FLOPs per
    character / 3 (the forward) as ``flops_per_char``."""
    from charrnn import CharRNN, ModelConfig
    from bench.mincell import flops_per_char

    torch.manual_seed(0)
    config = ModelConfig(vocab_size=67, cell=cell, layers=int(layers), hidden_size=int(hidden),
                         embed_size=64, expansion=int(expansion), mlp_ratio=int(mlp_ratio))
    model = CharRNN(config).eval()
    engine = _warm_engine(model, int(batch), precision)
    chars_per_sec = _best_rate(engine, int(batch), int(length), precision)
    return {"chars_per_sec": chars_per_sec, "flops_per_char": flops_per_char(config) // 3,
            "params": model.num_params(), "threads": torch.get_num_threads()}
