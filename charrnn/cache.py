"""Stage 3: token ids cached on disk as a numpy memmap, keyed by corpus contents and tokenizer.

Two streaming passes, each holding one chunk at a time: ``scan`` hashes the corpus and counts its
characters (which builds the tokenizer), ``encode_corpus`` writes the ids. A later run with the
same corpus and tokenizer maps the cached file instead of encoding again.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
from tqdm import tqdm

from .corpus import Corpus
from .errors import CharRNNError
from .tokenizer import CharTokenizer, codepoints_of

MAX_CODEPOINT = 0x10FFFF


@dataclass
class Scan:
    digest: str            # hash of the corpus contents
    counts: np.ndarray     # characters per code point
    num_chars: int


def scan(corpus: Corpus, progress: bool = False) -> Scan:
    hasher = hashlib.blake2b(digest_size=16)
    counts = np.zeros(MAX_CODEPOINT + 1, dtype=np.int64)
    with tqdm(desc="reading corpus", unit="B", unit_scale=True, disable=not progress,
              leave=False) as bar:
        for chunk in corpus.chunks():
            hasher.update(chunk.raw)
            counts += np.bincount(codepoints_of(chunk.text), minlength=MAX_CODEPOINT + 1)
            bar.update(len(chunk.raw))
    num_chars = int(counts.sum())
    if num_chars == 0:
        raise CharRNNError(f"corpus {corpus.spec} is empty: give it some text")
    if counts[[ord(c) for c in " \t\n\r\x0b\x0c"]].sum() == num_chars:
        raise CharRNNError(f"corpus {corpus.spec} holds only whitespace: give it some text")
    return Scan(hasher.hexdigest(), counts, num_chars)


def tokenizer_digest(tokenizer: CharTokenizer) -> str:
    return hashlib.blake2b(json.dumps(tokenizer.vocab, sort_keys=True).encode(),
                           digest_size=8).hexdigest()


def load_ids(corpus: Corpus, tokenizer: Optional[CharTokenizer], cache_dir: str | Path,
             progress: bool = False) -> tuple[CharTokenizer, np.memmap]:
    """Ids of the whole corpus (read-only memmap) and the tokenizer that made them.

    With ``tokenizer=None`` one is built from the corpus's characters.
    """
    info = scan(corpus, progress)
    if tokenizer is None:
        tokenizer = CharTokenizer.from_counts(info.counts)
    cache_dir = Path(cache_dir)
    path = cache_dir / f"{info.digest}-{tokenizer_digest(tokenizer)}.{np.dtype(tokenizer.dtype).name}"
    if not (path.exists() and path.stat().st_size == info.num_chars * np.dtype(tokenizer.dtype).itemsize):
        encode_corpus(corpus, tokenizer, path, info.num_chars, progress)
    return tokenizer, np.memmap(path, dtype=tokenizer.dtype, mode="r", shape=(info.num_chars,))


def encode_corpus(corpus: Corpus, tokenizer: CharTokenizer, path: Path, num_chars: int,
                  progress: bool = False) -> None:
    """Encode chunk by chunk into a temp file beside ``path``, then rename it into place."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        ids = np.memmap(tmp, dtype=tokenizer.dtype, mode="w+", shape=(num_chars,))
        position = 0
        with tqdm(desc="encoding corpus", total=num_chars, unit="char", unit_scale=True,
                  disable=not progress, leave=False) as bar:
            for chunk in corpus.chunks():
                encoded = tokenizer.encode(chunk.text)
                ids[position:position + len(encoded)] = encoded
                position += len(encoded)
                bar.update(len(encoded))
        if position != num_chars:
            raise CharRNNError(f"corpus {corpus.spec} changed while it was read: run again")
        ids.flush()
        del ids
        os.replace(tmp, path)
    except OSError as err:
        raise CharRNNError(f"cannot write the token cache in {path.parent}: "
                           f"{err.strerror or err}") from None
