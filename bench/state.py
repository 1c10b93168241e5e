"""The resumable state of `make bench-full`: bench/full-results.json, one entry per finished cell.

A cell is one figure (a training run, the fine-tuning section, the serve load check) under a
key such as ``sweep/tinyshakespeare/60/lstm-2x512-b64``. Each entry keeps the figures, the date,
the CPU model and features, the torch version and the command that made it. The file is
rewritten atomically after every cell, so Ctrl-C loses at most the cell that was running.
"""
from __future__ import annotations

import json
import os
import re
import statistics
import time
from pathlib import Path
from typing import Optional

from bench import baseline

HERE = Path(__file__).resolve().parent
STATE = HERE / "full-results.json"
QUICK_STATE = HERE / "full-results-quick.json"


class State:
    """The finished cells of bench-full, read from and written back to ``path``."""

    def __init__(self, path: Path = STATE):
        self.path = Path(path)
        data = json.loads(self.path.read_text()) if self.path.exists() else {}
        self.cells: dict = data.get("cells", {})

    def done(self, key: str, redo: Optional[str] = None) -> bool:
        """Whether ``key`` has finished and is not asked for again (``redo``: a regular
        expression searched in the keys; "" or None redoes nothing)."""
        return key in self.cells and not (redo and re.search(redo, key))

    def record(self, key: str, figures: dict, machine: dict, command: str) -> None:
        """Store a finished cell with its date and machine, and save the file at once."""
        self.cells[key] = {"figures": figures, "date": time.strftime("%Y-%m-%d %H:%M"),
                           **machine, "command": command}
        self.save()

    def save(self) -> None:
        """Write the file atomically (a temporary file, then a rename)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps({"cells": self.cells}, indent=1, sort_keys=True))
        os.replace(tmp, self.path)

    def val(self, key: str) -> Optional[float]:
        """The val loss of a finished cell, else None."""
        cell = self.cells.get(key)
        return None if cell is None else cell["figures"].get("val_loss")


def budget_key(seconds: float) -> str:
    """How a budget appears in a key: "60", "180", "600" (seconds, no decimals when whole)."""
    return f"{float(seconds):g}"


def sweep_key(corpus: str, seconds: float, config: dict) -> str:
    return f"sweep/{corpus}/{budget_key(seconds)}/{baseline.config_name(config)}"


def best_plain(cells: dict, seconds: float, corpus: str = "tinyshakespeare") -> tuple[dict, str]:
    """(the plain configuration with the lowest val loss in the sweep at ``seconds`` on
    ``corpus``, where it came from). Until all of SWEEP has run at that budget: the stated
    default (baseline.DEFAULT_PICKS). ``cells``: State.cells."""
    found = {}
    for config in baseline.SWEEP:
        cell = cells.get(sweep_key(corpus, seconds, config))
        if cell is not None and cell["figures"].get("val_loss") is not None:
            found[baseline.config_name(config)] = (cell["figures"]["val_loss"], config)
    if len(found) < len(baseline.SWEEP):
        pick = baseline.default_pick(seconds)
        return pick, (f"default pick before the sweep ({len(found)} of {len(baseline.SWEEP)} "
                      f"configurations measured at {budget_key(seconds)} s)")
    name, (loss, config) = min(found.items(), key=lambda item: item[1][0])
    return dict(config), f"best of the sweep at {budget_key(seconds)} s ({loss:.3f})"


def median(values: list) -> Optional[float]:
    """The median of the values that are not None, else None."""
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None
