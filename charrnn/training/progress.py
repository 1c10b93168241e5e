"""What the training loop reports while it runs: the training loss, read back from the device
only now and then, the speed in characters per second, and the progress bar (tqdm)."""
from __future__ import annotations

import math
import sys
import time
from typing import Optional

import torch
from tqdm import tqdm

from charrnn.errors import note
from charrnn.model.evaluate import LN2

LOSS_READ_EVERY = 25    # CUDA: steps between reads of the training loss (each one a host sync)


class LossMeter:
    """Training losses, kept on the device and summed there; ``read`` adds them, on the host,
    to ``state.loss_sum`` (the sum since the last evaluation, which a resume must keep).

    On the CPU every step is read (it costs nothing); on CUDA only every LOSS_READ_EVERY steps,
    so the host never waits for the GPU in between."""

    def __init__(self, state, device: torch.device, every_step: bool = False):
        self.state, self.lazy = state, device.type == "cuda" and not every_step
        self.pending: Optional[torch.Tensor] = None
        self.pending_steps, self.last = 0, math.nan

    def add(self, loss: torch.Tensor) -> float:
        """Record one step's mean loss (a 0-dim tensor); the latest value read (nats/char)."""
        self.pending = loss if self.pending is None else self.pending + loss
        self.pending_steps += 1
        self.state.loss_count += 1
        if not self.lazy or math.isnan(self.last) or self.state.step % LOSS_READ_EVERY == 0:
            self.read()
        return self.last

    def read(self) -> None:
        """Bring the pending losses to the host (one sync); ``last`` is their mean."""
        if self.pending is None:
            return
        value = float(self.pending)
        self.state.loss_sum += value
        self.last = value / self.pending_steps
        self.pending, self.pending_steps = None, 0

    def take_mean(self) -> float:
        """The mean training loss since the last evaluation, and start the next sum."""
        self.read()
        mean = self.state.loss_sum / max(1, self.state.loss_count)
        self.state.loss_sum, self.state.loss_count = 0.0, 0
        return mean


class Speed:
    """Characters per second, measured over windows of at least one second."""

    def __init__(self, chars_per_step: int):
        self.chars_per_step, self.value = chars_per_step, 0.0
        self.start, self.steps, self.window_done = time.monotonic(), 0, False

    def tick(self) -> float:
        """Count one step; the latest speed in characters per second: over the last full
        window, or, until a first window is full, over the time so far (so a run shorter than
        a second does not report 0)."""
        self.steps += 1
        now = time.monotonic()
        elapsed = now - self.start
        if elapsed >= 1.0 or (not self.window_done and elapsed > 0):
            self.value = self.steps * self.chars_per_step / elapsed
        if elapsed >= 1.0:
            self.start, self.steps, self.window_done = now, 0, True
        return self.value


class Bar:
    """The progress bar: fraction of the run done, step, loss, validation bits/char, speed."""

    def __init__(self, enabled: bool):
        self.bar = tqdm(total=1000, disable=not enabled, leave=True, dynamic_ncols=True,
                        bar_format="{l_bar}{bar}| {elapsed}<{remaining} {postfix}")

    def show(self, done: float, step: int, loss: float, val_loss: float, speed: float) -> None:
        """Redraw: ``done`` in [0, 1], losses in nats per character (shown in bits for val)."""
        self.bar.n = int(1000 * done)
        val_bpc = "-" if math.isnan(val_loss) else f"{val_loss / LN2:.3f}"
        self.bar.set_postfix_str(f"step {step} loss {loss:.3f} val bpc {val_bpc} "
                                 f"{speed:,.0f} chars/s", refresh=False)
        self.bar.update(0)

    def write(self, text: str, most: int = 160) -> None:
        """A line (its first ``most`` characters) above the bar, on the bar's stream (stderr:
        stdout stays for results), when the bar is shown."""
        if not self.bar.disable:
            tqdm.write(text[:most], file=sys.stderr)

    def note(self, text: str) -> None:
        """``note: text`` above the bar when it is shown, else as any note (stderr)."""
        if self.bar.disable:
            note(text)
        else:
            tqdm.write(f"note: {text}", file=sys.stderr)

    def close(self) -> None:
        """Leave the bar on the screen as it stands."""
        self.bar.close()
