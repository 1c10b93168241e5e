"""What an exact ``--resume`` needs beyond the weights, saved in ``last/trainer_state.pt``:
the loop's position (``LoopState``), the optimizer's state, the hidden state of every stream
and the random generators' states (dropout masks go on where they were). Tensors and plain
containers only, so that it loads with torch.load(weights_only=True).
"""
from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass
from typing import Optional

import torch

from charrnn.model.network import Hidden, hidden_from_parts, hidden_parts


@dataclass
class LoopState:
    """Everything beyond model and optimizer that an exact resume needs; saved in
    trainer_state.pt as ``loop`` (every field but ``hidden``, which is saved as tensors)."""
    step: int = 0                   # optimizer steps taken
    next_chunk: int = 0             # index of the next chunk of the current epoch
    epoch: int = 0
    elapsed: float = 0.0            # training seconds so far, over all resumed sessions
    best_val_loss: float = math.inf
    val_loss: float = math.nan
    loss_sum: float = 0.0           # training loss summed since the last evaluation
    loss_count: int = 0
    grad_norm_sum: float = 0.0      # gradient norms (before clipping) summed since the last
    grad_norm_max: float = 0.0      # evaluation, their maximum and count (gradients.py)
    grad_norm_count: int = 0
    evals_since_best: int = 0       # evaluations since the best validation loss (--early-stop)
    best_step: int = 0              # the step of the best validation loss (best/)
    hidden: Optional[Hidden] = None

    def to_dict(self) -> dict:
        """Every field but ``hidden``, as plain numbers (for trainer_state.pt's ``loop``)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if f.name != "hidden"}

    @classmethod
    def from_dict(cls, loop: dict, hidden: Optional[Hidden] = None) -> "LoopState":
        """From ``to_dict``'s output (charrnn 0.1.0 called ``next_chunk`` ``chunk``)."""
        loop = {("next_chunk" if k == "chunk" else k): v for k, v in loop.items()}
        hints = typing.get_type_hints(cls)
        values = {f.name: hints[f.name](loop[f.name]) for f in dataclasses.fields(cls)
                  if f.name in loop and f.name != "hidden"}
        return cls(**values, hidden=hidden)


def rng_state() -> dict:
    """The CPU (and CUDA) random generators' states: dropout masks resume where they were."""
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict) -> None:
    """Put back the generators' states saved by ``rng_state``."""
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def trainer_state(optimizer: torch.optim.Optimizer, state: LoopState,
                  hidden: Optional[Hidden], rng_ranks: Optional[list] = None,
                  average: Optional[dict] = None) -> dict:
    """The contents of trainer_state.pt (tensors and plain containers only); ``average``
    (with --ema, WeightAverage.state: the raw weights and their average) goes in as it is."""
    saved = {"optimizer": optimizer.state_dict(), "loop": state.to_dict(), "rng": rng_state()}
    if hidden is not None:
        saved["hidden"] = hidden_parts(hidden)
    if rng_ranks is not None:
        saved["rng_ranks"] = rng_ranks
    saved.update(average or {})
    return saved


def resumed_state(saved: dict, device: torch.device) -> LoopState:
    """The LoopState in a loaded trainer_state.pt, its hidden state on ``device``."""
    hidden = saved.get("hidden")
    if hidden is not None:
        hidden = hidden_from_parts([h.to(device) for h in hidden])
    return LoopState.from_dict(saved["loop"], hidden)
