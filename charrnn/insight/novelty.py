"""Did the model copy its training text? The memorisation check of ``charrnn novelty`` and
``charrnn sample --novelty``.

For each sample (the prime excluded) it finds the longest span that appears verbatim in the
training split of the run's corpus, and the share of the sample's characters covered by copied
spans of MIN_SPAN or more characters; for line-by-line corpora, whether each generated line is a
line of the corpus. The training split is indexed once with a suffix array (libdivsufsort,
Mori, through pydivsufsort) cached beside the token cache; each position of a sample then costs
one binary search over it (its matching statistic: the longest match starting there).
pydivsufsort is the insight extra: without it, the check raises CharRNNError naming the install
command, whether or not the index is cached.
"""
from __future__ import annotations

import bisect
import glob
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from charrnn import files
from charrnn.config import CACHE_DIR
from charrnn.errors import CharRNNError, optional_import

MIN_SPAN = 20         # characters: a copied span at least this long counts as copied
CHECK = "the memorisation check (charrnn novelty, charrnn sample --novelty)"  # in errors


class Index:
    """A suffix array over ``ids`` (a 1-D array of unsigned token ids), for exact searches.

    The ids are kept as big-endian bytes, ``width`` per id, so that comparing bytes compares id
    sequences; ``suffixes`` [n] (int32, or int64 past 2**31 ids) lists the start of every
    suffix of the ids in sorted order (libdivsufsort's order)."""

    def __init__(self, ids: np.ndarray, suffixes: np.ndarray):
        self.width = np.dtype(ids.dtype).itemsize
        self.data = np.asarray(ids).astype(f">u{self.width}").tobytes()
        self.suffixes, self.size = suffixes, len(ids)

    @classmethod
    def build(cls, ids: np.ndarray) -> "Index":
        """Sort the suffixes of ``ids`` with divsufsort: O(n) memory (5 bytes per id for
        uint8 ids), about a second for a few MB on one core."""
        # Lazily: only the memorisation check needs it.
        pydivsufsort = optional_import("pydivsufsort", "insight", CHECK)
        ids = np.array(ids)     # a writable copy: pydivsufsort refuses read-only memmaps
        return cls(ids, pydivsufsort.divsufsort(ids))

    def _key(self, length: int):
        width, data = self.width, self.data
        return lambda start: data[int(start) * width:int(start) * width + length]

    def _range(self, pattern: bytes) -> tuple[int, int]:
        """The suffixes [low, high) that start with ``pattern`` (bytes of whole ids)."""
        key = self._key(len(pattern))
        low = bisect.bisect_left(self.suffixes, pattern, key=key)
        return low, bisect.bisect_right(self.suffixes, pattern, lo=low, key=key)

    def count(self, query: np.ndarray) -> int:
        """How many times the id sequence ``query`` occurs in the ids."""
        low, high = self._range(self._bytes(query))
        return high - low

    def matches(self, query: np.ndarray, reach: int = 64) -> np.ndarray:
        """The matching statistics of ``query`` [m]: for each i, the length of the longest
        prefix of query[i:] that occurs in the ids, [m] int64. The longest match of a string
        is shared with a suffix next to where the string would sort, so one binary search and
        two comparisons per position find it. Each search looks ``reach`` ids ahead, four
        times further while the match fills it: a long sample costs O(m log n), not O(m^2)."""
        data, width = self._bytes(query), self.width
        out = np.zeros(len(query), dtype=np.int64)
        for i in range(len(query)):
            length = min(reach, len(query) - i)
            while True:
                piece = data[i * width:(i + length) * width]
                place = bisect.bisect_left(self.suffixes, piece, key=self._key(len(piece)))
                out[i] = max((self._common(piece, int(self.suffixes[n]))
                              for n in (place - 1, place) if 0 <= n < self.size), default=0)
                if out[i] < length or i + length == len(query):
                    break        # (a shorter match than the piece is the whole string's too)
                length = min(4 * length, len(query) - i)
        return out

    def _common(self, rest: bytes, start: int) -> int:
        """Whole ids shared by ``rest`` and the suffix at ``start``, from their beginnings."""
        other = self.data[start * self.width:start * self.width + len(rest)]
        a = np.frombuffer(rest[:len(other)], dtype=np.uint8)
        b = np.frombuffer(other, dtype=np.uint8)
        differ = np.flatnonzero(a != b)
        return (int(differ[0]) if len(differ) else len(b)) // self.width

    def _bytes(self, query: np.ndarray) -> bytes:
        return np.asarray(query).astype(f">u{self.width}").tobytes()


