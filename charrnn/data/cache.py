"""Stage 3: token ids cached on disk as a numpy memmap, keyed by corpus contents and tokenizer.

Two streaming passes, each holding one block (about 8 MB) at a time, so memory stays bounded
whatever the corpus size: ``scan`` hashes the corpus and counts its characters (which builds the
tokenizer) and each file's length, ``encode_corpus`` writes the ids with plain file writes (the
output is never mapped whole). A corpus of several large files is read by a pool of processes,
one file each, every one writing its ids at its file's offset. A later run with the same corpus
and tokenizer maps the cached file instead of encoding again.
"""
from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Optional

import numpy as np
from tqdm import tqdm

from charrnn import files
from charrnn.data.corpus import Corpus
from charrnn.errors import CharRNNError, note
from charrnn.data.tokenizer import CharTokenizer, codepoints_of

MAX_CODEPOINT = 0x10FFFF
PARALLEL_MIN_BYTES = 64 << 20    # below this a corpus is read by one process
MAX_WORKERS = 8
PIECE_CHARS = 1 << 20        # characters converted to arrays at a time


@dataclass
class Scan:
    digest: str            # hash of the corpus contents
    counts: np.ndarray     # characters per code point
    num_chars: int
    file_chars: list       # characters per file, in corpus order (one entry for a dataset)


def scan(corpus: Corpus, progress: bool = False, workers: Optional[int] = None) -> Scan:
    """Hash and count the corpus in one streaming pass (over several processes for a corpus of
    several large files; ``workers`` overrides how many, 1 reads in this process)."""
    counts = np.zeros(MAX_CODEPOINT + 1, dtype=np.int64)
    total = sum(_size(path) for path in corpus.files) if corpus.files else None
    with tqdm(desc="reading corpus", unit="B", unit_scale=True, total=total,
              disable=not progress, leave=False) as bar:
        if len(corpus.files) > 1:
            # Several files: the digest is over the files' own digests, so that files can be
            # read in any order and by any process.
            hasher = hashlib.blake2b(corpus.reading_key(), digest_size=16)
            file_chars = []
            tasks = [(str(path), corpus.encoding, corpus.errors) for path in corpus.files]
            for digest, codepoints, numbers, chars, size, cr_only in _map(
                    _scan_file, tasks, _workers(corpus, workers)):
                hasher.update(digest)
                counts[codepoints] += numbers
                file_chars.append(chars)
                corpus.cr_only += cr_only
                bar.update(size)
            digest = hasher.hexdigest()
        else:
            # The key: the text is the bytes as read under the corpus's decoding rules.
            hasher = hashlib.blake2b(corpus.reading_key(), digest_size=16)
            chars = 0
            for block in corpus.blocks():
                hasher.update(block.raw)
                chars += _count_into(counts, block.text)
                bar.update(len(block.raw))
            digest, file_chars = hasher.hexdigest(), [chars]
    _note_line_ends(corpus)
    num_chars = int(counts.sum())
    if num_chars == 0:
        raise CharRNNError(f"corpus {corpus.spec} is empty: give it some text")
    if counts[[ord(c) for c in " \t\n\r\x0b\x0c"]].sum() == num_chars:
        raise CharRNNError(f"corpus {corpus.spec} holds only whitespace: give it some text")
    return Scan(digest, counts, num_chars, file_chars)


def _note_line_ends(corpus: Corpus) -> None:
    """Old-Mac text (lines ending in CR alone) trains as written; say what samples will do."""
    if not corpus.cr_only:
        return
    which = corpus.cr_only[0] if len(corpus.cr_only) == 1 else \
        f"{len(corpus.cr_only)} files of the corpus (first {corpus.cr_only[0]})"
    note(f"{which}: lines end in CR alone (old Mac text); the model learns that line end, so "
         "samples print each line over the last one on a terminal: convert the text first "
         "(tr '\\r' '\\n' < OLD > NEW) for normal lines")


