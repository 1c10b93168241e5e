"""The model card: a checkpoint folder's README.md, in the Hugging Face Hub's format.

Every checkpoint folder (best, last, snapshots) is a model repository: ``hf upload USER/NAME
checkpoints/NAME/best`` shares it. Its README.md opens with YAML metadata the Hub reads
(``library_name: charrnn``, ``pipeline_tag: text-generation``, tags, the validation figures in
``model-index``), then says for a person what the model is, its corpus (name, size, digest), its
training figures, a sample, how to load it and its limitations. The card is built from the
checkpoint's config.json dict alone (``card_text``: no absolute path ever enters it) and
written inside the checkpoint's atomic save (charrnn/model/checkpoint.py).

The card's sample never costs training time nor draws from the training random state: a save
reuses the latest ``--sample-every`` sample (``latest_sample``); when there is none,
checkpoint.py's ``complete_cards`` draws one after the loop with its own seeded generator
(``draw_sample``).
"""
from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Optional

import torch

from charrnn import files
from charrnn.config import MIN_CELLS, ModelConfig
from charrnn.data.corpus import parse_hf_spec
from charrnn.data.tokenizer import UNK_ID, CharTokenizer
from charrnn.model.mincell import count_params

CARD = "README.md"
SAMPLE_CHARS = 300        # a card's own sample: this many characters after the prime
SAMPLE_SEED = 0           # ... drawn with this seed, at this temperature
SAMPLE_TEMPERATURE = 0.8
GATES = {"rnn": 1, "gru": 3, "lstm": 4}
NO_SAMPLE = "(no sample was taken while training: see below how to draw one)"


def card_text(config: dict, sample: Optional[dict] = None, name: str = "charrnn-model") -> str:
    """README.md of a checkpoint from its config.json dict ``config`` (model, metrics, train,
    corpus record) and ``sample`` (a samples.jsonl record: text, step, temperature, seed; or
    None). ``name`` names the model in model-index. Never holds an absolute path. Raises
    nothing: missing keys leave their line out."""
    model, metrics = config.get("model") or {}, config.get("metrics") or {}
    corpus = corpus_name(config)
    return "\n".join([_metadata(config, name, corpus), f"# {name}", "", _what(model, corpus),
                      "", _corpus_section(config, corpus), "", _training(config, metrics), "",
                      _sample(sample), "", _usage(), "", _limitations(), ""])


def corpus_name(config: dict) -> str:
    """The corpus's name without its folders: a file's or folder's last component, or the
    dataset id of an ``hf:`` corpus; "unknown" when the checkpoint does not record one."""
    spec = str(config.get("corpus") or "")
    if spec.startswith("hf:"):
        return spec[3:]
    return Path(spec.rstrip("/\\")).name or "unknown"


def num_params(model: dict) -> int:
    """The number of weights of a CharRNN with the ModelConfig fields ``model`` (0 if some
    are missing): embedding, recurrent layers (weights and both biases), output layer; a min
    cell's blocks as mincell.py's ``count_params`` counts them."""
    if model.get("cell") in MIN_CELLS:
        known = {f.name for f in dataclasses.fields(ModelConfig)}
        try:
            return count_params(ModelConfig(**{k: v for k, v in model.items() if k in known}))
        except (TypeError, ValueError):
            return 0
    try:
        vocab, embed, hidden = model["vocab_size"], model["embed_size"], model["hidden_size"]
        gates, layers = GATES[model["cell"]], model["layers"]
    except (KeyError, TypeError):
        return 0
    recurrent = sum(gates * hidden * ((embed if k == 0 else hidden) + hidden + 2)
                    for k in range(layers))
    return vocab * embed + recurrent + hidden * vocab + vocab


def _q(value) -> str:
    """A YAML scalar: JSON's spelling of it (valid YAML)."""
    return json.dumps(value, ensure_ascii=False)


