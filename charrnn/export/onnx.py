"""Export to ONNX: the model's reference one-step method, checked against PyTorch.

What is exported is ``CharRNN.step`` (charrnn/model/network.py), the step written out with explicit
products and gates, not the fused nn.LSTM/GRU/RNN layers (the exporters' weakest spot), with
the state as explicit inputs and outputs:

    ids [batch] int64, h [layers, batch, hidden] float32 (, c for lstm)
        -> logits [batch, vocab] float32, h_next (, c_next)

at a pinned opset (OPSET), batch free. Another runtime samples by feeding the prime one
character at a time from a zero state, then its own choices. The folder holds model.onnx,
tokenizer.json (the checkpoint's own) and charrnn.json (the inputs and outputs, the sampling
defaults, the model's configuration and the parity figures).

Parity is always checked before anything is kept: onnxruntime and PyTorch step through
PARITY_CHARS characters of the model's own text, both from PyTorch's state at every step
(teacher-forced, so drift cannot fail a correct export), and the largest logit difference and
the largest total-variation distance between the next-character distributions must stay
within LOGIT_TOLERANCE and TV_TOLERANCE; otherwise the folder is not written (unless forced).

torch.onnx, onnxscript and onnxruntime are imported inside the functions: ``import charrnn``
must not load them. They are the export extra (EXTRA): without one, the export raises
CharRNNError naming the install command before it begins.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from charrnn import files
from charrnn.config import SampleConfig
from charrnn.errors import CharRNNError, optional_import
from charrnn.model.network import CharRNN, hidden_from_parts, hidden_parts
from charrnn.sampling.sampler import generate
from charrnn.data.tokenizer import UNK_ID, CharTokenizer
from charrnn.version import __version__

OPSET = 18
PARITY_CHARS = 1000
LOGIT_TOLERANCE = 1e-3       # largest |logit difference|, fp32 in both runtimes
TV_TOLERANCE = 1e-4          # largest total-variation distance of next-character distributions
MARKER = "charrnn.json"      # what marks a folder as an export (and lets a new one replace it)
EXTRA = ("onnx", "onnxscript", "onnxruntime")    # setup.py's export extra: torch.onnx needs the
                                                 # first two, the parity check the third


@dataclass
class Parity:
    """How far onnxruntime's steps are from PyTorch's over ``chars`` teacher-forced steps."""
    chars: int
    max_logit_diff: float
    max_tv: float
    logit_tolerance: float = LOGIT_TOLERANCE
    tv_tolerance: float = TV_TOLERANCE

    @property
    def ok(self) -> bool:
        return self.max_logit_diff <= self.logit_tolerance and self.max_tv <= self.tv_tolerance

    def __str__(self) -> str:
        return (f"parity over {self.chars} characters (onnxruntime vs PyTorch, teacher-forced): "
                f"largest logit difference {self.max_logit_diff:.2e} (tolerance "
                f"{self.logit_tolerance:.0e}), largest next-character total-variation "
                f"distance {self.max_tv:.2e} (tolerance {self.tv_tolerance:.0e})")


class OneStep(torch.nn.Module):
    """``CharRNN.step`` with the state as separate tensors, as the ONNX graph takes it."""

    def __init__(self, net: CharRNN):
        super().__init__()
        self.net = net

    def forward(self, ids: torch.Tensor, *state: torch.Tensor) -> tuple[torch.Tensor, ...]:
        logits, hidden = self.net.step(ids, hidden_from_parts(list(state)))
        return (logits, *hidden_parts(hidden))


def state_names(cell: str) -> list[str]:
    return ["h", "c"] if cell == "lstm" else ["h"]


def export_onnx(net: CharRNN, tokenizer: CharTokenizer, out: Path, force: bool = False,
                text: str | None = None) -> Parity:
    """Write ``out`` (model.onnx, tokenizer.json, charrnn.json) and return the parity figures.

    ``text`` is what parity steps through (default: PARITY_CHARS characters the model samples
    with seed 0). Raises CharRNNError when parity is out of tolerance (nothing is written,
    unless ``force``), when ``out`` holds something other than an earlier export, when it
    cannot be written, or when the export extra is not installed."""
    for module in EXTRA:     # before any work: torch.onnx would fail half-way without them
        optional_import(module, "export", "charrnn export")
    out = Path(out)
    if out.exists() and not (out.is_dir() and ((out / MARKER).is_file() or
                                               not any(out.iterdir()))):
        raise CharRNNError(f"{out} exists and is not an earlier charrnn export: give a new "
                           "folder for --out")
    net = copy.deepcopy(net).to("cpu", torch.float32).eval()
    if text is None:
        text = generate(net, tokenizer, "", SampleConfig(length=PARITY_CHARS, seed=0))[0]
    try:
        with files.atomic_folder(out) as tmp:
            write_graph(net, tmp / "model.onnx")
            tokenizer.save(tmp / "tokenizer.json")
            parity = check_parity(net, tmp / "model.onnx", tokenizer.encode(text))
            (tmp / MARKER).write_text(json.dumps(_description(net, parity), indent=2))
            if not parity.ok and not force:
                raise CharRNNError(f"the export does not match PyTorch: {parity}; nothing "
                                   "was written (--force keeps it anyway)")
    except OSError as err:
        raise CharRNNError(f"cannot write {out}: {err.strerror or err}: choose a folder that "
                           "exists and is writable, with free disk space") from None
    return parity


def write_graph(net: CharRNN, path: Path) -> None:
    """``OneStep(net)`` through torch.onnx's exporter (torch.export based) at OPSET."""
    layers, size = net.config.layers, net.config.hidden_size
    names = state_names(net.config.cell)
    example = (torch.zeros(2, dtype=torch.int64),
               *(torch.zeros(layers, 2, size) for _ in names))
    batch = torch.export.Dim("batch", min=1, max=1 << 20)
    shapes = ({0: batch}, tuple({1: batch} for _ in names))     # (ids, *state)
    quiet = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "onnxscript")]
    levels = [logger.level for logger in quiet]
    try:     # the exporter reports its progress and optional extras it misses: not ours
        for logger in quiet:
            logger.setLevel(logging.ERROR)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(OneStep(net), example, str(path), dynamo=True, opset_version=OPSET,
                              input_names=["ids", *names],
                              output_names=["logits", *(f"{n}_next" for n in names)],
                              dynamic_shapes=shapes, external_data=False,
                              verbose=False)
    finally:
        for logger, level in zip(quiet, levels):
            logger.setLevel(level)


