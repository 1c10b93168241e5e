"""Typed configuration shared by the CLI, the Python API and the checkpoint's config.json.

Every option is declared once, here, with its help text and range (charrnn/options.py); the
CLI's flags, the range checks and the tests are generated from these declarations.
"""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Optional

from charrnn import options
from charrnn.errors import CharRNNError, OptionError
from charrnn.options import option

CELLS = ("rnn", "gru", "lstm", "mingru", "minlstm")
MIN_CELLS = ("mingru", "minlstm")    # charrnn/model/mincell.py: Feng et al. 2024
MIN_CELL_OPTIONS = ("expansion", "mlp_ratio")     # ModelConfig fields of the min cells alone
SCHEDULES = ("cosine", "linear", "wsd")   # charrnn/training/schedule.py
DEVICES = ("auto", "cpu", "cuda", "mps")
SEED_MAX = 2**63 - 1
# ModelConfig's regularisers (and how dropout draws its mask): not the shape, so a fine-tune
# (--init-from) takes its own, whatever the source was trained with.
REGULARISERS = ("dropout", "locked_dropout", "input_dropout", "weight_drop", "dropout_mask")
CACHE_DIR = "data/cache"  # token ids and corpus indexes (--cache-dir), relative to the cwd
VAL_CHARS = 120_000     # > tinyshakespeare's validation split (111,539): benchmarks compare
_DURATION = re.compile(r"(\d+(?:\.\d+)?)([hms]?)")


def parse_duration(text: str) -> float:
    """'90s', '10m', '1h30m', '45' (seconds) -> seconds (float). Raises CharRNNError."""
    text = str(text).strip().lower()
    parts = _DURATION.findall(text)
    if not text or "".join(n + u for n, u in parts) != text:
        raise CharRNNError(f"cannot read time {text!r}: use e.g. 90s, 10m, 1h30m")
    seconds = sum(float(n) * {"h": 3600, "m": 60, "s": 1, "": 1}[u] for n, u in parts)
    if seconds <= 0:
        raise CharRNNError(f"time must be > 0, got {text!r}")
    return seconds


def unescape(text: str) -> str:
    """Text from the command line with \\n, \\t and \\\\ read as a newline, a tab and a
    backslash (a shell passes "\\n" as two characters)."""
    return re.sub(r"\\([nt\\])", lambda m: {"n": "\n", "t": "\t"}.get(m.group(1), "\\"), text)


def min_cells_only(name: str, cell: str) -> "OptionError":
    """The error for option ``name`` (one of MIN_CELL_OPTIONS) set for another ``cell``."""
    return OptionError(name, f"applies to mingru and minlstm only, not {cell}")