def _metadata(config: dict, name: str, corpus: str) -> str:
    model, metrics = config.get("model") or {}, config.get("metrics") or {}
    tags = ["charrnn", "char-rnn", "character-level", str(model.get("cell", "rnn")),
            "pytorch", "safetensors", "text-generation"]
    lines = ["---", "library_name: charrnn", "pipeline_tag: text-generation", "tags:",
             *(f"- {_q(tag)}" for tag in tags)]
    if str(config.get("corpus") or "").startswith("hf:"):
        lines += ["datasets:", f"- {_q(parse_hf_spec(str(config['corpus']))[0])}"]
    figures = [(f"validation {label}", kind, metrics[key]) for key, label, kind in
               (("val_bpc", "bits per character", "bpc"),
                ("val_loss", "loss (nats per character)", "loss"))
               if isinstance(metrics.get(key), (int, float))]
    if figures:
        lines += ["model-index:", f"- name: {_q(name)}", "  results:", "  - task:",
                  "      type: text-generation", "      name: Character-level language modelling",
                  "    dataset:", f"      name: {_q(corpus)}", f"      type: {_q(corpus)}",
                  "      split: validation", "    metrics:"]
        for label, kind, value in figures:
            lines += [f"    - type: {kind}", f"      name: {_q(label)}",
                      f"      value: {round(float(value), 5)}"]
    return "\n".join(lines + ["---", ""])


def _what(model: dict, corpus: str) -> str:
    cell, layers = str(model.get("cell", "?")).upper(), model.get("layers", "?")
    return (f"A character-level {cell} language model ({layers} layer{'s' * (layers != 1)} of "
            f"{model.get('hidden_size', '?')} units, {num_params(model):,} weights, a vocabulary "
            f"of {model.get('vocab_size', '?')} characters) trained with "
            f"charrnn on `{corpus}`. It writes text one character at a "
            "time, in the style of that text. The weights are in `model.safetensors` (loading "
            "them runs no code), the characters in `tokenizer.json`, the settings and figures "
            "in `config.json`.")


def _corpus_section(config: dict, corpus: str) -> str:
    lines = ["## Corpus", "", f"- name: `{corpus}`"]
    size = _corpus_size(config)
    if size:
        lines.append(f"- size: {size}")
    if config.get("corpus_digest"):
        lines.append(f"- digest of its token ids: `{config['corpus_digest']}` (charrnn's "
                     "memorisation check uses it to recognise the text)")
    train = config.get("train") or {}
    if isinstance(train.get("val_fraction"), (int, float)):
        lines.append(f"- validation: the last {train['val_fraction']:.0%} of the text")
    return "\n".join(lines)


def _corpus_size(config: dict) -> str:
    """The corpus's size: its characters if recorded, else its bytes on this disk ('' if
    neither is known)."""
    if isinstance(config.get("corpus_chars"), int):
        return f"{config['corpus_chars']:,} characters"
    path = config.get("corpus_path")
    try:
        if path and os.path.isfile(path):
            return f"{os.path.getsize(path):,} bytes"
        if path and os.path.isdir(path):
            return f"{sum(p.stat().st_size for p in Path(path).rglob('*') if p.is_file()):,} bytes"
    except OSError:
        pass
    return ""


def _training(config: dict, metrics: dict) -> str:
    train = config.get("train") or {}
    rows = [("steps", metrics.get("step")), ("epochs", metrics.get("epoch")),
            ("training time (s)", metrics.get("elapsed")),
            ("characters per second", metrics.get("chars_per_sec")),
            ("training loss (nats/char)", metrics.get("train_loss")),
            ("validation loss (nats/char)", metrics.get("val_loss")),
            ("validation bits per character", metrics.get("val_bpc")),
            ("best validation loss (nats/char)", metrics.get("best_val_loss")),
            ("batch size x sequence length", f"{train['batch_size']} x {train['seq_len']}"
             if "batch_size" in train and "seq_len" in train else None),
            ("learning rate (peak)", train.get("lr")),
            ("charrnn / torch", f"{config.get('charrnn_version', '?')} / "
                                f"{config.get('torch_version', '?')}")]
    table = [f"| {label} | {_figure(value)} |" for label, value in rows if value is not None]
    return "\n".join(["## Training", "", "| figure | value |", "|---|---|", *table])