def tokenizer_digest(tokenizer: CharTokenizer) -> str:
    """A hash of the character -> id map: the same characters in another id order (an extended
    vocabulary) give another cache file."""
    return hashlib.blake2b(json.dumps(tokenizer.vocab, sort_keys=True).encode(),
                           digest_size=8).hexdigest()


def cached_digest(ids: np.memmap) -> str:
    """The corpus digest (``Scan.digest``) of ids that ``load_ids`` returned: the cache file is
    named ``<digest>-<tokenizer digest>.<dtype>``."""
    return Path(ids.filename).name.split("-")[0]


NewChars = Callable[[CharTokenizer, list], CharTokenizer]


def load_ids(corpus: Corpus, tokenizer: Optional[CharTokenizer], cache_dir: str | Path,
             progress: bool = False, workers: Optional[int] = None,
             info: Optional[Scan] = None, on_new: Optional[NewChars] = None
             ) -> tuple[CharTokenizer, np.memmap]:
    """Ids of the whole corpus (read-only memmap) and the tokenizer that made them.

    With ``tokenizer=None`` one is built from the corpus's characters. With a tokenizer and
    ``on_new``, ``on_new(tokenizer, chars)`` is called when the corpus holds characters
    (sorted) outside its vocabulary, and returns the tokenizer to encode with (an extended one,
    or the same, which maps them to <unk>) or raises CharRNNError. ``info``: the corpus's
    ``scan``, if the caller made it already.
    """
    info = info or scan(corpus, progress, workers)
    if tokenizer is None:
        tokenizer = CharTokenizer.from_counts(info.counts)
    elif on_new is not None:
        new = sorted(set(map(chr, np.flatnonzero(info.counts))) - set(tokenizer.chars))
        tokenizer = on_new(tokenizer, new) if new else tokenizer
    cache_dir = Path(cache_dir)
    path = cache_dir / f"{info.digest}-{tokenizer_digest(tokenizer)}.{np.dtype(tokenizer.dtype).name}"
    if not (path.exists() and path.stat().st_size == info.num_chars * np.dtype(tokenizer.dtype).itemsize):
        encode_corpus(corpus, tokenizer, path, info.num_chars, progress, info.file_chars, workers)
    return tokenizer, np.memmap(path, dtype=tokenizer.dtype, mode="r", shape=(info.num_chars,))


def encode_corpus(corpus: Corpus, tokenizer: CharTokenizer, path: Path, num_chars: int,
                  progress: bool = False, file_chars: Optional[list] = None,
                  workers: Optional[int] = None) -> None:
    """Encode block by block into a temp file beside ``path``, then rename it into place.

    With ``file_chars`` (from ``scan``) a corpus of several files is encoded by a pool of
    processes, each writing one file's ids at that file's offset."""
    itemsize = np.dtype(tokenizer.dtype).itemsize
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with files.atomic_file(path, sync=False) as tmp:   # a cache can be rebuilt
            with open(tmp, "wb") as handle:
                handle.truncate(num_chars * itemsize)
            with tqdm(desc="encoding corpus", total=num_chars, unit="char", unit_scale=True,
                      disable=not progress, leave=False) as bar:
                if len(corpus.files) > 1 and file_chars is not None \
                        and len(file_chars) == len(corpus.files) and sum(file_chars) == num_chars:
                    offsets = np.cumsum([0] + list(file_chars[:-1])).tolist()
                    tasks = [(str(p), corpus.encoding, corpus.errors, tokenizer.chars, str(tmp),
                              offset, chars)
                             for p, offset, chars in zip(corpus.files, offsets, file_chars)]
                    for written in _map(_encode_file, tasks, _workers(corpus, workers)):
                        bar.update(written)
                else:
                    with open(tmp, "r+b") as handle:
                        written = _write_ids(corpus.blocks(), tokenizer, handle, num_chars, bar)
                    if written != num_chars:
                        raise CharRNNError(f"corpus {corpus.spec} changed while it was read: "
                                           "run again")
    except OSError as err:
        raise CharRNNError(f"cannot write the token cache in {path.parent}: "
                           f"{err.strerror or err}") from None


