"""A training run's folder:

    OUT/best/        the checkpoint with the lowest validation loss
    OUT/last/        the latest checkpoint, with trainer_state.pt (charrnn/training/resume.py)
    OUT/metrics.jsonl  one JSON line per evaluation
    OUT/.lock          while a run trains into OUT: its process id (see ``RunFolder.lock``)
    OUT/samples.jsonl  one JSON line per sample taken while training (--sample-every)
    OUT/step-001000/   snapshot checkpoints (--save-every), the newest --keep of them
    OUT/tensorboard/   TensorBoard event files (--tensorboard; charrnn/training/board.py)

Only the writer process (rank 0 under torchrun) writes; on the others every write is a no-op,
so the training loop reads the same with one process or many.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
from pathlib import Path
from typing import Optional

from charrnn import files
from charrnn.model.card import latest_sample
from charrnn.training.board import TENSORBOARD, Board
from charrnn.model.checkpoint import checkpoint_config, recover, save_checkpoint
from charrnn.config import TrainConfig
from charrnn.errors import CharRNNError
from charrnn.model.network import CharRNN
from charrnn.data.tokenizer import CharTokenizer

UNWRITABLE = "free disk space or make the folder writable, then --resume"
LOCK = ".lock"
try:
    import fcntl       # POSIX: the kernel drops a flock when its process dies, however it dies
except ImportError:    # Windows: the lock file's process id decides whether it is stale
    fcntl = None
METRICS = "metrics.jsonl"
SAMPLES = "samples.jsonl"
SNAPSHOT = "step-"


def snapshot_name(step: int) -> str:
    """The folder of the snapshot taken at ``step``: step-001000 (wider past a million)."""
    return f"{SNAPSHOT}{step:06d}"


class RunFolder:
    """The run folder ``path``; ``writer`` is False on every process but the first."""

    def __init__(self, path: Path, writer: bool = True):
        self.path, self.writer = Path(path), writer
        self.corpus_record: dict = {}    # corpus_digest, corpus_path: saved in config.json
        self.new = False                # the folder did not exist, or was empty
        self.board = Board()            # --tensorboard: the events writer (start opens it)
        self._lock: Optional[int] = None

    def check(self, config: TrainConfig) -> Optional[Path]:
        """The checkpoint to resume from (or None). The writer first takes the folder's lock
        (``lock``), then recovers an interrupted save. Raises CharRNNError when --out is a
        file or in use by another run, when there is nothing to resume, or when the folder
        holds another model and neither --resume nor --overwrite was given."""
        out = self.path
        if out.exists() and not out.is_dir():
            raise CharRNNError(f"--out {out} is a file: give a folder")
        if self.writer:
            self.lock()
        if out.is_dir() and self.writer:
            recover(out)
        if config.resume:
            if not (out / "last" / "config.json").exists():
                raise CharRNNError(f"nothing to resume in {out}: it has no last checkpoint")
            return out / "last"
        if self.has_checkpoint and not config.overwrite:
            raise CharRNNError(f"{out} already holds a model: pass --resume to continue it, "
                               "--overwrite to replace it, or choose another --out")
        return None

    def lock(self) -> None:
        """Claim the folder for this process, making it if needed: ``.lock`` holds this
        process's id, under an exclusive flock (POSIX) that the kernel releases when the
        process ends, so a lock left by a killed run never blocks the next one. Raises
        CharRNNError naming the process when another live run holds it."""
        if self._lock is not None:
            return
        self.new = not self.path.exists() or (self.path.is_dir() and not any(self.path.iterdir()))
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            self._lock = _claim(self.path / LOCK)
        except OSError as err:
            self.release(failed=True)
            raise CharRNNError(f"cannot write {self.path / LOCK}: {err.strerror or err}; make "
                               "the folder writable or choose another --out") from None
        except CharRNNError:
            self.release(failed=True)
            raise

    def release(self, failed: bool = False) -> None:
        """Close the TensorBoard events and drop the lock. ``failed``: the run ends with an
        error; a folder that was new to it (absent or empty) and never got a checkpoint is
        removed: no half-made run folder stays behind."""
        self.board.close()
        if self._lock is not None:
            (self.path / LOCK).unlink(missing_ok=True)
            os.close(self._lock)
            self._lock = None
        if failed and self.new and self.writer and not self.has_checkpoint:
            (self.path / METRICS).unlink(missing_ok=True)
            shutil.rmtree(self.path / TENSORBOARD, ignore_errors=True)
            try:
                self.path.rmdir()       # only if nothing else is in it
            except OSError:
                pass
            self.new = self.path.exists()

    @property
    def has_checkpoint(self) -> bool:
        """Whether the folder holds a best or last checkpoint."""
        return any((self.path / n / "config.json").exists() for n in ("best", "last"))

    def start(self, overwrite: bool, resumed_step: Optional[int],
              tensorboard: bool = False) -> None:
        """Make the folder; with --overwrite clear the old run (its TensorBoard events too);
        on resume drop the metrics lines logged after the checkpoint (a run killed between
        logging and saving). ``tensorboard``: open ``board``, whose readers, on resume, drop
        the events after ``resumed_step``. Raises CharRNNError when the folder cannot be
        written."""
        if not self.writer:
            return
        if overwrite and resumed_step is None:
            for name in ("best", "last", TENSORBOARD, *self.snapshots()):
                shutil.rmtree(self.path / name, ignore_errors=True)
            (self.path / METRICS).unlink(missing_ok=True)
            (self.path / SAMPLES).unlink(missing_ok=True)
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise CharRNNError(f"cannot make {self.path}: {err.strerror or err}; choose "
                               "another --out") from None
        if resumed_step is not None:
            self._trim_metrics(resumed_step)
            self._trim_metrics(resumed_step, SAMPLES)
        if tensorboard:
            self.board = Board.open(self.path / TENSORBOARD,
                                    None if resumed_step is None else resumed_step + 1)

    def log(self, record: dict, name: str = METRICS) -> None:
        """Append one record (an evaluation's; a sample's to samples.jsonl) to the JSON lines
        file ``name``. Raises CharRNNError."""
        if not self.writer:
            return
        path = self.path / name
        try:
            with open(path, "a", encoding="utf-8") as handle:
                handle.write(json.dumps(record) + "\n")
        except OSError as err:
            raise CharRNNError(f"cannot write {path}: {err.strerror or err}; {UNWRITABLE}") \
                from None

    def save(self, name: str, *, model: CharRNN, tokenizer: CharTokenizer, config: TrainConfig,
             metrics: dict, corpus: str, state: Optional[dict] = None) -> None:
        """Write checkpoint ``name`` (best, last or a snapshot) atomically: config.json from
        the keyword arguments (``checkpoint_config``) and the corpus record, the weights, the
        tokenizer, the model card (with the latest --sample-every sample: no sampling here)
        and, when given, trainer_state.pt's ``state``. Raises CharRNNError."""
        if self.writer:
            saved = checkpoint_config(model, tokenizer, config, metrics, corpus)
            save_checkpoint(self.path / name, model, tokenizer,
                            {**saved, **self.corpus_record}, state,
                            sample=latest_sample(self.path / SAMPLES))

    def snapshots(self) -> list[str]:
        """The snapshot folders (step-NNNNNN), oldest first."""
        if not self.path.is_dir():
            return []
        found = [p.name for p in self.path.iterdir() if p.name.startswith(SNAPSHOT)
                 and p.name[len(SNAPSHOT):].isdigit() and p.is_dir()]
        return sorted(found, key=lambda name: int(name[len(SNAPSHOT):]))

    def prune_snapshots(self, keep: Optional[int]) -> None:
        """Delete all but the newest ``keep`` snapshots (None: keep them all). Each is renamed
        to a temporary name first: a kill while deleting leaves no half checkpoint, only a
        leftover that ``recover`` removes."""
        if self.writer and keep is not None:
            for name in self.snapshots()[:-keep]:
                doomed = self.path / f"{files.TMP}{name}-{os.getpid()}"
                try:
                    os.rename(self.path / name, doomed)
                except OSError:
                    continue          # gone already, or not ours to remove
                shutil.rmtree(doomed, ignore_errors=True)

    def _trim_metrics(self, step: int, name: str = METRICS) -> None:
        path = self.path / name
        try:
            lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
        except OSError:
            return
        keep = [line if line.endswith("\n") else line + "\n"
                for line in lines if _step_of(line) is not None and _step_of(line) <= step]
        if keep == lines:
            return
        try:
            with files.atomic_file(path) as tmp:
                tmp.write_text("".join(keep), encoding="utf-8")
        except OSError as err:
            raise CharRNNError(f"cannot write {path}: {err.strerror or err}; {UNWRITABLE}") \
                from None


