"""Hidden units and what they respond to: simple properties of a text, each unit's correlation
with them, and 8-bit storage of activations for the HTML report.

The properties follow the cells Karpathy, Johnson and Fei-Fei found by hand ("Visualizing and
Understanding Recurrent Networks", 2015: quotes, brackets, line length) plus a few more; the
correlation is Pearson's r between a unit's activation after reading a character and the
property at that character.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

LEVELS = 255          # 8-bit codes 0..255 for activations in [-1, 1]
OPENING, CLOSING = "([{", ")]}"
QUOTES = '"\u201c\u201d'


def _inside_quotes(text: str) -> np.ndarray:
    """1 from an opening double quote to its closing one (both included): straight quotes
    alternate, curly ones open and close; a new line does not end a quotation."""
    inside, values = False, np.zeros(len(text))
    for i, char in enumerate(text):
        opens = char == "\u201c" or (char == '"' and not inside)
        if opens:
            inside = True
        values[i] = inside
        if not opens and char in QUOTES:
            inside = False
    return values


def _inside_brackets(text: str) -> np.ndarray:
    """1 between an opening bracket ( [ { and its closing one (both included)."""
    depth, values = 0, np.zeros(len(text))
    for i, char in enumerate(text):
        depth += char in OPENING
        values[i] = depth > 0
        depth = max(0, depth - (char in CLOSING))
    return values


def _position_in_line(text: str) -> np.ndarray:
    """Characters since the last newline (0 for the newline itself)."""
    values, column = np.zeros(len(text)), 0
    for i, char in enumerate(text):
        column = 0 if char == "\n" else column + 1
        values[i] = column
    return values


def _position_in_word(text: str) -> np.ndarray:
    """1, 2, 3.. through the letters of a word; 0 elsewhere."""
    values, run = np.zeros(len(text)), 0
    for i, char in enumerate(text):
        run = run + 1 if char.isalpha() else 0
        values[i] = run
    return values


def _line_in_capitals(text: str) -> np.ndarray:
    """1 while the line so far has letters and all of them are capitals (a speaker's name in a
    play, a heading)."""
    values, letters, capitals = np.zeros(len(text)), 0, True
    for i, char in enumerate(text):
        if char == "\n":
            letters, capitals = 0, True
        elif char.isalpha():
            letters, capitals = letters + 1, capitals and char.isupper()
        values[i] = letters > 0 and capitals
    return values


def _each(test: Callable[[str, str], bool]) -> Callable[[str], np.ndarray]:
    """A property of each character (and the one before it)."""
    return lambda text: np.array([test(char, text[i - 1] if i else "\n")
                                  for i, char in enumerate(text)], dtype=float)


# (name, what it is): the report lists the units most correlated with each.
PROPERTIES: list[tuple[str, str, Callable[[str], np.ndarray]]] = [
    ("inside quotes", "between double quotes", _inside_quotes),
    ("inside brackets", "between ( [ { and ) ] }", _inside_brackets),
    ("position in line", "characters since the newline", _position_in_line),
    ("start of word", "a letter after a non-letter", _each(lambda c, p: c.isalpha()
                                                             and not p.isalpha())),
    ("position in word", "letters since the word began", _position_in_word),
    ("upper case", "a capital letter", _each(lambda c, p: c.isupper())),
    ("line in capitals", "a line of capitals so far, as a speaker's name", _line_in_capitals),
    ("space", "a space", _each(lambda c, p: c == " ")),
    ("after punctuation", "a punctuation mark", _each(lambda c, p: not c.isalnum()
                                                      and not c.isspace())),
    ("vowel", "a, e, i, o, u (either case)", _each(lambda c, p: c.lower() in "aeiou")),
    ("digit", "0-9", _each(lambda c, p: c.isdigit())),
]


@dataclass
class Hit:
    """Unit ``unit`` of state ``kind`` ("h" hidden, "c" cell) in layer ``layer`` has Pearson
    correlation ``r`` with property ``name`` over the text."""
    name: str
    layer: int
    kind: str
    unit: int
    r: float


def text_properties(text: str) -> dict[str, np.ndarray]:
    """Each property of ``PROPERTIES`` at each character: name -> [len(text)] float64."""
    return {name: compute(text) for name, _, compute in PROPERTIES}


def shown(states: dict) -> dict:
    """The activations the report shows and correlates: h as it is (in [-1, 1] for every
    cell) and tanh(c) for the LSTM cell state (unbounded; tanh(c) is what the output gate
    sees). Same keys and shapes as ``states``."""
    return {kind: np.tanh(values) if kind == "c" else values for kind, values in states.items()}


def correlations(values: np.ndarray, feature: np.ndarray) -> np.ndarray:
    """Pearson's r of every column of ``values`` [T, U] with ``feature`` [T]: [U] float64; 0
    for a constant column. Raises ValueError for a constant feature (r is undefined)."""
    feature = feature - feature.mean()
    if not np.any(feature):
        raise ValueError("a constant feature has no correlation")
    centred = values - values.mean(0)
    spread = np.sqrt((centred ** 2).sum(0) * (feature ** 2).sum())
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (centred * feature[:, None]).sum(0) / spread
    return np.nan_to_num(r)


def correlated_units(text: str, values: dict, per_property: int = 2
                     ) -> tuple[list[Hit], list[str]]:
    """The ``per_property`` units with the largest |r| for each property of ``text`` (over
    every layer and kind of ``values``: kind -> [layers, T, hidden], as ``shown`` gives), and
    the names of the properties the text does not vary in (no correlation to find)."""
    hits, absent = [], []
    for name, feature in text_properties(text).items():
        if np.ptp(feature) == 0:
            absent.append(name)
            continue
        found = []
        for kind, layers in values.items():
            for layer, activations in enumerate(layers):
                r = correlations(activations.astype(np.float64), feature)
                best = np.argsort(-np.abs(r), kind="stable")[:per_property]
                found += [Hit(name, layer, kind, int(u), float(r[u])) for u in best]
        found.sort(key=lambda hit: -abs(hit.r))
        hits += found[:per_property]
    return hits, absent


def quantise(values: np.ndarray) -> np.ndarray:
    """Activations in [-1, 1] (clipped) -> uint8 codes 0..255; ``dequantise`` recovers them
    to within 1/255."""
    return np.round((np.clip(values, -1, 1) + 1) * (LEVELS / 2)).astype(np.uint8)


def dequantise(codes: np.ndarray) -> np.ndarray:
    """uint8 codes -> float64 values in [-1, 1] (the page's script does the same)."""
    return codes.astype(np.float64) * (2 / LEVELS) - 1


def units_to_keep(values: dict, most: int, wanted: list[tuple[int, str, int]]
                  ) -> dict[tuple[int, str], np.ndarray]:
    """Which units of each (layer, kind) the report stores when there is room for ``most``
    values in all, T + 1 per unit (its T activations over the text and the start state,
    for the state view): every unit if they fit; else the same number for each (layer,
    kind): the ``wanted`` ones (layer, kind, unit) first, in their order, as far as there is
    room, then those whose activation varies most. ``values``: kind -> [layers, T, hidden].
    Returns (layer, kind) -> unit indices (int64, in unit order)."""
    blocks = [(layer, kind) for kind, layers in values.items() for layer in range(len(layers))]
    length, hidden = next(iter(values.values())).shape[1:]
    room = max(1, most // max(1, (length + 1) * len(blocks)))
    kept = {}
    for layer, kind in blocks:
        if room >= hidden:
            kept[(layer, kind)] = np.arange(hidden)
            continue
        first = [u for (l, k, u) in wanted if (l, k) == (layer, kind)]
        order = np.argsort(-values[kind][layer].std(0), kind="stable")
        chosen = list(dict.fromkeys(first + [int(u) for u in order]))[:room]
        kept[(layer, kind)] = np.array(sorted(chosen), dtype=np.int64)
    return kept


def gate_units_to_keep(values: dict, most: int, wanted: list[tuple[int, str, int]],
                       gates: int = 4) -> dict[int, np.ndarray]:
    """Which units of each layer get their LSTM gates stored for the state view, in room for
    ``most`` values (``gates`` x T per unit; 0 or less: none): the same number in every
    layer, every unit if they fit; else the ``wanted`` units of that layer (any kind) first,
    then those whose cell state tanh(c) varies most. ``values`` as ``shown`` gives, with a
    "c" kind. Returns layer -> unit indices (int64, in unit order; possibly empty)."""
    layers, length, hidden = values["c"].shape
    room = max(0, most) // max(1, gates * length * layers)
    kept = {}
    for layer in range(layers):
        if room >= hidden:
            kept[layer] = np.arange(hidden)
            continue
        first = [u for (l, _, u) in wanted if l == layer]
        order = np.argsort(-values["c"][layer].std(0), kind="stable")
        chosen = list(dict.fromkeys(first + [int(u) for u in order]))[:room]
        kept[layer] = np.array(sorted(chosen), dtype=np.int64)
    return kept
