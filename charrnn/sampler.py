"""Stage 8: sampling. The prime text goes through the fused network once; then each sampled
character is fed back in, one step at a time, with the carried hidden state.

The one-step network (``Stepper``) is built from the trained layers' own weights, prepared once:
the first layer's input projection becomes a lookup table, the higher layers multiply [x, h] in
one product, and on CPU every product uses oneDNN's prepacked weights. It gives the same logits
as ``CharRNN.forward`` to 1e-5 in fp32 (tests/test_sampler.py) at several times the speed of
calling nn.LSTM once per character; bf16 weights are faster again (bench/RESULTS.md).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch
import torch.nn.functional as F

from .errors import CharRNNError
from .model import CharRNN, Hidden
from .tokenizer import UNK_ID, CharTokenizer


@dataclass
class SampleOptions:
    length: int = 500
    temperature: float = 1.0
    top_k: Optional[int] = None
    top_p: Optional[float] = None
    greedy: bool = False
    seed: Optional[int] = None
    num_samples: int = 1
    stop: Optional[str] = None
    precision: str = "fp32"    # of the step's weights: fp32, or bf16 (faster; logits off by <~0.03)

    def validate(self) -> "SampleOptions":
        if not isinstance(self.length, int) or self.length < 0:
            raise CharRNNError(f"length must be >= 0, got {self.length!r}")
        if not self.temperature > 0:
            raise CharRNNError(f"temperature must be > 0, got {self.temperature}")
        if self.top_k is not None and self.top_k < 1:
            raise CharRNNError(f"top_k must be >= 1, got {self.top_k}")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise CharRNNError(f"top_p must be in (0, 1], got {self.top_p}")
        if not isinstance(self.num_samples, int) or self.num_samples < 1:
            raise CharRNNError(f"num_samples must be >= 1, got {self.num_samples!r}")
        if self.precision not in ("fp32", "bf16"):
            raise CharRNNError(f"precision must be fp32 or bf16, got {self.precision!r}")
        if self.stop == "":
            raise CharRNNError("stop must not be empty")
        return self


class _Linear:
    """``x @ weight.T + bias`` for the step loop, with the weight prepared once.

    On CPU the weight is reordered into oneDNN's blocked layout for the batch at hand (what
    torch.compile does for linear layers): a one-row product then runs about three times faster
    than addmm, which goes to MKL's matrix-vector code. Where that is not available (CUDA, or a
    torch build without oneDNN), it is a plain F.linear."""

    def __init__(self, weight: torch.Tensor, bias: Optional[torch.Tensor], batch: int,
                 dtype: torch.dtype):
        self.dtype, self.low = dtype, dtype != torch.float32
        weight = weight.detach().to(dtype).contiguous()
        self.bias = None if bias is None else bias.detach().to(dtype).contiguous()
        self.packed = _onednn_pack(weight, batch) if weight.device.type == "cpu" else None
        self.weight = weight if self.packed is None else None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.low:
            x = x.to(self.dtype)
        if self.packed is not None:
            out = torch.ops.mkldnn._linear_pointwise(x, self.packed, self.bias, "none", [], "")
        else:
            out = F.linear(x, self.weight, self.bias)
        return out.float() if self.low else out   # the cell arithmetic stays in fp32


def _onednn_pack(weight: torch.Tensor, batch: int) -> Optional[torch.Tensor]:
    if not torch.backends.mkldnn.is_available():
        return None
    try:
        packed = torch.ops.mkldnn._reorder_linear_weight(weight, batch)
        probe = torch.ones(1, weight.shape[1], dtype=weight.dtype)
        torch.ops.mkldnn._linear_pointwise(probe, packed, None, "none", [], "")
        return packed
    except (AttributeError, RuntimeError):
        return None


def _lstm_rows(weight: torch.Tensor, size: int) -> torch.Tensor:
    """LSTM gate rows from torch's order (i, f, g, o) to (i, f, o, 2g): then one sigmoid covers
    all four gates, since tanh(x) = 2 sigmoid(2x) - 1 (doubling is exact in floating point)."""
    i, f, g, o = weight.split(size, 0)
    return torch.cat([i, f, o, 2 * g], 0)


class Stepper:
    """One time step of a CharRNN, from its own weights: (ids [batch], hidden) -> logits.

    The first layer's input projection of every character is precomputed into a table
    (embedding @ W_ih^T + biases), so layer 0 is one row gather plus one product with W_hh; the
    higher layers multiply [x, h] by [W_ih, W_hh] in one product (GRU keeps them apart, since
    its reset gate scales the recurrent part alone). ``precision="bf16"`` keeps the weights in
    bf16 (half the memory read per step; twice the matmul rate on CPUs with native bf16) with
    the cell state and the arithmetic between products in fp32."""

    def __init__(self, model: CharRNN, batch: int = 1, precision: str = "fp32"):
        config, rnn = model.config, model.rnn
        self.cell, self.size = config.cell, config.hidden_size
        dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[precision]
        order = (lambda w: _lstm_rows(w, self.size)) if self.cell == "lstm" else (lambda w: w)
        params = {name: order(p.detach()) for name, p in rnn.named_parameters()}
        with torch.no_grad():
            table = model.embed.weight @ params["weight_ih_l0"].T + params["bias_ih_l0"]
            if self.cell != "gru":
                table = table + params["bias_hh_l0"]
            self.input_table = table.contiguous()
            self.recurrent, self.joint, self.inputs = [], [], []
            for i in range(config.layers):
                w_ih, w_hh = params[f"weight_ih_l{i}"], params[f"weight_hh_l{i}"]
                b_ih, b_hh = params[f"bias_ih_l{i}"], params[f"bias_hh_l{i}"]
                if self.cell == "gru":
                    self.recurrent.append(_Linear(w_hh, b_hh, batch, dtype))
                    self.inputs.append(_Linear(w_ih, b_ih, batch, dtype) if i else None)
                elif i == 0:
                    self.recurrent.append(_Linear(w_hh, None, batch, dtype))
                else:
                    self.joint.append(_Linear(torch.cat([w_ih, w_hh], 1), b_ih + b_hh, batch,
                                              dtype))
            # The output layer is small; fp32 keeps the logits free of bf16 rounding.
            self.head = _Linear(model.head.weight, model.head.bias, batch, torch.float32)

    def __call__(self, ids: torch.Tensor, hidden: Hidden) -> tuple[torch.Tensor, Hidden]:
        """One step in nn.LSTM/GRU/RNN's hidden-state layout ([layers, batch, hidden])."""
        if self.cell == "lstm":
            logits, (h, c) = self.step(ids, (list(hidden[0].unbind(0)), list(hidden[1].unbind(0))))
            return logits, (torch.stack(h), torch.stack(c))
        logits, (h,) = self.step(ids, (list(hidden.unbind(0)),))
        return logits, torch.stack(h)

    def step(self, ids: torch.Tensor, state: tuple[list[torch.Tensor], ...]):
        """One step with the state kept as per-layer lists (no stacking in the sampling loop)."""
        x, h_new, c_new = None, [], []
        for i, h in enumerate(state[0]):
            if self.cell == "gru":
                x = self._gru(i, ids, x, h)
            else:
                if i == 0:
                    pre = self.recurrent[0](h).add_(self.input_table.index_select(0, ids))
                else:
                    pre = self.joint[i - 1](torch.cat([x, h], 1))
                if self.cell == "lstm":
                    x, c = self._lstm(pre, state[1][i])
                    c_new.append(c)
                else:
                    x = torch.tanh(pre)
            h_new.append(x)
        logits = self.head(x)
        return logits, ((h_new, c_new) if self.cell == "lstm" else (h_new,))

    def _lstm(self, pre: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # tanh(x) as 2 sigmoid(2x) - 1: torch's CPU tanh is several times slower than sigmoid.
        size = self.size
        gates = torch.sigmoid(pre)                 # input, forget, output, (tanh(g) + 1) / 2
        i, f, o, g_half = (gates[:, :size], gates[:, size:2 * size], gates[:, 2 * size:3 * size],
                           gates[:, 3 * size:])
        c = torch.addcmul(torch.addcmul(-i, f, c), i, g_half, value=2)   # f c + i tanh(g)
        return torch.addcmul(-o, o, torch.sigmoid(2 * c), value=2), c     # o tanh(c)

    def _gru(self, i: int, ids: torch.Tensor, x: Optional[torch.Tensor], h: torch.Tensor):
        projected = self.input_table.index_select(0, ids) if i == 0 else self.inputs[i](x)
        r_i, z_i, n_i = projected.chunk(3, 1)
        r_h, z_h, n_h = self.recurrent[i](h).chunk(3, 1)
        reset, update = torch.sigmoid(r_i + r_h), torch.sigmoid(z_i + z_h)
        candidate = torch.tanh(n_i + reset * n_h)
        return candidate + update * (h - candidate)


def pick(logits: torch.Tensor, options: SampleOptions, generator: torch.Generator) -> torch.Tensor:
    """Next ids [batch] from logits [batch, vocab] with temperature, top-k and top-p."""
    logits = logits.float().clone()
    logits[:, UNK_ID].fill_(-float("inf"))  # the unknown token is never a useful output
    if options.greedy:
        return logits.argmax(dim=-1)
    if options.temperature != 1.0:
        logits.div_(options.temperature)
    if options.top_k is not None and options.top_k < logits.shape[-1]:
        kth = torch.topk(logits, options.top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, -float("inf"))
    if options.top_p is not None and options.top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
        cumulative = torch.softmax(sorted_logits, dim=-1).cumsum(dim=-1)
        drop = cumulative - torch.softmax(sorted_logits, dim=-1) >= options.top_p  # keep the first
        sorted_logits = sorted_logits.masked_fill(drop, -float("inf"))
        logits = torch.full_like(logits, -float("inf")).scatter(-1, order, sorted_logits)
    # Inverse-CDF draw: one uniform number per sample (torch.multinomial spends more on checking
    # its input and on one random number per vocabulary entry than on the draw). right=True
    # never lands on a zero-probability id, whose cumulative sum does not rise.
    cumulative = torch.softmax(logits, dim=-1).cumsum_(dim=-1)
    uniform = torch.rand(logits.shape[0], 1, generator=generator, device=logits.device)
    ids = torch.searchsorted(cumulative, uniform * cumulative[:, -1:], right=True)
    return ids.squeeze(-1).clamp_(max=logits.shape[-1] - 1)


@torch.inference_mode()
def generate(model: CharRNN, tokenizer: CharTokenizer, prime: str, options: SampleOptions,
             on_text: Optional[Callable[[int, str], None]] = None) -> list[str]:
    """``options.num_samples`` continuations of ``prime`` (each returned with the prime in front),
    generated together as one batch. ``on_text(sample, text)`` receives characters as they come."""
    options.validate()
    unknown = tokenizer.unknown_chars(prime)
    if unknown:
        shown = ", ".join(repr(c) for c in unknown[:10])
        raise CharRNNError(f"the prime holds characters the model never saw: {shown}")
    device = next(model.parameters()).device
    generator = torch.Generator(device=device)
    generator.manual_seed(options.seed if options.seed is not None else
                          int(torch.randint(0, 2**62, (1,)).item()))
    batch = options.num_samples
    start = prime or ("\n" if "\n" in tokenizer.chars else tokenizer.chars[0])
    ids = torch.as_tensor(tokenizer.encode(start).astype("int64"), device=device)
    model.eval()
    # The prime, all but its last character, goes through the fused network once.
    hidden = None
    if len(ids) > 1:
        _, hidden = model(ids[:-1].unsqueeze(0).expand(batch, -1), None)
    stepper = Stepper(model, batch, options.precision)
    hidden = hidden if hidden is not None else _zeros(model, batch, device)
    state = tuple(list(h.unbind(0)) for h in (hidden if isinstance(hidden, tuple) else (hidden,)))
    current = ids[-1:].expand(batch).contiguous()
    texts = [[] for _ in range(batch)]
    done = [False] * batch
    for _ in range(options.length):
        logits, state = stepper.step(current, state)
        current = pick(logits, options, generator)
        for b, token in enumerate(current.tolist()):
            if done[b]:
                continue
            char = tokenizer.id_to_char[token]
            texts[b].append(char)
            if on_text:
                on_text(b, char)
            if options.stop and _ends_with(texts[b], options.stop):
                done[b] = True
        if all(done):
            break
    return [prime + "".join(t) for t in texts]


def _ends_with(chars: list[str], stop: str) -> bool:
    return "".join(chars[-len(stop):]).endswith(stop)


def _zeros(model: CharRNN, batch: int, device) -> Hidden:
    config = model.config
    zeros = torch.zeros(config.layers, batch, config.hidden_size, device=device)
    return (zeros, zeros.clone()) if config.cell == "lstm" else zeros
