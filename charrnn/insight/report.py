"""The HTML report of ``charrnn viz`` / ``Model.report``: what a model does with a text.

Measured by charrnn/insight/probe.py (surprisal, top guesses, every layer's states, an LSTM's
gates, the gradient curve) and charrnn/insight/units.py (correlations with text properties, 8-bit
storage); laid out by charrnn/insight/report_page.py. The page is one self-contained file of at
most MAX_BYTES: at most ReportConfig.max_chars characters (10,000) and MAX_VALUES stored
activations, with a note where it cut. Of those, the states come first (every layer's h, and c
for an LSTM, T + 1 values a unit: after each character, and after the start character for the
state view); an LSTM's gates (four values a unit and character) fill the room left, for the
same units in all four gates.

Other models (``Compared``) add their gradient curves, over the same text, to the same axis.
"""
from __future__ import annotations

import base64
import html
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np

from charrnn import files
from charrnn.insight import report_page
from charrnn.config import ReportConfig
from charrnn.errors import CharRNNError, OptionError
from charrnn.model.network import CharRNN
from charrnn.insight.probe import GATES, gradient_curve, lstm_gates, trace
from charrnn.data.tokenizer import CharTokenizer
from charrnn.insight.units import (PROPERTIES, Hit, correlated_units, gate_units_to_keep, quantise,
                                   shown, units_to_keep)

MAX_BYTES = 10 << 20          # the page's size limit
MAX_VALUES = 4_500_000        # activations stored, one byte each (6 MB once in base64)
KINDS = {"h": "hidden", "c": "cell"}      # state names as the page and the options say them
GATE_NAMES = {"i": "input gate", "f": "forget gate", "g": "cell candidate", "o": "output gate"}
GRADIENT_PLACES = 32          # positions the gradient curve is averaged over
MIN_LIST_CHARS = 100          # shorter texts get no list of correlated units


@dataclass
class Compared:
    """Another model whose gradient curve the report draws on the same axis as its own, over
    the same text (read with its own ``tokenizer``). ``label`` names it in the legend."""
    label: str
    model: CharRNN
    tokenizer: CharTokenizer


@dataclass
class ReportSummary:
    """What a report holds: ``chars`` characters of text, their mean surprisal ``mean_bpc``
    (bits per character, characters outside the vocabulary left out; nan if all are), the
    listed units ``hits``, the properties the text did not vary in (``absent``), the notes
    (cuts, unknown characters), the units stored of all, the gradient curve [K] (empty if the
    text was too short), the file's size in bytes and the seconds it took. ``gate_units``:
    the units of each layer whose LSTM gates the state view stores (0 for other cells).
    ``compared``: (label, curve [K]) of each compared model; ``label`` is this model's."""
    path: Path
    chars: int
    mean_bpc: float
    hits: list
    absent: list
    notes: list
    units_kept: int
    units_total: int
    curve: np.ndarray
    size: int = 0
    seconds: float = 0.0
    initial: tuple = field(default=(0, "h", 0))
    gate_units: int = 0
    label: str = ""
    compared: list = field(default_factory=list)

    def describe(self) -> str:
        """What was written, and the listed units, in words (what ``charrnn viz`` prints)."""
        mean = "-" if math.isnan(self.mean_bpc) else f"{self.mean_bpc:.3f}"
        found = "units most correlated with properties of the text:" if self.hits else \
            "no unit listed: the text does not vary in any of the properties"
        lines = [f"wrote {self.path} ({self.size / 1e6:.1f} MB) in {self.seconds:.1f} s: "
                 f"{self.chars:,} character{'s' if self.chars > 1 else ''}, {mean} bits/char; "
                 f"{found}"]
        lines += [f"  {hit.name:18} layer {hit.layer} {KINDS[hit.kind]:6} unit {hit.unit:<5} "
                  f"r = {hit.r:+.2f}" for hit in self.hits]
        if len(self.curve) and self.compared:
            lines.append(f"the gradient from k = 1 to k = {len(self.curve)} falls by a factor of:")
            lines += [f"  {fall(curve):<10.3g} {label}"
                      for label, curve in [(self.label, self.curve), *self.compared]]
        return "\n".join(lines)


def fall(curve: np.ndarray) -> float:
    """How many times smaller the gradient curve [K] is at k = K than at k = 1 (inf where
    it reaches 0)."""
    return float(curve[0] / curve[-1]) if curve[-1] > 0 else math.inf


