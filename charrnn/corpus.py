"""Stage 1 of the data path: where the text comes from.

A corpus spec is a file, a folder (its files, sorted, recursively), a glob, or a Hugging Face
dataset written ``hf:NAME[:CONFIG][/SPLIT]``. A Corpus yields its text in blocks, so that a
corpus larger than memory can be scanned and encoded in a streaming pass.
"""
from __future__ import annotations

import codecs
import glob
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

from .errors import CharRNNError

BLOCK_BYTES = 8 << 20
_SPLIT = re.compile(r"^(train|training|validation|valid|val|test|dev)(\[.*\])?$|.*\[.*\]$")


@dataclass
class Block:
    raw: bytes      # the bytes as stored, for the content hash
    text: str


class Corpus:
    """Text from files or a Hugging Face dataset, read in blocks of about BLOCK_BYTES."""

    def __init__(self, spec: str, encoding: str = "utf-8", errors: str = "strict"):
        self.spec = str(spec)
        self.encoding = encoding
        self.errors = errors
        try:
            codecs.lookup(encoding)
        except LookupError:
            raise CharRNNError(f"unknown encoding {encoding!r}") from None
        if self.spec.startswith("hf:"):
            self.hf = parse_hf_spec(self.spec)
            self.files: list[Path] = []
        else:
            self.hf = None
            self.files = resolve_files(self.spec)

    @property
    def name(self) -> str:
        """A short name for the default output folder: the file stem, folder or dataset name."""
        if self.hf:
            return self.hf[0].rstrip("/").split("/")[-1] or "dataset"
        path = Path(self.spec)
        if path.is_dir():
            return path.resolve().name or "corpus"
        if len(self.files) == 1 and not glob.has_magic(self.spec):
            return path.stem or "corpus"
        return Path(self.files[0]).parent.resolve().name or "corpus"

    def blocks(self) -> Iterator[Block]:
        if self.hf:
            yield from _hf_blocks(*self.hf)
            return
        for path in self.files:
            yield from self._file_blocks(path)

    def text_start(self, chars: int) -> str:
        """The first ``chars`` characters of the text (all of it if shorter); reads only the
        blocks it needs. Raises CharRNNError as ``blocks`` does."""
        text, length = [], 0
        for block in self.blocks():
            text.append(block.text)
            length += len(block.text)
            if length >= chars:
                break
        return "".join(text)[:chars]

    def _file_blocks(self, path: Path) -> Iterator[Block]:
        decoder = codecs.getincrementaldecoder(self.encoding)(self.errors)
        offset = 0
        try:
            with open(path, "rb") as handle:
                while True:
                    raw = handle.read(BLOCK_BYTES)
                    if offset == 0 and b"\x00" in raw[:65536] and "16" not in self.encoding \
                            and "32" not in self.encoding:
                        raise CharRNNError(f"{path} looks like a binary file (it holds NUL bytes), "
                                           "not text: give a text corpus")
                    buffered = len(decoder.getstate()[0])
                    try:
                        text = decoder.decode(raw, final=not raw)
                    except UnicodeDecodeError as err:
                        at = offset - buffered + err.start
                        raise CharRNNError(
                            f"{path} is not valid {self.encoding} at byte {at}: "
                            f"pass --encoding to name its encoding or --errors replace") from None
                    offset += len(raw)
                    if text or raw:
                        yield Block(raw, text)
                    if not raw:
                        return
        except OSError as err:
            raise CharRNNError(f"cannot read {path}: {err.strerror or err}") from None


def resolve_files(spec: str) -> list[Path]:
    """The files a path, folder or glob names, sorted; a clear error when there are none."""
    path = Path(spec).expanduser()
    if path.is_file():
        return [path]
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file()
                       and not any(part.startswith(".") for part in p.relative_to(path).parts))
        if not files:
            raise CharRNNError(f"folder {spec} holds no files: put text files in it")
        return files
    if glob.has_magic(spec):
        files = sorted(Path(p) for p in glob.glob(str(path), recursive=True) if Path(p).is_file())
        if not files:
            raise CharRNNError(f"no files match {spec}: check the pattern")
        return files
    raise CharRNNError(f"corpus {spec} does not exist: give a file, folder, glob or hf:DATASET")


def parse_hf_spec(spec: str) -> tuple[str, Optional[str], str]:
    """'hf:NAME[:CONFIG][/SPLIT]' -> (name, config, split). SPLIT is recognised by its name
    (train, validation, test, ... optionally sliced like train[:10%]), so NAME may hold slashes."""
    body = spec[3:]
    split = "train"
    head, _, last = body.rpartition("/")
    if head and _SPLIT.match(last):
        body, split = head, last
    name, _, config = body.partition(":")
    if not name:
        raise CharRNNError(f"bad dataset spec {spec!r}: use hf:NAME[:CONFIG][/SPLIT]")
    return name, config or None, split


def _hf_blocks(name: str, config: Optional[str], split: str) -> Iterator[Block]:
    import datasets  # imported here: it is slow to import and only this path needs it

    try:
        dataset = datasets.load_dataset(name, config, split=split)
    except Exception as err:  # the hub and builders raise many types; all mean "cannot load"
        message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CharRNNError(f"cannot load dataset {name!r} (config {config}, split {split}): "
                           f"{message}") from None
    column = _text_column(dataset, name)
    for batch in dataset.iter(batch_size=4096):
        rows = [row for row in batch[column] if row]
        if rows:
            text = "\n".join(rows) + "\n"
            yield Block(text.encode("utf-8", "surrogatepass"), text)


def _text_column(dataset, name: str) -> str:
    features = dataset.features
    if "text" in features:
        return "text"
    for column, feature in features.items():
        if getattr(feature, "dtype", None) in ("string", "large_string"):
            return column
    raise CharRNNError(f"dataset {name!r} has no text column (columns: {', '.join(features)})")
