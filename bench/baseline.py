"""The plain PyTorch loop a user would write without charrnn, kept plain on purpose.

nn.Embedding(vocab, 64) -> a 2-layer nn.RNN (tanh) or nn.LSTM -> nn.Linear, truncated BPTT over
contiguous streams (chunks of 64), gradient clipping at 1.0, AdamW at 3e-3 with cosine decay to
10% over the time budget; sampling calls the cell once per character. It is the yardstick of
bench/__main__.py and bench/full.py and must never be tuned to lose: which plain configuration
stands beside charrnn at a budget is the best of the SWEEP grid (bench/full.py runs it), not a
choice made here.

The figure (``evaluate``) is computed outside the time budget, on the held-out last 10% of the
text (``held_out``), hidden state carried, streams starting from zero.
"""
from __future__ import annotations

import math
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

# The sweep grid (issue 12): cell x width x batch, everything else as in ``train``.
SWEEP = tuple(dict(cell=cell, hidden=hidden, batch=batch)
              for cell in ("rnn", "lstm") for hidden in (256, 512) for batch in (32, 64))

# The plain configuration used at a budget until bench/full-results.json holds the sweep at
# that budget (bench/state.py best_plain): an RNN 2x256 at batch 32 for 60 s (the issue's
# one-minute loop, 1.627-1.657 measured beside charrnn), an LSTM 2x512 at batch 64 for 10 min
# (1.427, bench/RESULTS.md); budgets in between take the nearer one.
DEFAULT_PICKS = {60.0: dict(cell="rnn", hidden=256, batch=32),
                 600.0: dict(cell="lstm", hidden=512, batch=64)}


def config_name(config: dict) -> str:
    """"lstm-2x512-b64": the cell, layers x width and batch of a plain configuration."""
    return f"{config['cell']}-2x{config['hidden']}-b{config['batch']}"


def default_pick(seconds: float) -> dict:
    """The stated plain configuration for ``seconds`` before any sweep (DEFAULT_PICKS; the
    nearer budget on a log scale)."""
    budget = min(DEFAULT_PICKS, key=lambda b: abs(math.log(b) - math.log(max(seconds, 1e-3))))
    return dict(DEFAULT_PICKS[budget])


class PlainRNN(nn.Module):
    """Embedding -> nn.RNN (tanh) or nn.LSTM -> Linear; ``cell`` "rnn" or "lstm"."""

    def __init__(self, vocab, hidden=256, layers=2, embed=64, dropout=0.0, cell="lstm"):
        super().__init__()
        self.embed = nn.Embedding(vocab, embed)
        kind = {"rnn": nn.RNN, "lstm": nn.LSTM}[cell]
        extra = {"nonlinearity": "tanh"} if cell == "rnn" else {}
        self.rnn = kind(embed, hidden, layers, batch_first=True, dropout=dropout, **extra)
        self.head = nn.Linear(hidden, vocab)

    def forward(self, x, state=None):
        out, state = self.rnn(self.embed(x), state)
        return self.head(out), state


PlainLSTM = PlainRNN   # the name the sampling sections use (cell="lstm" is the default)


def encode(text):
    """(ids int64 [len(text)], the sorted characters): one id per character."""
    codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
    points, ids = np.unique(codes, return_inverse=True)
    return ids.astype(np.int64).reshape(-1), [chr(p) for p in points]


def read(path) -> str:
    """The corpus as charrnn reads it: UTF-8, newlines untouched (no \\r\\n translation)."""
    with open(path, encoding="utf-8", newline="") as handle:
        return handle.read()


def held_out(text: str, most: int | None = None) -> str:
    """The validation text: the last 10% of ``text`` (charrnn's split_train_val cut, the same
    characters for a one-character-per-id corpus), or its first ``most`` characters."""
    val = text[len(text) - len(text) // 10:]
    return val[:most] if most else val


def batches(ids, batch, seq):
    """Contiguous streams: row b is one stretch of text; column chunks follow each other."""
    length = (len(ids) - 1) // batch
    x = torch.from_numpy(ids[:batch * length].reshape(batch, length))
    y = torch.from_numpy(ids[1:batch * length + 1].reshape(batch, length))
    return x, y, length // seq


def evaluate(model, ids, batch=64, seq=256):
    """Mean cross-entropy (nats/char) over every character of ``ids`` but the first: at most
    ``batch`` contiguous streams from zero state, chunks of ``seq``, hidden state carried."""
    model.eval()
    x, y, chunks = batches(ids, max(1, min(batch, (len(ids) - 1) // seq)), seq)
    device = next(model.parameters()).device
    x, y = x.to(device), y.to(device)
    total, count, state = 0.0, 0, None
    with torch.no_grad():
        for i in range(-(-x.shape[1] // seq)):
            xb, yb = x[:, i * seq:(i + 1) * seq], y[:, i * seq:(i + 1) * seq]
            logits, state = model(xb, state)
            total += F.cross_entropy(logits.reshape(-1, logits.shape[-1]), yb.reshape(-1),
                                     reduction="sum").item()
            count += yb.numel()
    model.train()
    return total / count


def _detach(state):
    return tuple(s.detach() for s in state) if isinstance(state, tuple) else state.detach()


def train(text, seconds, hidden=256, layers=2, embed=64, dropout=0.0, batch=32, seq=64, lr=3e-3,
          seed=1337, max_steps=None, step_times=None, cell="lstm", val_chars=None,
          return_model=False, device="cpu"):
    """Train for ``seconds`` (or ``max_steps``), then evaluate on ``held_out(text,
    val_chars)`` outside the budget. Returns (val loss in nats/char, steps, chars/s), with the
    model last when ``return_model``."""
    torch.manual_seed(seed)
    ids, chars = encode(text)
    cut = len(ids) - len(ids) // 10
    train_ids, val_ids = ids[:cut], ids[cut:]
    if val_chars:
        val_ids = val_ids[:int(val_chars)]
    model = PlainRNN(len(chars), hidden, layers, embed, dropout, cell).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    x, y, chunks = batches(train_ids, batch, seq)
    x, y = x.to(device), y.to(device)
    state, step, start = None, 0, time.monotonic()
    while True:
        elapsed = time.monotonic() - start
        if elapsed >= seconds or (max_steps and step >= max_steps):
            break
        for group in optimizer.param_groups:
            group["lr"] = lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * elapsed / seconds)))
        i = step % chunks
        if i == 0:
            state = None
        logits, state = model(x[:, i * seq:(i + 1) * seq], state)
        state = _detach(state)
        loss = F.cross_entropy(logits.reshape(-1, len(chars)), y[:, i * seq:(i + 1) * seq].reshape(-1))
        optimizer.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        step += 1
        if step_times is not None:
            step_times.append(time.monotonic())
    if x.is_cuda:
        torch.cuda.synchronize()
    chars_per_sec = step * batch * seq / (time.monotonic() - start)
    figures = (evaluate(model, val_ids), step, chars_per_sec)
    return figures + (model,) if return_model else figures


def sample_per_char(model, length, batch=1, seed=0):
    """Sampling as usually written: the cell called once per character, state carried."""
    generator = torch.Generator().manual_seed(seed)
    model.eval()
    x = torch.zeros(batch, 1, dtype=torch.long)
    state, out = None, []
    with torch.no_grad():
        for _ in range(length):
            logits, state = model(x, state)
            x = torch.multinomial(torch.softmax(logits[:, -1], -1), 1, generator=generator)
            out.append(x)
    return torch.cat(out, 1)
