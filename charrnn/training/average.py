"""An exponential moving average of the weights (``--ema``): Polyak averaging (Polyak and
Juditsky 1992) in the form most trainers use, avg <- decay * avg + (1 - decay) * weights after
every optimizer step, with the warm-up decay min(ema, (1 + step) / (10 + step)) so that the
first averages are not dominated by the random initialisation (TensorFlow's
ExponentialMovingAverage with num_updates).

The rule: the average is the model. Validation measures it, and ``best/``, ``last/`` and the
snapshots hold it in model.safetensors, so what ``charrnn sample``, ``--sample-every`` and a
later ``--init-from`` read is the average; training steps the raw weights, which
trainer_state.pt keeps beside the average so that ``--resume`` continues exactly. With ``ema``
0 (the default) nothing is averaged and every method here does nothing.
"""
from __future__ import annotations

import contextlib
from typing import Iterator, Optional

import torch

WARMUP = 10         # the warm-up decay (1 + step) / (WARMUP + step)


class WeightAverage:
    """The moving average of ``model``'s parameters (fp32 copies on their device), started at
    the model's weights. ``decay`` in [0, 1); 0: off."""

    def __init__(self, model: torch.nn.Module, decay: float):
        self.model, self.decay = model, decay
        self.names = [name for name, _ in model.named_parameters()]
        self.average = [p.detach().clone() for p in model.parameters()] if decay > 0 else []
        self._raw: Optional[list[torch.Tensor]] = None    # the raw weights while swapped out

    def update(self, step: int) -> None:
        """Fold in the weights after optimizer step ``step`` (1 for the first): one fused
        lerp over all parameters (torch._foreach_lerp_), about one read of the weights."""
        if self.decay > 0:
            decay = min(self.decay, (1 + step) / (WARMUP + step))
            torch._foreach_lerp_(self.average, [p.detach() for p in self.model.parameters()],
                                 1.0 - decay)

    @contextlib.contextmanager
    def applied(self) -> Iterator[None]:
        """Inside: the model holds the average (copied in place, so optimizer and fused-kernel
        references stay valid); after: its raw weights again, bit for bit."""
        if self.decay == 0 or self._raw is not None:    # off, or already applied
            yield
            return
        params = [p.detach() for p in self.model.parameters()]
        self._raw = [p.clone() for p in params]
        torch._foreach_copy_(params, self.average)
        try:
            yield
        finally:
            torch._foreach_copy_(params, self._raw)
            self._raw = None

    def state(self) -> Optional[dict]:
        """For trainer_state.pt: ``{"weights": the raw weights, "ema": the average}``, each a
        {parameter name: tensor} dict; None when off."""
        if self.decay == 0:
            return None
        raw = self._raw if self._raw is not None else \
            [p.detach() for p in self.model.parameters()]
        return {"weights": dict(zip(self.names, raw)), "ema": dict(zip(self.names, self.average))}

    def restore(self, saved: dict) -> None:
        """From a loaded trainer_state.pt: the model's raw weights back (the checkpoint's
        model.safetensors held the average) and the average. A state without them (a run
        saved without --ema) leaves both as they are."""
        if "weights" not in saved:
            return
        with torch.no_grad():
            for param, name in zip(self.model.parameters(), self.names):
                param.copy_(saved["weights"][name])
        if self.decay > 0:
            torch._foreach_copy_(self.average, [saved["ema"][name] for name in self.names])
