"""Stage 7: checkpoints, one folder each, in the layout of Hugging Face's save_pretrained:

    config.json        model, tokenizer and training configuration, metrics, versions (JSON)
    model.safetensors  weights (safetensors: loading runs no code)
    tokenizer.json     the tokenizers-library tokenizer
    trainer_state.pt   only in ``last``: optimizer, step, data position, hidden state, RNG;
                       tensors and plain containers, read with torch.load(weights_only=True)

A training run's folder holds ``best/``, ``last/`` and ``metrics.jsonl``. A checkpoint folder is
written whole under a temporary name and renamed into place, so a crash at any moment leaves the
previous one complete.
"""
from __future__ import annotations

import json
import os
import pickle
import shutil
from pathlib import Path
from typing import Any, Optional

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .config import ModelConfig
from .errors import CharRNNError
from .model import CharRNN
from .tokenizer import CharTokenizer

FORMAT = "charrnn"
FORMAT_VERSION = 1
FILES = ("config.json", "model.safetensors", "tokenizer.json")
STATE_FILE = "trainer_state.pt"
BROKEN = "use the run's other checkpoint (best or last) or train it again"


def save_checkpoint(folder: Path, model: CharRNN, tokenizer: CharTokenizer, info: dict[str, Any],
                    trainer_state: Optional[dict] = None) -> None:
    """Write a complete checkpoint to ``folder``, replacing any previous one atomically."""
    from . import __version__

    folder = Path(folder)
    tmp = folder.with_name(f".tmp-{folder.name}-{os.getpid()}")
    try:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        config = {"format": FORMAT, "format_version": FORMAT_VERSION,
                  "charrnn_version": __version__, "torch_version": torch.__version__,
                  "model": vars(model.config).copy(), **info}
        _write(tmp / "config.json", json.dumps(config, indent=2).encode())
        weights = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
        save_file(weights, tmp / "model.safetensors", metadata={"format": "pt"})
        tokenizer.save(tmp / "tokenizer.json")
        if trainer_state is not None:
            torch.save(trainer_state, tmp / STATE_FILE)
        for name in os.listdir(tmp):
            _fsync(tmp / name)
        _swap_into_place(tmp, folder)
    except (OSError, SafetensorError, RuntimeError) as err:
        # Disk full or a read-only folder: safetensors and torch.save report it as their own
        # errors, not as OSError.
        shutil.rmtree(tmp, ignore_errors=True)
        reason = getattr(err, "strerror", None) or str(err).strip().splitlines()[0][:200]
        raise CharRNNError(f"cannot write checkpoint {folder}: {reason}; the previous "
                           "checkpoint is intact: free disk space or make the folder "
                           "writable (or choose another --out), then --resume") from None


def _write(path: Path, data: bytes) -> None:
    with open(path, "wb") as handle:
        handle.write(data)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _swap_into_place(tmp: Path, folder: Path) -> None:
    # Directories cannot be renamed over a non-empty one: move the old one aside first. A crash
    # between the two renames leaves `.old-<name>-<pid>`, which recover() puts back.
    old = folder.with_name(f".old-{folder.name}-{os.getpid()}")
    if folder.exists():
        shutil.rmtree(old, ignore_errors=True)   # a stale leftover of an earlier process
        os.rename(folder, old)
    try:
        os.rename(tmp, folder)
    except OSError:
        if old.exists() and not folder.exists():
            os.rename(old, folder)               # keep the previous checkpoint where it was
        raise
    _fsync(folder.parent)
    shutil.rmtree(old, ignore_errors=True)


