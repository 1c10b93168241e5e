"""The minimal recurrent cells minGRU and minLSTM, and the parallel scan that trains them.

Feng et al. 2024, "Were RNNs All We Needed?" (arXiv 2410.01201), take the previous state out of
the gates, so that each cell is a linear recurrence h_t = a_t * h_{t-1} + b_t per unit:

    minGRU:  z = sigmoid(k_z), h~ = g(k_h), a = 1 - z, b = z * h~
    minLSTM: f = sigmoid(k_f), i = sigmoid(k_i), h~ = g(k_h),
             a = f / (f + i), b = i / (f + i) * h~

with k = Linear(x_t) (the input alone) and g(x) = x + 0.5 for x >= 0, sigmoid(x) below (so that
h~ > 0 and its log exists). Training computes a whole chunk at once with Heinsen's parallel scan
in log space (Heinsen 2023, "Efficient Parallelization of a Ubiquitous Sequential
Computation"): log h_t = a*_t + logcumsumexp(log b - a*)_t with a* = cumsum(log a), the
cumulative log-sum-exp itself a parallel (Hillis-Steele) prefix scan of logaddexp. The log
gates come straight from the pre-activations, never as the log of a rounded gate:

    minGRU:  log a = -softplus(k_z), log b = -softplus(-k_z) + log g(k_h)
    minLSTM: d = softplus(-k_f) - softplus(-k_i), log a = -softplus(d), log b = -softplus(-d)
             + log g(k_h)

The state carried in from the previous chunk is never logged: it enters as the separate, exact
term exp(a*_t) * h_0 (so a zero state is no term at all, never log 0 = -inf, whose
logcumsumexp backward is NaN; a negative or zero state is carried as it is). The scan runs in
float32 whatever the autocast (bf16 would round a* to 3 significant digits). In blocks of
SCAN_BLOCK steps, carrying h between blocks the same way, so that |a*| stays bounded and with it
the float32 rounding of a* + logcumsumexp(...) (about |a*| * 6e-8 relative): the blocks run one
after the other, the steps of a block at once; the work stays linear in the chunk length. Gates
saturated far out (log a = -1e4 per step) lose precision the same way (4e-3 relative there);
they stay finite.

The network (``MinStack``) is the paper's language model, pre-norm residual blocks:

    x = Linear(embed -> width)(embedding)
    per layer: x = x + Dropout(Linear(units -> width)(cell(LayerNorm(x))))
               x = x + Dropout(MLP(LayerNorm(x)))       (MLP: width -> mlp_ratio*width -> width, GELU)
    LayerNorm(x) -> the output layer

``hidden_size`` is the number of recurrent units per layer (the state, as for every cell), and
the residual width is hidden_size // expansion (the paper's expansion factor). Without the
residual path and the MLP a min cell is an input-gated linear recurrence, too weak alone; the
pre-norm residual keeps the stack trainable at any depth, and LayerNorm (not RMSNorm) exports to
ONNX opset 18 as one operator. The paper's optional causal convolution is not used, so the state
is h alone: [layers, batch, hidden_size], one tensor, as for rnn and gru.
"""
from __future__ import annotations

from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import nn

from charrnn.config import MIN_CELLS, ModelConfig

# Steps per log-space block of the scan. fp32 scan-vs-loop relative error, gate pre-activations
# of standard deviation 2, 197 steps: blocks of 8: 2.0e-6, 16: 2.7e-6, 32: 6.0e-6, 64: 1.1e-5
# (it grows with |a*|, the log of the product of a block's a_t).
SCAN_BLOCK = 16
PARTS = {"mingru": 2, "minlstm": 3}     # gate pre-activations per unit: (z, h) or (f, i, h)
Drop = Callable[[torch.Tensor], torch.Tensor]


def g(x: torch.Tensor) -> torch.Tensor:
    """The paper's positive activation for the candidate state: x + 0.5 for x >= 0, sigmoid(x)
    below (continuous, > 0 everywhere). Any shape and float dtype; same shape and dtype out."""
    return torch.where(x >= 0, x + 0.5, torch.sigmoid(x))


def log_g(x: torch.Tensor) -> torch.Tensor:
    """log g(x), computed without forming g: log(x + 0.5) for x >= 0, -softplus(-x) below.
    Finite for every finite x (both branches are evaluated on clamped inputs, so neither a
    NaN nor an inf reaches the gradient). Same shape and dtype as x."""
    return torch.where(x >= 0, torch.log(F.relu(x) + 0.5), -F.softplus(-x))