def cached_index(ids: np.ndarray, path: Path) -> tuple[Index, float]:
    """The index of ``ids``, read from ``path`` (an .npy of the suffix array) or built and
    saved there; (index, seconds spent building: 0.0 when it was read). A cache that cannot be
    written is only a note: the index still works."""
    try:
        suffixes = np.load(path, mmap_mode="r")
        if suffixes.shape == (len(ids),):
            return Index(ids, suffixes), 0.0
    except (OSError, ValueError):
        pass                       # missing or broken: build it again
    started = time.perf_counter()
    index = Index.build(ids)
    seconds = time.perf_counter() - started
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with files.atomic_file(path, sync=False) as tmp:      # a cache can be rebuilt
            with open(tmp, "wb") as handle:
                np.save(handle, index.suffixes)
    except OSError as err:
        from charrnn.errors import note
        note(f"cannot cache the corpus index in {path.parent}: {err.strerror or err}")
    return index, seconds


@dataclass
class SampleNovelty:
    """One sample against the training text: ``generated`` characters (the prime excluded),
    the ``longest`` span of them found verbatim in it (``longest_text``), the share of them in
    copied spans of MIN_SPAN or more characters, and with lines: the generated ``line`` and
    whether it is not a line of the corpus (``novel_line``)."""
    generated: int
    longest: int
    longest_text: str
    copied_share: float
    line: Optional[str] = None
    novel_line: Optional[bool] = None

    def describe(self) -> str:
        """This result in words, one line."""
        line = "" if self.novel_line is None else \
            f"; its line is {'new' if self.novel_line else 'a line of the corpus'}"
        return (f"longest span found in the training text {self.longest} characters "
                f"{self.longest_text!r}; {100 * self.copied_share:.1f}% of its {self.generated} "
                f"characters in copied spans of >= {MIN_SPAN}{line}")


@dataclass
class Novelty:
    """The samples' results and what they were checked against: the corpus spec, the training
    split's length in characters, the seconds spent building the index (0.0: it was cached)."""
    samples: list
    corpus: str
    train_chars: int
    index_seconds: float
    index_path: Path
    notes: list = field(default_factory=list)

    def summary(self) -> dict:
        """Aggregates over the samples: mean/median/max longest span, the mean copied share,
        how many samples hold a copied span, and (with lines) the share of novel lines."""
        longest = np.array([s.longest for s in self.samples] or [0])
        result = {"samples": len(self.samples), "mean_longest": float(longest.mean()),
                  "median_longest": float(np.median(longest)), "max_longest": int(longest.max()),
                  "mean_copied_share": float(np.mean([s.copied_share for s in self.samples]
                                                     or [0.0])),
                  "with_copied_span": sum(s.longest >= MIN_SPAN for s in self.samples)}
        lines = [s.novel_line for s in self.samples if s.novel_line is not None]
        if lines:
            result["lines"], result["novel_lines"] = len(lines), sum(lines)
        return result

    def describe(self) -> str:
        """The summary in words, a few lines (what ``charrnn novelty`` prints)."""
        s = self.summary()
        index = f"built in {self.index_seconds:.2f} s" if self.index_seconds else "cached"
        lines = [f"{s['samples']} samples checked against the training split of {self.corpus} "
                 f"({self.train_chars:,} characters; index {index}: {self.index_path})",
                 f"longest span found verbatim in the training text: mean "
                 f"{s['mean_longest']:.1f}, median {s['median_longest']:g}, max "
                 f"{s['max_longest']} characters",
                 f"characters in copied spans of >= {MIN_SPAN}: "
                 f"{100 * s['mean_copied_share']:.1f}% (samples with such a span: "
                 f"{s['with_copied_span']} of {s['samples']})"]
        if self.samples:
            longest = max(self.samples, key=lambda item: item.longest)
            lines.append(f"the longest: {longest.longest_text!r}")
        if "lines" in s:
            lines.append(f"generated lines that are not lines of the corpus: "
                         f"{s['novel_lines']} of {s['lines']} "
                         f"({100 * s['novel_lines'] / s['lines']:.1f}%)")
        return "\n".join(lines)

    def describe_samples(self) -> str:
        """One line per sample (what ``charrnn sample --novelty`` prints)."""
        return "\n".join(f"novelty of sample {i + 1}: {item.describe()}"
                         for i, item in enumerate(self.samples))