@dataclass
class ModelConfig:
    """The network's shape: embedding [vocab, embed_size] -> ``layers`` recurrent layers of
    ``hidden_size`` units -> linear [hidden_size, vocab]. Fixed for the life of a run. For
    mingru and minlstm each layer is a residual block of width hidden_size // expansion around
    a cell of hidden_size units (charrnn/model/mincell.py), and the output layer reads the
    width."""
    vocab_size: int = option(0, "Characters in the vocabulary, <unk> included (from the "
                             "tokenizer).", low=0, cli=False, on_resume=False)
    cell: str = option("lstm", "Recurrent cell. mingru, minlstm: Feng et al. 2024's minimal "
                       "cells (gates from the input alone), in residual blocks with an MLP, "
                       "trained with a parallel scan.", choices=CELLS, on_resume=False)
    layers: int = option(2, "Stacked recurrent layers.", low=1, high=64, on_resume=False)
    hidden_size: int = option(512, "Units per recurrent layer (its state); mingru and "
                              "minlstm: their residual blocks are hidden_size / --expansion "
                              "wide.", low=1, high=1 << 20, on_resume=False)
    embed_size: int = option(64, "Size of the character embedding.", low=1, high=1 << 20,
                             on_resume=False)
    dropout: float = option(0.0, "Dropout between recurrent layers and before the output "
                            "layer (mingru, minlstm: also on each block's two residual "
                            "branches).", low=0, high=1, high_open=True, on_resume=False)
    locked_dropout: bool = option(False, "--dropout before the output layer draws one mask per "
                                  "stream and chunk, shared by its time steps (variational "
                                  "dropout), not one per character; between layers it stays "
                                  "per character.", on_resume=False)
    input_dropout: float = option(0.0, "Dropout on the character embeddings, one mask per "
                                  "stream and chunk shared by its time steps (variational "
                                  "dropout, AWD-LSTM's dropouti).", low=0, high=1,
                                  high_open=True, on_resume=False)
    dropout_mask: str = option("paired", "How --dropout draws its mask before the output "
                               "layer: paired (two entries from each 32-bit random number, "
                               "about a third of F.dropout's time on a CPU) or bernoulli "
                               "(F.dropout, as charrnn 0.1 did; runs saved before this option "
                               "resume with it, bit for bit).", choices=("paired", "bernoulli"),
                               on_resume=False, cli=False)
    weight_drop: float = option(0.0, "DropConnect on the recurrent weights while training: "
                                "each chunk zeroes this share of every layer's hidden-to-hidden "
                                "weights, the rest scaled by 1/(1-p) (AWD-LSTM's weight drop).",
                                low=0, high=1, high_open=True, on_resume=False)
    expansion: int = option(2, "mingru and minlstm only: recurrent units per unit of the "
                            "residual width (the paper's expansion factor); --hidden-size must "
                            "be a multiple of it.", low=1, high=64, on_resume=False)
    mlp_ratio: int = option(4, "mingru and minlstm only: each block's MLP is this many times "
                            "the residual width (0: no MLP).", low=0, high=64, on_resume=False)

    def validate(self) -> "ModelConfig":
        """Raises OptionError (a CharRNNError) for a value outside its range, or an option
        that does not apply to the cell."""
        options.check(self)
        if self.cell in MIN_CELLS:
            if self.weight_drop > 0:
                raise OptionError("weight_drop", f"does not apply to {self.cell}: it has no "
                                  "hidden-to-hidden weights (use --dropout)")
            if self.hidden_size % self.expansion:
                raise OptionError("hidden_size", f"is {self.hidden_size}, not a multiple of "
                                  f"expansion {self.expansion}")
        else:
            for name in MIN_CELL_OPTIONS:
                if getattr(self, name) != self.__dataclass_fields__[name].default:
                    raise min_cells_only(name, self.cell)
        return self


