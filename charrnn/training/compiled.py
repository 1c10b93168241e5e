"""--compile: the training forward through torch.compile (PyTorch 2's graph compiler, Inductor).

Why: a min cell's step is a long chain of small elementwise passes (log gates, the scan's
logaddexps, LayerNorm, GELU), each a separate kernel in eager mode; Inductor fuses them. On 2
CPU cores a mingru 4x128 step went from 56.5 to 32.3 ms (docs/performance.md), after ~30 s of
compiling, so it pays for runs of several minutes, not for one. The LSTM's recurrence is one
library kernel already.

Only the training forward is compiled; evaluation, sampling and checkpoints use the plain
module. Shapes stay fixed (dynamic=False: every training chunk is [batch, seq_len]), and the
first chunk of an epoch starts from a zero state passed as a tensor, not None, so that one
graph serves every step (None would compile a second one). On the CPU Inductor needs a C++
compiler; a failure to compile is a one-line CharRNNError.
"""
from __future__ import annotations

from typing import Any

import torch

from charrnn.errors import CharRNNError


class Compiled:
    """Calls ``torch.compile(module, dynamic=False)`` as the module would be called:
    (inputs [batch, time] int64, hidden or None) -> (logits, hidden). ``net`` is the plain
    CharRNN (for its zero state). Raises CharRNNError when compiling fails."""

    def __init__(self, module: torch.nn.Module, net: torch.nn.Module):
        self.compiled, self.net = torch.compile(module, dynamic=False), net

    def __call__(self, inputs: torch.Tensor, hidden: Any) -> Any:
        if hidden is None:
            hidden = self.net.init_hidden(inputs.shape[0], inputs.device)
        try:
            return self.compiled(inputs, hidden)
        except Exception as error:        # only the compiler's own errors become one line
            if not type(error).__module__.startswith(("torch._dynamo", "torch._inductor")):
                raise
            first = (str(error).strip().splitlines() or [type(error).__name__])[0]
            raise CharRNNError(f"--compile failed ({first[:200]}); train without --compile, "
                               "or install a C++ compiler (Debian: apt install g++)") from None


def compiled(module: torch.nn.Module, net: torch.nn.Module, enabled: bool):
    """``module`` itself, or with ``enabled`` a Compiled around it."""
    return Compiled(module, net) if enabled else module
