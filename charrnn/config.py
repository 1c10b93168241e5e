"""Typed configuration shared by the CLI, the Python API and the checkpoint's config.json."""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any, Optional

from .errors import CharRNNError

CELLS = ("rnn", "gru", "lstm")
DEVICES = ("auto", "cpu", "cuda", "mps")


@dataclass
class ModelConfig:
    vocab_size: int = 0          # filled in from the tokenizer
    cell: str = "lstm"
    layers: int = 2
    hidden_size: int = 512
    embed_size: int = 64
    dropout: float = 0.0         # between recurrent layers and before the output layer

    def validate(self) -> "ModelConfig":
        if self.cell not in CELLS:
            raise CharRNNError(f"unknown cell {self.cell!r}: choose one of {', '.join(CELLS)}")
        for name in ("layers", "hidden_size", "embed_size"):
            _require_positive(name, getattr(self, name))
        if not 0.0 <= self.dropout < 1.0:
            raise CharRNNError(f"dropout must be in [0, 1), got {self.dropout}")
        return self


@dataclass
class TrainConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    out: Optional[str] = None            # default: checkpoints/<corpus name>
    batch_size: int = 64                 # contiguous streams per step (per process)
    seq_len: int = 128                   # truncated-BPTT chunk length
    lr: float = 3e-3
    min_lr_ratio: float = 0.1            # cosine decays to lr * min_lr_ratio
    warmup_steps: int = 50
    weight_decay: float = 0.01
    beta1: float = 0.9                   # AdamW's moment decay rates
    beta2: float = 0.99
    clip: float = 1.0                    # global gradient-norm clip; 0 disables
    steps: Optional[int] = None
    epochs: Optional[float] = None
    time_limit: Optional[float] = None   # seconds
    eval_interval: int = 250             # steps between validations
    val_fraction: float = 0.1
    device: str = "auto"
    precision: str = "auto"              # auto: bf16 on CUDA and on CPUs with native bf16
    seed: int = 1337
    cache_dir: str = "data/cache"
    overwrite: bool = False
    resume: bool = False
    progress: bool = True                # tqdm bar
    encoding: str = "utf-8"
    errors: str = "strict"               # 'replace' turns undecodable bytes into U+FFFD

    def validate(self) -> "TrainConfig":
        self.model.validate()
        for name in ("batch_size", "seq_len", "eval_interval"):
            _require_positive(name, getattr(self, name))
        if self.lr <= 0:
            raise CharRNNError(f"lr must be > 0, got {self.lr}")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise CharRNNError(f"min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")
        if self.warmup_steps < 0 or self.weight_decay < 0 or self.clip < 0:
            raise CharRNNError("warmup_steps, weight_decay and clip must be >= 0")
        for name in ("beta1", "beta2"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise CharRNNError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        if self.steps is not None:
            _require_positive("steps", self.steps)
        if self.epochs is not None and self.epochs <= 0:
            raise CharRNNError(f"epochs must be > 0, got {self.epochs}")
        if self.time_limit is not None and self.time_limit <= 0:
            raise CharRNNError(f"time limit must be > 0, got {self.time_limit}")
        if self.steps is None and self.epochs is None and self.time_limit is None:
            self.epochs = 1.0    # a run with no limit at all trains for one epoch
        if not 0.0 < self.val_fraction < 1.0:
            raise CharRNNError(f"val_fraction must be in (0, 1), got {self.val_fraction}")
        if self.device not in DEVICES:
            raise CharRNNError(f"unknown device {self.device!r}: choose one of {', '.join(DEVICES)}")
        if self.precision not in ("auto", "fp32", "bf16"):
            raise CharRNNError(f"precision must be auto, fp32 or bf16, got {self.precision!r}")
        if self.errors not in ("strict", "replace"):
            raise CharRNNError(f"errors must be 'strict' or 'replace', got {self.errors!r}")
        return self

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "TrainConfig":
        data = dict(data)
        model = ModelConfig(**_known(ModelConfig, data.pop("model", {})))
        return cls(model=model, **_known(cls, data))


# Presets are named for the budget and the device they were tuned on (see bench/RESULTS.md).
PRESETS: dict[str, dict[str, Any]] = {
    # 60 s on 2 CPU cores: one wide layer, short chunks and a high rate learn fastest per second;
    # AdamW with beta1 0.8 and weight decay 0.1 (bench/TRIED.md). No validation before the end.
    "cpu-1m": dict(model=dict(cell="lstm", layers=1, hidden_size=512, embed_size=64, dropout=0.0),
                   batch_size=32, seq_len=32, lr=8e-3, warmup_steps=100, weight_decay=0.1,
                   beta1=0.8, eval_interval=2500, time_limit=60.0),
    # 10 min on 2 CPU cores: still compute-bound, so one wide layer with many small updates
    # beats the classic 2x512 at batch 64; by 6 epochs of tinyshakespeare it overfits (train
    # 1.10 vs val 1.42 at dropout 0.1), hence dropout 0.25 (bench/TRIED.md).
    "cpu-10m": dict(model=dict(cell="lstm", layers=1, hidden_size=768, embed_size=64, dropout=0.25),
                    batch_size=32, seq_len=32, lr=5e-3, warmup_steps=100, weight_decay=0.1,
                    beta1=0.8, eval_interval=2000, time_limit=600.0),
    "gpu-3m": dict(model=dict(cell="lstm", layers=3, hidden_size=1024, embed_size=128, dropout=0.2),
                   batch_size=128, seq_len=256, lr=2e-3, warmup_steps=100, eval_interval=500,
                   time_limit=180.0),
    "tiny": dict(model=dict(cell="lstm", layers=1, hidden_size=64, embed_size=16, dropout=0.0),
                 batch_size=8, seq_len=32, lr=1e-2, warmup_steps=5, eval_interval=50),
}


def preset(name: str) -> TrainConfig:
    """A TrainConfig filled from the named preset."""
    if name not in PRESETS:
        raise CharRNNError(f"unknown preset {name!r}: choose one of {', '.join(PRESETS)}")
    return TrainConfig.from_dict(PRESETS[name])


_DURATION = re.compile(r"(\d+(?:\.\d+)?)([hms]?)")


def parse_duration(text: str) -> float:
    """'90s', '10m', '1h30m', '45' (seconds) -> seconds."""
    text = str(text).strip().lower()
    parts = _DURATION.findall(text)
    if not text or "".join(n + u for n, u in parts) != text:
        raise CharRNNError(f"cannot read time {text!r}: use e.g. 90s, 10m, 1h30m")
    seconds = sum(float(n) * {"h": 3600, "m": 60, "s": 1, "": 1}[u] for n, u in parts)
    if seconds <= 0:
        raise CharRNNError(f"time must be > 0, got {text!r}")
    return seconds


def _require_positive(name: str, value: int) -> None:
    if not isinstance(value, int) or value < 1:
        raise CharRNNError(f"{name} must be a positive integer, got {value!r}")


def _known(cls, data: dict) -> dict:
    names = {f.name for f in dataclasses.fields(cls)}
    return {k: v for k, v in data.items() if k in names and k != "model"}