def _write_ids(blocks, tokenizer: CharTokenizer, handle, limit: int, bar=None) -> int:
    """Encode ``blocks`` and write the ids at the handle's position; how many were written
    (at most ``limit``; more than that means the text changed since it was scanned)."""
    written = 0
    for block in blocks:
        for piece in _pieces(block.text):
            encoded = tokenizer.encode(piece)
            if written + len(encoded) > limit:
                return limit + 1
            handle.write(memoryview(np.ascontiguousarray(encoded)).cast("B"))
            written += len(encoded)
            if bar is not None:
                bar.update(len(encoded))
    return written


def _count_into(counts: np.ndarray, text: str) -> int:
    """Add the text's characters to the histogram ``counts``; the number of characters."""
    for piece in _pieces(text):
        block = np.bincount(codepoints_of(piece))
        counts[:len(block)] += block
    return len(text)


def _pieces(text: str, size: int = PIECE_CHARS) -> Iterator[str]:
    """The text in slices: the arrays made from each (code points, int64 copies) stay small."""
    for start in range(0, len(text), size):
        yield text[start:start + size]


def _scan_file(task) -> tuple[bytes, np.ndarray, np.ndarray, int, int, list]:
    """Worker: (digest, code points seen, their counts, characters, bytes, [the file if its
    lines end in CR alone]) of one file."""
    path, encoding, errors = task
    hasher = hashlib.blake2b(digest_size=16)
    counts = np.zeros(MAX_CODEPOINT + 1, dtype=np.int64)
    chars = size = 0
    corpus = Corpus(_spec(path), encoding, errors)
    for block in corpus.blocks():
        hasher.update(block.raw)
        chars += _count_into(counts, block.text)
        size += len(block.raw)
    seen = np.flatnonzero(counts)
    return hasher.digest(), seen, counts[seen], chars, size, corpus.cr_only


def _encode_file(task) -> int:
    """Worker: encode one file into its slice of the (pre-sized) id file; the ids written.
    ``chars`` is the tokenizer's ``chars`` in id order."""
    path, encoding, errors, chars, out, offset, expected = task
    tokenizer = CharTokenizer(chars, in_order=True)     # the ids of the caller's tokenizer
    with open(out, "r+b") as handle:
        handle.seek(offset * np.dtype(tokenizer.dtype).itemsize)
        written = _write_ids(Corpus(_spec(path), encoding, errors).blocks(), tokenizer, handle,
                             expected)
    if written != expected:
        raise CharRNNError(f"{path} changed while it was read: run again")
    return written


def _spec(path: str) -> str:
    return "./" + path if path.startswith("hf:") else path   # a file, never a dataset


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _workers(corpus: Corpus, workers: Optional[int]) -> int:
    if workers is not None:
        return max(1, workers)
    if len(corpus.files) < 2 or sum(_size(p) for p in corpus.files) < PARALLEL_MIN_BYTES:
        return 1
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(len(corpus.files), cpus or 1, MAX_WORKERS))


def _map(fn: Callable, tasks: list, workers: int) -> Iterator:
    """``fn`` over ``tasks``, results in order: here, or in a pool of ``workers`` processes."""
    if workers <= 1 or len(tasks) <= 1:
        yield from map(fn, tasks)
        return
    # fork on Linux (as torch's DataLoader does): workers start at once, without re-importing
    # torch; they only read files and run numpy. Elsewhere fork is unsafe: spawn.
    method = "fork" if sys.platform.startswith("linux") else "spawn"
    pool = ProcessPoolExecutor(min(workers, len(tasks)),
                               mp_context=multiprocessing.get_context(method))
    try:
        yield from pool.map(fn, tasks)
    finally:     # on an error, drop the files not started yet instead of reading them all
        pool.shutdown(wait=True, cancel_futures=True)
