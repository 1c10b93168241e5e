"""Export to the web: one HTML page that generates in the browser, with no server.

``charrnn export CHECKPOINT --format web --out site/`` writes site/index.html: the page of
web_page.html with the model's weights inlined (base64) and a small, readable JavaScript
version of ``CharRNN.step`` (the rnn, gru and lstm equations of charrnn/model/network.py) and of
``sample_next``'s choice, under the playground's controls (prime, temperature, top-k, top-p,
length, seed, greedy). It opens from file:// and loads nothing from the network: the weights
are in the page, and so is the code. (onnxruntime-web cannot load its .wasm or an .onnx from
file:// in Chromium, and its files would have to ship inside the Python package: a few hundred
lines of JavaScript are smaller and readable.) Beside it, charrnn-web.json records the
precision and the parity figures, and marks the folder as an export.

The weights are stored in int8 (per-row scales), fp16 or fp32: ``precision="auto"`` keeps the
smallest whose next-character distributions stay within TV_TOLERANCE (total variation) of the
fp32 model's over PARITY_CHARS characters of the model's own text, each model carrying its own
state (as the page does). fp32 pages match PyTorch's greedy text; the JavaScript computes in
float64 from the stored weights. A page over MAX_PAGE_BYTES is refused in one line.
"""
from __future__ import annotations

import base64
import copy
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from charrnn import files
from charrnn.config import SampleConfig
from charrnn.data.tokenizer import UNK, UNK_ID, CharTokenizer
from charrnn.errors import CharRNNError
from charrnn.model.network import CharRNN
from charrnn.sampling.sampler import generate
from charrnn.version import __version__

PAGE = Path(__file__).with_name("web_page.html")
MARKER = "charrnn-web.json"
PRECISIONS = ("int8", "fp16", "fp32")      # smallest first
CELLS = ("rnn", "gru", "lstm")             # the cells the page's step computes
BYTES = {"int8": 1, "fp16": 2, "fp32": 4}
TV_TOLERANCE = 0.02          # largest next-character total variation vs fp32 PyTorch, auto
PARITY_CHARS = 1000
MAX_PAGE_BYTES = 100 << 20   # 100 MB: browsers parse a larger page slowly, if at all


@dataclass
class WebExport:
    """What ``export_web`` wrote: the page's ``precision`` and size (``page_bytes``), the
    largest and mean next-character total variation from fp32 PyTorch over ``chars``
    characters (``max_tv``, ``mean_tv``), and that of each precision tried (``tried``)."""
    precision: str
    page_bytes: int
    chars: int
    max_tv: float
    mean_tv: float
    tried: dict = field(default_factory=dict)
    tolerance: float = TV_TOLERANCE

    @property
    def ok(self) -> bool:
        """Whether ``max_tv`` is within ``tolerance``."""
        return self.max_tv <= self.tolerance

    def __str__(self) -> str:
        size = f"{self.page_bytes / 1e6:.1f} MB" if self.page_bytes >= 1e6 else \
            f"{self.page_bytes / 1e3:.0f} kB"
        return (f"web page in {self.precision}, {size}; over "
                f"{self.chars} characters its next-character distributions are within total "
                f"variation {self.max_tv:.2e} (mean {self.mean_tv:.2e}) of PyTorch fp32's "
                f"(tolerance {self.tolerance:.0e})")