@dataclass
class TrainConfig:
    """Everything a training run needs besides the corpus; saved in config.json as ``train``."""
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    out: Optional[str] = option(None, "Run folder (default: checkpoints/<corpus name>).")
    batch_size: int = option(64, "Contiguous streams per step (per process).", low=1,
                             high=1 << 20)
    seq_len: int = option(128, "Truncated-BPTT length: characters per chunk.", low=1,
                          high=1 << 20)
    epoch_offset: bool = option(False, "Start every epoch's streams a random number of "
                                "characters (under --seq-len, from --seed and the epoch) in, so "
                                "that epochs do not feed the same chunks (cpu-10m turns it "
                                "on).", on_resume=False, negatable=True)
    lr: float = option(3e-3, "Peak learning rate.", low=0, low_open=True)
    min_lr_ratio: float = option(0.1, "The decay ends at lr * this.", low=0, high=1)
    schedule: str = option("cosine", "How the rate decays after the warmup: cosine, linear, "
                           "or wsd (warmup-stable-decay: flat at the peak, then linear over "
                           "the last --decay-fraction of the run).", choices=SCHEDULES)
    decay_fraction: float = option(0.2, "With --schedule wsd: the share of the run, at its end, "
                                   "over which the rate decays.", low=0, high=1, low_open=True)
    warmup_steps: int = option(50, "Steps of linear warmup.", low=0)
    weight_decay: float = option(0.01, "AdamW weight decay (not on biases and embeddings).",
                                 low=0)
    beta1: float = option(0.9, "AdamW's first-moment decay rate.", low=0, high=1,
                          high_open=True)
    beta2: float = option(0.99, "AdamW's second-moment decay rate.", low=0, high=1,
                          high_open=True)
    grad_clip: float = option(1.0, "Gradient-norm clip (0: off).", low=0, aliases=("clip",))
    ema: float = option(0.0, "Decay of an exponential moving average of the weights (e.g. "
                        "0.999; 0: off). The average is the model: validation measures it and "
                        "best/, last/ and snapshots hold it (so do samples and --init-from); "
                        "trainer_state.pt also keeps the raw weights for --resume.", low=0,
                        high=1, high_open=True, on_resume=False)
    steps: Optional[int] = option(None, "Stop after this many steps.", low=1)
    epochs: Optional[float] = option(None, "Stop after this many passes over the text.",
                                     low=0, low_open=True)
    time_limit: Optional[float] = option(None, "Stop after this long, e.g. 90s, 10m, 1h.",
                                         low=0, low_open=True, parse=parse_duration,
                                         metavar="DURATION")
    eval_interval: Optional[int] = option(None, "Steps between validations (default: about "
                                          "10 over the run, and one at least every 2 passes "
                                          "over a small text; charrnn/training/validations.py).",
                                          low=1)
    val_fraction: float = option(0.1, "Share of the text (at its end) for validation.",
                                 low=0, high=1, low_open=True, high_open=True,
                                 on_resume=False)
    val_chars: Optional[int] = option(None, "Validate on at most this many characters, the "
                                      "first of the held-out text, so that a validation's cost "
                                      f"stays bounded (default {VAL_CHARS:,}: all of "
                                      "tinyshakespeare's; fewer when planned validations would "
                                      "take over 5% of a --time-limit).", low=2)
    device: str = option("auto", "auto: CUDA when present, else the CPU.", choices=DEVICES)
    precision: str = option("auto", "auto: bf16 autocast on CUDA and on CPUs with native bf16, "
                            "else fp32.", choices=("auto", "fp32", "bf16"))
    compile: bool = option(False, "Train through torch.compile: the first steps take ~30 s "
                           "longer, then a mingru/minlstm step runs about twice as fast (on a "
                           "CPU it needs a C++ compiler).")
    seed: int = option(1337, "Seed of the weights, dropout and data order.", low=0,
                       high=SEED_MAX)
    cache_dir: str = option(CACHE_DIR, "Where token ids are cached.")
    overwrite: bool = option(False, "Replace the model already in --out.")
    resume: bool = option(False, "Continue the run in --out from its last checkpoint.")
    head_bias: str = option("default", "The output layer's initial bias for a new model: "
                            "default: torch's (near zero, all characters alike); unigram: the "
                            "log frequencies of the training text's characters.",
                            choices=("default", "unigram"), on_resume=False)
    init_from: Optional[str] = option(None, "Fine-tune: start from this run's best model (or "
                                      "this checkpoint folder) with a fresh optimizer, schedule "
                                      "and step count; the model's shape is its own.",
                                      on_resume=False, metavar="RUN_OR_CHECKPOINT")
    vocab: str = option("extend", "With --init-from, the corpus's new characters: extend: add "
                        "them to the vocabulary; keep: train them as <unk>.",
                        choices=("extend", "keep"), on_resume=False)
    early_stop: Optional[int] = option(None, "Stop after this many evaluations without a better "
                                       "validation loss (0: never; --preset auto sets 3 when "
                                       "the run passes over its text more than 12 times).",
                                       low=0)
    sample_every: Optional[int] = option(None, "Every this many steps, write a short sample to "
                                         "samples.jsonl (and show its first line).", low=1)
    save_every: Optional[int] = option(None, "Every this many steps, keep a snapshot "
                                       "checkpoint step-NNNNNN/ in the run folder.", low=1)
    keep: Optional[int] = option(None, "Keep only the newest this many snapshots (default: "
                                 "all).", low=1)
    progress: bool = option(True, "Show a progress bar.")
    tensorboard: bool = option(False, "Write TensorBoard events into the run folder's "
                               "tensorboard/ (losses, bits per character, learning rate, "
                               "gradient norm, characters per second, --sample-every samples; "
                               "view: tensorboard --logdir OUT/tensorboard). Needs the "
                               "tensorboard extra. A resumed run keeps it (--no-tensorboard: "
                               "off).", negatable=True)
    encoding: str = option("utf-8", "Text encoding of the corpus.", on_resume=False)
    errors: str = option("strict", "replace: undecodable bytes become U+FFFD instead of an "
                         "error.", choices=("strict", "replace"), on_resume=False)

    def validate(self) -> "TrainConfig":
        """Check every option (OptionError names the one out of range); a run with no limit
        at all trains for one epoch."""
        self.model.validate()
        options.check(self)
        if self.steps is None and self.epochs is None and self.time_limit is None:
            self.epochs = 1.0
        return self

    def to_dict(self) -> dict:
        """Plain JSON-ready values (config.json's ``train``), the model's under ``model``."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "TrainConfig":
        """From a saved dict; unknown keys are dropped, older names read as today's."""
        data = dict(data)
        model = ModelConfig(**_known(ModelConfig, data.pop("model", None) or {}))
        return cls(model=model, **_known(cls, data))


