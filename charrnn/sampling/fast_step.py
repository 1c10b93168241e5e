"""The fast one-step network that sampling runs: an optimisation of ``CharRNN.step``.

``FastStep(model, batch)(ids, hidden)`` returns what ``model.step(ids, hidden)`` returns, to 1e-5
in fp32 (tests/sampling/test_fast_step.py checks it against ``CharRNN.step`` and ``CharRNN.forward`` for
every cell), at several times the speed of calling nn.LSTM once per character. Its weights are
prepared once, from the model's own:

* the first layer's input projection of every character is a lookup table (embedding @ W_ih^T +
  biases), so layer 0 is one row gather plus one product with W_hh;
* the higher layers multiply [x, h] by [W_ih, W_hh] in one product (GRU keeps the two apart,
  since its reset gate scales the recurrent part alone);
* LSTM gate rows are reordered so that one sigmoid computes all four gates (tanh(g) is
  2 sigmoid(2g) - 1); on CPU that sigmoid, and layer 0's table row, run inside the product as
  oneDNN post-ops (fewer operations per step);
* on CPU every product uses oneDNN's prepacked weights; elsewhere (CUDA, or a torch without
  oneDNN) a plain F.linear;
* ``precision="bf16"`` keeps the recurrent weights in bf16 (half the memory read per step, twice
  the matmul rate on CPUs with native bf16), the cell state and the arithmetic between products
  in fp32 (the higher layers' gates leave the product rounded to bf16); logits move by about
  1e-3, the next-character total variation by about 1e-4 (bench/TRIED.md).

For mingru and minlstm (charrnn/model/mincell.py) the embedding's projection to the blocks'
width is the lookup table, each block runs its products through the same prepared ``_Linear``,
and the recurrence is the paper's h = a * h + b with (a, b) from ``mincell.coefficients``; the
norms and GELU are torch's own.

In fp32 on CPU each row's arithmetic does not depend on the batch size: row i of a batch of 8
equals, bit for bit, the same row stepped alone (the sampler's seed rule relies on it).
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from charrnn.errors import CharRNNError
from charrnn.model import mincell
from charrnn.model.network import CharRNN, Hidden, hidden_from_parts, hidden_parts

PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16}
# Per-layer state: ([h_0, .., h_last],) or, for lstm, ([h_0, ..], [c_0, ..]); each [batch, hidden].
Layers = tuple[list[torch.Tensor], ...]


class _Linear:
    """``x @ weight.T + bias`` for the step loop, with the weight prepared once.

    On CPU the weight is reordered into oneDNN's blocked layout (what torch.compile does for
    linear layers): a one-row product then runs about three times faster than addmm, which goes
    to MKL's matrix-vector code. Where that is not available (CUDA, or a torch build without
    oneDNN), it is a plain F.linear."""

    def __init__(self, weight: torch.Tensor, bias: Optional[torch.Tensor], batch: int,
                 dtype: torch.dtype):
        self.dtype, self.low = dtype, dtype != torch.float32
        weight = weight.detach().to(dtype).contiguous()
        self.bias = None if bias is None else bias.detach().to(dtype).contiguous()
        # A layout packed for one row takes another kernel, whose rounding differs from the one
        # used for two rows or more; packing for >= 2 rows keeps every row's result independent
        # of the batch size, at the same speed for one row (measured on oneDNN 3.x).
        self.packed = (_onednn_pack(weight, max(batch, 2)) if weight.device.type == "cpu"
                       else None)
        self.weight = weight if self.packed is None else None
        # What one product reads and computes per row (for the benchmark's bounds).
        self.nbytes = weight.numel() * weight.element_size() + \
            (0 if bias is None else self.bias.numel() * self.bias.element_size())
        self.flops = 2 * weight.numel()

    def __call__(self, x: torch.Tensor, sigmoid: bool = False,
                 add: Optional[torch.Tensor] = None) -> torch.Tensor:
        """x [batch, in] -> float32 [batch, out]; ``sigmoid``: sigmoid(x @ weight.T + bias),
        ``add`` (float32 [batch, out]): x @ weight.T + add (fp32 only; with bias None), each
        fused into oneDNN's kernel as a post-op where it runs (one operation fewer per step)."""
        if self.low:
            x = x.to(self.dtype)
        if self.packed is None:
            out = F.linear(x, self.weight, self.bias)
            out = out.float() if self.low else out
            out = out.add_(add) if add is not None else out
            return out.sigmoid_() if sigmoid else out
        if add is not None and not self.low:
            return torch.ops.mkldnn._linear_pointwise.binary(x, add, self.packed, None, "add")
        out = torch.ops.mkldnn._linear_pointwise(x, self.packed, self.bias,
                                                 "sigmoid" if sigmoid else "none", [], "")
        out = out.float() if self.low else out   # the cell arithmetic stays in fp32
        return out.add_(add) if add is not None else out