@torch.no_grad()
def check_parity(net: CharRNN, path: Path, ids: np.ndarray) -> Parity:
    """Step ``ids`` (teacher-forced) through ``net.step`` and the ONNX graph at ``path``,
    both from PyTorch's state at every step; the largest differences (see ``Parity``)."""
    onnxruntime = optional_import("onnxruntime", "export", "charrnn export")
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1        # tiny steps: threads only add overhead
    session = onnxruntime.InferenceSession(str(path), options,
                                           providers=["CPUExecutionProvider"])
    names = state_names(net.config.cell)
    hidden = net.init_hidden(1, torch.device("cpu"))
    worst_logit = worst_tv = 0.0
    ids = torch.as_tensor(np.asarray(ids, dtype=np.int64))
    for t in range(len(ids)):
        feeds = {"ids": ids[t:t + 1].numpy(),
                 **{n: p.numpy() for n, p in zip(names, hidden_parts(hidden))}}
        theirs = torch.from_numpy(session.run(["logits"], feeds)[0])
        logits, hidden = net.step(ids[t:t + 1], hidden)
        worst_logit = max(worst_logit, (theirs - logits).abs().max().item())
        ours, other = (x[:, UNK_ID + 1:].double().softmax(-1) for x in (logits, theirs))
        worst_tv = max(worst_tv, 0.5 * (ours - other).abs().sum().item())
    return Parity(len(ids), worst_logit, worst_tv)


def _description(net: CharRNN, parity: Parity) -> dict:
    """charrnn.json: what another runtime needs besides the graph and the tokenizer."""
    names = state_names(net.config.cell)
    state = [net.config.layers, "batch", net.config.hidden_size]
    return {"format": "charrnn-onnx", "format_version": 1, "charrnn_version": __version__,
            "opset": OPSET, "model": dataclasses.asdict(net.config),
            "inputs": {"ids": ["batch"], **{n: state for n in names}},
            "outputs": {"logits": ["batch", net.config.vocab_size],
                        **{f"{n}_next": state for n in names}},
            "state_start": "zeros", "unk_id": UNK_ID,
            "empty_prime": "start after a newline (or the vocabulary's first character)",
            "sampling": {item.name: getattr(SampleConfig(), item.name)
                         for item in dataclasses.fields(SampleConfig) if item.name != "precision"},
            "parity": {**dataclasses.asdict(parity), "ok": parity.ok}}
