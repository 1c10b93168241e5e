"""TensorBoard events of a training run (``--tensorboard``), in ``OUT/tensorboard/``:

    loss/train, loss/validation     nats per character (train: the mean since the evaluation
                                    before)
    bpc/train, bpc/validation       the same in bits per character
    learning_rate                   the scheduled rate at the evaluation
    grad_norm/mean, grad_norm/max   the steps' gradient L2 norms before clipping, since the
                                    evaluation before (gradients.py)
    speed/chars_per_sec             training characters per second, all processes together
    sample                          each --sample-every sample, as text

Every scalar comes from metrics.jsonl's record of an evaluation, at its step (one source: the
plot and the file say the same). View them with ``tensorboard --logdir OUT/tensorboard``.

The events are written by torch.utils.tensorboard's SummaryWriter, which needs setup.py's
``tensorboard`` extra (``require`` says so in one line). A resumed run's writer purges, for
TensorBoard's readers, the events after the resumed step (``purge_step``): those of a session
killed after its last save. ``--overwrite`` removes the folder (runfolder.py).
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

from charrnn.errors import CharRNNError, optional_import
from charrnn.model.evaluate import LN2

TENSORBOARD = "tensorboard"     # the events' folder in the run folder
EXTRA = "tensorboard"
USER = "--tensorboard"
# The record's fields (metrics.jsonl) and their tags; bpc/train is computed from train_loss.
SCALARS = (("train_loss", "loss/train"), ("val_loss", "loss/validation"),
           ("val_bpc", "bpc/validation"), ("lr", "learning_rate"),
           ("grad_norm_mean", "grad_norm/mean"), ("grad_norm_max", "grad_norm/max"),
           ("chars_per_sec", "speed/chars_per_sec"))


def require() -> None:
    """Raise CharRNNError "--tensorboard needs the tensorboard extra: pip install -e
    '.[tensorboard]'" when the tensorboard package is not installed (before any work)."""
    optional_import("tensorboard", EXTRA, USER)


class Board:
    """Where a run's events go; with no ``writer`` (no --tensorboard, or not the first
    process under torchrun) every call does nothing."""

    def __init__(self, writer=None):
        self.writer = writer

    @classmethod
    def open(cls, folder: Path, purge_step: Optional[int] = None) -> "Board":
        """A Board writing a new events file into ``folder`` (made if needed). ``purge_step``:
        on --resume, the first step after the resumed one; readers then drop the events of
        earlier files at that step and after. Raises CharRNNError when the extra is missing
        or the folder cannot be made."""
        require()
        from torch.utils.tensorboard import SummaryWriter
        _after_older_files(folder)
        try:
            return cls(SummaryWriter(log_dir=str(folder), purge_step=purge_step))
        except OSError as err:
            raise CharRNNError(f"cannot write {folder}: {err.strerror or err}; free disk space "
                               "or make the folder writable, or leave out --tensorboard") \
                from None

    def record(self, record: dict) -> None:
        """The scalars of one evaluation's record (saving.metrics) at its ``step``; flushed,
        so that a running TensorBoard shows them at once."""
        if self.writer is None:
            return
        step = int(record["step"])
        for field, tag in SCALARS:
            if record.get(field) is not None:
                self.writer.add_scalar(tag, float(record[field]), step)
        if record.get("train_loss") is not None:
            self.writer.add_scalar("bpc/train", float(record["train_loss"]) / LN2, step)
        self.writer.flush()

    def sample(self, record: dict) -> None:
        """A --sample-every sample (intervals.take_sample's record) as text at its ``step``,
        indented four spaces as a Markdown code block: TensorBoard keeps its lines."""
        if self.writer is not None:
            text = record["text"]
            self.writer.add_text("sample", "    " + text.replace("\n", "\n    "),
                                 int(record["step"]))

    def close(self) -> None:
        """Flush and close the events file (nothing more is written)."""
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def _after_older_files(folder: Path) -> None:
    """Wait, at most a second, until a new events file sorts after every file in ``folder``.
    Readers take the files in name order, and a name starts with the second it was opened in
    (events.out.tfevents.SECONDS.HOST.PID.N): a file opened in the same second as the one
    before it could sort first, and the purge of a resume would then come before the events
    it drops. Only a resume within a second of the session before (a test) waits."""
    seconds = []
    for path in folder.glob("events.out.tfevents.*"):
        try:
            seconds.append(int(path.name.split(".")[3]))
        except (IndexError, ValueError):
            continue
    while seconds and time.time() < max(seconds) + 1:
        time.sleep(0.02)