def _claim(path: Path) -> int:
    """An open descriptor of the lock file ``path``, locked and holding our process id."""
    while True:
        flags = os.O_RDWR | os.O_CREAT | (0 if fcntl else os.O_EXCL)
        try:
            fd = os.open(path, flags, 0o644)
        except FileExistsError:                # no flock: a stale file is one of a dead pid
            if _alive(*_holder(path)):
                raise CharRNNError(_busy(path)) from None
            path.unlink(missing_ok=True)
            continue
        if fcntl:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise CharRNNError(_busy(path)) from None
            if not _same_file(path, fd):       # its last holder removed it meanwhile
                os.close(fd)
                continue
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()} {socket.gethostname()}\n".encode())
        return fd


def _holder(path: Path) -> tuple[Optional[int], str]:
    """(process id, host) written in a lock file; (None, "") when unreadable."""
    try:
        pid, host = path.read_text(encoding="utf-8").split()[:2]
        return int(pid), host
    except (OSError, ValueError):
        return None, ""


def _alive(pid: Optional[int], host: str) -> bool:
    """Whether the process a lock file names may still run (no flock: Windows)."""
    if pid is None:
        return False          # empty or garbage: its writer died before writing
    if host != socket.gethostname():
        return True           # on another machine: assume it runs
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


def _busy(path: Path) -> str:
    pid, host = _holder(path)
    who = f"process {pid}" if pid else "another process"
    if host and host != socket.gethostname():
        who += f" on {host}"
    return (f"{path.parent} is in use by another charrnn run ({who}): wait for it to end or "
            "stop it, or choose another --out")


def _same_file(path: Path, fd: int) -> bool:
    try:
        return os.stat(path).st_ino == os.fstat(fd).st_ino
    except FileNotFoundError:
        return False


def _step_of(line: str) -> Optional[int]:
    try:
        return int(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError):
        return None           # a line cut short by a crash
