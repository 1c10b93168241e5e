"""Validation: the mean loss of predicting every next character of a text, in nats and bits.

The text is cut into contiguous rows (charrnn/data/batches.py) and read chunk by chunk with the
hidden state carried, as in training, so every character but the first is predicted with the
context of all that came before it in its row.
"""
from __future__ import annotations

import math
import time

import numpy as np
import torch
import torch.nn.functional as F

from charrnn.model.device import autocast
from charrnn.model.network import CharRNN
from charrnn.data.batches import Batches

LN2 = math.log(2)   # nats per bit: bits per character = loss / LN2


def eval_batches(ids: np.ndarray, seq_len: int, what: str = "text", most: int = 64) -> Batches:
    """As many rows as the text fills with at least one chunk each, at most ``most``.
    Raises CharRNNError when ``ids`` is shorter than one chunk plus one."""
    batch = max(1, min(most, (len(ids) - 1) // seq_len))
    return Batches(ids, batch, seq_len, what=what)


@torch.inference_mode()
def evaluate(model: CharRNN, batches: Batches, device: torch.device,
             precision: str = "fp32") -> float:
    """Mean cross-entropy in nats per character over every chunk (the short last one too),
    hidden state carried across chunks; leaves the model in eval mode."""
    model.eval()
    hidden, total, count = None, torch.zeros((), device=device, dtype=torch.float64), 0
    for i in range(batches.num_chunks_with_tail):
        loss, hidden, chars = _chunk_loss(model, batches, i, hidden, device, precision)
        total += loss
        count += chars
    return float(total) / count


@torch.inference_mode()
def seconds_to_evaluate(model: CharRNN, batches: Batches, device: torch.device,
                        precision: str = "fp32") -> float:
    """How long ``evaluate`` takes on ``batches``, from the time of its first chunk (the
    faster of two runs: the first pays one-time setup) times the number of chunks. Leaves
    the model in eval mode; changes no weights and draws no random numbers."""
    model.eval()
    times = []
    for _ in range(2):
        started = time.perf_counter()
        loss = _chunk_loss(model, batches, 0, None, device, precision)[0]
        float(loss)           # wait for the device
        times.append(time.perf_counter() - started)
    return min(times) * batches.num_chunks_with_tail


def _chunk_loss(model: CharRNN, batches: Batches, i: int, hidden, device: torch.device,
                precision: str):
    """(summed loss of chunk ``i``, float64 0-dim tensor; the hidden state after it; its
    number of predicted characters)."""
    inputs, targets = batches.chunk(i)
    inputs, targets = inputs.to(device), targets.to(device)
    with autocast(device, precision):
        logits, hidden = model(inputs, hidden)
    loss = F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), reduction="sum")
    return loss.double(), hidden, targets.numel()
