"""Stage 2: a character-level tokenizer, stored as a standard ``tokenizers`` tokenizer.json.

Id 0 is the unknown-character token; ids 1.. are the corpus's distinct characters in code-point
order, followed, in a vocabulary extended for fine-tuning (``extended``), by the characters added
later, so every old character keeps its id. The id order is explicit: tokenizer.json holds it, and
everything that rebuilds a tokenizer (the loader, the parallel encoding workers, the processes of
a torchrun run) takes ``chars`` in that order with ``in_order=True``; a tokenizer.json written
before 0.2 is in code-point order and loads as it did.
``tokenizers.Tokenizer.from_file`` loads the saved file and gives the same ids; charrnn
itself encodes with a numpy lookup table, which is two orders of magnitude faster than the
tokenizer's own per-character path and gives identical ids (tests/data/test_tokenizer.py).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

import numpy as np
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers

from charrnn.errors import CharRNNError

UNK = "<unk>"
UNK_ID = 0


class CharTokenizer:
    """``CharTokenizer(chars)``: ids 1.. for the distinct ``chars`` in code-point order;
    ``CharTokenizer(chars, in_order=True)``: ids 1.. for ``chars`` as given (id order, e.g.
    ``tokenizer.chars``). Raises CharRNNError for a string that is not one character, or for a
    character given twice in order."""

    def __init__(self, chars: Iterable[str], in_order: bool = False):
        self.chars = list(chars) if in_order else sorted(set(chars))
        if any(not isinstance(c, str) or len(c) != 1 for c in self.chars):
            raise CharRNNError("a character tokenizer needs single characters")
        if len(set(self.chars)) != len(self.chars):
            raise CharRNNError("a character tokenizer needs each character once")
        self.vocab = {UNK: UNK_ID, **{c: i + 1 for i, c in enumerate(self.chars)}}
        codepoints = np.array([ord(c) for c in self.chars], dtype=np.int64)
        self._max_cp = int(codepoints.max()) if len(codepoints) else 0
        # Dense code point -> id table; the extra last slot catches every code point above max.
        self._table = np.zeros(self._max_cp + 2, dtype=self.dtype)
        self._table[codepoints] = np.arange(1, len(codepoints) + 1)
        self.id_to_char = [""] + self.chars   # id -> text; <unk> decodes to nothing

    @property
    def vocab_size(self) -> int:
        return len(self.chars) + 1

    @property
    def dtype(self):
        """The smallest unsigned type that holds every id (used for the id cache)."""
        size = len(self.chars) + 1
        return np.uint8 if size <= 1 << 8 else np.uint16 if size <= 1 << 16 else np.uint32

    @classmethod
    def from_counts(cls, counts: np.ndarray) -> "CharTokenizer":
        """From a histogram over code points (index = code point)."""
        return cls(chr(cp) for cp in np.flatnonzero(counts))

    def encode(self, text: str) -> np.ndarray:
        """Vectorised encoding: str -> ids, identical to ``to_tokenizers().encode(text).ids``."""
        codepoints = codepoints_of(text)
        return self._table[np.minimum(codepoints, self._max_cp + 1)]

    def decode(self, ids: Iterable[int]) -> str:
        return "".join(self.id_to_char[int(i)] for i in ids)

    def unknown_chars(self, text: str) -> list[str]:
        """The distinct characters of ``text`` outside the vocabulary, sorted."""
        return sorted(set(text) - set(self.chars))

    def extended(self, chars: Iterable[str]) -> "CharTokenizer":
        """This vocabulary with the characters of ``chars`` it lacks appended (in code-point
        order): every old character keeps its id, the new ones get ids vocab_size, ..."""
        known = set(self.chars)
        return CharTokenizer(self.chars + sorted(set(chars) - known), in_order=True)

    def to_tokenizers(self) -> Tokenizer:
        tokenizer = Tokenizer(models.WordLevel(self.vocab, unk_token=UNK))
        # Every code point is its own piece; WordLevel then maps it to its id (or <unk>).
        tokenizer.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
        tokenizer.decoder = decoders.Fuse()
        return tokenizer

    def save(self, path: Path) -> None:
        Path(path).write_text(self.to_tokenizers().to_str(pretty=True), encoding="utf-8")

    @classmethod
    def load(cls, path: Path) -> "CharTokenizer":
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
            vocab = data["model"]["vocab"]
            kind = data["model"]["type"]
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise CharRNNError(f"cannot read tokenizer {path}: {err}; restore the checkpoint's "
                           "tokenizer.json or train again") from None
        chars = [c for c in vocab if c != UNK]
        if kind != "WordLevel" or vocab.get(UNK) != UNK_ID or any(len(c) != 1 for c in chars):
            raise CharRNNError(f"{path} is not a charrnn character tokenizer: restore the "
                           "checkpoint's own tokenizer.json or train again")
        # The ids give the order (code-point order in files before 0.2, then appended ones).
        ids = list(vocab.values())
        if not all(type(i) is int for i in ids) or sorted(ids) != list(range(len(ids))):
            raise CharRNNError(f"{path}: the ids are not 0, 1, 2, ... (the file was edited): "
                           "restore the checkpoint's own tokenizer.json")
        return cls(sorted(chars, key=vocab.__getitem__), in_order=True)


def codepoints_of(text: str) -> np.ndarray:
    # surrogatepass: text from a dataset may hold lone surrogates; they map to <unk>.
    return np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype="<u4")


def listed_chars(chars: list, most: int = 40) -> str:
    """Characters for a one-line message: 'é', 'ü', '\\n' ... (at most ``most``, then a
    count: "and 3 more")."""
    text = ", ".join(repr(c) for c in chars[:most])
    return text + (f" and {len(chars) - most} more" if len(chars) > most else "")
