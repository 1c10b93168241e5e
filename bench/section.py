"""One benchmark figure, run in its own process: `python -m bench.section NAME ARGS...`.

Prints one JSON line with the figure and the process's peak RSS (MB).
"""
from __future__ import annotations

import dataclasses
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

import torch

from bench import baseline
# The sections and helpers that live in their own modules, imported here so that every name
# stays a section `python -m bench.section NAME` finds (it looks NAME up in this module).
from bench.german import _mo_strings, german_play, new_corpus  # noqa: F401
from bench.mincell import quality_min, scan_cost, step_ms  # noqa: F401  (issue 26: min cells)
from bench.sampling_bench import (_matmul_peak, _sample_bounds, _sampling_model,  # noqa: F401
                                  _step_error, _stream_seconds, sample, sample_cell,
                                  sample_plain)

SPEED_SHAPE = dict(hidden=512, layers=2, embed=64, batch=64, seq=128)


def peak(device="cpu"):
    """Measured matmul rate (GFLOP/s) of a 2048 x 2048 product, fp32 and bf16 (best of 8: the
    same measure as the sampling rows' bound, bench/sampling_bench.py)."""
    return {name: _matmul_peak(dtype) / 1e9
            for name, dtype in (("gflops", torch.float32), ("gflops_bf16", torch.bfloat16))}


def quality(corpus, seconds, preset_name, device="cpu"):
    """A run of ``seconds`` with the preset's settings; "auto": the defaults `charrnn train
    --time-limit` picks for that budget, corpus and CPU (its settings come back too)."""
    from charrnn.api import train_config, train_run

    with tempfile.TemporaryDirectory() as tmp:
        config = train_config(corpus, f"{tmp}/run", preset_name, time_limit=float(seconds),
                              device=device, progress=False, cache_dir=f"{tmp}/cache")
        result = train_run(corpus, config)
    return {"val_loss": result.val_loss, "steps": result.step, "seconds": result.elapsed,
            "model": dataclasses.asdict(config.model)}




def _run(corpus, seconds, out, cache, init_from=None, lr_scale=None, device="cpu", steps=None):
    """Preset cpu-1m for ``seconds`` (or ``steps``): from scratch, or a fine-tune of
    ``init_from`` at the preset's rate times ``lr_scale`` (default: charrnn's fine-tune rate)."""
    from charrnn.api import train_run
    from charrnn.training.presets import preset

    config = preset("cpu-1m", fine_tune=init_from is not None)
    if init_from is not None and lr_scale is not None:
        config.lr = preset("cpu-1m").lr * float(lr_scale)
    config.time_limit, config.steps, config.epochs = (None, steps, None) if steps else \
        (float(seconds), None, None)
    config.device, config.progress, config.out, config.cache_dir = device, False, out, cache
    config.init_from = init_from
    return train_run(corpus, config)