def recover(run_dir: Path) -> None:
    """Undo a save interrupted between its two renames; drop half-written temp folders.

    Leftovers of a process that is still running (a save in progress) are left alone, and so
    is anything that is not a checkpoint folder (the user's own `.tmp-...` folders)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return
    for entry in sorted(run_dir.iterdir()):
        if not entry.name.startswith((".old-", ".tmp-")) or not _ours(entry) \
                or _writer_alive(entry.name):
            continue
        if entry.name.startswith(".old-"):
            name = entry.name[len(".old-"):].rsplit("-", 1)[0]
            target = run_dir / name
            if not target.exists() and _is_complete(entry):
                os.rename(entry, target)
            else:
                shutil.rmtree(entry, ignore_errors=True)
        elif entry.name.startswith(".tmp-"):
            shutil.rmtree(entry, ignore_errors=True)


def _ours(entry: Path) -> bool:
    """A folder that save_checkpoint left: `.tmp-NAME-PID`/`.old-NAME-PID`, holding no other
    files than a checkpoint's (and safetensors' own `.tmpXXXXXX` while it writes)."""
    pid = entry.name.rsplit("-", 1)[-1]
    try:
        return pid.isdigit() and entry.is_dir() and not entry.is_symlink() and all(
            name in (*FILES, STATE_FILE) or name.startswith(".tmp") for name in os.listdir(entry))
    except OSError:       # removed meanwhile
        return False


def _writer_alive(name: str) -> bool:
    """Whether the process whose id ends a `.tmp-`/`.old-` folder name still runs."""
    pid = name.rsplit("-", 1)[-1]
    if not pid.isdigit() or int(pid) == os.getpid():
        return False
    try:
        os.kill(int(pid), 0)
    except (ProcessLookupError, OverflowError):
        return False
    except PermissionError:
        return True    # another user's process
    return True


def _is_complete(folder: Path) -> bool:
    return all((folder / name).is_file() for name in FILES)


def find_checkpoint(path: str | Path, prefer: str = "best") -> Path:
    """The checkpoint folder that ``path`` means: itself, or its ``best``/``last`` subfolder."""
    path = Path(path)
    if not path.exists() and path.name in ("best", "last") and path.parent.is_dir():
        try:
            recover(path.parent)    # a `best`/`last` folder whose save was interrupted
        except OSError:
            pass
    if not path.exists():
        raise CharRNNError(f"checkpoint {path} does not exist: give a run folder or a "
                           "checkpoint folder (one that holds config.json)")
    if path.is_file():
        raise CharRNNError(f"{path} is a file, not a charrnn checkpoint folder "
                           "(give the folder that holds config.json)")
    if (path / "config.json").exists():
        return path
    try:
        recover(path)
    except OSError:
        pass  # a read-only folder: nothing to recover, and loading still works
    order = [prefer] + [n for n in ("best", "last") if n != prefer]
    for name in order:
        if (path / name / "config.json").exists():
            return path / name
    raise CharRNNError(f"{path} holds no charrnn checkpoint (no config.json): give a run "
                       "folder made by charrnn train, or its best/ or last/")


def read_config(folder: Path) -> dict:
    folder = Path(folder)
    missing = [name for name in FILES if not (folder / name).is_file()]
    if missing:
        raise CharRNNError(f"checkpoint {folder} is incomplete: missing {', '.join(missing)}; "
                           f"{BROKEN}")
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise CharRNNError(f"checkpoint {folder}: config.json is corrupt ({err}); "
                           f"{BROKEN}") from None
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise CharRNNError(f"{folder} is not a charrnn checkpoint (config.json has no "
                           f"'format': '{FORMAT}'): give a folder written by charrnn train")
    version = config.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CharRNNError(f"checkpoint {folder} has format version {version}, newer than this "
                           f"charrnn reads ({FORMAT_VERSION}): upgrade charrnn")
    return config


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu",
                    prefer: str = "best") -> tuple[CharRNN, CharTokenizer, dict]:
    """(model in eval mode on ``device``, tokenizer, config dict) from a checkpoint or run folder."""
    folder = find_checkpoint(path, prefer)
    config = read_config(folder)
    tokenizer = CharTokenizer.load(folder / "tokenizer.json")
    try:
        model_config = ModelConfig(**config["model"]).validate()
        model = CharRNN(model_config)
    except (TypeError, KeyError, ValueError, CharRNNError) as err:
        raise CharRNNError(f"checkpoint {folder}: bad model configuration ({err}); "
                           f"{BROKEN}") from None
    if model_config.vocab_size != tokenizer.vocab_size:
        raise CharRNNError(f"checkpoint {folder}: model and tokenizer.json disagree on the "
                           f"vocabulary size; {BROKEN}")
    try:
        weights = load_file(folder / "model.safetensors")
        model.load_state_dict(weights, strict=True)
    except (SafetensorError, OSError, RuntimeError, ValueError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CharRNNError(f"checkpoint {folder}: model.safetensors is corrupt ({first}); "
                           f"{BROKEN}") from None
    return model.to(device).eval(), tokenizer, config


def load_trainer_state(folder: Path, device: str | torch.device = "cpu") -> dict:
    """The optimizer and loop state saved beside ``last``; never unpickles arbitrary objects."""
    path = Path(folder) / STATE_FILE
    if not path.is_file():
        raise CharRNNError(f"checkpoint {folder} has no {STATE_FILE}: it cannot be resumed; "
                           "start again with --overwrite")
    try:
        return torch.load(path, map_location=device, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError,
            AttributeError, TypeError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CharRNNError(f"checkpoint {folder}: {STATE_FILE} is corrupt or unsafe "
                           f"({first[:200]}); it cannot be resumed: start again with "
                           "--overwrite") from None
