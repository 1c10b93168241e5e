"""The plain PyTorch loop a user would write without charrnn, kept plain on purpose.

nn.Embedding -> nn.LSTM -> nn.Linear, truncated BPTT over contiguous streams, gradient clipping,
AdamW with cosine decay over the time budget; sampling calls nn.LSTM once per character.
It is the yardstick of bench/__main__.py and must never be tuned to lose.
"""
from __future__ import annotations

import math
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


class PlainLSTM(nn.Module):
    def __init__(self, vocab, hidden=256, layers=2, embed=64, dropout=0.0):
        super().__init__()
        self.embed = nn.Embedding(vocab, embed)
        self.lstm = nn.LSTM(embed, hidden, layers, batch_first=True, dropout=dropout)
        self.head = nn.Linear(hidden, vocab)

    def forward(self, x, state=None):
        out, state = self.lstm(self.embed(x), state)
        return self.head(out), state


def encode(text):
    chars = sorted(set(text))
    index = {c: i for i, c in enumerate(chars)}
    return np.array([index[c] for c in text], dtype=np.int64), chars


def batches(ids, batch, seq):
    """Contiguous streams: row b is one stretch of text; column chunks follow each other."""
    length = (len(ids) - 1) // batch
    x = torch.from_numpy(ids[:batch * length].reshape(batch, length))
    y = torch.from_numpy(ids[1:batch * length + 1].reshape(batch, length))
    return x, y, length // seq


def evaluate(model, ids, batch=64, seq=256):
    model.eval()
    x, y, chunks = batches(ids, min(batch, (len(ids) - 1) // seq), seq)
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


def train(text, seconds, hidden=256, layers=2, embed=64, dropout=0.0, batch=32, seq=100, lr=2e-3,
          seed=1337, max_steps=None, step_times=None):
    """Train for ``seconds``; returns (val loss in nats/char, steps, chars/s)."""
    torch.manual_seed(seed)
    ids, chars = encode(text)
    cut = len(ids) - len(ids) // 10
    train_ids, val_ids = ids[:cut], ids[cut:]
    model = PlainLSTM(len(chars), hidden, layers, embed, dropout)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    x, y, chunks = batches(train_ids, batch, seq)
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
        state = tuple(s.detach() for s in state)
        loss = F.cross_entropy(logits.reshape(-1, len(chars)), y[:, i * seq:(i + 1) * seq].reshape(-1))
        optimizer.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        step += 1
        if step_times is not None:
            step_times.append(time.monotonic())
    chars_per_sec = step * batch * seq / (time.monotonic() - start)
    return evaluate(model, val_ids), step, chars_per_sec


def sample_per_char(model, length, batch=1, seed=0):
    """Sampling as usually written: nn.LSTM called once per character, state carried."""
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
