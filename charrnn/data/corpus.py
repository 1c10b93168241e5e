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

from charrnn.errors import CharRNNError

BLOCK_BYTES = 8 << 20
HUB_TIMEOUT = 5.0     # seconds: how long an hf: corpus waits for the Hub before failing
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
        self.cr_only: list[str] = []     # files read so far whose lines end in CR alone
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

    def reading_key(self) -> bytes:
        """What decides the text besides the bytes (the encoding, the error handling, the rule
        that drops byte-order marks): part of the token cache's key."""
        return f"{codecs.lookup(self.encoding).name}:{self.errors}:bom-dropped".encode()

    def _file_blocks(self, path: Path) -> Iterator[Block]:
        offset = 0
        try:
            with open(path, "rb") as handle:
                raw = handle.read(BLOCK_BYTES)
                encoding, offset = self._encoding_of(path, raw)
                decoder = codecs.getincrementaldecoder(encoding)(self.errors)
                data, first = raw[offset:], True    # the byte-order mark is not text
                while True:
                    buffered = len(decoder.getstate()[0])
                    try:
                        text = decoder.decode(data, final=not raw)
                    except UnicodeError as err:
                        at = offset - buffered + getattr(err, "start", 0)
                        raise CharRNNError(
                            f"{path} is not valid {encoding} at byte {at}: "
                            f"pass --encoding to name its encoding or --errors replace") from None
                    if first and "\r" in text and "\n" not in text \
                            and str(path) not in self.cr_only:
                        self.cr_only.append(str(path))
                    offset, first = offset + len(data), False
                    if text or raw:
                        yield Block(raw, text)
                    if not raw:
                        return
                    raw = data = handle.read(BLOCK_BYTES)
        except OSError as err:
            raise CharRNNError(f"cannot read {path}: {err.strerror or err}") from None

    def _encoding_of(self, path: Path, head: bytes) -> tuple[str, int]:
        """(the codec that reads this file, the length of its byte-order mark). A byte-order
        mark names the file's encoding when a Unicode encoding was asked for (UTF-8 by
        default: these bytes never start valid UTF-8 text); with another encoding it is an
        error, as are NUL bytes outside UTF-16/32 (a wide encoding without a mark, or binary).
        """
        named = codecs.lookup(self.encoding).name
        bom, size = signature(head)
        if bom and named in UNICODE:
            return bom, size
        if bom:
            family = bom[:-3] if bom.endswith(("-le", "-be")) else bom
            raise CharRNNError(f"{path} starts with a {family.upper()} byte-order mark but was "
                               f"to be read as {self.encoding}: pass --encoding {family} (or "
                               "leave --encoding out)")
        wide = wide_encoding(head[:65536]) if b"\x00" in head[:65536] else None
        if wide and wide.startswith(named):     # utf-16 named, utf-16-le found
            return wide, 0
        if wide:
            raise CharRNNError(f"{path} looks like {wide.upper()} text without a byte-order "
                               f"mark, not {self.encoding}: pass --encoding {wide}")
        if b"\x00" in head[:65536] and not named.startswith(("utf-16", "utf-32")):
            raise CharRNNError(f"{path} looks like a binary file (it holds NUL bytes), "
                               "not text: give a text corpus")
        if named in ("utf-16", "utf-32"):       # no mark, no sign of the order: Windows' LE
            return named + "-le", 0
        return self.encoding, 0


# Byte-order marks, longest first (UTF-32-LE's starts with UTF-16-LE's), and the codec that
# reads what follows each.
BOMS = ((codecs.BOM_UTF32_LE, "utf-32-le"), (codecs.BOM_UTF32_BE, "utf-32-be"),
        (codecs.BOM_UTF8, "utf-8"), (codecs.BOM_UTF16_LE, "utf-16-le"),
        (codecs.BOM_UTF16_BE, "utf-16-be"))
UNICODE = {"utf-8", "utf-8-sig", "utf-16", "utf-16-le", "utf-16-be", "utf-32", "utf-32-le",
           "utf-32-be"}


def signature(head: bytes) -> tuple[Optional[str], int]:
    """(codec, length) of the byte-order mark that ``head`` starts with, or (None, 0)."""
    for bom, codec in BOMS:
        if head.startswith(bom):
            return codec, len(bom)
    return None, 0


def wide_encoding(head: bytes) -> Optional[str]:
    """The UTF-16/32 codec that ``head`` (text without a byte-order mark) reads as, or None:
    its NUL bytes must all sit where the codec puts the high bytes of characters (UTF-16-LE
    "a" is 61 00), and what it decodes to must be text (printable or whitespace)."""
    body = head[:len(head) - len(head) % 4]
    for codec, width, high in (("utf-32-le", 4, (1, 2, 3)), ("utf-32-be", 4, (0, 1, 2)),
                               ("utf-16-le", 2, (1,)), ("utf-16-be", 2, (0,))):
        zeros = [body[i::width].count(0) for i in range(width)]
        if sum(zeros[i] for i in high) == 0 or \
                sum(zeros[i] for i in range(width) if i not in high) > len(body) // 1000:
            continue
        text = body.decode(codec, "replace")
        readable = sum((c.isprintable() or c.isspace()) and c != "\ufffd" for c in text)
        if readable >= 0.95 * len(text):
            return codec
    return None


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

    looks_local = Path(name).exists() or name.startswith(("/", ".", "~"))
    if not (datasets.config.HF_HUB_OFFLINE or looks_local):
        _check_hub_reachable(name)
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


def _check_hub_reachable(name: str) -> None:
    """Ask the Hub about dataset ``name`` once, waiting at most HUB_TIMEOUT seconds: with no
    network the datasets library would retry for half a minute. Any answer from the Hub (even
    "not found", which load_dataset then reports) passes. Raises CharRNNError, in one line,
    when the Hub cannot be reached."""
    import huggingface_hub
    from huggingface_hub.errors import HfHubHTTPError
    try:
        huggingface_hub.HfApi().dataset_info(name, timeout=HUB_TIMEOUT)
    except HfHubHTTPError:
        return              # the Hub answered: load_dataset says what is wrong, if anything
    except Exception as err:  # the transport's errors (refused, timed out, no DNS): no Hub
        reason = str(err).strip().splitlines()[0][:160] if str(err).strip() \
            else type(err).__name__
        raise CharRNNError(f"cannot reach the Hugging Face Hub for dataset {name!r} "
                           f"({reason}): connect to the network, or set HF_HUB_OFFLINE=1 to "
                           "use a copy in the datasets cache") from None


def _text_column(dataset, name: str) -> str:
    features = dataset.features
    if "text" in features:
        return "text"
    for column, feature in features.items():
        if getattr(feature, "dtype", None) in ("string", "large_string"):
            return column
    raise CharRNNError(f"dataset {name!r} has no text column (columns: {', '.join(features)})")