def export_web(net: CharRNN, tokenizer: CharTokenizer, out: Path, precision: str = "auto",
               force: bool = False, text: Optional[str] = None) -> WebExport:
    """Write ``out``/index.html (and charrnn-web.json) and return its figures.

    ``precision``: int8, fp16, fp32 or auto (the smallest within TV_TOLERANCE). ``text`` is
    what parity steps through (default: PARITY_CHARS characters the model samples with seed
    0). Raises CharRNNError for an unknown precision, a cell the page lacks, a page over MAX_PAGE_BYTES, a precision
    out of tolerance (unless ``force``), an ``out`` holding something other than an earlier
    export, or a folder that cannot be written."""
    if precision not in ("auto", *PRECISIONS):
        raise CharRNNError(f"unknown web precision {precision!r}: use auto, int8, fp16 or fp32")
    if net.config.cell not in CELLS:
        raise CharRNNError(f"the web page has no {net.config.cell} cell (it has "
                           f"{', '.join(CELLS)}): export this model with --format onnx")
    net = copy.deepcopy(net).to("cpu", torch.float32).eval()
    check_size(net, "int8" if precision == "auto" else precision)
    _check_out(Path(out))
    if text is None:
        text = generate(net, tokenizer, "", SampleConfig(length=PARITY_CHARS, seed=0))[0]
    ids = torch.as_tensor(np.asarray(tokenizer.encode(text), dtype=np.int64))
    result, tensors = _choose(net, ids, precision, force)
    page = page_html(net, tokenizer, tensors, result.precision)
    result.page_bytes = len(page)
    try:
        with files.atomic_folder(Path(out)) as tmp:
            files.write_bytes(tmp / "index.html", page)
            files.write_bytes(tmp / MARKER, json.dumps(_description(net, result), indent=2)
                              .encode())
    except OSError as err:
        raise CharRNNError(f"cannot write {out}: {err.strerror or err}: choose a folder that "
                           "exists and is writable, with free disk space") from None
    return result


def page_bytes(net: CharRNN, precision: str) -> int:
    """About how many bytes the page of ``net`` takes in ``precision``: the weights in base64
    (4/3 of their bytes; biases and int8 scales in fp32) and 40 kB of page."""
    size = 0
    for name, weight in _named_tensors(net).items():
        if weight.dim() == 1:
            size += 4 * weight.numel()
        else:
            size += BYTES[precision] * weight.numel() + \
                (4 * weight.shape[0] if precision == "int8" else 0)
    return size * 4 // 3 + 40_000


def check_size(net: CharRNN, precision: str) -> None:
    """Raises CharRNNError, in one line, when the page of ``net`` in ``precision`` would be
    over MAX_PAGE_BYTES."""
    size = page_bytes(net, precision)
    if size > MAX_PAGE_BYTES:
        raise CharRNNError(f"the model is too large for a web page: {net.num_params():,} "
                           f"weights make a {size / 1e6:.0f} MB page in {precision}, over the "
                           f"limit of {MAX_PAGE_BYTES / 1e6:.0f} MB: export it with --format "
                           "onnx, or train a smaller model")


def _check_out(out: Path) -> None:
    if out.exists() and not (out.is_dir() and ((out / MARKER).is_file() or
                                               not any(out.iterdir()))):
        raise CharRNNError(f"{out} exists and is not an earlier charrnn web export: give a new "
                           "folder for --out")


def _choose(net: CharRNN, ids: torch.Tensor, precision: str, force: bool
            ) -> tuple[WebExport, dict]:
    """The figures and stored tensors of the precision to keep (see ``export_web``)."""
    reference, tried, last = _probabilities(net, ids), {}, None
    for name in PRECISIONS if precision == "auto" else (precision,):
        if page_bytes(net, name) > MAX_PAGE_BYTES:
            continue
        tensors, stored = quantise(net, name)
        tv = 0.5 * (_probabilities(stored, ids) - reference).abs().sum(-1)
        tried[name] = float(tv.max())
        last = (WebExport(name, 0, len(ids), float(tv.max()), float(tv.mean()), tried), tensors)
        if last[0].ok:
            return last
    if last is None:
        check_size(net, PRECISIONS[-1])        # (raises)
    if not force:
        raise CharRNNError(f"the web export does not match PyTorch: {last[0]}; nothing was "
                           "written (--force keeps it anyway)")
    return last


@torch.no_grad()
def _probabilities(net: CharRNN, ids: torch.Tensor) -> torch.Tensor:
    """Next-character probabilities [len(ids), vocab - 1] (<unk> left out) after each id."""
    logits, _ = net(ids[None])
    return logits[0, :, UNK_ID + 1:].double().softmax(-1)


