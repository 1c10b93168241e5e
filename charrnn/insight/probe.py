"""What a model does with a text, measured for the HTML report (charrnn/insight/report.py).

``trace`` reads a text one character at a time through ``CharRNN.step``, the reference step,
because the fused nn.LSTM/GRU/RNN return neither lower layers' per-step states nor LSTM cell
states: it records every layer's hidden state (and cell state) after every character, the
surprisal of each character and the model's top guesses for it. ``lstm_gates`` recomputes an
LSTM's gates at each step from those states, for the report's state view. ``gradient_curve``
measures how much the loss now depends on the state k characters back: the vanishing-gradient
picture (Bengio, Simard and Frasconi, 1994; Hochreiter and Schmidhuber, 1997; Pascanu, Mikolov
and Bengio, 2013).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import torch

from charrnn.model.network import CharRNN, hidden_from_parts, hidden_parts

TOP = 5           # guesses kept per character
GATES = ("i", "f", "g", "o")      # an LSTM's gates in torch's order (CharRNN.layer_weights)


@dataclass
class Trace:
    """A model's reading of a text of T characters (ids; 0 is <unk>, a character outside the
    vocabulary). ``states[kind]`` is [layers, T, hidden] float32, the state right after reading
    each character: kind "h" (every cell's hidden state) and, for lstm, "c" (the cell state).
    ``bits`` [T] float64: the surprisal -log2 p(char | text before it) of each character, the
    first one predicted after the start character. ``top_ids`` [T, TOP] int64 and
    ``top_probs`` [T, TOP] float32: the model's most likely characters at each position
    (<unk> excluded, as sampling never picks it), most likely first. ``start[kind]`` is
    [layers, hidden] float32, the state after the start character: the one that made the
    guesses for the first character (the guesses for character t > 0 come from
    ``states[kind][:, t - 1]``)."""
    ids: np.ndarray
    bits: np.ndarray
    top_ids: np.ndarray
    top_probs: np.ndarray
    states: dict
    start: dict = field(default_factory=dict)
    start_id: int = 0

    @property
    def kinds(self) -> list[str]:
        return list(self.states)


@torch.no_grad()
def trace(model: CharRNN, ids: np.ndarray, start_id: int) -> Trace:
    """Read ``ids`` [T] (int) after ``start_id`` (the character the text is taken to follow,
    as sampling starts after "\\n"), from the zero state, one ``CharRNN.step`` per character,
    in eval mode on the model's device. See ``Trace`` for what is recorded."""
    model.eval()
    config, device = model.config, model.head.weight.device
    ids = np.asarray(ids, dtype=np.int64)
    length = len(ids)
    kinds = ["h", "c"] if config.cell == "lstm" else ["h"]
    states = {kind: torch.empty(config.layers, length, config.hidden_size) for kind in kinds}
    bits = np.empty(length)
    top_ids = np.empty((length, TOP), dtype=np.int64)
    top_probs = np.empty((length, TOP), dtype=np.float32)
    inputs = torch.as_tensor(ids, device=device)
    start = torch.tensor([int(start_id)], device=device)
    logits, hidden = model.step(start, model.init_hidden(1))
    first = {kind: part[:, 0].float().cpu().numpy() for kind, part in
             zip(kinds, hidden_parts(hidden))}
    top = min(TOP, config.vocab_size - 1)
    for t in range(length):
        log_probs = torch.log_softmax(logits[0].float(), -1)
        bits[t] = -log_probs[inputs[t]].item() / math.log(2)
        best = torch.topk(log_probs[1:], top)           # id 0 (<unk>) is never a guess
        top_ids[t, :top] = (best.indices + 1).cpu().numpy()
        top_probs[t, :top] = best.values.exp().cpu().numpy()
        top_ids[t, top:], top_probs[t, top:] = 0, 0.0
        logits, hidden = model.step(inputs[t:t + 1], hidden)
        for kind, part in zip(kinds, hidden_parts(hidden)):
            states[kind][:, t] = part[:, 0].float().cpu()
    return Trace(ids, bits, top_ids, top_probs,
                 {kind: value.numpy() for kind, value in states.items()}, first, int(start_id))


@torch.no_grad()
def lstm_gates(model: CharRNN, reading: Trace, units: Optional[dict] = None) -> dict:
    """An LSTM's gates at the steps that made ``reading``'s guesses: gate -> [layers, T, U]
    float32, for gate "i" (input), "f" (forget), "o" (output), each sigmoid(...) in [0, 1],
    and "g" (the cell candidate tanh(...), in [-1, 1]). ``units``: layer -> the U unit
    indices wanted in that layer (the same U in every layer); default every unit, U =
    hidden_size. Column t holds the gates of the step that read the character before
    character t (the start character for t = 0): the step whose new state, ``reading.start``
    or ``reading.states[:, t - 1]``, gave the guesses for character t. So c = f * c_before
    + i * g and h = o * tanh(c) there.

    Recomputed from the recorded states with ``CharRNN.step``'s equations (torch's nn.LSTM,
    weights from ``layer_weights``), all steps of a layer at once. Raises ValueError for a
    model that is not an lstm."""
    config = model.config
    if config.cell != "lstm":
        raise ValueError(f"a {config.cell} has no LSTM gates")
    model.eval()
    length = len(reading.ids)
    device = model.head.weight.device

    def before(layer: int) -> torch.Tensor:
        """The h each step starts from [T, hidden]: zeros, the start state, states[0..T-3]."""
        rows = [np.zeros((1, config.hidden_size), np.float32), reading.start["h"][layer][None],
                reading.states["h"][layer][:max(0, length - 2)]]
        return torch.as_tensor(np.concatenate(rows)[:length], device=device)

    def after(layer: int) -> torch.Tensor:
        """The h each step ends in [T, hidden]: the start state, states[0..T-2]."""
        rows = [reading.start["h"][layer][None], reading.states["h"][layer][:length - 1]]
        return torch.as_tensor(np.concatenate(rows)[:length], device=device)

    read = np.concatenate([[reading.start_id], reading.ids[:-1]])[:length].astype(np.int64)
    x = model.embed(torch.as_tensor(read, device=device)).float()
    size = config.hidden_size
    chosen = {layer: np.arange(size) if units is None else np.asarray(units[layer], np.int64)
              for layer in range(config.layers)}
    gates = {name: np.empty((config.layers, length, len(chosen[0])), np.float32)
             for name in GATES}
    for layer in range(config.layers):
        rows = torch.as_tensor(np.concatenate([gate * size + chosen[layer] for gate in range(4)]),
                               device=device)       # the chosen units' rows of i, f, g, o
        w_ih, w_hh, b_ih, b_hh = (w.float()[rows] for w in model.layer_weights(layer))
        summed = x @ w_ih.T + b_ih + before(layer) @ w_hh.T + b_hh        # [T, 4 U]
        for name, part in zip(GATES, summed.chunk(4, 1)):
            value = torch.tanh(part) if name == "g" else torch.sigmoid(part)
            gates[name][layer] = value.cpu().numpy()
        x = after(layer)
    return gates


def gradient_curve(model: CharRNN, ids: np.ndarray, states: dict, k_max: int,
                   positions: int = 32) -> np.ndarray:
    """The mean, over up to ``positions`` places t spread evenly through the text, of
    || d loss_t / d s_{t-k} || for k = 1..k_max: [k_max] float64.

    loss_t = -log p(ids[t+1] | s_t) in nats; s_j is the model's whole recurrent state after
    reading ids[j] (every layer's h, and c for lstm, as one vector); the norm is the Euclidean
    norm of the gradient with respect to it, a total derivative through every path from
    s_{t-k} to the loss. ``states`` are ``Trace.states`` (the starting state s_{t-k_max} of each
    place is taken from them; all places run together as one batch). A curve that falls by
    orders of magnitude is the vanishing gradient: what the model saw k characters back barely
    moves its loss now, so training cannot teach it to use that far context. Needs
    len(ids) >= k_max + 2; raises ValueError otherwise."""
    ids = np.asarray(ids, dtype=np.int64)
    last = len(ids) - 2                       # loss_t needs ids[t + 1]
    if k_max < 1 or last < k_max:
        raise ValueError(f"a gradient curve to k = {k_max} needs at least {k_max + 2} "
                         f"characters, got {len(ids)}")
    places = np.unique(np.linspace(k_max, last, min(positions, last - k_max + 1)).round()
                       ).astype(np.int64)
    model.eval()
    device = model.head.weight.device
    dtype = model.head.weight.dtype
    start = [torch.as_tensor(states[kind][:, places - k_max], device=device, dtype=dtype
                             ).requires_grad_() for kind in states]       # [layers, B, hidden]
    inputs = torch.as_tensor(ids, device=device)
    along = [start]                           # along[j]: the state parts after j steps
    hidden = hidden_from_parts(start)
    with torch.enable_grad():
        for j in range(1, k_max + 1):
            logits, hidden = model.step(inputs[places - k_max + j], hidden)
            along.append(hidden_parts(hidden))
        loss = torch.nn.functional.cross_entropy(logits.float(), inputs[places + 1],
                                                 reduction="sum")   # rows are independent
        wanted = [part for parts in along[:-1] for part in parts]
        grads = torch.autograd.grad(loss, wanted)
    per_state = len(start)
    norms = [torch.sqrt(sum(g.float().pow(2).sum((0, 2))
                            for g in grads[j * per_state:(j + 1) * per_state]))
             for j in range(k_max)]            # j = 0 is k = k_max
    curve = torch.stack([n.mean() for n in norms]).flip(0)        # k = 1..k_max
    return curve.double().cpu().numpy()
