"""The tutorial, docs/tutorial/rnn-to-lstm.ipynb: run from a clean kernel in its fast mode (tiny
models, short training) on a small text made here, and its claims checked on the figures it
computed, not only that it ran. The notebook keeps the outputs of a learner's run for the docs
site and GitHub; those are checked too (every picture there, no error, not the fast mode)."""
from __future__ import annotations

import json
import math
import os
import random
import sys
import time
from pathlib import Path

import nbformat
import numpy as np
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / "docs" / "tutorial" / "rnn-to-lstm.ipynb"
PICTURES = 7        # sections 1, 3, 5, 6 and 7 each draw one; section 4 two
BUDGET_S = 90       # the fast mode's execution, on 2 cores
KERNEL = "charrnn-tutorial-test"

# The notebook's own variables, read after it ran (one cell the test appends).
READ_FIGURES = """
import json
print("FIGURES " + json.dumps({
    "fast": FAST, "threads": THREADS, "corpus": CORPUS.name,
    "step_error": step_error, "fused_error": fused_error, "sum_error": sum_error,
    "record_steps": SIZE["record_steps"],
    "records": {name: [n.tolist(), l.tolist()] for name, (n, l) in records.items()},
    "norms_free": norms_free.tolist(), "losses_free": losses_free.tolist(),
    "norms_clipped": norms_clipped.tolist(), "losses_clipped": losses_clipped.tolist(),
    "curves": {name: c.tolist() for name, c in curves.items()}, "fall": fall,
    "snapshot_loss": snapshot_loss}))
"""


def play_like(path: Path, chars: int = 30_000, seed: int = 0) -> Path:
    """A small text shaped like a play: speakers' names in capitals, short lines of verse from
    a few words, blank lines between speeches."""
    rng = random.Random(seed)
    words = ["to", "be", "or", "not", "the", "king", "queen", "love", "night", "day", "sweet",
             "death", "my", "lord", "good", "and", "thou", "art"]
    names = ["ROMEO:", "JULIET:", "HAMLET:", "KING:"]
    speeches = []
    while sum(map(len, speeches)) < chars:
        lines = [" ".join(rng.choice(words) for _ in range(rng.randint(3, 8))).capitalize()
                 + rng.choice(",.!?") for _ in range(rng.randint(1, 4))]
        speeches.append(rng.choice(names) + "\n" + "\n".join(lines) + "\n\n")
    path.write_text("".join(speeches), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def executed(tmp_path_factory) -> tuple[nbformat.NotebookNode, dict, float]:
    """The notebook run top to bottom in a new kernel in fast mode: (the notebook with its new
    outputs, its figures, seconds taken)."""
    root = tmp_path_factory.mktemp("tutorial")
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    notebook.cells.append(nbformat.v4.new_code_cell(READ_FIGURES))
    env = {**os.environ, "CHARRNN_TUTORIAL_FAST": "1", "CHARRNN_TUTORIAL_THREADS": "1",
           "CHARRNN_TUTORIAL_CORPUS": str(play_like(root / "play.txt")),
           "CHARRNN_TUTORIAL_WORK": str(root / "work"), "OMP_NUM_THREADS": "1"}
    # The kernel is this Python (the one with charrnn), whatever kernels the machine lists.
    spec = root / "jupyter" / "kernels" / KERNEL
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "charrnn tutorial test", "language": "python"}), encoding="utf-8")
    before = os.environ.get("JUPYTER_PATH")
    os.environ["JUPYTER_PATH"] = str(root / "jupyter")     # searched first for kernels
    try:
        client = NotebookClient(notebook, timeout=300, kernel_name=KERNEL,
                                resources={"metadata": {"path": str(root)}})
        started = time.monotonic()
        client.execute(env=env)      # raises CellExecutionError, with the cell, if one fails
        seconds = time.monotonic() - started
    finally:
        if before is None:
            os.environ.pop("JUPYTER_PATH")
        else:
            os.environ["JUPYTER_PATH"] = before
    printed = "".join(output.get("text", "") for output in notebook.cells[-1].outputs)
    figures = json.loads(printed.split("FIGURES ", 1)[1])
    return notebook, figures, seconds


def _pictures(notebook: nbformat.NotebookNode) -> int:
    return sum("image/png" in output.get("data", {})
               for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs)