def _named_tensors(net: CharRNN) -> dict[str, torch.Tensor]:
    """The page's tensors: embed, w_ih{k}, w_hh{k}, b_ih{k}, b_hh{k}, head_w, head_b."""
    named = {"embed": net.embed.weight}
    for k in range(net.config.layers):
        for short, weight in zip(("w_ih", "w_hh", "b_ih", "b_hh"), net.layer_weights(k)):
            named[f"{short}{k}"] = weight
    named.update(head_w=net.head.weight, head_b=net.head.bias)
    return {name: weight.detach().float().contiguous() for name, weight in named.items()}


@torch.no_grad()
def quantise(net: CharRNN, precision: str) -> tuple[dict, CharRNN]:
    """(the page's tensors: name -> {shape, dtype, data (base64)[, scale]}, a copy of ``net``
    holding the weights as the page will read them). Matrices are stored in ``precision``
    (int8: symmetric, one fp32 scale per row), biases in fp32."""
    stored, tensors = copy.deepcopy(net), {}
    for name, weight in _named_tensors(net).items():
        kind = "fp32" if weight.dim() == 1 else precision
        entry, value = _encode(weight, kind)
        tensors[name] = entry
        _parameter(stored, name).copy_(value)
    return tensors, stored


def _encode(weight: torch.Tensor, kind: str) -> tuple[dict, torch.Tensor]:
    """One tensor in ``kind``: its page entry and the float32 values the page reads back."""
    entry = {"shape": list(weight.shape), "dtype": kind}
    if kind == "fp32":
        data, value = weight.numpy().astype("<f4"), weight
    elif kind == "fp16":
        data = weight.numpy().astype("<f2")
        value = torch.from_numpy(data.astype(np.float32))
    else:
        scale = (weight.abs().amax(-1, keepdim=True) / 127).clamp_min(1e-12)
        q = (weight / scale).round().clamp(-127, 127).to(torch.int8)
        data, value = q.numpy(), q.float() * scale
        entry["scale"] = base64.b64encode(scale.squeeze(-1).numpy().astype("<f4").tobytes()
                                          ).decode()
    entry["data"] = base64.b64encode(np.ascontiguousarray(data).tobytes()).decode()
    return entry, value


def _parameter(net: CharRNN, name: str) -> torch.Tensor:
    """The parameter of ``net`` that the page's tensor ``name`` is."""
    if name == "embed":
        return net.embed.weight
    if name.startswith("head_"):
        return net.head.weight if name == "head_w" else net.head.bias
    full = {"w_ih": "weight_ih", "w_hh": "weight_hh", "b_ih": "bias_ih", "b_hh": "bias_hh"}
    return getattr(net.rnn, f"{full[name[:4]]}_l{name[4:]}")


def page_html(net: CharRNN, tokenizer: CharTokenizer, tensors: dict, precision: str) -> bytes:
    """index.html: web_page.html with the model (config, characters, ``tensors``) inlined."""
    config = net.config
    chars = [UNK, *tokenizer.chars]          # chars[id]
    about = (f"A character-level {config.cell.upper()} ({config.layers} x "
             f"{config.hidden_size}, {net.num_params():,} weights in {precision}) exported by "
             f"charrnn {__version__}. It generates here, in your browser: nothing is sent "
             "anywhere.")
    model = {"config": {k: getattr(config, k) for k in
                        ("cell", "layers", "hidden_size", "embed_size", "vocab_size")},
             "chars": chars, "precision": precision, "about": about, "tensors": tensors}
    # (inside <script>: "</" would end it, so it is escaped; JSON reads "<\/" as "</")
    inline = json.dumps(model, ensure_ascii=True, separators=(",", ":")).replace("</", "<\\/")
    defaults = SampleConfig()
    page = PAGE.read_text(encoding="utf-8")
    for key, value in (("__TITLE__", "charrnn: generate text in your browser"),
                       ("__TEMPERATURE__", f"{defaults.temperature:g}"),
                       ("__LENGTH__", str(defaults.length)), ("__MODEL__", inline)):
        page = page.replace(key, value)
    return page.encode("utf-8")


def _description(net: CharRNN, result: WebExport) -> dict:
    """charrnn-web.json: what the page holds and how close it is to PyTorch."""
    return {"format": "charrnn-web", "format_version": 1, "charrnn_version": __version__,
            "page": "index.html", "model": asdict(net.config),
            "parity": {**asdict(result), "ok": result.ok}}
