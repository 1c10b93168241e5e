"""Stage 5: the model. Embedding -> stacked recurrent layers -> linear scores over the vocabulary.

For the plain ``rnn`` cell every layer computes, with the same weights at every time step,
    h_t = tanh(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh)
and the output layer y_t = W_hy h_t + b_y. Training uses torch's fused nn.RNN/GRU/LSTM (cuDNN on
CUDA). ``CharRNN.step`` writes one time step out gate by gate, from the same weights: the
readable reference; sampling runs charrnn/sampling/fast_step.py's optimised version of it.

The ``mingru`` and ``minlstm`` cells (Feng et al. 2024) are residual blocks around a recurrence
without W_hh, trained with a parallel scan (charrnn/model/mincell.py); their ``step`` is
written out there, and the output layer reads the blocks' width, hidden_size // expansion.

The hidden state is nn.RNN/GRU/LSTM's: a tensor [layers, batch, hidden] (rnn, gru, mingru,
minlstm) or a pair (h, c) of them (lstm). The helpers at the end of this module are the only code that looks
inside it.
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from charrnn.config import ModelConfig
from charrnn.model import mincell

Hidden = Union[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]
RECURRENT = {"rnn": nn.RNN, "gru": nn.GRU, "lstm": nn.LSTM}


class CharRNN(nn.Module):
    """A character-level recurrent language model (Karpathy's char-rnn, in PyTorch).

    Parameters: ``embed`` [vocab, embed_size], ``rnn`` (torch's nn.RNN/GRU/LSTM, weights
    ``weight_ih_l{i}`` [gates * hidden, in], ``weight_hh_l{i}`` [gates * hidden, hidden]),
    ``head`` [vocab, hidden]. For mingru and minlstm, ``rnn`` is a mincell.MinStack and
    ``head`` is [vocab, hidden // expansion]. Raises OptionError (a CharRNNError) for a bad
    ``config``."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config.validate()
        self.embed = nn.Embedding(config.vocab_size, config.embed_size)
        if mincell.is_min(config):
            self.rnn, out = mincell.MinStack(config), mincell.width(config)
        else:
            self.rnn, out = RECURRENT[config.cell](
                config.embed_size, config.hidden_size, num_layers=config.layers,
                batch_first=True, dropout=config.dropout if config.layers > 1 else 0.0), \
                config.hidden_size
        self.head = nn.Linear(out, config.vocab_size)
        if config.cell == "lstm":
            self._open_forget_gates()

    def _open_forget_gates(self) -> None:
        # Forget-gate bias 1 (Jozefowicz et al., 2015): the cell remembers from the first step,
        # which makes early training markedly faster.
        size = self.config.hidden_size
        with torch.no_grad():
            for layer in range(self.config.layers):
                getattr(self.rnn, f"bias_ih_l{layer}")[size:2 * size].fill_(1.0)
                getattr(self.rnn, f"bias_hh_l{layer}")[size:2 * size].fill_(0.0)

    def forward(self, ids: torch.Tensor, hidden: Optional[Hidden] = None
                ) -> tuple[torch.Tensor, Hidden]:
        """ids [batch, time] int64 -> logits [batch, time, vocab] (float), hidden state after
        the last step. ``hidden=None`` starts from zeros."""
        config = self.config
        inputs = _locked(self.embed(ids), config.input_dropout, self.training)
        outputs, hidden = self._recurrent(inputs, hidden)
        outputs = _locked(outputs, config.dropout, self.training) if config.locked_dropout \
            else _dropout(outputs, config.dropout, self.training, config.dropout_mask)
        return self.head(outputs), hidden

    def _recurrent(self, x: torch.Tensor, hidden: Optional[Hidden]) -> tuple[torch.Tensor, Hidden]:
        # With weight drop while training: the same fused kernel, on the masked weights
        # (functional_call swaps them in for this call), never a per-step Python loop.
        config = self.config
        if mincell.is_min(config):
            return self.rnn(x, hidden, lambda t: _dropout(t, config.dropout, self.training,
                                                          config.dropout_mask))
        if not (self.training and config.weight_drop > 0):
            return self.rnn(x, hidden)
        return torch.func.functional_call(self.rnn, self.dropped_weights(), (x, hidden))

    def dropped_weights(self) -> dict[str, torch.Tensor]:
        """DropConnect (Wan et al. 2013) on the recurrent weights, AWD-LSTM's weight drop
        (Merity et al. 2017, "Regularizing and Optimizing LSTM Language Models"): for every
        layer k, ``{"weight_hh_lk": weight_hh_lk * mask / (1 - p)}`` with p = weight_drop and
        a fresh Bernoulli(1 - p) mask [gates*hidden, hidden] from torch's global generator.
        ``forward`` draws them once per call (per chunk) in training mode; their expectation
        is the plain weight, which evaluation, ``step`` and sampling use as it is. Gradients
        reach weight_hh through the mask. p is rounded to a multiple of 1/32768."""
        weights = [getattr(self.rnn, f"weight_hh_l{k}") for k in range(self.config.layers)]
        return {f"weight_hh_l{k}": w * _keep_mask(w, self.config.weight_drop)
                for k, w in enumerate(weights)}

    def init_hidden(self, batch: int, device: Optional[torch.device] = None) -> Hidden:
        """The zero state for ``batch`` streams, on the model's device unless given."""
        config = self.config
        device = device if device is not None else self.head.weight.device
        zeros = torch.zeros(config.layers, batch, config.hidden_size, device=device)
        return (zeros, zeros.clone()) if config.cell == "lstm" else zeros

    def step(self, ids: torch.Tensor, hidden: Hidden) -> tuple[torch.Tensor, Hidden]:
        """One time step, written out: the reference that the fast sampler is tested against.

        ids [batch] int64; hidden as ``forward`` returns it ([layers, batch, hidden], or a pair
        (h, c) of them for lstm) in the weights' dtype (float32 unless the model was converted).
        Returns logits [batch, vocab] and the next hidden state, same layout and dtype. Equal
        to ``forward(ids[:, None], hidden)`` (to rounding) in eval mode: dropout is never
        applied. The embedding row of each id goes through every layer's nn.RNN / nn.GRU /
        nn.LSTM equations (as torch documents them), on this model's own weights
        (``layer_weights``), then through ``head``; for mingru and minlstm through
        ``mincell.MinStack.step`` (the paper's h_t = a_t * h_{t-1} + b_t, in linear space). Slow (plain products); for sampling use
        charrnn.sampling.fast_step.FastStep. Raises IndexError for an id outside [0, vocab) and
        ValueError for a hidden state of another layout or shape.
        """
        cell, parts = self.config.cell, hidden_parts(hidden)
        self._check_hidden(parts, ids.shape[0])     # (not len(): it would fix an exported batch)
        if mincell.is_min(self.config):              # its blocks, written out in mincell.py
            x, hidden = self.rnn.step(self.embed(ids), hidden)
            return self.head(x), hidden
        x, new_parts = self.embed(ids), [[] for _ in parts]
        for layer in range(self.config.layers):
            w_ih, w_hh, b_ih, b_hh = self.layer_weights(layer)
            from_input, from_state = x @ w_ih.T + b_ih, parts[0][layer] @ w_hh.T + b_hh
            if cell == "rnn":
                x = torch.tanh(from_input + from_state)
            elif cell == "gru":
                x = _gru_cell(from_input, from_state, parts[0][layer])
            else:
                x, c = _lstm_cell(from_input + from_state, parts[1][layer])
                new_parts[1].append(c)
            new_parts[0].append(x)
        logits = self.head(x)
        return logits, hidden_from_parts([torch.stack(p) for p in new_parts])

    def _check_hidden(self, parts: list[torch.Tensor], batch: int) -> None:
        config = self.config
        shape = (config.layers, batch, config.hidden_size)
        if len(parts) != (2 if config.cell == "lstm" else 1) or \
                any(tuple(part.shape) != shape for part in parts):
            kind = "a pair (h, c) of tensors" if config.cell == "lstm" else "a tensor"
            raise ValueError(f"the {config.cell} hidden state must be {kind} of shape {shape}, "
                             f"got {[tuple(part.shape) for part in parts]}")

    def layer_weights(self, layer: int) -> tuple[torch.Tensor, ...]:
        """(weight_ih [gates*hidden, in], weight_hh [gates*hidden, hidden], bias_ih, bias_hh
        [gates*hidden]) of recurrent layer ``layer``, gates in torch's order (lstm: i, f, g, o;
        gru: r, z, n; rnn: one). ``in`` is embed_size for layer 0, else hidden_size. Raises
        AttributeError for a layer the model does not have, or for mingru and minlstm (no
        weight_hh: see ``rnn.blocks[layer]``)."""
        return tuple(getattr(self.rnn, f"{name}_l{layer}")
                     for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"))

    def num_params(self) -> int:
        """The number of weights (embedding, recurrent layers, output layer)."""
        return sum(p.numel() for p in self.parameters())


def _dropout(x: torch.Tensor, p: float, training: bool, mask: str = "paired") -> torch.Tensor:
    """Dropout (Srivastava et al. 2014) on x (any shape): each entry zeroed with probability p,
    the rest scaled by 1/(1-p), in x's dtype as F.dropout does. x itself when not training or
    p is 0. ``mask`` "paired": from ``_keep_mask`` (p to 1/32768); with F.dropout's Bernoulli
    draw ("bernoulli", charrnn 0.1's) a cpu-10m training step on 2 CPU cores took 13-17 ms
    longer (bench/TRIED.md, round four)."""
    if not training or p == 0:
        return x
    if mask == "bernoulli":
        return F.dropout(x, p, training=True)
    return x * _keep_mask(x, p)


def _locked(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Variational ("locked") dropout (Gal and Ghahramani 2016; AWD-LSTM's LockedDropout) on
    x [batch, time, features]: one mask per stream [batch, 1, features], the same at every
    time step, kept entries scaled by 1/(1-p) (in float32, whatever x's dtype). x itself
    when not training or p is 0 (then no random number is drawn)."""
    if not training or p == 0:
        return x
    mask = torch.empty(x.shape[0], 1, x.shape[2], device=x.device).bernoulli_(1 - p)
    return x * mask.div_(1 - p)


def _keep_mask(like: torch.Tensor, p: float) -> torch.Tensor:
    """A mask shaped and typed like ``like``: each entry 0 with probability p (to 1/32768) or
    else 1/(1-p), independently, from torch's global generator (so --resume repeats it).

    Two entries per 32-bit draw: torch's int32 ``random_()`` gives 31 random bits; masked to
    two 15-bit halves, each read as an int16 uniform over [0, 32767]. F.dropout draws one
    Bernoulli number per entry: 3-4x the cost on a CPU, where a 3072x768 mask would take a
    noticeable part of a training step."""
    cut = min(round(p * 32768), 32767)
    size = like.numel()
    draws = torch.empty((size + 1) // 2, dtype=torch.int32, device=like.device).random_()
    keep = draws.bitwise_and_(0x7FFF7FFF).view(torch.int16)[:size] >= cut
    return keep.view(like.shape).to(like.dtype).mul_(32768 / (32768 - cut))


def _gru_cell(from_input: torch.Tensor, from_state: torch.Tensor, h: torch.Tensor
              ) -> torch.Tensor:
    """nn.GRU's update: r = sigmoid(..), z = sigmoid(..), n = tanh(W_in x + b_in + r * (W_hn h +
    b_hn)), h' = (1 - z) * n + z * h. Inputs [batch, 3*hidden] (r, z, n) and h [batch, hidden]."""
    r_x, z_x, n_x = from_input.chunk(3, 1)
    r_h, z_h, n_h = from_state.chunk(3, 1)
    reset, update = torch.sigmoid(r_x + r_h), torch.sigmoid(z_x + z_h)
    candidate = torch.tanh(n_x + reset * n_h)
    return (1 - update) * candidate + update * h


def _lstm_cell(gates: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """nn.LSTM's update from the summed pre-activations [batch, 4*hidden] (i, f, g, o):
    c' = sigmoid(f) * c + sigmoid(i) * tanh(g), h' = sigmoid(o) * tanh(c'). Returns (h', c')."""
    i, f, g, o = gates.chunk(4, 1)
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    return torch.sigmoid(o) * torch.tanh(c), c


def unigram_head_bias(model: CharRNN, ids: np.ndarray, block: int = 1 << 24) -> None:
    """Set ``model.head.bias`` [vocab] to the log of the add-one smoothed frequencies of the
    token ids ``ids`` (any int array, a memmap too: counted ``block`` ids at a time), so that
    an untrained model, whose output weights are small, starts near the text's unigram
    distribution rather than the uniform one (loss near the unigram entropy, not ln(vocab)).
    Raises ValueError for an id outside [0, vocab)."""
    vocab = model.config.vocab_size
    counts = np.ones(vocab, dtype=np.float64)
    for start in range(0, len(ids), block):
        counts += np.bincount(np.asarray(ids[start:start + block]), minlength=vocab)[:vocab]
    if len(ids) + vocab != int(counts.sum()):     # ids >= vocab fell outside the [:vocab] cut
        raise ValueError(f"ids outside [0, {vocab})")
    with torch.no_grad():
        model.head.bias.copy_(torch.from_numpy(np.log(counts / counts.sum())))


# The hidden-state helpers: every tuple-vs-tensor decision lives here.

def map_hidden(hidden: Optional[Hidden], fn: Callable[[torch.Tensor], torch.Tensor]
               ) -> Optional[Hidden]:
    """``fn`` applied to every tensor of the state (None stays None)."""
    if hidden is None:
        return None
    if isinstance(hidden, tuple):
        return tuple(fn(h) for h in hidden)
    return fn(hidden)


def detach(hidden: Optional[Hidden]) -> Optional[Hidden]:
    """Cut the graph at a chunk edge (truncated BPTT) while keeping the state's values."""
    return map_hidden(hidden, lambda h: h.detach())


def hidden_parts(hidden: Hidden) -> list[torch.Tensor]:
    """The state as a list of tensors [layers, batch, hidden]: [h] or [h, c]."""
    return list(hidden) if isinstance(hidden, tuple) else [hidden]


def hidden_from_parts(parts: Sequence[torch.Tensor]) -> Hidden:
    """The inverse of ``hidden_parts``."""
    return tuple(parts) if len(parts) == 2 else parts[0]


def hidden_batch(hidden: Hidden) -> int:
    """The number of streams (rows) the state holds."""
    return hidden_parts(hidden)[0].shape[1]