@dataclass
class SampleConfig:
    """How to sample: ``num_samples`` texts of ``prime`` + ``length`` characters."""
    length: int = option(500, "Characters to generate.", low=0, high=10**9)
    temperature: float = option(1.0, "Divide the logits by this (below 1: safer text; near 0: "
                                "greedy).", low=0, low_open=True)
    top_k: Optional[int] = option(None, "Sample only from the k most likely characters.",
                                  low=1)
    top_p: Optional[float] = option(None, "Sample from the smallest set of characters with "
                                    "this much probability.", low=0, high=1, low_open=True)
    greedy: bool = option(False, "Always take the most likely character.")
    seed: Optional[int] = option(None, "Same seed, same text (sample i of a batch has its own "
                                 "generator, from the seed and i).", low=0, high=SEED_MAX)
    num_samples: int = option(1, "Samples generated together as one batch.", low=1,
                              high=1 << 16, aliases=("n",))
    stop: Optional[str] = option(None, "End a sample when it produces this text (on the "
                                 "command line \\n is a newline, \\t a tab).",
                                 parse=unescape, metavar="TEXT")
    precision: str = option("fp32", "Of the sampling step's weights. bf16: half the memory "
                            "read per step (faster on CPUs with native bf16 and on CUDA).",
                            choices=("fp32", "bf16"))

    def validate(self) -> "SampleConfig":
        """Raises OptionError for a value out of range, CharRNNError for an empty stop."""
        options.check(self)
        if self.stop == "":
            raise OptionError("stop", "must not be empty")
        return self


SampleOptions = SampleConfig     # the name before 0.2


def _known(cls, data: dict) -> dict:
    """The keys of ``data`` that ``cls`` declares, older names (aliases) renamed."""
    renames = {alias: item.name for item in options.declared(cls) for alias in item.spec.aliases}
    names = {f.name for f in dataclasses.fields(cls)} - {"model"}
    result = {}
    for key, value in data.items():
        key = renames.get(key, key)
        if key in names:
            result[key] = value
    return result


# The options of the tools around a trained model: `charrnn viz` (ReportConfig), the
# memorisation check (NoveltyConfig), `charrnn serve` (ServeConfig), `charrnn export` (ExportConfig).
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
    cache_dir: str = option(CACHE_DIR, "Where token ids and the corpus index are cached.")

    def validate(self) -> "NoveltyConfig":
        options.check(self)
        return self