def log_coefficients(cell: str, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The recurrence's coefficients in log space, from the gate pre-activations.

    k [..., PARTS[cell] * units] (the cell's input projection, parts in the order (z, h) for
    mingru, (f, i, h) for minlstm) -> (log a, log b), each [..., units], in k's dtype: the
    formulas of the module docstring (Feng et al. 2024, appendix; Heinsen 2023). Raises
    KeyError for a cell other than mingru or minlstm."""
    parts = k.chunk(PARTS[cell], -1)
    if cell == "mingru":
        k_z, k_h = parts
        return -F.softplus(k_z), -F.softplus(-k_z) + log_g(k_h)
    k_f, k_i, k_h = parts
    d = F.softplus(-k_f) - F.softplus(-k_i)
    return -F.softplus(d), -F.softplus(-d) + log_g(k_h)


def coefficients(cell: str, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The same coefficients (a, b) written out in linear space as the paper's step defines
    them: minGRU a = 1 - z, b = z g(k_h); minLSTM a = f / (f + i), b = i / (f + i) g(k_h),
    where f / (f + i) is computed as sigmoid(log f - log i) (equal, and no 0/0 when both
    gates round to 0 in fp32). k as for ``log_coefficients``; returns two [..., units]
    tensors in k's dtype. The reference that ``CharRNN.step`` uses. Raises KeyError for
    another cell."""
    parts = k.chunk(PARTS[cell], -1)
    if cell == "mingru":
        z = torch.sigmoid(parts[0])
        return 1 - z, z * g(parts[1])
    forget = torch.sigmoid(F.logsigmoid(parts[0]) - F.logsigmoid(parts[1]))    # f / (f + i)
    return forget, (1 - forget) * g(parts[2])


def scan(log_a: torch.Tensor, log_b: torch.Tensor, h0: Optional[torch.Tensor] = None,
         block: int = SCAN_BLOCK) -> torch.Tensor:
    """All states of h_t = a_t * h_{t-1} + b_t at once (Heinsen 2023's log-space scan).

    log_a, log_b [batch, time, units] float32 or float64 (finite); h0 [batch, units] (any
    sign, zeros included; None: zeros) is used as it is, never logged. Returns h [batch, time,
    units] in log_a's dtype, h[:, t] the state after step t. Work and memory are linear in
    time; the blocks of ``block`` steps run one after the other, each in parallel over its
    steps. Differentiable in all three inputs (float64 gradcheck: tests/model/test_mincell.py).
    Raises RuntimeError for shapes that do not match."""
    out = []
    # split, not slicing: a slice's backward writes a zero gradient the size of the whole
    # chunk, which would make the blocks' backward quadratic in the chunk length.
    for block_a, block_b in zip(log_a.split(block, 1), log_b.split(block, 1)):
        a_star = block_a.cumsum(1)                                   # log prod_{s<=t} a_s
        h = torch.exp(a_star + logcumsumexp(block_b - a_star))
        if h0 is not None:
            h = h + torch.exp(a_star) * h0[:, None]
        out.append(h)
        h0 = h[:, -1]
    return torch.cat(out, 1) if len(out) > 1 else out[0]


def logcumsumexp(x: torch.Tensor) -> torch.Tensor:
    """log(cumsum(exp(x))) along dim 1, as torch.logcumsumexp(x, 1), by a Hillis-Steele
    prefix scan of torch.logaddexp (ceil(log2 time) vectorised passes). x [batch, time, ...]
    float, finite -> same shape and dtype. On 2 CPU cores (torch 2.13) forward and backward
    take about a quarter of torch.logcumsumexp's time, whose CPU kernel is a scalar loop;
    they agree to about 3e-6 absolute in fp32 (docs/performance.md)."""
    step = 1
    while step < x.shape[1]:
        x = torch.cat([x[:, :step], torch.logaddexp(x[:, step:], x[:, :-step])], 1)
        step *= 2
    return x


def loop(a: torch.Tensor, b: torch.Tensor, h0: Optional[torch.Tensor] = None) -> torch.Tensor:
    """The plain per-step loop the scan is tested against: a, b [batch, time, units] (linear
    space), h0 [batch, units] or None (zeros) -> h [batch, time, units], same dtype."""
    h = torch.zeros_like(a[:, 0]) if h0 is None else h0
    states = []
    for t in range(a.shape[1]):
        h = a[:, t] * h + b[:, t]
        states.append(h)
    return torch.stack(states, 1)


def width(config: ModelConfig) -> int:
    """The residual stream's width: hidden_size // expansion (ModelConfig.validate checks that
    it divides), at least 1."""
    return max(1, config.hidden_size // config.expansion)


class MinBlock(nn.Module):
    """One residual block of the paper's language model (module docstring): ``norm_cell``,
    ``cell_in`` [PARTS * units, width], ``cell_out`` [width, units]; ``norm_mlp``, ``mlp_in``
    [mlp_ratio * width, width], ``mlp_out`` [width, mlp_ratio * width] (no MLP when mlp_ratio
    is 0). Feng et al. 2024."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        size, units = width(config), config.hidden_size
        self.cell = config.cell
        self.norm_cell = nn.LayerNorm(size)
        self.cell_in = nn.Linear(size, PARTS[config.cell] * units)
        self.cell_out = nn.Linear(units, size)
        self.mlp = config.mlp_ratio > 0
        if self.mlp:
            self.norm_mlp = nn.LayerNorm(size)
            self.mlp_in = nn.Linear(size, config.mlp_ratio * size)
            self.mlp_out = nn.Linear(config.mlp_ratio * size, size)

    def forward(self, x: torch.Tensor, h0: Optional[torch.Tensor], drop: Drop
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """x [batch, time, width], h0 [batch, units] or None (zeros) -> (x after the block,
        the state after the last step [batch, units] float32). The scan runs in float32 even
        under bf16 autocast; ``drop`` is the dropout applied to each branch's output."""
        k = self.cell_in(self.norm_cell(x)).float()
        log_a, log_b = log_coefficients(self.cell, k)
        h = scan(log_a, log_b, None if h0 is None else h0.float())
        x = x + drop(self.cell_out(h))
        if self.mlp:
            x = x + drop(self._mlp(x))
        return x, h[:, -1]

    def _mlp(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp_out(F.gelu(self.mlp_in(self.norm_mlp(x))))

    def step(self, x: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One time step, written out: x [batch, width], h [batch, units] -> (x after the
        block, h_t = a * h + b with (a, b) from ``coefficients``), in the weights' dtype."""
        a, b = coefficients(self.cell, self.cell_in(self.norm_cell(x)))
        h = a * h + b
        x = x + self.cell_out(h)
        return (x + self._mlp(x) if self.mlp else x), h


class MinStack(nn.Module):
    """The min-cell layers of a CharRNN: ``proj`` [width, embed_size], ``blocks`` (``layers``
    MinBlocks), ``norm`` (the final LayerNorm). Outputs are [.., width], the state [layers,
    batch, hidden_size]. Feng et al. 2024; see the module docstring."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.proj = nn.Linear(config.embed_size, width(config))
        self.blocks = nn.ModuleList(MinBlock(config) for _ in range(config.layers))
        self.norm = nn.LayerNorm(width(config))

    def forward(self, x: torch.Tensor, hidden: Optional[torch.Tensor], drop: Drop
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """x [batch, time, embed_size] -> (outputs [batch, time, width] after the final norm,
        the state after the last step [layers, batch, hidden_size] float32). ``hidden`` None
        starts from zeros."""
        x, states = self.proj(x), []
        for layer, block in enumerate(self.blocks):
            x, h = block(x, None if hidden is None else hidden[layer], drop)
            states.append(h)
        return self.norm(x), torch.stack(states)

    def step(self, x: torch.Tensor, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One step: x [batch, embed_size], hidden [layers, batch, hidden_size] -> (output
        [batch, width], next state, same layout), in the weights' dtype; no dropout."""
        x, states = self.proj(x), []
        for layer, block in enumerate(self.blocks):
            x, h = block.step(x, hidden[layer])
            states.append(h)
        return self.norm(x), torch.stack(states)


def count_params(config: ModelConfig) -> int:
    """The parameters of a min-cell CharRNN of this shape (embedding and output layer
    included), counted without building it."""
    size, units, vocab = width(config), config.hidden_size, max(1, config.vocab_size)
    hidden = config.mlp_ratio * size
    block = (size + 1) * PARTS[config.cell] * units + (units + 1) * size + 2 * size + \
        ((size + 1) * hidden + (hidden + 1) * size + 2 * size if hidden else 0)
    return vocab * config.embed_size + (config.embed_size + 1) * size + \
        config.layers * block + 2 * size + (size + 1) * vocab


def saved_per_char(config: ModelConfig) -> int:
    """A lower estimate of the floats one training character keeps for the backward pass in
    the blocks (gate pre-activations, log coefficients, a*, the scan, h; the norms, the MLP).
    For charrnn/training/memory.py's check; not measured to better than a factor of 2."""
    units, size = config.hidden_size, width(config)
    return config.layers * (units * (PARTS[config.cell] + 5) + size * (2 * config.mlp_ratio + 6))


def is_min(config: ModelConfig) -> bool:
    """True for the cells of this module (mingru, minlstm)."""
    return config.cell in MIN_CELLS
