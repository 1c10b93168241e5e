"""Stage 7: checkpoints, one folder each, in the layout of Hugging Face's save_pretrained:

    config.json        model, tokenizer and training configuration, metrics, versions (JSON)
    model.safetensors  weights (safetensors: loading runs no code)
    tokenizer.json     the tokenizers-library tokenizer
    trainer_state.pt   only in ``last``: optimizer, step, data position, hidden state, RNG;
                       tensors and plain containers, read with torch.load(weights_only=True)
    README.md          the model card, in the Hugging Face Hub's format (charrnn/model/card.py)

This module is the one place that writes and reads config.json. A checkpoint folder is written
whole under a temporary name and renamed into place (charrnn/files.py), so a crash at any
moment leaves the previous one complete.
"""
from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any, Optional

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from charrnn import files
from charrnn.config import ModelConfig, TrainConfig
from charrnn.errors import CharRNNError
from charrnn.model import card, hub
from charrnn.model.network import CharRNN
from charrnn.data.tokenizer import CharTokenizer
from charrnn.version import __version__

FORMAT = "charrnn"
FORMAT_VERSION = 1
FILES = ("config.json", "model.safetensors", "tokenizer.json")
STATE_FILE = "trainer_state.pt"
CARD = card.CARD          # README.md: in every checkpoint written since 0.3, not required
BROKEN = "use the run's other checkpoint (best or last) or train it again"


def header(model: CharRNN) -> dict:
    """The keys config.json opens with: format, format_version, the charrnn and torch versions
    and the model's configuration."""
    return {"format": FORMAT, "format_version": FORMAT_VERSION, "charrnn_version": __version__,
            "torch_version": torch.__version__, "model": vars(model.config).copy()}


def checkpoint_config(model: CharRNN, tokenizer: CharTokenizer, train: Optional[TrainConfig],
                      metrics: dict[str, Any], corpus: Optional[str] = None) -> dict:
    """The config.json of a checkpoint (the schema, in one place)."""
    config = {**header(model),
              "tokenizer": {"type": "char", "vocab_size": tokenizer.vocab_size},
              "metrics": metrics}
    if corpus is not None:
        config["corpus"] = str(corpus)
    if train is not None:
        config["train"] = train.to_dict()
    return config


def save_checkpoint(folder: Path, model: CharRNN, tokenizer: CharTokenizer, config: dict,
                    trainer_state: Optional[dict] = None, sample: Optional[dict] = None) -> None:
    """Write a complete checkpoint to ``folder``, replacing any previous one atomically.

    ``config`` is the config.json dict (see ``checkpoint_config``; the format and version keys
    are filled in if missing: ``header``). README.md, the model card (charrnn/model/card.py),
    is written from it and ``sample`` (a samples.jsonl record, or None). Raises CharRNNError when the disk is full or the
    folder is not writable; the previous checkpoint is then intact."""
    config = {**header(model), **config}
    try:
        with files.atomic_folder(Path(folder)) as tmp:
            files.write_bytes(tmp / "config.json", json.dumps(config, indent=2).encode())
            weights = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
            # (serialised here and written by open(): safetensors' save_file creates the file
            # readable by its owner alone, 0600, whatever the umask says)
            files.write_bytes(tmp / "model.safetensors", save(weights, metadata={"format": "pt"}))
            tokenizer.save(tmp / "tokenizer.json")
            files.write_bytes(tmp / CARD, card.card_text(config, sample, card.card_name(folder))
                              .encode("utf-8"))
            if trainer_state is not None:
                torch.save(trainer_state, tmp / STATE_FILE)
    except (OSError, SafetensorError, RuntimeError) as err:
        # Disk full or a read-only folder: safetensors and torch.save report it as their own
        # errors, not as OSError.
        reason = getattr(err, "strerror", None) or str(err).strip().splitlines()[0][:200]
        raise CharRNNError(f"cannot write checkpoint {folder}: {reason}; the previous "
                           "checkpoint is intact: free disk space or make the folder "
                           "writable (or choose another --out), then --resume") from None


def recover(run_dir: Path) -> None:
    """Undo a checkpoint save interrupted between its two renames; drop half-written temp
    folders of dead processes (charrnn/files.py). Raises OSError on a read-only folder."""
    files.undo_interrupted_swaps(run_dir, allowed=(*FILES, STATE_FILE, CARD),
                                 complete=FILES)


def find_checkpoint(path: str | Path, prefer: str = "best") -> Path:
    """The checkpoint folder that ``path`` means: itself, or its ``best``/``last`` subfolder;
    for a str ``hf:USER/NAME[@REVISION]``, the Hub model's snapshot in the Hugging Face cache,
    downloaded if needed (charrnn/model/hub.py).

    Cleans up the leftovers of an interrupted save on the way (``recover``). Raises
    CharRNNError when there is no checkpoint there."""
    if hub.is_hub_id(path):
        return hub.download(path)
    path = Path(path)
    if not path.exists() and path.name in ("best", "last") and path.parent.is_dir():
        _try_recover(path.parent)    # a `best`/`last` folder whose save was interrupted
    if not path.exists():
        raise CharRNNError(f"checkpoint {path} does not exist: give a run folder or a "
                           "checkpoint folder (one that holds config.json)")
    if path.is_file():
        raise CharRNNError(f"{path} is a file, not a charrnn checkpoint folder "
                           "(give the folder that holds config.json)")
    if (path / "config.json").exists():
        return path
    _try_recover(path)
    for name in [prefer] + [n for n in ("best", "last") if n != prefer]:
        if (path / name / "config.json").exists():
            return path / name
    raise CharRNNError(f"{path} holds no charrnn checkpoint (no config.json): give a run "
                       "folder made by charrnn train, or its best/ or last/")


