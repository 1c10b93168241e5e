"""The Python API: everything the CLI does, a script can do.

    import charrnn
    model = charrnn.load("checkpoints/shakespeare")
    print(model.generate("ROMEO:", length=200, temperature=0.8, seed=1))
    loss, bpc = model.evaluate(open("play.txt").read())

Loading and sampling import neither the trainer nor torch.distributed's wrappers: ``train``
imports the training stack when it is called.

The settings are the dataclasses of charrnn/config.py (ModelConfig, TrainConfig, SampleConfig,
...), and ``declared(cls)`` lists the options a class declares (name, type, default, help,
range; charrnn/options.py): the command line builds every flag and its --help from it, and a
script may too. A finished run's ``TrainResult`` says why it stopped (``stop_reason``).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Optional, Sequence, Union

import numpy as np
import torch

from charrnn.model.card import latest_sample
from charrnn.model.checkpoint import find_checkpoint, load_checkpoint, read_config
from charrnn.config import (CACHE_DIR, ExportConfig, ModelConfig, NoveltyConfig, ReportConfig,
                            SampleConfig, ServeConfig, TrainConfig)
from charrnn.data.corpus import Corpus
from charrnn.model.device import resolve_device, warn_if_bf16_is_emulated
from charrnn.errors import CharRNNError, note
from charrnn.model.evaluate import LN2, eval_batches, evaluate
from charrnn.model.network import CharRNN
from charrnn.insight.novelty import TrainingText
from charrnn.options import declared, reject_unknown
from charrnn.training.presets import PRESETS, preset
from charrnn.sampling.sampler import generate, stream
from charrnn.data.tokenizer import CharTokenizer
from charrnn.training.launch import train_config, train_run
from charrnn.training.runfolder import SAMPLES
from charrnn.version import __version__

if TYPE_CHECKING:
    from charrnn.insight.novelty import Novelty
    from charrnn.insight.report import ReportSummary

__all__ = ["Model", "load", "train", "train_run", "train_config", "checkpoint_info",
           "last_sample", "preset", "PRESETS", "ModelConfig", "TrainConfig", "SampleConfig",
           "ReportConfig", "NoveltyConfig", "ServeConfig", "ExportConfig", "declared",
           "plot_runs", "serve", "__version__"]


@dataclass
class Evaluation:
    """What ``Model.evaluate_file`` measured."""
    loss: float          # nats per character
    bpc: float           # bits per character
    num_chars: int
    unknown_chars: list  # characters of the text outside the vocabulary (counted as <unk>)


class Model:
    """A trained CharRNN (``net``) with its tokenizer and ``saved_config``, the config.json dict
    it was saved with (model, train, metrics, versions; see charrnn/model/checkpoint.py)."""

    def __init__(self, net: CharRNN, tokenizer: CharTokenizer,
                 saved_config: Optional[dict] = None):
        self.net, self.tokenizer, self.saved_config = net, tokenizer, saved_config or {}

    @property
    def config(self) -> dict:
        """``saved_config`` under its pre-0.3 name, read-only (every other ``.config`` in
        charrnn is a dataclass; this one is the checkpoint's config.json dict)."""
        return self.saved_config

    @property
    def device(self) -> torch.device:
        """Where the weights are (cpu, cuda:N or mps)."""
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
        if not isinstance(prime, str):
            raise CharRNNError(f"prime must be text (a str), got {type(prime).__name__}")
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
        charrnn.json; see charrnn/export/onnx.py. web: index.html, a page that generates in the
        browser, and charrnn-web.json; see charrnn/export/web.py) after checking it against
        PyTorch; returns the parity figures (onnx: an onnx.Parity: max_logit_diff, max_tv; web:
        a web.WebExport: precision, page_bytes, max_tv). Raises CharRNNError when parity is out
        of tolerance (nothing is written unless ``force``), ``out`` holds something else, or
        (web) the model is too large for a page."""
        settings = ExportConfig(out=str(out), format=format, force=force).validate()
        if settings.format == "web":
            from charrnn.export.web import export_web    # (lazily, as onnx below)
            return export_web(self.net, self.tokenizer, Path(settings.out), force=settings.force)
        # Imported here: loading and sampling must not pay for torch.onnx and onnxruntime.
        from charrnn.export.onnx import export_onnx
        return export_onnx(self.net, self.tokenizer, Path(settings.out), settings.force)

    def _sample_config(self, config: Optional[SampleConfig], options: dict) -> SampleConfig:
        if "n" in options:
            if "num_samples" in options:
                raise CharRNNError("give num_samples or its old name n, not both")
            options["num_samples"] = options.pop("n")
        reject_unknown("sampling", options, [f.name for f in dataclasses.fields(SampleConfig)])
        config = dataclasses.replace(config or SampleConfig(), **options)
        if config.precision == "bf16":
            warn_if_bf16_is_emulated(self.device, "sampling")
        return config

    def evaluate(self, text: str, seq_len: int = 256) -> tuple[float, float]:
        """(loss in nats per character, bits per character) of predicting ``text``, hidden
        state carried. Raises CharRNNError for a text under 2 characters."""
        loss = self._loss(self.tokenizer.encode(text), seq_len)
        return loss, loss / LN2

    def _loss(self, ids: np.ndarray, seq_len: int) -> float:
        """Nats per character of predicting ``ids`` (``evaluate``, chunks of at most
        ``seq_len``). Raises CharRNNError for fewer than 2 ids."""
        if len(ids) < 2:
            raise CharRNNError("text to evaluate needs at least 2 characters")
        return evaluate(self.net, eval_batches(ids, min(seq_len, len(ids) - 1)), self.device)

    def evaluate_file(self, path: str, encoding: Optional[str] = None,
                      errors: Optional[str] = None,
                      cache_dir: Optional[str] = None) -> Evaluation:
        """Evaluate a text file (or folder, glob), read as training reads it: by default with
        the encoding and error handling the model was trained with, in blocks, into the token
        cache (``cache_dir``, default data/cache), and evaluated from there: memory does not
        grow with the size of the text. Raises CharRNNError."""
        # Imported here: loading and sampling never need the cache.
        from charrnn.data.cache import load_ids, scan
        corpus = Corpus(path, *self._encoding(encoding, errors))
        info = scan(corpus)
        _, ids = load_ids(corpus, self.tokenizer, cache_dir or CACHE_DIR, info=info)
        loss = self._loss(ids, 256)
        seen = "".join(chr(codepoint) for codepoint in np.flatnonzero(info.counts))
        return Evaluation(loss, loss / LN2, len(ids), self.tokenizer.unknown_chars(seen))

    def report(self, text: str, path: Union[str, Path], config: Optional[ReportConfig] = None,
               title: Optional[str] = None, compare: Sequence[Union[str, Path, "Model"]] = (),
               **options: Any) -> "ReportSummary":
        """Write the HTML report of this model over ``text`` to ``path``: surprisal with the
        top-5 guesses, the state behind each guess (an LSTM's gates too), the neuron browser
        with the units most correlated with properties of the text, the gradient-norm curve
        (charrnn/insight/report.py). ``compare``: other models (Model objects, or folders
        ``load`` reads, loaded onto this model's device) whose gradient curves over the same
        text join this one's on one axis. ``options`` are ReportConfig's fields (max_chars,
        layer, unit, state, gradient_steps), or pass a whole ``config``. Returns a
        ReportSummary; its notes (a cut text, unknown characters) are also printed as notes.
        Raises CharRNNError (OptionError for a layer/unit/state the model lacks; a compared
        folder that cannot be loaded, before any work)."""
        from charrnn.insight.report import Compared, write_report   # lazily: sampling skips it
        config = _report_config(config, options)
        others = []
        if isinstance(compare, (str, Path, Model)):
            compare = [compare]                # one model, not the characters of its path
        for index, other in enumerate(compare, 2):
            if not isinstance(other, (str, Path, Model)):
                raise CharRNNError(f"compare takes run or checkpoint folders or Model objects, "
                                   f"not {type(other).__name__}")
            name = str(other) if isinstance(other, (str, Path)) else _run_name(other, index)
            model = load(other, device=str(self.device)) if isinstance(other, (str, Path)) \
                else other
            others.append(Compared(f"{name} ({_cell_name(model)})", model.net, model.tokenizer))
        summary = write_report(self.net, self.tokenizer, text, path, config,
                               title or "charrnn report", compare=others,
                               label=f"{_run_name(self, 1)} ({_cell_name(self)})")
        for line in summary.notes:
            note(line)
        return summary

    def report_file(self, textfile: str, path: Union[str, Path],
                    encoding: Optional[str] = None, errors: Optional[str] = None,
                    config: Optional[ReportConfig] = None,
                    compare: Sequence[Union[str, Path, "Model"]] = (),
                    **options: Any) -> "ReportSummary":
        """``report`` over a text file, read as training reads it (by default with the
        encoding and error handling the model was trained with); only the start of a long
        file is read. Raises CharRNNError for an empty or unreadable file."""
        config = _report_config(config, options)
        text = Corpus(textfile, *self._encoding(encoding, errors)).text_start(config.max_chars + 1)
        if not text:
            raise CharRNNError(f"{textfile} is empty: give it some text")
        return self.report(text, path, config, title=f"charrnn report: {Path(textfile).name}",
                           compare=compare)

    def training_text(self, corpus: Optional[str] = None, cache_dir: str = CACHE_DIR
                      ) -> "TrainingText":
        """The training split of the model's corpus, indexed for the memorisation check
        (charrnn/insight/novelty.py): the corpus the run recorded (checked against its digest) or
        ``corpus``; ids and index cached in ``cache_dir``. Its ``check(texts, prime, lines)``
        checks samples. Raises CharRNNError when the corpus cannot be found or has changed."""
        found = TrainingText(self.saved_config, self.tokenizer, corpus, cache_dir)
        for line in found.notes:
            note(line)
        return found

    def novelty(self, texts: Union[str, list], prime: str = "", corpus: Optional[str] = None,
                cache_dir: str = CACHE_DIR, lines: bool = False) -> "Novelty":
        """The memorisation check of samples ``texts`` (as ``generate`` returns them: ``prime``
        followed by generated text): for each, the longest span found verbatim in the
        training split of the model's corpus and the share of characters in copied spans of
        20 (MIN_SPAN) or more; with ``lines``, whether each generated line is a line of the
        corpus. See ``training_text`` for the corpus. Returns a Novelty (``.samples``,
        ``.summary()``, ``.describe()``). Raises CharRNNError."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        return self.training_text(corpus, cache_dir).check(texts, prime, lines)

    def _encoding(self, encoding: Optional[str], errors: Optional[str]) -> tuple[str, str]:
        """(encoding, errors): the ones given, else those the model was trained with."""
        train = self.saved_config.get("train") or {}
        return encoding or train.get("encoding", "utf-8"), errors or train.get("errors", "strict")


def _cell_name(model: Model) -> str:
    """"lstm 1x64": the cell, layers and units of ``model``."""
    config = model.net.config
    return f"{config.cell} {config.layers}x{config.hidden_size}"


def _run_name(model: Model, index: int) -> str:
    """The name of the run folder ``model`` was trained in, or "model INDEX"."""
    out = (model.saved_config.get("train") or {}).get("out")
    return Path(out).name if out else f"model {index}"


def _report_config(config: Optional[ReportConfig], options: dict) -> ReportConfig:
    """``config`` (or the defaults) with ``options`` set, checked. Raises CharRNNError."""
    reject_unknown("report", options, [f.name for f in dataclasses.fields(ReportConfig)])
    return dataclasses.replace(config or ReportConfig(), **options).validate()


def load(path: Union[str, Path], device: str = "auto") -> Model:
    """A checkpoint folder, a training run's folder (its best model), or a model on the
    Hugging Face Hub, ``"hf:USER/NAME[@REVISION]"`` (its checkpoint files downloaded into the
    Hugging Face cache, then loaded as a local folder: charrnn/model/hub.py), on ``device``.
    May clean up the leftovers of an interrupted save. Raises CharRNNError."""
    net, tokenizer, saved = load_checkpoint(path, resolve_device(device))
    return Model(net, tokenizer, saved)


def plot_runs(runs: list, out: Union[str, Path]) -> Path:
    """Compare training runs (run folders) in one PNG chart at ``out``: loss in bits/char
    against step and against time (charrnn/insight/plots.py). Raises CharRNNError."""
    from charrnn.insight import plots   # lazily: matplotlib is slow to import and sampling never needs it
    return plots.plot_runs(runs, out)


def checkpoint_info(path: Union[str, Path]) -> tuple[Path, dict]:
    """(the checkpoint folder ``path`` means, its config.json). Raises CharRNNError."""
    folder = find_checkpoint(path)
    return folder, read_config(folder)


def last_sample(checkpoint: Union[str, Path]) -> Optional[dict]:
    """The last record of samples.jsonl in the run folder that holds the checkpoint folder
    ``checkpoint`` (best/, last/ or a snapshot; see ``checkpoint_info``), or None: the sample
    taken at the latest --sample-every step (keys step, val_loss, prime, temperature, seed,
    text). Lines cut short by a crash are skipped."""
    return latest_sample(Path(checkpoint).parent / SAMPLES)


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


def serve(checkpoint: Union[str, Path], settings: Optional[ServeConfig] = None,
          ready: Callable[[str], None] = print) -> None:
    """Serve the model in ``checkpoint`` over HTTP until SIGINT or SIGTERM (charrnn/serve/app.py,
    charrnn/serve/server.py); ``ready(url)`` is called once it listens (port 0: a free port).
    Raises CharRNNError for a bad setting or checkpoint, or an address it cannot bind."""
    settings = (settings or ServeConfig()).validate()
    folder, _ = checkpoint_info(checkpoint)
    device = resolve_device(settings.device)
    if settings.precision == "bf16":
        warn_if_bf16_is_emulated(device, "sampling")
    net, tokenizer, saved = load_checkpoint(folder, device)
    # Imported here, not above: `import charrnn` must not load FastAPI and uvicorn.
    from charrnn.serve.server import serve_until_stopped
    serve_until_stopped(net, tokenizer, {"folder": str(folder), "config": saved}, settings, ready)
