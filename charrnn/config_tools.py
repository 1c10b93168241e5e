"""The options of the tools around a trained model: ``charrnn viz`` (ReportConfig), the
memorisation check (NoveltyConfig), ``charrnn serve`` (ServeConfig) and ``charrnn export``
(ExportConfig). Declared as charrnn/config.py declares training's (charrnn/options.py); kept
apart so that config.py holds what a run and its checkpoint need.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from . import options
from .errors import OptionError
from .options import option

DEVICES = ("auto", "cpu", "cuda", "mps")     # also training's --device choices (config.py)


@dataclass
class ReportConfig:
    """What the HTML report of ``charrnn viz`` (``Model.report``) covers and opens on."""
    max_chars: int = option(4000, "Characters of the text the report covers; a longer text is "
                            "cut, with a note.", low=2, high=10_000)
    layer: Optional[int] = option(None, "Layer the neuron view opens on (default: that of the "
                                  "unit most correlated with a text property).", low=0)
    unit: Optional[int] = option(None, "Unit the neuron view opens on.", low=0)
    state: str = option("auto", "State the neuron view opens on: cell (lstm's c) or hidden "
                        "(h); auto: that of the first listed unit.",
                        choices=("auto", "cell", "hidden"))
    gradient_steps: int = option(50, "How far back the gradient curve reaches: k = 1..this "
                                 "many characters.", low=1, high=1000)

    def validate(self) -> "ReportConfig":
        options.check(self)
        return self


@dataclass
class NoveltyConfig:
    """Where the memorisation check (``charrnn novelty``, ``sample --novelty``) finds the
    training text and caches its index."""
    corpus: Optional[str] = option(None, "The run's training text, when it has moved (default: "
                                   "the corpus the run recorded, checked against its digest).")
    cache_dir: str = option("data/cache", "Where token ids and the corpus index are cached.")

    def validate(self) -> "NoveltyConfig":
        options.check(self)
        return self


@dataclass
class ServeConfig:
    """How ``charrnn serve`` serves a model over HTTP (charrnn/serve.py)."""
    host: str = option("127.0.0.1", "Address to listen on (127.0.0.1: this machine only).")
    port: int = option(8000, "Port to listen on (0: a free one; the port bound is printed).",
                       low=0, high=65535)
    device: str = option("cpu", "Where the model runs (for a few streams the CPU beats a "
                         "GPU's launch overhead).", choices=DEVICES)
    precision: str = option("fp32", "Of the sampling step's weights (see charrnn sample).",
                            choices=("fp32", "bf16"))
    max_batch: int = option(64, "Samples generated at once, in one batched step; requests "
                            "beyond wait in the queue.", low=1, high=4096)
    max_queue: int = option(64, "Requests that may wait for a slot; past it, HTTP 503.",
                            low=0, high=1 << 20)
    max_length: int = option(10_000, "Most characters one request may ask for.", low=1,
                             high=10**9)
    max_body: int = option(65_536, "Largest request body, in bytes; past it, HTTP 413.",
                           low=64, high=1 << 30)
    cors_origin: Optional[str] = option(None, "Let pages of this origin (e.g. "
                                        "http://localhost:3000) call the API; otherwise "
                                        "cross-origin requests are refused.")

    def validate(self) -> "ServeConfig":
        options.check(self)
        return self


@dataclass
class ExportConfig:
    """What ``charrnn export`` writes (charrnn/export.py)."""
    out: Optional[str] = option(None, "Folder to write the exported model to (required).")
    format: str = option("onnx", "Export format.", choices=("onnx",))
    force: bool = option(False, "Keep the export even when its parity check fails.")

    def validate(self) -> "ExportConfig":
        options.check(self)
        if self.out is None:
            raise OptionError("out", "must be given (the folder to write)")
        return self
