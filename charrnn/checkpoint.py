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
    except OSError as err:
        shutil.rmtree(tmp, ignore_errors=True)
        raise CharRNNError(f"cannot write checkpoint {folder}: {err.strerror or err}; "
                           "the previous checkpoint is intact") from None


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
        os.rename(folder, old)
    os.rename(tmp, folder)
    _fsync(folder.parent)
    shutil.rmtree(old, ignore_errors=True)


def recover(run_dir: Path) -> None:
    """Undo a save interrupted between its two renames; drop half-written temp folders."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return
    for entry in sorted(run_dir.iterdir()):
        if entry.name.startswith(".old-"):
            name = entry.name[len(".old-"):].rsplit("-", 1)[0]
            target = run_dir / name
            if not target.exists() and _is_complete(entry):
                os.rename(entry, target)
            else:
                shutil.rmtree(entry, ignore_errors=True)
        elif entry.name.startswith(".tmp-"):
            shutil.rmtree(entry, ignore_errors=True)


def _is_complete(folder: Path) -> bool:
    return all((folder / name).is_file() for name in FILES)


def find_checkpoint(path: str | Path, prefer: str = "best") -> Path:
    """The checkpoint folder that ``path`` means: itself, or its ``best``/``last`` subfolder."""
    path = Path(path)
    if not path.exists():
        raise CharRNNError(f"checkpoint {path} does not exist")
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
    raise CharRNNError(f"{path} holds no charrnn checkpoint (no config.json)")


def read_config(folder: Path) -> dict:
    folder = Path(folder)
    missing = [name for name in FILES if not (folder / name).is_file()]
    if missing:
        raise CharRNNError(f"checkpoint {folder} is incomplete: missing {', '.join(missing)}")
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise CharRNNError(f"checkpoint {folder}: config.json is corrupt ({err})") from None
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise CharRNNError(f"{folder} is not a charrnn checkpoint (config.json has no "
                           f"'format': '{FORMAT}')")
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
        model_config = ModelConfig(**config["model"])
        model = CharRNN(model_config)
    except (TypeError, KeyError) as err:
        raise CharRNNError(f"checkpoint {folder}: bad model configuration ({err})") from None
    if model_config.vocab_size != tokenizer.vocab_size:
        raise CharRNNError(f"checkpoint {folder}: model and tokenizer.json disagree on the "
                           "vocabulary size")
    try:
        weights = load_file(folder / "model.safetensors")
        model.load_state_dict(weights, strict=True)
    except (SafetensorError, OSError, RuntimeError, ValueError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CharRNNError(f"checkpoint {folder}: model.safetensors is corrupt ({first})") from None
    return model.to(device).eval(), tokenizer, config


def load_trainer_state(folder: Path, device: str | torch.device = "cpu") -> dict:
    """The optimizer and loop state saved beside ``last``; never unpickles arbitrary objects."""
    path = Path(folder) / STATE_FILE
    if not path.is_file():
        raise CharRNNError(f"checkpoint {folder} has no {STATE_FILE}: it cannot be resumed")
    try:
        return torch.load(path, map_location=device, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError,
            AttributeError, TypeError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CharRNNError(f"checkpoint {folder}: {STATE_FILE} is corrupt or unsafe "
                           f"({first[:200]})") from None