def check_sample(index: Index, tokenizer, prime: str, text: str, lines: bool = False,
                 newline: Optional[int] = None) -> SampleNovelty:
    """Check ``text`` (a sample: ``prime`` followed by generated characters) against the
    index. With ``lines``, the generated line (the prime's last line and what follows, the
    final newline dropped) is looked up as a whole line: between two newlines of the corpus
    (or at its start or end); ``newline`` is the id of "\\n"."""
    generated = text[len(prime):] if text.startswith(prime) else text
    ids = tokenizer.encode(generated)
    stats = index.matches(ids) if len(ids) else np.zeros(0, dtype=np.int64)
    covered = np.zeros(len(ids), dtype=bool)
    for start in np.flatnonzero(stats >= MIN_SPAN):
        covered[start:start + stats[start]] = True
    best = int(stats.argmax()) if len(stats) else 0
    longest = int(stats[best]) if len(stats) else 0
    result = SampleNovelty(len(ids), longest, generated[best:best + longest],
                           float(covered.mean()) if len(ids) else 0.0)
    if lines and newline is not None:
        line = (prime.rsplit("\n", 1)[-1] + generated).removesuffix("\n")
        if line and "\n" not in line:
            result.line, result.novel_line = line, not _is_line(index, tokenizer, line, newline)
    return result


def _is_line(index: Index, tokenizer, line: str, newline: int) -> bool:
    body = tokenizer.encode(line)
    wrapped = np.concatenate([[newline], body, [newline]]).astype(body.dtype)
    if index.count(wrapped):
        return True
    data = index.data
    head, tail = index._bytes(wrapped[1:]), index._bytes(wrapped[:-1])
    return data.startswith(head) or data.endswith(tail)


class TrainingText:
    """The training split of a run's corpus, indexed for the memorisation check.

    ``TrainingText(config, tokenizer, corpus, cache_dir)``: ``config`` is the model's
    config.json; the corpus is ``corpus`` if given, else the one the run recorded, checked
    against the recorded digest. Its token ids and the index are cached in ``cache_dir``.
    ``notes`` holds what the user should know (an unchecked or different corpus). Raises
    CharRNNError when the corpus cannot be found, has changed, or cannot be read, or when the
    insight extra is not installed."""

    def __init__(self, config: dict, tokenizer, corpus: Optional[str] = None,
                 cache_dir: str = CACHE_DIR):
        # First, and even when the index is cached: whether the check works must not depend
        # on what ran before.
        optional_import("pydivsufsort", "insight", CHECK)
        from charrnn.data.cache import cached_digest, load_ids, tokenizer_digest
        from charrnn.data.corpus import Corpus
        from charrnn.data.batches import split_train_val

        train = config.get("train") or {}
        self.spec, self.notes, self.tokenizer = _corpus_spec(config, corpus), [], tokenizer
        source = Corpus(self.spec, train.get("encoding", "utf-8"), train.get("errors", "strict"))
        _, ids = load_ids(source, tokenizer, cache_dir)
        recorded, digest = config.get("corpus_digest"), cached_digest(ids)
        if recorded is None:
            self.notes.append(f"the run does not record its corpus's digest (an older charrnn "
                              f"trained it): {self.spec} is taken to be its training text")
        elif digest != recorded and corpus is None:
            raise CharRNNError(f"the run's corpus {self.spec} has changed since the run trained "
                               "on it (its contents differ): give the original text with "
                               "--corpus PATH")
        elif digest != recorded:
            self.notes.append(f"{self.spec} is not the text the run trained on (its contents "
                              "differ): the samples are checked against it anyway")
        train_ids, _ = split_train_val(ids, float(train.get("val_fraction", 0.1)))
        self.chars = len(train_ids)
        self.index_path = Path(cache_dir) / \
            f"{digest}-{tokenizer_digest(tokenizer)}-train{self.chars}.sa.npy"
        self.index, self.index_seconds = cached_index(train_ids, self.index_path)

    def check(self, texts: list, prime: str = "", lines: bool = False) -> "Novelty":
        """Check samples ``texts`` (each ``prime`` + generated text); ``lines``: also whether
        each generated line is a line of the corpus (for line-by-line corpora)."""
        newline = self.tokenizer.vocab.get("\n")
        notes = list(self.notes)
        if lines and newline is None:
            notes.append("the corpus has no newlines: there are no lines to compare")
        samples = [check_sample(self.index, self.tokenizer, prime, text, lines, newline)
                   for text in texts]
        return Novelty(samples, self.spec, self.chars, self.index_seconds, self.index_path,
                       notes)


def _corpus_spec(config: dict, corpus: Optional[str]) -> str:
    """The corpus to check against: ``corpus``, else where the run's corpus was recorded."""
    if corpus is not None:
        return corpus
    recorded = [config.get(key) for key in ("corpus", "corpus_path") if config.get(key)]
    if not recorded:
        raise CharRNNError("the model does not record the corpus it was trained on: give it "
                           "with --corpus PATH")
    for spec in recorded:
        if str(spec).startswith("hf:") or Path(spec).exists() or glob.glob(spec):
            return str(spec)
    raise CharRNNError(f"the run's corpus {recorded[0]} is not there (moved or deleted?): give "
                       "it with --corpus PATH")