def initial_unit(model: CharRNN, config: ReportConfig, hits: list[Hit]
                 ) -> tuple[int, str, int]:
    """(layer, kind, unit) the neuron view opens on: what config asks for (layer, unit, state),
    the rest from the first listed unit (or unit 0 of layer 0, the cell state of an lstm).
    Raises OptionError for a layer, unit or state the model does not have."""
    check_unit(model, config)
    first = hits[0] if hits else Hit("", 0, "c" if model.config.cell == "lstm" else "h", 0, 0)
    kind = {"cell": "c", "hidden": "h"}.get(config.state, first.kind)
    return (first.layer if config.layer is None else config.layer, kind,
            first.unit if config.unit is None else config.unit)


def check_unit(model: CharRNN, config: ReportConfig) -> None:
    """Raises OptionError when config's layer, unit or state is not in ``model``."""
    layers, size, cell = model.config.layers, model.config.hidden_size, model.config.cell
    if config.layer is not None and config.layer >= layers:
        raise OptionError("layer", f"is {config.layer}, but the model has {layers} "
                          + (f"layers: give 0 to {layers - 1}" if layers > 1 else "layer: give 0"))
    if config.unit is not None and config.unit >= size:
        raise OptionError("unit", f"is {config.unit}, but each layer has {size} units: give "
                          f"0 to {size - 1}")
    if config.state == "cell" and cell != "lstm":
        raise OptionError("state", f"is cell, but a {cell} has no cell state: use hidden")


def write_report(model: CharRNN, tokenizer: CharTokenizer, text: str, path: Union[str, Path],
                 config: Optional[ReportConfig] = None, title: str = "charrnn report",
                 notes: Optional[list] = None, max_values: int = MAX_VALUES,
                 compare: Sequence[Compared] = (), label: str = "") -> ReportSummary:
    """Measure ``model`` over ``text`` and write the report to ``path`` (atomically).

    ``notes`` (strings) are shown at the top of the page, with the report's own (a cut text,
    characters outside the vocabulary, a short gradient curve, units or gates not stored).
    ``max_values`` bounds the stored activations, gates included (MAX_VALUES by default).
    ``compare``: models whose gradient curves join this one's (named ``label``) on one axis.
    Raises CharRNNError for an empty text, OptionError for a layer/unit/state the model
    lacks (before any work), and CharRNNError when ``path`` cannot be written."""
    started = time.monotonic()
    config = (config or ReportConfig()).validate()
    check_unit(model, config)
    if not text:
        raise CharRNNError("the text is empty: give it some text")
    notes = list(notes or [])
    text, ids = _cut_and_encode(text, tokenizer, config.max_chars, notes)
    start = "\n" if "\n" in tokenizer.chars else tokenizer.chars[0]
    reading = trace(model, ids, int(tokenizer.encode(start)[0]))
    values = shown(reading.states)
    hits, absent = correlated_units(text, values) if len(text) >= MIN_LIST_CHARS else ([], [])
    if len(text) < MIN_LIST_CHARS:
        notes.append(f"no list of correlated units: over {len(text)} characters correlations "
                     f"mean little (it needs at least {MIN_LIST_CHARS})")
    first = initial_unit(model, config, hits)
    curve = _curve(model, ids, reading.states, config.gradient_steps, notes)
    compared = [(other.label, _other_curve(other, text, config.gradient_steps, notes))
                for other in compare]
    wanted = [first] + [(h.layer, h.kind, h.unit) for h in hits]
    kept = units_to_keep(values, max_values, wanted)
    kept_count = sum(len(units) for units in kept.values())
    units_note = _units_note(kept, model.config.hidden_size, notes)
    gates, gate_units = {}, {}
    if model.config.cell == "lstm":
        room = max_values - kept_count * (len(ids) + 1)
        gate_units = gate_units_to_keep(values, room, wanted, len(GATES))
        if len(gate_units[0]):
            gates = lstm_gates(model, reading, gate_units)
        _gates_note(gate_units, model.config.hidden_size, notes)
    known = reading.bits[ids != 0]
    mean = float(known.mean()) if len(known) else math.nan
    summary = ReportSummary(Path(path), len(text), mean, hits, absent, notes, kept_count,
                            model.config.hidden_size * len(kept), curve, initial=first,
                            gate_units=len(gate_units[0]) if gate_units else 0,
                            label=label or _describe(model), compared=compared)
    data = _data(model, tokenizer, text, reading, values, kept, summary, units_note)
    data["gates"] = _gate_blocks(gates, gate_units)
    page = report_page.render(_fields(model, text, reading, summary, title), data)
    summary.size = _write(page, Path(path))
    summary.seconds = time.monotonic() - started
    return summary


