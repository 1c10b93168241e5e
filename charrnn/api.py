"""The Python API: everything the CLI does, a script can do.

    import charrnn
    model = charrnn.load("checkpoints/shakespeare")
    print(model.generate("ROMEO:", length=200, temperature=0.8, seed=1))
    loss, bpc = model.evaluate(open("play.txt").read())

Loading and sampling import neither the trainer nor torch.distributed's wrappers: ``train``
imports the training stack when it is called.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Optional, Union

import torch

from .checkpoint import find_checkpoint, load_checkpoint, read_config, saved_train_config
from .config import (PRESETS, ExportConfig, ModelConfig, SampleConfig, ServeConfig, TrainConfig,
                     preset)
from .corpus import Corpus
from .device import resolve_device, warn_if_bf16_is_emulated
from .errors import CharRNNError, OptionError
from .evaluate import LN2, eval_streams, evaluate
from .model import CharRNN
from .options import declared
from .sampler import generate, stream
from .tokenizer import CharTokenizer

if TYPE_CHECKING:
    from .trainer import TrainResult

__all__ = ["Model", "load", "train", "train_run", "train_config", "checkpoint_info", "preset",
           "PRESETS", "ModelConfig", "TrainConfig", "SampleConfig", "declared", "serve",
           "ServeConfig", "ExportConfig"]


@dataclass
class Evaluation:
    loss: float          # nats per character
    bpc: float           # bits per character
    num_chars: int
    unknown_chars: list  # characters of the text outside the vocabulary (counted as <unk>)


class Model:
    """A trained CharRNN with its tokenizer and the configuration it was saved with."""

    def __init__(self, net: CharRNN, tokenizer: CharTokenizer, config: Optional[dict] = None):
        self.net, self.tokenizer, self.config = net, tokenizer, config or {}

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    def generate(self, prime: str = "", config: Optional[SampleConfig] = None,
                 on_text: Optional[Callable[[int, str], None]] = None,
                 **options: Any) -> Union[str, list[str]]:
        """``prime`` followed by sampled characters. ``options`` are SampleConfig's fields
        (length, temperature, top_k, top_p, greedy, seed, num_samples, stop, precision; ``n``
        is an alias of num_samples), or pass a whole ``config``. Returns one string, or a list
        of ``num_samples`` strings (generated together as one batch) when a number of samples
        or a config is given. ``on_text(sample, text)`` receives characters as they come.
        Raises CharRNNError for an option out of range or a prime the model cannot read."""
        asked_for_list = config is not None or "num_samples" in options or "n" in options
        texts = generate(self.net, self.tokenizer, prime, self._sample_config(config, options),
                         on_text)
        return texts if asked_for_list else texts[0]

    def stream(self, prime: str = "", config: Optional[SampleConfig] = None,
               **options: Any) -> Iterator[str]:
        """One sample as it is generated: an iterator of text pieces, ``prime`` first, then
        the characters as they come; ``"".join`` of it is what ``generate`` returns with the
        same options and seed (the same engine makes both). Options as for ``generate``
        (num_samples must be 1). Raises CharRNNError for an option out of range or a prime the
        model cannot read."""
        return stream(self.net, self.tokenizer, prime, self._sample_config(config, options))

    def export(self, out: Union[str, Path], format: str = "onnx", force: bool = False):
        """Write the model to the folder ``out`` in ``format`` (onnx: model.onnx, tokenizer.json,
        charrnn.json; see charrnn/export.py) after checking it against PyTorch; returns the
        parity figures (an export.Parity: max_logit_diff, max_tv). Raises CharRNNError when
        parity is out of tolerance (nothing is written unless ``force``) or ``out`` holds
        something else."""
        settings = ExportConfig(out=str(out), format=format, force=force).validate()
        # Imported here: loading and sampling must not pay for torch.onnx and onnxruntime.
        from .export import export_onnx
        return export_onnx(self.net, self.tokenizer, Path(settings.out), settings.force)

    def _sample_config(self, config: Optional[SampleConfig], options: dict) -> SampleConfig:
        if "n" in options:
            options["num_samples"] = options.pop("n")
        unknown = set(options) - {f.name for f in dataclasses.fields(SampleConfig)}
        if unknown:
            raise CharRNNError(f"unknown sampling option {sorted(unknown)[0]!r}: use "
                               f"{', '.join(f.name for f in dataclasses.fields(SampleConfig))}")
        config = dataclasses.replace(config or SampleConfig(), **options)
        if config.precision == "bf16":
            warn_if_bf16_is_emulated(self.device, "sampling")
        return config

    def evaluate(self, text: str, seq_len: int = 256) -> tuple[float, float]:
        """(loss in nats per character, bits per character) of predicting ``text``, hidden
        state carried. Raises CharRNNError for a text under 2 characters."""
        if len(text) < 2:
            raise CharRNNError("text to evaluate needs at least 2 characters")
        ids = self.tokenizer.encode(text)
        loss = evaluate(self.net, eval_streams(ids, min(seq_len, len(ids) - 1)), self.device)
        return loss, loss / LN2

    def evaluate_file(self, path: str, encoding: Optional[str] = None,
                      errors: Optional[str] = None) -> Evaluation:
        """Evaluate a text file (or folder, glob), read as training reads it: by default with
        the encoding and error handling the model was trained with. Raises CharRNNError."""
        train = self.config.get("train") or {}
        corpus = Corpus(path, encoding or train.get("encoding", "utf-8"),
                        errors or train.get("errors", "strict"))
        text = "".join(block.text for block in corpus.blocks())
        loss, bpc = self.evaluate(text)
        return Evaluation(loss, bpc, len(text), self.tokenizer.unknown_chars(text))


def load(path: Union[str, Path], device: str = "auto") -> Model:
    """A checkpoint folder, or a training run's folder (its best model), on ``device``.
    May clean up the leftovers of an interrupted save. Raises CharRNNError."""
    net, tokenizer, config = load_checkpoint(path, resolve_device(device))
    return Model(net, tokenizer, config)


def checkpoint_info(path: Union[str, Path]) -> tuple[Path, dict]:
    """(the checkpoint folder ``path`` means, its config.json). Raises CharRNNError."""
    folder = find_checkpoint(path)
    return folder, read_config(folder)


def train(corpus: str, config: Optional[TrainConfig] = None,
          callback: Optional[Callable[[int, dict], bool]] = None) -> Model:
    """Train on ``corpus`` (file, folder, glob or hf:DATASET); the best model, loaded.

    The run folder is ``config.out`` (default checkpoints/<corpus name>); the figures of the
    run are in ``model.result`` (a TrainResult). Raises CharRNNError."""
    config = config or TrainConfig()
    result = train_run(corpus, config, callback)
    model = load(result.out, device=config.device)
    model.result = result
    return model


def train_run(corpus: str, config: TrainConfig,
              callback: Optional[Callable[[int, dict], bool]] = None) -> "TrainResult":
    """Train and return the run's figures without loading the model (what the CLI uses)."""
    # Imported here, not above: loading and sampling must not pay for the training stack.
    from .trainer import train as run_training
    return run_training(corpus, config, callback)