def test_it_runs_in_fast_mode_within_its_budget(executed):
    notebook, figures, seconds = executed
    assert figures["fast"] and figures["threads"] == 1 and figures["corpus"] == "play.txt"
    assert _pictures(notebook) == PICTURES
    assert seconds < BUDGET_S, f"the fast mode took {seconds:.0f} s"


def test_the_formula_by_hand_is_the_models_step(executed):
    _, figures, _ = executed
    assert figures["step_error"] < 1e-5          # against CharRNN.step
    assert figures["fused_error"] < 1e-5         # against torch's fused nn.RNN
    assert figures["sum_error"] < 1e-5           # shared weight's gradient = sum over steps


def test_the_trainers_record_has_each_steps_norm_and_a_high_rate_explodes(executed):
    # Section 4, from metrics.jsonl: AdamW at the preset's rate, and at 0.1 without clipping
    # and with it (eval_interval=1: a line per step).
    _, figures, _ = executed
    records = {name: (np.array(norms), np.array(losses))
               for name, (norms, losses) in figures["records"].items()}
    assert len(records) == 3
    for norms, losses in records.values():
        # The norm of every step, also without clipping: measured, finite, positive.
        assert len(norms) == len(losses) == figures["record_steps"]
        assert np.isfinite(norms).all() and (norms > 0).all() and np.isfinite(losses).all()
    (base_norms, base_losses), *high = records.values()
    # The preset's rate: the loss falls, never above its start.
    assert base_losses.max() <= base_losses[0] + 1e-6 and base_losses[-1] < base_losses[0]
    # At 0.1, clipped or not (AdamW divides the clip away): a norm several times the preset
    # run's largest, and a loss far above its start.
    for norms, losses in high:
        assert norms.max() > 5 * base_norms.max()
        assert losses.max() > 2 * losses[0]


def test_without_clipping_the_gradient_spikes_and_the_loss_diverges(executed):
    # Section 4's loop by hand: plain SGD, where clipping bounds the step.
    _, figures, _ = executed
    norms_free, losses_free = np.array(figures["norms_free"]), np.array(figures["losses_free"])
    norms_clipped = np.array(figures["norms_clipped"])
    losses_clipped = np.array(figures["losses_clipped"])
    # A spike: a norm 10 times the clipped run's typical one (or no number at all).
    assert not np.isfinite(norms_free).all() or \
        np.nanmax(norms_free) > 10 * np.median(norms_clipped)
    # Diverged: a loss far above where it started (ln(vocab)), or nan.
    assert not np.isfinite(losses_free).all() or np.nanmax(losses_free) > 2 * losses_free[0]
    # Clipped: finite throughout, never above the start, lower at the end.
    assert np.isfinite(norms_clipped).all() and np.isfinite(losses_clipped).all()
    assert losses_clipped.max() <= losses_clipped[0] + 1e-6
    assert losses_clipped[-1] < losses_clipped[0]


def test_the_rnns_gradient_falls_faster_than_the_lstms_and_the_mingru_is_between(executed):
    _, figures, _ = executed
    fall, curves = figures["fall"], figures["curves"]
    assert set(curves) == {"tanh RNN", "minGRU", "LSTM"}
    assert all(len(curve) == 30 and all(v > 0 and math.isfinite(v) for v in curve)
               for curve in curves.values())
    assert fall["tanh RNN"] > 10 * fall["LSTM"] > 10
    # The minGRU between the two (in fast mode about 1e7, against 1e10 and 1e3).
    assert fall["tanh RNN"] > 10 * fall["minGRU"]
    assert fall["minGRU"] > fall["LSTM"]


def test_a_later_snapshot_does_better_on_held_out_text(executed):
    _, figures, _ = executed
    losses = [loss for _, loss in sorted(figures["snapshot_loss"].items(), key=lambda s: int(s[0]))]
    assert len(losses) >= 2
    assert losses[-1] < losses[0]


def test_the_stored_outputs_are_a_learners_run():
    # What the docs site and GitHub show: every cell's output, no error, not the fast mode.
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert all(cell.execution_count for cell in code), "a cell without output: run it all"
    assert [cell.execution_count for cell in code] == list(range(1, len(code) + 1))
    outputs = [output for cell in code for output in cell.outputs]
    assert not [output for output in outputs if output.output_type == "error"]
    first = "".join(output.get("text", "") for output in code[0].outputs)
    assert "fast mode: False" in first, first
    assert _pictures(notebook) == PICTURES