def _onednn_pack(weight: torch.Tensor, batch: int) -> Optional[torch.Tensor]:
    """``weight`` reordered for oneDNN's linear kernel, or None where oneDNN cannot run it."""
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


class FastStep:
    """One time step of a CharRNN, as ``CharRNN.step`` computes it, only faster.

    ``FastStep(model, batch=1, precision="fp32")`` prepares the weights of ``model`` (a copy:
    later changes to the model are not seen) for ``batch`` rows on the model's device; it runs
    any number of rows, ``batch`` only picks the fastest layout. ``precision`` is "fp32" or
    "bf16" (see the module docstring); anything else raises CharRNNError. Dropout is never
    applied. Tested against ``CharRNN.step`` and ``CharRNN.forward`` (tests/sampling/test_fast_step.py).
    """

    def __init__(self, model: CharRNN, batch: int = 1, precision: str = "fp32"):
        if precision not in PRECISIONS:
            raise CharRNNError(f"precision must be one of {', '.join(PRECISIONS)}, "
                               f"got {precision!r}")
        config, dtype = model.config, PRECISIONS[precision]
        self.cell, self.size, self.layers = config.cell, config.hidden_size, config.layers
        self.blocks: list[_MinBlock] = []
        if mincell.is_min(config):
            self._prepare_min(model, batch, dtype)
            return
        with torch.no_grad():
            weights = [self._ordered(model.layer_weights(i)) for i in range(config.layers)]
            w_ih, _, b_ih, b_hh = weights[0]
            table = model.embed.weight @ w_ih.T + b_ih
            self.input_table = (table if self.cell == "gru" else table + b_hh).contiguous()
            self.recurrent, self.joint, self.inputs = [], [], []
            for i, (w_ih, w_hh, b_ih, b_hh) in enumerate(weights):
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
        self.onednn = self.head.packed is not None   # True: products use prepacked weights

    def _prepare_min(self, model: CharRNN, batch: int, dtype: torch.dtype) -> None:
        """The min-cell version of the preparation: the table, each block's products, the
        final norm and the head (fp32)."""
        stack = model.rnn
        self.recurrent, self.joint, self.inputs = [], [], []
        with torch.no_grad():
            self.input_table = F.linear(model.embed.weight, stack.proj.weight,
                                        stack.proj.bias).contiguous()
            self.blocks = [_MinBlock(block, batch, dtype) for block in stack.blocks]
            self.norm = _norm(stack.norm)
            self.head = _Linear(model.head.weight, model.head.bias, batch, torch.float32)
        self.onednn = self.head.packed is not None

    def products(self) -> list[_Linear]:
        """Every weight product of one step (in no particular order)."""
        blocks = [p for block in self.blocks for p in block.products]
        return [p for p in (*self.recurrent, *self.joint, *self.inputs, *blocks, self.head) if p]

    def weight_bytes(self) -> int:
        """Bytes of weights one step reads at batch 1: every product's weight and bias in its
        precision, plus one row of the input table (fp32). What bounds batch-1 speed."""
        row = self.input_table.shape[1] * self.input_table.element_size()
        return sum(p.nbytes for p in self.products()) + row

    def flops_per_row(self) -> int:
        """Multiply-adds x 2 of one step's products per batch row (the gate arithmetic and the
        table lookup apart). What bounds large-batch speed, against the matmul peak."""
        return sum(p.flops for p in self.products())

    def _ordered(self, weights: tuple[torch.Tensor, ...]) -> list[torch.Tensor]:
        if self.cell != "lstm":
            return [w.detach() for w in weights]
        return [_lstm_rows(w.detach(), self.size) for w in weights]

    def __call__(self, ids: torch.Tensor, hidden: Hidden) -> tuple[torch.Tensor, Hidden]:
        """``CharRNN.step``'s contract: ids [batch] int64 and hidden (float32 [layers, batch,
        hidden], or (h, c) for lstm) -> logits [batch, vocab] float32 and the next hidden.
        For speed shapes are not checked (a wrong one raises RuntimeError, or broadcasts);
        ``CharRNN.step`` checks them."""
        logits, layers = self.step_layers(ids, to_layers(hidden))
        return logits, from_layers(layers)

    def step_layers(self, ids: torch.Tensor, layers: Layers) -> tuple[torch.Tensor, Layers]:
        """The same step with the state kept as per-layer lists (``to_layers``), which saves
        stacking and unstacking in the sampling loop. ids [batch] int64, each state tensor
        float32 [batch, hidden] -> logits [batch, vocab] float32 and the next per-layer state.
        The inputs are not modified."""
        if self.blocks:
            return self._min_step(ids, layers)
        x, h_new, c_new = None, [], []
        for i, h in enumerate(layers[0]):
            if self.cell == "gru":
                x = self._gru(i, ids, x, h)
            elif self.cell == "lstm":
                x, c = self._lstm(self._gates(i, ids, x, h), layers[1][i])
                c_new.append(c)
            elif i == 0:
                x = torch.tanh(self.recurrent[0](h, add=self.input_table.index_select(0, ids)))
            else:
                x = torch.tanh(self.joint[i - 1](torch.cat([x, h], 1)))
            h_new.append(x)
        logits = self.head(x)
        return logits, ((h_new, c_new) if self.cell == "lstm" else (h_new,))

    def _min_step(self, ids: torch.Tensor, layers: Layers) -> tuple[torch.Tensor, Layers]:
        x, h_new = self.input_table.index_select(0, ids), []
        for block, h in zip(self.blocks, layers[0]):
            x, h = block(x, h)
            h_new.append(h)
        return self.head(F.layer_norm(x, *self.norm)), (h_new,)

    def _gates(self, i: int, ids: torch.Tensor, x: Optional[torch.Tensor], h: torch.Tensor
               ) -> torch.Tensor:
        """LSTM layer i's four gates after the one sigmoid: [batch, 4 hidden], rows (i, f, o,
        (tanh(g) + 1) / 2). Higher layers run the sigmoid inside the product (a oneDNN
        post-op); layer 0 adds its input table row inside it (fp32) and sigmoids in place."""
        if i == 0:
            return self.recurrent[0](h, add=self.input_table.index_select(0, ids)).sigmoid_()
        return self.joint[i - 1](torch.cat([x, h], 1), sigmoid=True)

    def _lstm(self, gates: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # gates (i, f, o, g_half) from _gates, with g_half = (tanh(g) + 1) / 2.
        i, f, o, g_half = gates.chunk(4, 1)     # (chunk: a C++ call; split goes through Python)
        c = torch.addcmul(torch.addcmul(-i, f, c), i, g_half, value=2)   # f c + i tanh(g)
        # torch.tanh here: as fast as sigmoid in torch 2.13, so 2 sigmoid(2c) - 1 (three more
        # ops) no longer pays.
        return o * torch.tanh(c), c

    def _gru(self, i: int, ids: torch.Tensor, x: Optional[torch.Tensor], h: torch.Tensor):
        projected = self.input_table.index_select(0, ids) if i == 0 else self.inputs[i](x)
        r_i, z_i, n_i = projected.chunk(3, 1)
        r_h, z_h, n_h = self.recurrent[i](h).chunk(3, 1)
        reset, update = torch.sigmoid(r_i + r_h), torch.sigmoid(z_i + z_h)
        candidate = torch.tanh(n_i + reset * n_h)
        return candidate + update * (h - candidate)


def _norm(norm: torch.nn.LayerNorm) -> tuple:
    """F.layer_norm's arguments after the input, from a LayerNorm: (shape, weight, bias, eps)."""
    return (norm.normalized_shape, norm.weight.detach().clone(), norm.bias.detach().clone(),
            norm.eps)


class _MinBlock:
    """One mincell.MinBlock prepared for the step loop: its norms, and its four products as
    ``_Linear`` (in the step's precision). Feng et al. 2024; see mincell.py."""

    def __init__(self, block: mincell.MinBlock, batch: int, dtype: torch.dtype):
        self.cell, self.mlp = block.cell, block.mlp
        self.norm_cell = _norm(block.norm_cell)
        self.cell_in = _Linear(block.cell_in.weight, block.cell_in.bias, batch, dtype)
        self.cell_out = _Linear(block.cell_out.weight, block.cell_out.bias, batch, dtype)
        self.products = [self.cell_in, self.cell_out]
        if self.mlp:
            self.norm_mlp = _norm(block.norm_mlp)
            self.mlp_in = _Linear(block.mlp_in.weight, block.mlp_in.bias, batch, dtype)
            self.mlp_out = _Linear(block.mlp_out.weight, block.mlp_out.bias, batch, dtype)
            self.products += [self.mlp_in, self.mlp_out]

    def __call__(self, x: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x [batch, width], h [batch, units] float32 -> (x after the block, next h)."""
        a, b = mincell.coefficients(self.cell, self.cell_in(F.layer_norm(x, *self.norm_cell)))
        h = torch.addcmul(b, a, h)
        x = x + self.cell_out(h)
        if self.mlp:
            x = x + self.mlp_out(F.gelu(self.mlp_in(F.layer_norm(x, *self.norm_mlp))))
        return x, h


def to_layers(hidden: Hidden) -> Layers:
    """nn.LSTM/GRU/RNN's state ([layers, batch, hidden], or (h, c)) -> per-layer lists of
    [batch, hidden] views (no copy)."""
    return tuple(list(part.unbind(0)) for part in hidden_parts(hidden))


def from_layers(layers: Layers) -> Hidden:
    """The inverse of ``to_layers`` (stacks: a copy)."""
    return hidden_from_parts([torch.stack(part) for part in layers])