def train_config(corpus: str, out: Optional[str] = None, preset_name: str = "auto",
                 resume: bool = False, **options: Any) -> TrainConfig:
    """The configuration of a run: the preset (``auto``: gpu-3m on CUDA, else cpu-10m) or,
    with ``resume``, the run's saved settings, with ``options`` (TrainConfig's and
    ModelConfig's fields; None means not given) on top. A step or epoch limit given without
    a time limit replaces the preset's time limit. Raises CharRNNError (OptionError)."""
    given = {k: v for k, v in options.items() if v is not None}
    out = Path(out) if out else Path("checkpoints") / Corpus(corpus).name
    model_fields = {item.name: item for item in declared(ModelConfig)}
    if resume:
        fixed = [item for item in [*declared(ModelConfig), *declared(TrainConfig)]
                 if not item.spec.on_resume and item.name in given]
        if fixed:
            raise OptionError(fixed[0].name, "cannot change when a run is resumed: drop it "
                                             "(start a new run to change it)")
        config = saved_train_config(out / "last") if (out / "last").exists() else TrainConfig()
    else:
        if preset_name == "auto":
            device = resolve_device(given.get("device", "auto"))
            preset_name = "gpu-3m" if device.type == "cuda" else "cpu-10m"
        config = preset(preset_name)
    for key, value in given.items():
        target = config.model if key in model_fields else config
        if not hasattr(target, key):
            raise CharRNNError(f"unknown training option {key!r}")
        setattr(target, key, value)
    if ("steps" in given or "epochs" in given) and "time_limit" not in given:
        config.time_limit = None     # the limit the user gives is the one that holds
    config.out, config.resume = str(out), resume
    return config.validate()


def serve(checkpoint: Union[str, Path], settings: Optional[ServeConfig] = None,
          ready: Callable[[str], None] = print) -> None:
    """Serve the model in ``checkpoint`` over HTTP until SIGINT or SIGTERM (charrnn/serve.py,
    charrnn/server.py); ``ready(url)`` is called once it listens (port 0: a free port).
    Raises CharRNNError for a bad setting or checkpoint, or an address it cannot bind."""
    settings = (settings or ServeConfig()).validate()
    folder, _ = checkpoint_info(checkpoint)
    device = resolve_device(settings.device)
    if settings.precision == "bf16":
        warn_if_bf16_is_emulated(device, "sampling")
    net, tokenizer, config = load_checkpoint(folder, device)
    # Imported here, not above: `import charrnn` must not load FastAPI and uvicorn.
    from .server import run
    run(net, tokenizer, {"folder": str(folder), "config": config}, settings, ready)