def finetune(corpus, seconds, device="cpu", lr_scales=""):
    """A model trained ``seconds`` on ``corpus``, fine-tuned on a German text (``new_corpus``)
    against training on it from scratch: for ``seconds`` each, and for the steps the base model
    reached in its ``seconds`` each (the same compute whatever else the machine runs). Figures:
    validation losses on the German text (nats/char), steps, the characters the vocabulary
    gained, and forgetting: the loss on ``corpus``'s validation text (its last 10%) before and
    after the timed fine-tune. ``lr_scales``: comma-separated rate factors for more
    fine-tunes of the base's steps (a sweep; their loss on the old text too)."""
    import charrnn
    from charrnn.training.presets import FINE_TUNE_LR_SCALE

    text = Path(corpus).read_text(encoding="utf-8")
    old_val = text[len(text) - int(len(text) * 0.1):]
    with tempfile.TemporaryDirectory() as tmp:
        german = Path(tmp) / "german.txt"
        new_text, source = new_corpus()
        german.write_text(new_text, encoding="utf-8")
        base = _run(corpus, seconds, f"{tmp}/base", f"{tmp}/cache", device=device)
        before = charrnn.load(f"{tmp}/base", device="cpu")
        runs = {"finetune": _run(str(german), seconds, f"{tmp}/ft", f"{tmp}/cache",
                                 f"{tmp}/base", device=device),
                "scratch": _run(str(german), seconds, f"{tmp}/scratch", f"{tmp}/cache",
                                device=device),
                "finetune_same_steps": _run(str(german), 0, f"{tmp}/ft-steps", f"{tmp}/cache",
                                            f"{tmp}/base", device=device, steps=base.step),
                "scratch_same_steps": _run(str(german), 0, f"{tmp}/scratch-steps",
                                           f"{tmp}/cache", device=device, steps=base.step)}
        after = charrnn.load(f"{tmp}/ft", device="cpu")
        sweep = {}
        for scale in [float(s) for s in lr_scales.split(",") if s]:
            result = _run(str(german), 0, f"{tmp}/ft{scale}", f"{tmp}/cache", f"{tmp}/base",
                          scale, device, steps=base.step)
            sweep[str(scale)] = {"val_loss": result.val_loss, "old_val_after": charrnn.load(
                f"{tmp}/ft{scale}", device="cpu").evaluate(old_val)[0]}
        figures = {f"{name}_{key}": value for name, run in runs.items()
                   for key, value in (("val_loss", run.val_loss), ("steps", run.step),
                                      ("seconds", run.elapsed))}
        return {**figures, "base_val_loss": base.val_loss, "base_steps": base.step,
                "added_chars": after.tokenizer.chars[len(before.tokenizer.chars):],
                "old_val_before": before.evaluate(old_val)[0],
                "old_val_after": after.evaluate(old_val)[0], "lr_scale": FINE_TUNE_LR_SCALE,
                "sweep": sweep, "new_corpus": source, "new_corpus_chars": len(new_text)}


def quality_plain(corpus, seconds, seed=1, cell="rnn", hidden=256, batch=32, device="cpu",
                  val_chars=0):
    """The plain loop (bench/baseline.py) of ``cell``/``hidden``/``batch`` for ``seconds``:
    its val loss on baseline.held_out(text, val_chars) (0: all of it), computed after the
    budget, steps and chars/s."""
    text = baseline.read(corpus)
    val_loss, steps, chars_per_sec = baseline.train(
        text, float(seconds), cell=cell, hidden=int(hidden), batch=int(batch), seed=int(seed),
        val_chars=int(val_chars) or None)
    return {"val_loss": val_loss, "steps": steps, "chars_per_sec": chars_per_sec,
            "config": baseline.config_name(dict(cell=cell, hidden=int(hidden), batch=int(batch))),
            "val_chars": len(baseline.held_out(text, int(val_chars) or None))}


def quality_defaults(corpus, seconds, seed=1, device="cpu", val_chars=0):
    """charrnn with the defaults for a time limit of ``seconds`` (what `charrnn train CORPUS
    --time-limit Ns` picks: preset auto), then its best/ weights (charrnn.api.load) evaluated
    outside the budget exactly as the plain loop is: on baseline.held_out(text, val_chars),
    64 streams from zero state, chunks of 256, hidden state carried, fp32."""
    from charrnn.api import load, train_config, train_run

    text = baseline.read(corpus)
    held = baseline.held_out(text, int(val_chars) or None)
    with tempfile.TemporaryDirectory() as tmp:
        config = train_config(corpus, f"{tmp}/run", "auto", time_limit=float(seconds),
                              seed=int(seed), device=device, progress=False,
                              cache_dir=f"{tmp}/cache")
        result = train_run(corpus, config)
        # best/ (the run's best validation); a run too short for its final validation has
        # only last/, which charrnn.load then takes: "weights" says which.
        weights = "best" if Path(f"{tmp}/run/best").exists() else "last"
        model = load(f"{tmp}/run/{weights}", device="cpu")
        val_loss = model.evaluate(held, seq_len=256)[0]
    shape = config.model
    return {"val_loss": val_loss, "own_val_loss": result.val_loss, "steps": result.step,
            "seconds": result.elapsed, "val_chars": len(held),
            "weights": weights, "settings": f"{shape.cell} {shape.layers}x{shape.hidden_size}, batch "
                        f"{config.batch_size} x {config.seq_len}, lr {config.lr:g}, dropout "
                        f"{shape.dropout:g}, precision {config.precision}"}


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




def data(corpus, megabytes):
    from charrnn.data.cache import load_ids
    from charrnn.data.corpus import Corpus
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
