"""The gradient norm of every training step, before clipping: measured, clipped with, and
summed on the device between evaluations.

Each step's norm is the L2 norm of all the parameters' gradients taken as one vector (under
torchrun the averaged gradients, the same on every process), measured whether or not
``--grad-clip`` is on. The loop keeps their sum and maximum since the last evaluation as
tensors on the training device: adding to them queues work and never waits for the GPU. The
evaluation reads them once, and metrics.jsonl records ``grad_norm_mean`` and ``grad_norm_max``
(the one record that ``charrnn plot``, loss.png and TensorBoard draw). The sum, maximum and
count so far also go into LoopState at every save of ``last``, so a resumed run records the
same figures, bit for bit.
"""
from __future__ import annotations

import math
from typing import Optional

import torch

# Kept whole: a norm can be 1e-5 or 1e9 (an exploding tanh RNN without clipping).
SIGNIFICANT = 6


def clip_and_measure(parameters: list, max_norm: float) -> torch.Tensor:
    """The gradients' total L2 norm before clipping (a 0-dim float tensor on their device,
    not read back), after scaling them to at most ``max_norm`` when ``max_norm`` > 0 (0: they
    are left as they are). The same arithmetic as torch.nn.utils.clip_grad_norm_."""
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return torch.zeros(())
    if not hasattr(torch.nn.utils, "get_total_norm"):       # torch < 2.6
        return torch.nn.utils.clip_grad_norm_(parameters, max_norm if max_norm > 0 else math.inf)
    norm = torch.nn.utils.get_total_norm(grads, norm_type=2.0)
    if max_norm > 0:
        torch.nn.utils.clip_grads_with_norm_(parameters, max_norm, norm)
    return norm


class GradNorms:
    """The steps' gradient norms since the last evaluation: their sum and maximum as tensors on
    ``device`` (float64; float32 on MPS, which has no float64), the count on the host.
    ``state`` (LoopState) holds the figures read back (``grad_norm_sum``, ``grad_norm_max``,
    ``grad_norm_count``); a resumed run starts from them."""

    def __init__(self, state, device: torch.device):
        self.state, self.device = state, device
        self.dtype = torch.float32 if device.type == "mps" else torch.float64
        self.sum: Optional[torch.Tensor] = None
        self.max: Optional[torch.Tensor] = None

    def add(self, norm: torch.Tensor) -> None:
        """Count one step's norm (a 0-dim tensor): device work only, no read."""
        if self.sum is None:
            self._start(self.state.grad_norm_sum, self.state.grad_norm_max)
        norm = norm.detach().to(self.device, self.dtype)
        self.sum.add_(norm)
        torch.maximum(self.max, norm, out=self.max)
        self.state.grad_norm_count += 1

    def read(self) -> None:
        """Bring the sum and maximum into ``state`` (one device sync), for a save of ``last``."""
        if self.sum is not None:
            self.state.grad_norm_sum = float(self.sum)
            self.state.grad_norm_max = float(self.max)

    def take(self) -> dict:
        """The record's figures since the last evaluation, ``{"grad_norm_mean": ...,
        "grad_norm_max": ...}`` (the L2 norm before clipping, None when no step was taken),
        and start the next stretch."""
        self.read()
        count = self.state.grad_norm_count
        figures = {"grad_norm_mean": _kept(self.state.grad_norm_sum / count) if count else None,
                   "grad_norm_max": _kept(self.state.grad_norm_max) if count else None}
        self.state.grad_norm_sum, self.state.grad_norm_max, self.state.grad_norm_count = \
            0.0, 0.0, 0
        if self.sum is not None:       # zeroed where they are: no copy from the host
            self.sum.zero_()
            self.max.zero_()
        return figures

    def _start(self, total: float, most: float) -> None:
        self.sum = torch.tensor(total, dtype=self.dtype, device=self.device)
        self.max = torch.tensor(most, dtype=self.dtype, device=self.device)


def _kept(value: float) -> float:
    """``value`` to SIGNIFICANT significant digits (nan and inf as they are)."""
    return float(f"{value:.{SIGNIFICANT}g}") if math.isfinite(value) else value
