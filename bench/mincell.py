"""The min cells' figures (issue 26; Feng et al. 2024, "Were RNNs All We Needed?"): sections of
`python -m bench.section NAME ARGS...` (bench/section.py imports them).

* ``quality_min``: a mingru/minlstm run of SECONDS with ``--preset auto``'s training settings
  for that budget (rate, batch, chunk, averaging) and the min-cell shape given, evaluated after
  the budget exactly as ``quality_defaults`` evaluates charrnn's defaults (bench/baseline.py
  held_out, 64 streams, chunks of 256, fp32): val loss, training chars/s, FLOPs per character.
* ``scan_cost``: seconds per character of one block's cell (input projection, log-space scan,
  output projection), forward and backward, at chunk lengths 32 to 1024: the scan's cost is
  linear in the chunk when seconds per character stay flat (measured, not assumed).
* ``step_ms``: milliseconds per training step of a shape, eager or through --compile's
  torch.compile, and the first steps' seconds (the compiling).
* ``flops_per_char``: multiply-adds x 2 per training character, forward + backward (3x the
  forward), of a CharRNN shape, any cell: the same count bench/section.py's ``speed`` uses.
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

import torch

from bench import baseline

# The min-cell shapes `make bench` and bench-full's grid run beside the LSTM (cell, layers,
# hidden, expansion, MLP ratio) and their rate: the best of the 60 s sweep (bench/TRIED.md).
SHAPES = (("mingru", 4, 128, 1, 2), ("minlstm", 4, 128, 1, 2))
LR = 0.006


def shape_name(shape) -> str:
    """"mingru 4x128" for a SHAPES entry."""
    return f"{shape[0]} {shape[1]}x{shape[2]}"


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
                mlp_ratio=4, device="cpu", val_chars=0, lr=0.0, dropout=-1.0, batch=0, seq=0,
                warmup=-1, compile=0):
    """A min-cell run of ``seconds`` on preset auto's training settings; ``lr`` 0, ``dropout``
    < 0, ``batch`` 0, ``seq`` 0 and ``warmup`` < 0 (steps) keep the preset's; ``compile`` 1:
    --compile (its compiling counts in the budget). Returns val_loss (nats/char,
    baseline.held_out), own_val_loss, steps, chars_per_sec (training), flops_per_char and the
    settings."""
    from charrnn.api import load, train_config, train_run

    text = baseline.read(corpus)
    held = baseline.held_out(text, int(val_chars) or None)
    shape = dict(cell=cell, layers=int(layers), hidden_size=int(hidden),
                 expansion=int(expansion), mlp_ratio=int(mlp_ratio))
    extra = {k: v for k, v in (("lr", float(lr)), ("batch_size", int(batch)),
                               ("seq_len", int(seq))) if v > 0}
    extra.update({k: v for k, v in (("dropout", float(dropout)),
                                    ("warmup_steps", int(warmup))) if v >= 0})
    extra["compile"] = bool(int(compile))
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
                        f"lr {config.lr:g}, dropout {m.dropout:g}, precision {config.precision}"
                        + (", compiled" if config.compile else "")}


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


def step_ms(cell="mingru", layers=4, hidden=128, expansion=1, mlp_ratio=2, compile=0,
            steps=40, batch=32, seq=32, device="cpu"):
    """Milliseconds per training step (forward, backward, AdamW) of an untrained CharRNN of the
    shape given, batch x seq characters of a 65-character vocabulary, bf16 autocast on a CPU
    with native bf16 (else fp32), the state carried as in training: the median of the steps
    after the first 3, and the first 3 steps' seconds (``compile`` 1: torch.compile, as
    --compile runs it, so they hold the compiling). An LSTM ignores expansion and MLP."""
    import torch.nn.functional as F
    from charrnn import CharRNN, ModelConfig
    from charrnn.model.device import cpu_has_native_bf16
    from charrnn.training.compiled import compiled

    shape = dict(expansion=int(expansion), mlp_ratio=int(mlp_ratio)) \
        if cell in ("mingru", "minlstm") else {}
    torch.manual_seed(0)
    net = CharRNN(ModelConfig(vocab_size=65, cell=cell, layers=int(layers),
                              hidden_size=int(hidden), embed_size=64, **shape)).to(device)
    forward = compiled(net, net, bool(int(compile)))
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-3)
    data = torch.randint(0, 65, (int(batch), int(seq) + 1), device=device)
    bf16 = cpu_has_native_bf16() if device == "cpu" else True
    hidden_state, times = None, []
    for _ in range(int(steps)):
        start = time.perf_counter()
        with torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=bf16):
            logits, hidden_state = forward(data[:, :-1], hidden_state)
        hidden_state = hidden_state.detach() if isinstance(hidden_state, torch.Tensor) \
            else tuple(h.detach() for h in hidden_state)
        loss = F.cross_entropy(logits.float().flatten(0, 1), data[:, 1:].flatten())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        times.append(time.perf_counter() - start)
    rest = sorted(times[3:])
    return {"ms_per_step": 1e3 * rest[len(rest) // 2], "first_3_steps_s": sum(times[:3]),
            "chars_per_sec": int(batch) * int(seq) / rest[len(rest) // 2],
            "compiled": bool(int(compile)), "bf16": bf16, "threads": torch.get_num_threads()}
