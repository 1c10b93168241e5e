"""The min cells' figures (issue 26; Feng et al. 2024, "Were RNNs All We Needed?"): sections of
`python -m bench.section NAME ARGS...` (bench/section.py imports them).

* ``quality_min``: a mingru/minlstm run of SECONDS with ``--preset auto``'s training settings
  for that budget (rate, batch, chunk, averaging) and the min-cell shape given, evaluated after
  the budget exactly as ``quality_defaults`` evaluates charrnn's defaults (bench/baseline.py
  held_out, 64 streams, chunks of 256, fp32): val loss, training chars/s, FLOPs per character.
* ``scan_cost``: seconds per character of one block's cell (input projection, log-space scan,
  output projection), forward and backward, at chunk lengths 32 to 1024: the scan's cost is
  linear in the chunk when seconds per character stay flat (measured, not assumed).
* ``flops_per_char``: multiply-adds x 2 per training character, forward + backward (3x the
  forward), of a CharRNN shape, any cell: the same count bench/section.py's ``speed`` uses.
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

import torch

from bench import baseline


def flops_per_char(model) -> int:
    """Training FLOPs per character (forward x 3) of a ModelConfig, any cell: every weight
    product counted once per character, the embedding lookup and elementwise work apart."""
    vocab, embed, hidden, layers = model.vocab_size, model.embed_size, model.hidden_size, \
        model.layers
    if model.cell in ("mingru", "minlstm"):
        from charrnn.model.mincell import PARTS, width
        size, mlp = width(model), model.mlp_ratio * width(model)
        block = PARTS[model.cell] * hidden * size + hidden * size + 2 * size * mlp
        forward = embed * size + layers * block + size * vocab
    else:
        gates = {"rnn": 1, "gru": 3, "lstm": 4}[model.cell]
        forward = sum(gates * hidden * ((embed if k == 0 else hidden) + hidden)
                      for k in range(layers)) + hidden * vocab
    return 3 * 2 * forward


def quality_min(corpus, seconds, seed=1, cell="mingru", layers=2, hidden=512, expansion=2,
                mlp_ratio=4, device="cpu", val_chars=0, lr=0.0, dropout=-1.0):
    """A min-cell run of ``seconds`` on preset auto's training settings; ``lr`` 0 and
    ``dropout`` < 0 keep the preset's. Returns val_loss (nats/char, baseline.held_out),
    own_val_loss, steps, chars_per_sec (training), flops_per_char and the settings."""
    from charrnn.api import load, train_config, train_run

    text = baseline.read(corpus)
    held = baseline.held_out(text, int(val_chars) or None)
    shape = dict(cell=cell, layers=int(layers), hidden_size=int(hidden),
                 expansion=int(expansion), mlp_ratio=int(mlp_ratio))
    extra = {k: v for k, v in (("lr", float(lr)), ("dropout", float(dropout)))
             if (v > 0 if k == "lr" else v >= 0)}
    with tempfile.TemporaryDirectory() as tmp:
        config = train_config(corpus, f"{tmp}/run", "auto", time_limit=float(seconds),
                              seed=int(seed), device=device, progress=False,
                              cache_dir=f"{tmp}/cache", **shape, **extra)
        result = train_run(corpus, config)
        weights = "best" if Path(f"{tmp}/run/best").exists() else "last"
        model = load(f"{tmp}/run/{weights}", device="cpu")
        val_loss = model.evaluate(held, seq_len=256)[0]
        params = model.net.num_params()
    m = config.model
    return {"val_loss": val_loss, "own_val_loss": result.val_loss, "steps": result.step,
            "seconds": result.elapsed, "val_chars": len(held), "weights": weights,
            "chars_per_sec": result.step * config.batch_size * config.seq_len
            / max(result.elapsed, 1e-9), "flops_per_char": flops_per_char(m), "params": params,
            "settings": f"{m.cell} {m.layers}x{m.hidden_size} (width {m.hidden_size // m.expansion}"
                        f", MLP x{m.mlp_ratio}), batch {config.batch_size} x {config.seq_len}, "
                        f"lr {config.lr:g}, dropout {m.dropout:g}, precision {config.precision}"}


def scan_cost(cell="mingru", units=512, batch=32, lengths="32,64,128,256,512,1024",
              device="cpu", repeats=3, chars=65536):
    """Seconds per character (forward + backward) of one min-cell block's recurrent part at
    each chunk length, ``batch`` rows (0: ``chars`` // length rows, the same characters at
    every length, so the same working set) a measurement (best of ``repeats``), fp32. Returns
    {"lengths": [...], "us_per_char": [...], "ratio_longest_to_shortest": float}: near 1 when
    the cost is linear in the chunk length."""
    from charrnn.config import ModelConfig
    from charrnn.model.mincell import MinBlock

    torch.manual_seed(0)
    batch, chars = int(batch), int(chars)     # (from the command line they are strings)
    config = ModelConfig(cell=cell, hidden_size=int(units), layers=1, mlp_ratio=0)
    block = MinBlock(config).to(device)
    per_char = []
    for length in [int(x) for x in str(lengths).split(",")]:
        rows = max(1, chars // length) if batch == 0 else batch
        x = torch.randn(rows, length, config.hidden_size // config.expansion, device=device,
                        requires_grad=True)
        best = float("inf")
        for _ in range(int(repeats) + 1):          # the first is a warm-up
            _sync(device)
            start = time.perf_counter()
            out, _ = block(x, None, lambda t: t)
            out.sum().backward()
            _sync(device)
            best = min(best, time.perf_counter() - start)
        per_char.append(1e6 * best / (rows * length))
    lengths = [int(x) for x in str(lengths).split(",")]
    return {"cell": cell, "units": int(units), "batch": batch, "lengths": lengths,
            "us_per_char": per_char, "ratio_longest_to_shortest": per_char[-1] / per_char[0]}


def _sync(device) -> None:
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()