def complete_cards(run_dir: Path, names=("best", "last")) -> None:
    """After a training run, outside its time limit: give every checkpoint of ``run_dir`` named
    in ``names`` whose card has no sample one drawn with its own seeded generator
    (card.py's ``draw_sample``), and rewrite the card; torch's random state is left as it
    was. Raises CharRNNError for an unreadable checkpoint and OSError for a folder that
    cannot be written."""
    for name in names:
        folder = Path(run_dir) / name
        path = folder / CARD
        if not (folder / "config.json").is_file() or \
                (path.is_file() and card.NO_SAMPLE not in path.read_text(encoding="utf-8")):
            continue
        with torch.random.fork_rng(devices=[]):    # building the net draws initial weights
            net, tokenizer, config = load_checkpoint(folder, "cpu")
        card.write_card(folder, config, card.draw_sample(net, tokenizer))


def _try_recover(folder: Path) -> None:
    try:
        recover(folder)
    except OSError:
        pass  # a read-only folder: nothing to recover, and loading still works


def read_config(folder: Path) -> dict:
    """The config.json of a checkpoint folder, checked. Raises CharRNNError when a file is
    missing, config.json is corrupt, not charrnn's, or of a newer format."""
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
    # Saved before charrnn drew its own dropout mask: the run keeps F.dropout's, so that
    # --resume goes on bit for bit.
    train = config.get("train")
    for model in (config.get("model"), train.get("model") if isinstance(train, dict) else None):
        if isinstance(model, dict):
            model.setdefault("dropout_mask", "bernoulli")
    return config


def saved_train_config(folder: Path) -> TrainConfig:
    """The training configuration in a checkpoint's config.json (for --resume). Paths in it
    are never trusted: ``out`` and ``cache_dir`` are dropped. Raises CharRNNError."""
    saved = read_config(folder).get("train", {})
    saved = {k: v for k, v in saved.items() if k not in ("out", "cache_dir")} \
        if isinstance(saved, dict) else {}
    try:
        return TrainConfig.from_dict(saved).validate()
    except (TypeError, ValueError, AttributeError, CharRNNError) as err:
        raise CharRNNError(f"checkpoint {folder}: bad training configuration in config.json "
                           f"({err}); start again with --overwrite") from None


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu",
                    prefer: str = "best") -> tuple[CharRNN, CharTokenizer, dict]:
    """(model in eval mode on ``device``, tokenizer, config dict) from a checkpoint or run
    folder (``prefer``: which of best/last a run folder gives). May clean up the leftovers of
    an interrupted save. Raises CharRNNError for a missing, corrupt or foreign checkpoint."""
    folder = find_checkpoint(path, prefer)
    config = read_config(folder)
    tokenizer = CharTokenizer.load(folder / "tokenizer.json")
    try:
        model_config = ModelConfig(**config["model"]).validate()
        model = CharRNN(model_config)
    except (TypeError, KeyError, ValueError, CharRNNError, RuntimeError, MemoryError) as err:
        # (RuntimeError, MemoryError: a config.json asking for a model too large to allocate)
        raise CharRNNError(f"checkpoint {folder}: bad model configuration "
                           f"({_first_line(err)[:200]}); "
                           f"{BROKEN}") from None
    if model_config.vocab_size != tokenizer.vocab_size:
        raise CharRNNError(f"checkpoint {folder}: model and tokenizer.json disagree on the "
                           f"vocabulary size; {BROKEN}")
    try:
        model.load_state_dict(load_file(folder / "model.safetensors"), strict=True)
    except (SafetensorError, OSError, RuntimeError, ValueError) as err:
        raise CharRNNError(f"checkpoint {folder}: model.safetensors is corrupt "
                           f"({_first_line(err)}); {BROKEN}") from None
    return model.to(device).eval(), tokenizer, config


def load_trainer_state(folder: Path, device: str | torch.device = "cpu") -> dict:
    """The optimizer and loop state saved beside ``last``. Read with
    torch.load(weights_only=True): a file holding anything but tensors and plain containers is
    refused, never unpickled. Raises CharRNNError for a missing, corrupt or unsafe file."""
    path = Path(folder) / STATE_FILE
    if not path.is_file():
        raise CharRNNError(f"checkpoint {folder} has no {STATE_FILE}: it cannot be resumed; "
                           "start again with --overwrite")
    try:
        return torch.load(path, map_location=device, weights_only=True)
    except pickle.UnpicklingError as err:
        if "weights only" not in str(err).lower():
            raise CharRNNError(f"checkpoint {folder}: {STATE_FILE} is corrupt or unsafe; it "
                               "cannot be resumed: start a new run from its weights with "
                               "--init-from (or again with --overwrite)") from None
        # torch's own message goes on to suggest weights_only=False: never advise that.
        raise CharRNNError(f"checkpoint {folder}: {STATE_FILE} is corrupt or unsafe: it holds "
                           "objects other than tensors and plain containers, which are never "
                           "loaded (they could run code); it cannot be resumed: start a new "
                           "run from its weights with --init-from (or again with "
                           "--overwrite)") from None
    except (RuntimeError, EOFError, OSError, ValueError, AttributeError, TypeError) as err:
        raise CharRNNError(f"checkpoint {folder}: {STATE_FILE} is corrupt or unsafe "
                           f"({_first_line(err)[:200]}); it cannot be resumed: start a new "
                           "run from its weights with --init-from (or again with "
                           "--overwrite)") from None


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
