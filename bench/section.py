"""One benchmark figure, run in its own process: `python -m bench.section NAME ARGS...`.

Prints one JSON line with the figure and the process's peak RSS (MB).
"""
from __future__ import annotations

import json
import resource
import sys
import tempfile
import time
from pathlib import Path

import torch

from bench import baseline

SPEED_SHAPE = dict(hidden=512, layers=2, embed=64, batch=64, seq=128)


def peak(device="cpu"):
    """Measured matmul rate (GFLOP/s) of a large square product, fp32 and bf16."""
    n, figures = 2048, {}
    for name, dtype in (("gflops", torch.float32), ("gflops_bf16", torch.bfloat16)):
        a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
        for _ in range(3):
            a @ b
        start, reps = time.perf_counter(), 20
        for _ in range(reps):
            a @ b
        figures[name] = 2 * n ** 3 * reps / (time.perf_counter() - start) / 1e9
    return figures


def quality(corpus, seconds, preset_name, device="cpu"):
    from charrnn.api import train_run
    from charrnn.config import preset

    config = preset(preset_name)
    config.time_limit, config.steps, config.epochs = float(seconds), None, None
    config.device, config.progress = device, False
    with tempfile.TemporaryDirectory() as tmp:
        config.out, config.cache_dir = f"{tmp}/run", f"{tmp}/cache"
        result = train_run(corpus, config)
    return {"val_loss": result.val_loss, "steps": result.step, "seconds": result.elapsed}


def quality_plain(corpus, seconds, device="cpu"):
    text = Path(corpus).read_text(encoding="utf-8")
    val_loss, steps, chars_per_sec = baseline.train(text, float(seconds))
    return {"val_loss": val_loss, "steps": steps, "chars_per_sec": chars_per_sec}


def _speed_text():
    import random
    rng = random.Random(0)
    return "".join(rng.choice("abcdefghijklmnopqrstuvwxyz ,.\nABCDEFGHIJKLMNOPQRSTUVWXYZ;:!?'-")
                   for _ in range(600_000))


def _chars_per_sec(times, steps_to_skip=3):
    shape = SPEED_SHAPE
    steps = len(times) - steps_to_skip
    return steps * shape["batch"] * shape["seq"] / (times[-1] - times[steps_to_skip - 1])


def _flops_per_char(vocab):
    h, e = SPEED_SHAPE["hidden"], SPEED_SHAPE["embed"]
    forward = 2 * 4 * h * (e + h) + 2 * 4 * h * (h + h) + 2 * h * vocab
    return 3 * forward  # backward costs about twice the forward


def speed(steps, device="cpu"):
    from charrnn.api import train_run
    from charrnn.config import ModelConfig, TrainConfig

    shape, times = SPEED_SHAPE, []
    with tempfile.TemporaryDirectory() as tmp:
        Path(f"{tmp}/text.txt").write_text(_speed_text())
        config = TrainConfig(model=ModelConfig(cell="lstm", layers=shape["layers"],
                                               hidden_size=shape["hidden"],
                                               embed_size=shape["embed"]),
                             batch_size=shape["batch"], seq_len=shape["seq"], steps=int(steps),
                             eval_interval=10**9, device=device, progress=False,
                             out=f"{tmp}/run", cache_dir=f"{tmp}/cache")
        train_run(f"{tmp}/text.txt", config,
                  callback=lambda step, metrics: times.append(time.monotonic()) and False)
    return {"chars_per_sec": _chars_per_sec(times), "flops_per_char": _flops_per_char(67)}


def speed_plain(steps, device="cpu"):
    shape, times = SPEED_SHAPE, []
    baseline.train(_speed_text(), 10**9, hidden=shape["hidden"], layers=shape["layers"],
                   embed=shape["embed"], batch=shape["batch"], seq=shape["seq"],
                   max_steps=int(steps), step_times=times)
    return {"chars_per_sec": _chars_per_sec(times)}


def _sampling_model():
    from charrnn import CharRNN, ModelConfig

    torch.manual_seed(0)
    return CharRNN(ModelConfig(vocab_size=67, cell="lstm", layers=2, hidden_size=512,
                               embed_size=64)).eval()


def sample(batch, length, device="cpu", precision="fp32"):
    from charrnn import CharTokenizer
    from charrnn import SampleConfig
    from charrnn.sampler import generate

    model = _sampling_model()
    tokenizer = CharTokenizer([chr(c) for c in range(32, 97)] + ["a"])
    options = SampleConfig(length=50, num_samples=int(batch), seed=0, precision=precision)
    generate(model, tokenizer, "a", options)  # warm up
    options.length = int(length)
    start = time.perf_counter()
    generate(model, tokenizer, "a", options)
    return {"chars_per_sec": int(batch) * int(length) / (time.perf_counter() - start),
            "max_logit_diff": _step_error(model, precision)}


@torch.no_grad()
def _step_error(model, precision, batch=4, steps=100):
    """Largest |fast step logits - forward logits| over ``steps`` steps, each fast step started
    from the exact state (so it measures one step's rounding, not a drifting trajectory)."""
    from charrnn.fast_step import FastStep

    ids = torch.randint(1, model.config.vocab_size, (batch, steps))
    expected, _ = model(ids)
    exact, fast = FastStep(model, batch), FastStep(model, batch, precision)
    zeros = torch.zeros(model.config.layers, batch, model.config.hidden_size)
    hidden, worst = (zeros, zeros.clone()), 0.0
    for t in range(steps):
        logits, _ = fast(ids[:, t], hidden)
        _, hidden = exact(ids[:, t], hidden)
        worst = max(worst, (logits - expected[:, t]).abs().max().item())
    return worst


def sample_plain(batch, length, device="cpu"):
    model = baseline.PlainLSTM(66, hidden=512, layers=2, embed=64)
    baseline.sample_per_char(model, 50, int(batch))
    start = time.perf_counter()
    baseline.sample_per_char(model, int(length), int(batch))
    return {"chars_per_sec": int(batch) * int(length) / (time.perf_counter() - start)}


def data(corpus, megabytes):
    from charrnn.cache import load_ids
    from charrnn.corpus import Corpus
    from tokenizers import Tokenizer

    text = Path(corpus).read_text(encoding="utf-8")
    with tempfile.TemporaryDirectory() as tmp:
        big = Path(tmp) / "big.txt"
        block = text.encode("utf-8")
        with open(big, "wb") as handle:
            for _ in range(max(1, int(megabytes) * 1_000_000 // len(block))):
                handle.write(block)
        size = big.stat().st_size
        start = time.perf_counter()
        tokenizer, ids = load_ids(Corpus(str(big)), None, f"{tmp}/cache")
        first = time.perf_counter() - start
        start = time.perf_counter()
        load_ids(Corpus(str(big)), None, f"{tmp}/cache")
        second = time.perf_counter() - start
        same = ids[:200_000].tolist() == tokenizer.to_tokenizers().encode(text[:200_000]).ids
        lines = text.splitlines(keepends=True)
        plain = Tokenizer.from_str(tokenizer.to_tokenizers().to_str())
        start = time.perf_counter()
        plain.encode_batch(lines)
        tokenizers_rate = len(block) / (time.perf_counter() - start) / 1e6
    return {"mb_per_sec": size / first / 1e6, "cache_hit_seconds": second, "megabytes": size / 1e6,
            "ids_equal_tokenizers": same, "tokenizers_mb_per_sec": tokenizers_rate}


if __name__ == "__main__":
    name, *args = sys.argv[1:]
    figures = globals()[name](*args)
    figures["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(figures))