def _figure(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1000 else f"{value:,.0f}"
    return str(value)


def _sample(sample: Optional[dict]) -> str:
    if not sample or not isinstance(sample.get("text"), str):
        return "## A sample\n\n" + NO_SAMPLE
    text = sample["text"]
    fence = "`" * max(3, _longest_run(text, "`") + 1)
    how = ", ".join(f"{k} {sample[k]}" for k in ("step", "temperature", "seed") if k in sample)
    return "\n".join(["## A sample", "", f"Primed with {_q(sample.get('prime', ''))} ({how}):",
                      "", fence + "text", text, fence])


def _longest_run(text: str, char: str) -> int:
    best = run = 0
    for c in text:
        run = run + 1 if c == char else 0
        best = max(best, run)
    return best


def _usage() -> str:
    return "\n".join([
        "## How to use it", "",
        "Install charrnn from its repository with the hub extra (`pip install -e '.[hub]'`; the "
        "`charrnn` on PyPI is another package), then, with this repository's id:", "",
        "```python", "import charrnn", "",
        'model = charrnn.load("hf:USER/NAME")          # or a local copy of this folder',
        'print(model.generate("The ", length=300, temperature=0.8, seed=1))', "```", "",
        "```", "charrnn sample hf:USER/NAME --prime \"The \" --length 300 --seed 1",
        "charrnn export hf:USER/NAME --format web --out site/   # a page that generates offline",
        "```"])


def _limitations() -> str:
    return ("## Limitations\n\nA small character-level model: it imitates the spelling, layout "
            "and style of its corpus, not its meaning. Its text wanders, invents words and "
            "states nothing reliably; it repeats the corpus's biases, and on a small corpus it "
            "may copy passages verbatim (`charrnn novelty` checks samples against the corpus, "
            "given with `--corpus`). It cannot read characters it never saw: a prime that holds "
            "one is refused.")


def latest_sample(path: Path) -> Optional[dict]:
    """The last complete record of the JSON lines file ``path`` (a run's samples.jsonl) that
    holds a ``text`` string, or None (no file, unreadable, or no such record). Lines cut short
    by a crash are skipped. Raises nothing."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return None
    for line in reversed(lines):
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and isinstance(record.get("text"), str):
            return record
    return None


@torch.no_grad()
def draw_sample(net, tokenizer: CharTokenizer, prime: str = "\n",
                length: int = SAMPLE_CHARS, seed: int = SAMPLE_SEED) -> dict:
    """A sample for a card, drawn with ``net.step`` (CharRNN.step, on the CPU copy's dtype) and
    a generator of its own seeded with ``seed``: torch's global random state is untouched.
    Returns a samples.jsonl-like record (prime, temperature, seed, text = prime + ``length``
    characters). Raises CharRNNError for a prime the model cannot read."""
    ids = [int(i) for i in tokenizer.encode(prime)] or [UNK_ID]
    generator = torch.Generator().manual_seed(seed)
    device = next(net.parameters()).device
    hidden, out = net.init_hidden(1, device), []
    for i in ids:
        logits, hidden = net.step(torch.tensor([i], device=device), hidden)
    for _ in range(length):
        logits = logits[0].double().cpu()
        logits[UNK_ID] = -float("inf")
        choice = int(torch.multinomial((logits / SAMPLE_TEMPERATURE).softmax(-1), 1,
                                       generator=generator))
        out.append(choice)
        logits, hidden = net.step(torch.tensor([choice], device=device), hidden)
    return {"prime": prime, "temperature": SAMPLE_TEMPERATURE, "seed": seed,
            "text": prime + tokenizer.decode(out)}


def card_name(folder: Path) -> str:
    """The model's name in its card: the run folder's name for best/, last/ and snapshots
    (step-NNNNNN), else the checkpoint folder's own."""
    folder = Path(folder).absolute()
    inside_run = folder.name in ("best", "last") or folder.name.startswith("step-")
    return (folder.parent.name if inside_run else folder.name) or "charrnn-model"


def write_card(folder: Path, config: dict, sample: Optional[dict] = None) -> None:
    """(Re)write ``folder``/README.md atomically (files.atomic_file) from ``config`` and
    ``sample`` (see ``card_text``). Raises OSError for a folder that cannot be written."""
    text = card_text(config, sample, card_name(folder))
    with files.atomic_file(Path(folder) / CARD) as tmp:
        files.write_bytes(tmp, text.encode("utf-8"))