def _cut_and_encode(text: str, tokenizer: CharTokenizer, most: int, notes: list
                    ) -> tuple[str, np.ndarray]:
    """The text cut to ``most`` characters and its ids (int64; 0 for <unk>), noting both."""
    if len(text) > most:
        notes.append(f"the text is longer than {most:,} characters: the report covers the "
                     f"first {most:,} (--max-chars, at most 10,000)")
        text = text[:most]
    ids = tokenizer.encode(text).astype(np.int64)
    if (ids == 0).any():
        missing = "".join(tokenizer.unknown_chars(text))[:20]
        notes.append(f"{int((ids == 0).sum())} characters are not in the model's vocabulary "
                     f"({missing!r}): they are read as <unk>, hatched, and left out of the mean")
    return text, ids


def _units_note(kept: dict, hidden_size: int, notes: list) -> str:
    """What the page says about the units it stores; a note too when it cut."""
    count = sum(len(units) for units in kept.values())
    if count == hidden_size * len(kept):
        return f"all {hidden_size} units of each layer are stored"
    note = (f"{count // len(kept)} of the {hidden_size} units of each layer and state are "
            f"stored, to keep the file under {MAX_BYTES >> 20} MB: the one shown first, the "
            "listed ones as room allows, then those that vary most")
    notes.append(note)
    return note


def _describe(model: CharRNN) -> str:
    config = model.config
    return f"{config.cell} {config.layers}x{config.hidden_size}"


def _gates_note(gate_units: dict, hidden_size: int, notes: list) -> None:
    count = len(gate_units[0])
    if count < hidden_size:
        notes.append(f"the state view shows the gates of {count} of the {hidden_size} units of "
                     f"each layer, to keep the file under {MAX_BYTES >> 20} MB: the one shown "
                     "first, the listed ones, then the cells that vary most")


def _gate_blocks(gates: dict, gate_units: dict) -> list:
    """The stored gates: per layer and gate, the kept units' values [units, T] as 8-bit codes
    (column t: the step that made the guesses for character t; see probe.lstm_gates, which
    computed ``gates`` for ``gate_units`` alone)."""
    blocks = []
    for layer, units in gate_units.items():
        if not len(units):
            continue
        for gate in GATES:
            codes = quantise(gates[gate][layer].T)
            blocks.append({"layer": layer, "gate": GATE_NAMES[gate], "units": units.tolist(),
                           "codes": base64.b64encode(codes.tobytes()).decode("ascii")})
    return blocks


def _other_curve(other: Compared, text: str, steps: int, notes: list) -> np.ndarray:
    """A compared model's gradient curve over ``text`` (its own tokenizer; empty when the
    text is too short), noting characters outside its vocabulary."""
    ids = other.tokenizer.encode(text).astype(np.int64)
    if (ids == 0).any():
        notes.append(f"{int((ids == 0).sum())} characters are not in the vocabulary of "
                     f"{other.label}: its gradient curve reads them as <unk>")
    reach = min(steps, len(ids) - 2)
    if reach < 1:
        return np.zeros(0)
    start = "\n" if "\n" in other.tokenizer.chars else other.tokenizer.chars[0]
    states = trace(other.model, ids, int(other.tokenizer.encode(start)[0])).states
    return gradient_curve(other.model, ids, states, reach, GRADIENT_PLACES)


def _curve(model: CharRNN, ids: np.ndarray, states: dict, steps: int, notes: list
           ) -> np.ndarray:
    reach = min(steps, len(ids) - 2)
    if reach < 1:
        notes.append("the text is too short for the gradient curve: it needs at least 3 "
                     "characters")
        return np.zeros(0)
    if reach < steps:
        notes.append(f"the gradient curve reaches k = {reach}, not {steps}: the text has "
                     f"{len(ids)} characters")
    return gradient_curve(model, ids, states, reach, GRADIENT_PLACES)


def _fields(model: CharRNN, text: str, reading, summary: ReportSummary, title: str) -> dict:
    config = model.config
    unknown = reading.ids == 0
    notes = "".join(f"<li>{html.escape(note)}</li>" for note in summary.notes)
    absent = (f"<p class='meta'>Not in this text, so not looked for: "
              f"{html.escape(', '.join(summary.absent))}.</p>" if summary.absent else "")
    return {
        "TITLE": html.escape(title),
        "META": html.escape(f"{config.cell} {config.layers}x{config.hidden_size}, "
                            f"{model.num_params():,} parameters; {len(text):,} characters"),
        "NOTES": f"<ul class='notes'>{notes}</ul>" if notes else "",
        "MEAN": "-" if math.isnan(summary.mean_bpc) else f"{summary.mean_bpc:.3f}",
        "KNOWN": f"{int((~unknown).sum()):,}",
        "SPANS": report_page.spans(text, reading.bits, unknown),
        "UNITS": html.escape(f"{summary.units_kept} of {summary.units_total} units stored."),
        "ABSENT": absent,
        "CURVE": _curve_html(summary),
        "GATES": _gates_html(model, summary),
    }