@dataclass
class ServeConfig:
    """How ``charrnn serve`` serves a model over HTTP (charrnn/serve/app.py). Times are in
    seconds, sizes in bytes, lengths in characters."""
    host: str = option("127.0.0.1", "Address to listen on (127.0.0.1: this machine only; "
                       "0.0.0.0: every address of this machine).")
    port: int = option(8000, "Port to listen on (0: a free one; the port bound is printed).",
                       low=0, high=65535)
    device: str = option("cpu", "Where the model runs (for a few streams the CPU beats a "
                         "GPU's launch overhead).", choices=DEVICES)
    precision: str = option("fp32", "Of the sampling step's weights (see charrnn sample).",
                            choices=("fp32", "bf16"))
    name: Optional[str] = option(None, "The model's name in /v1/models and the `model` field "
                                 "of /v1/completions (default: its run folder's name).")
    max_batch: int = option(64, "Samples generated at once, in one batched step; requests "
                            "beyond wait in the queue.", low=1, high=4096)
    max_queue: int = option(64, "Requests that may wait for a slot; past it, HTTP 503.",
                            low=0, high=1 << 20)
    client_slots: Optional[int] = option(None, "Most samples one client runs at once "
                                         "(default: half of --max-batch), so that others "
                                         "always find a slot.", low=1, high=4096)
    client_queue: Optional[int] = option(None, "Most requests one client may have waiting "
                                         "(default: a quarter of --max-queue, at least 1); "
                                         "past it, HTTP 503.", low=0, high=1 << 20)
    max_length: int = option(10_000, "Most characters one request may ask for.", low=1,
                             high=10**9)
    max_prime: int = option(8_192, "Longest prime (prompt), in characters; past it, HTTP "
                            "422 (400 on /v1/completions).", low=1, high=10**8)
    max_stop: int = option(256, "Longest stop text, in characters.", low=1, high=10**6)
    max_body: int = option(65_536, "Largest request body, in bytes; past it, HTTP 413.",
                           low=64, high=1 << 30)
    max_connections: Optional[int] = option(None, "Open connections at most; past it, a new "
                                            "one gets HTTP 503 and is closed (default: the "
                                            "open-file limit less 64, at most 1,000).",
                                            low=1, high=1 << 20)
    header_timeout: float = option(10.0, "Seconds a client has to send a request's headers "
                                   "once it starts one (or opens the connection).", low=0,
                                   low_open=True, high=86400)
    body_timeout: float = option(30.0, "Seconds a client has to send a request's body once "
                                 "its headers are in.", low=0, low_open=True, high=86400)
    keep_alive_timeout: float = option(5.0, "Seconds an idle keep-alive connection stays "
                                       "open.", low=0, low_open=True, high=86400)
    api_key: Optional[str] = option(None, "Require `Authorization: Bearer KEY` on /v1/* "
                                    "(or set CHARRNN_API_KEY, or use --api-key-file).",
                                    metavar="KEY")
    api_key_file: Optional[str] = option(None, "A file of API keys, one per line (# starts "
                                         "a comment); with several, clients are told apart "
                                         "by key.", metavar="FILE")
    allowed_hosts: Optional[str] = option(None, "Host names the server answers to, "
                                          "comma-separated (e.g. api.example.com); other "
                                          "Host headers get HTTP 400 (default: on a loopback "
                                          "address, localhost and 127.0.0.1 only).",
                                          metavar="HOSTS")
    forwarded_allow_ips: Optional[str] = option(None, "Addresses of trusted reverse proxies, "
                                                "comma-separated (e.g. 127.0.0.1): their "
                                                "X-Forwarded-For names the client.",
                                                metavar="IPS")
    cors_origin: Optional[str] = option(None, "Let pages of this origin (e.g. "
                                        "http://localhost:3000, no trailing slash; * for "
                                        "any page) call the API; otherwise cross-origin "
                                        "requests are refused.", metavar="ORIGIN")

    def validate(self) -> "ServeConfig":
        """Raises OptionError for a value out of range or a --cors-origin that is not an
        origin (scheme://host[:port] or *)."""
        options.check(self)
        if self.cors_origin is not None and self.cors_origin != "*":
            origin = self.cors_origin
            if not re.fullmatch(r"https?://[^/?#\s]+", origin):
                fixed = re.match(r"(https?://[^/?#\s]+)", origin)
                hint = f"; use {fixed.group(1)}" if fixed else ""
                raise OptionError("cors_origin", "must be an origin, scheme://host[:port] "
                                  f"with no path or trailing slash, or * (any page), got "
                                  f"{origin!r}{hint}")
        return self


@dataclass
class ExportConfig:
    """What ``charrnn export`` writes (charrnn/export/onnx.py; web: charrnn/export/web.py)."""
    out: Optional[str] = option(None, "Folder to write the exported model to (required).")
    format: str = option("onnx", "Export format: onnx (a graph for onnxruntime) or web (one "
                         "HTML page that generates in the browser, no server).",
                         choices=("onnx", "web"))
    force: bool = option(False, "Keep the export even when its parity check fails.")

    def validate(self) -> "ExportConfig":
        options.check(self)
        if self.out is None:
            raise OptionError("out", "must be given (the folder to write)")
        return self

