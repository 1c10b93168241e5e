"""Loss curves of training runs as PNG files, drawn with matplotlib's non-interactive Agg backend.

``save_loss_png(run)`` writes ``RUN/loss.png`` (training and validation loss in bits per
character against the step and against training time, and below them the gradient norm before
clipping, the mean and the maximum between evaluations) from the run's metrics.jsonl; the
training command calls it once training has ended, so drawing never spends the time budget.
``plot_runs(runs, out)`` draws several runs in one chart.

matplotlib is imported inside the functions that draw: ``import charrnn`` and sampling must not
pay for it (about a second).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence, Union

from charrnn import files
from charrnn.errors import CharRNNError
from charrnn.model.evaluate import LN2

TIME_UNITS = (("seconds", 1, 120), ("minutes", 60, 7200), ("hours", 3600, math.inf))


@dataclass
class Curves:
    """One run's evaluations from metrics.jsonl, losses in bits per character."""
    name: str
    step: list            # optimizer steps, one per evaluation
    elapsed: list         # training seconds at each evaluation
    train_bpc: list       # mean training loss since the previous evaluation (bits/char)
    val_bpc: list         # validation loss (bits/char)
    grad_mean: list = field(default_factory=list)  # mean gradient L2 norm before clipping since
    grad_max: list = field(default_factory=list)   # the previous evaluation, and the maximum
                                                   # (nan: a run recorded before they were)

    @property
    def has_grad_norms(self) -> bool:
        """Whether any evaluation recorded the gradient norm."""
        return any(math.isfinite(value) for value in self.grad_mean + self.grad_max)


def read_curves(run: Union[str, Path]) -> Curves:
    """The curves of run folder ``run`` (its metrics.jsonl; lines a crash cut short and
    checkpoints saved between evaluations are skipped). Raises CharRNNError when the folder
    has no metrics.jsonl or no evaluation in it."""
    path = Path(run) / "metrics.jsonl"
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as err:
        raise CharRNNError(f"cannot read {path}: {err.strerror or err}; give a run folder made "
                           "by charrnn train") from None
    curves = Curves(Path(run).resolve().name, [], [], [], [])
    for line in lines:
        try:
            record = json.loads(line)
            point = (int(record["step"]), float(record["elapsed"]),
                     float(record["train_loss"]) / LN2, float(record["val_loss"]) / LN2)
        except (ValueError, KeyError, TypeError):
            continue
        for values, value in zip((curves.step, curves.elapsed, curves.train_bpc,
                                  curves.val_bpc), point):
            values.append(value)
        curves.grad_mean.append(_number(record.get("grad_norm_mean")))
        curves.grad_max.append(_number(record.get("grad_norm_max")))
    if not curves.step:
        raise CharRNNError(f"{path} holds no evaluation yet: train the run until its first "
                           "validation")
    return curves


def _number(value) -> float:
    """A record's figure as a float; nan when absent or not a number."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def draw(runs: Sequence[Curves]):
    """A matplotlib Figure with two panels: loss (bits/char) against step, and against
    training time (seconds, minutes or hours, whichever suits the longest run). Validation
    solid, training dashed, one colour per run. When the runs recorded the gradient norm, a
    second row (1000 x 700 pixels in all, else 1000 x 400) shows it against the same axes, on
    a log scale: the mean between evaluations solid, the maximum dotted. ``figure.axes``:
    loss by step, loss by time, then gradient norm by step, by time."""
    import matplotlib   # lazily: see the module docstring
    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    gradients = any(curves.has_grad_norms for curves in runs)
    figure = Figure(figsize=(10, 7 if gradients else 4), dpi=100, layout="constrained")
    if gradients:
        (by_step, by_time), (grad_by_step, grad_by_time) = figure.subplots(
            2, 2, sharex="col", gridspec_kw={"height_ratios": (4, 3)})
        by_time.sharey(by_step)
        grad_by_time.sharey(grad_by_step)
    else:
        by_step, by_time = figure.subplots(1, 2, sharey=True)
    longest = max(max(curves.elapsed) for curves in runs)
    unit, seconds_per_unit = next((name, size) for name, size, most in TIME_UNITS
                                  if longest <= most)
    for index, curves in enumerate(runs):
        colour = f"C{index % 10}"
        label = curves.name if len(runs) > 1 else ""
        times = [seconds / seconds_per_unit for seconds in curves.elapsed]
        for axes, x in ((by_step, curves.step), (by_time, times)):
            axes.plot(x, curves.val_bpc, "-o", color=colour, markersize=3,
                      label=f"{label} validation".strip())
            axes.plot(x, curves.train_bpc, "--", color=colour, alpha=0.7,
                      label=f"{label} training".strip())
        if gradients and curves.has_grad_norms:
            for axes, x in ((grad_by_step, curves.step), (grad_by_time, times)):
                axes.plot(x, curves.grad_mean, "-o", color=colour, markersize=3,
                          label=f"{label} mean".strip())
                axes.plot(x, curves.grad_max, ":", color=colour,
                          label=f"{label} max".strip())
    bottom = (grad_by_step, grad_by_time) if gradients else (by_step, by_time)
    bottom[0].set_xlabel("step")
    bottom[1].set_xlabel(f"training time ({unit})")
    by_step.set_ylabel("loss (bits per character)")
    panels = [by_step, by_time]
    if gradients:
        grad_by_step.set_ylabel("gradient norm before clipping")
        grad_by_step.set_yscale("log")
        grad_by_step.legend(fontsize="small")
        panels += [grad_by_step, grad_by_time]
    for axes in panels:
        axes.grid(alpha=0.3)
    by_step.legend(fontsize="small")
    figure.suptitle(runs[0].name if len(runs) == 1 else "runs compared")
    return figure


def save_figure(figure, out: Union[str, Path]) -> Path:
    """Write ``figure`` as a PNG to ``out`` atomically. Raises CharRNNError when it cannot."""
    out = Path(out)
    try:
        with files.atomic_file(out) as tmp:
            figure.savefig(tmp, format="png")
    except OSError as err:
        raise CharRNNError(f"cannot write {out}: {err.strerror or err}; choose another --out "
                           "or make the folder writable") from None
    return out


def plot_runs(runs: Sequence[Union[str, Path]], out: Union[str, Path]) -> Path:
    """Compare run folders ``runs`` in one PNG at ``out`` (see ``draw``). Raises
    CharRNNError for a folder without evaluations or an unwritable ``out``."""
    if not runs:
        raise CharRNNError("give at least one run folder")
    return save_figure(draw([read_curves(run) for run in runs]), out)


def save_loss_png(run: Union[str, Path]) -> Path:
    """Write ``run/loss.png`` from the run's metrics.jsonl. Raises CharRNNError."""
    return save_figure(draw([read_curves(run)]), Path(run) / "loss.png")