def _gates_html(model: CharRNN, summary: ReportSummary) -> str:
    if model.config.cell != "lstm":
        return ""
    size = model.config.hidden_size
    stored = ("for every unit" if summary.gate_units == size else
              f"for {summary.gate_units} of the {size} units of each layer" if summary.gate_units
              else "for no unit (no room left in the file)")
    return (" For an LSTM also its gates at that step, stored " + stored + ": the input "
            "gate i, the forget gate f and the output gate o (each 0 to 1: <span class='legend' "
            "style='background:linear-gradient(90deg,#fff,#1a8a3a)'></span>) and the cell "
            "candidate g (-1 to +1). The cell state is c = f &middot; c<sub>before</sub> + i "
            "&middot; g, and h = o &middot; tanh(c).")


def _curve_html(summary: ReportSummary) -> str:
    curve = summary.curve
    if not len(curve):
        return "<p>The text is too short for the gradient curve.</p>"
    curves = [(summary.label, curve)] + [(label, other) for label, other in summary.compared
                                         if len(other) == len(curve)]
    falls = [f"{fall(values):.3g} for {html.escape(label)}" for label, values in curves]
    told = (f"Here it falls by a factor of {fall(curve):.3g} from k = 1 to k = {len(curve)}"
            if len(curves) == 1 else
            f"From k = 1 to k = {len(curve)} it falls by a factor of {', '.join(falls[:-1])} "
            f"and {falls[-1]}. The curves share one axis")
    return (f"<p>The size of the gradient of the loss at a character with respect to the "
            f"network's state k characters earlier, ||&part;loss<sub>t</sub> / &part;s<sub>t-k"
            f"</sub>||, averaged over {GRADIENT_PLACES} places in the text (log scale). A "
            f"falling curve is the vanishing gradient: the further back a character is, the "
            f"less the loss now can teach the network about it. {told}. The axis spans at "
            f"least {report_page.MIN_DECADES} powers of ten, so that reports of different "
            f"models can be compared by eye; <code>charrnn viz --compare</code> draws other "
            f"models on this axis.</p>" + report_page.curve_svg(curves))


def _data(model: CharRNN, tokenizer: CharTokenizer, text: str, reading, values: dict,
          kept: dict, summary: ReportSummary, units_note: str) -> dict:
    """What the page's script reads (see report_page.SCRIPT)."""
    blocks = []
    starts = shown(reading.start)
    for (layer, kind), units in kept.items():
        codes = quantise(values[kind][layer][:, units].T)        # [units, T], unit-major
        start = quantise(starts[kind][layer][units])              # [units]: the state view's
        blocks.append({"layer": layer, "kind": KINDS[kind], "units": units.tolist(),
                       "codes": base64.b64encode(codes.tobytes()).decode("ascii"),
                       "start": base64.b64encode(start.tobytes()).decode("ascii")})
    unknown = reading.ids == 0
    layer, kind, unit = summary.initial
    return {
        "text": text, "vocab": tokenizer.id_to_char,
        "bits": [None if unk else round(float(b), 2) for b, unk in zip(reading.bits, unknown)],
        "unknown": unknown.astype(int).tolist(),
        "top_ids": reading.top_ids.ravel().tolist(),
        "top_probs": np.round(reading.top_probs.ravel().astype(np.float64), 3).tolist(),
        "blocks": blocks, "layers": model.config.layers,
        "kinds": [KINDS[k] for k in values], "hidden_size": model.config.hidden_size,
        "hits": [{"name": h.name, "what": _what(h.name), "layer": h.layer,
                  "kind": KINDS[h.kind], "unit": h.unit, "r": round(h.r, 3)}
                 for h in summary.hits],
        "initial": {"layer": layer, "kind": KINDS[kind], "unit": unit},
        "units_note": units_note,
    }


def _what(name: str) -> str:
    return next(what for known, what, _ in PROPERTIES if known == name)


def _write(page: str, path: Path) -> int:
    data = page.encode("utf-8")
    if len(data) > MAX_BYTES:      # cannot happen within the stated limits; never write it
        raise CharRNNError(f"the report would be {len(data) >> 20} MB, over the "
                           f"{MAX_BYTES >> 20} MB limit: lower --max-chars")
    try:
        with files.atomic_file(path) as tmp:
            files.write_bytes(tmp, data)
    except OSError as err:
        raise CharRNNError(f"cannot write the report {path}: {err.strerror or err}; choose "
                           "another --out or make the folder writable") from None
    return len(data)
