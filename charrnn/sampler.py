"""Stage 8: sampling. The prime text goes through the fused network once; then each sampled
character is fed back in, one step at a time, with the carried hidden state.

The one-step network (``Stepper``) is built from the trained layers' own weights: the first
layer's input projection is folded into a lookup table (embedding @ W_ih + biases), so a step is
one row gather plus one matmul per recurrent weight and the output layer. It gives the same
logits as ``CharRNN.forward`` (tests/test_sampler.py) at several times the speed of calling
nn.LSTM once per character.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch

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
        if self.stop == "":
            raise CharRNNError("stop must not be empty")
        return self


class Stepper(torch.nn.Module):
    """One time step of a CharRNN, from its own weights: (ids [batch], hidden) -> logits."""

    def __init__(self, model: CharRNN):
        super().__init__()
        config, rnn = model.config, model.rnn
        self.cell, self.layers = config.cell, config.layers
        with torch.no_grad():
            # Layer 0's input projection of every character, precomputed: embed @ W_ih0^T + b.
            self.input_table = (model.embed.weight @ rnn.weight_ih_l0.T + rnn.bias_ih_l0
                                + (0 if config.cell == "gru" else rnn.bias_hh_l0)).contiguous()
            # Higher layers: [x, h] @ [W_ih; W_hh]^T in one matmul (not for GRU, whose reset
            # gate multiplies the recurrent part alone).
            self.weights, self.biases, self.w_ih, self.w_hh, self.b_hh = [], [], [], [], []
            for i in range(config.layers):
                w_ih, w_hh = getattr(rnn, f"weight_ih_l{i}"), getattr(rnn, f"weight_hh_l{i}")
                b_ih, b_hh = getattr(rnn, f"bias_ih_l{i}"), getattr(rnn, f"bias_hh_l{i}")
                # Kept [out, in] and used transposed: MKL's matrix-vector path is faster so.
                self.w_hh.append(w_hh.detach().clone().t())
                self.b_hh.append(b_hh.clone())
                self.w_ih.append(w_ih.detach().clone().t() if config.cell == "gru" else None)
                self.weights.append(torch.cat([w_ih, w_hh], 1).t() if i > 0 else None)
                self.biases.append(b_ih + b_hh if config.cell != "gru" else b_ih.clone())
            self.w_out = model.head.weight.detach().clone().t()
            self.b_out = model.head.bias.clone()

    def forward(self, ids: torch.Tensor, hidden: Hidden) -> tuple[torch.Tensor, Hidden]:
        """One step in nn.LSTM/GRU/RNN's hidden-state layout ([layers, batch, hidden])."""
        if self.cell == "lstm":
            logits, (h, c) = self.step(ids, (list(hidden[0].unbind(0)), list(hidden[1].unbind(0))))
            return logits, (torch.stack(h), torch.stack(c))
        logits, (h,) = self.step(ids, (list(hidden.unbind(0)),))
        return logits, torch.stack(h)

    def step(self, ids: torch.Tensor, state: tuple[list[torch.Tensor], ...]):
        """One step with the state kept as per-layer lists (no stacking in the sampling loop)."""
        h_all, x = state[0], None
        h_new, c_new = [], []
        for i in range(self.layers):
            h = h_all[i]
            if self.cell == "gru":
                projected = self.input_table[ids] if i == 0 else \
                    torch.addmm(self.biases[i], x, self.w_ih[i])
                recurrent = torch.addmm(self.b_hh[i], h, self.w_hh[i])
                r_i, z_i, n_i = projected.chunk(3, 1)
                r_h, z_h, n_h = recurrent.chunk(3, 1)
                reset, update = torch.sigmoid(r_i + r_h), torch.sigmoid(z_i + z_h)
                candidate = torch.tanh(n_i + reset * n_h)
                x = candidate + update * (h - candidate)
            else:
                if i == 0:
                    pre = torch.addmm(self.input_table[ids], h, self.w_hh[0])
                else:
                    pre = torch.addmm(self.biases[i], torch.cat([x, h], 1), self.weights[i])
                if self.cell == "lstm":
                    size = h.shape[1]
                    gates = torch.sigmoid(pre)   # i, f, o; the g quarter is recomputed as tanh
                    cell_in = torch.tanh(pre[:, 2 * size:3 * size])
                    c = torch.addcmul(gates[:, size:2 * size] * state[1][i], gates[:, :size], cell_in)
                    x = gates[:, 3 * size:] * torch.tanh(c)
                    c_new.append(c)
                else:
                    x = torch.tanh(pre)
            h_new.append(x)
        logits = torch.addmm(self.b_out, x, self.w_out)
        return logits, ((h_new, c_new) if self.cell == "lstm" else (h_new,))


def pick(logits: torch.Tensor, options: SampleOptions, generator: torch.Generator) -> torch.Tensor:
    """Next ids [batch] from logits [batch, vocab] with temperature, top-k and top-p."""
    logits = logits.float().clone()
    logits[:, UNK_ID] = -float("inf")  # the unknown token is never a useful output
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
    probs = torch.softmax(logits, dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


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
    stepper = Stepper(model)
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
