"""The named corpora of bench-full's corpus grid, built deterministically without the network.

Each is built from what the machine's packages ship, sorted by path, and written once to
bench/runs/corpora/NAME.txt (UTF-8); ``python -m bench.corpora`` builds them all and prints
their sizes and vocabularies.

- ``code``: Python source, the standard library's .py files (the interpreter the venv runs,
  site-packages and test folders left out), sorted by path, each headed by its path, the first
  5 MB. Needs nothing beyond Python.
- ``german``: German, the translated messages of the gettext catalogs in
  /usr/share/locale/de/LC_MESSAGES (bench/german.py new_corpus; ~1.3 MB on a Debian machine
  with the usual packages). Needs Debian packages' locale files; without them, the generated
  German play (bench/german.py german_play), saying so.
- ``russian``: another alphabet with a larger vocabulary (~150+ distinct characters: Cyrillic,
  Latin, digits, punctuation), the Russian messages of /usr/share/locale/ru/LC_MESSAGES/*.mo,
  each once, at most 3 MB. Needs Debian packages' locale files; skipped (with a note) where
  fewer than 500 KB of Russian messages exist.
- ``large``: 24 MB of Python source from the venv's site-packages (torch, numpy, tokenizers, ...
  sorted by path, each file headed by its path). Needs only the venv; larger than 20 MB, so its
  figures are on the first 1 MB of its held-out 10% (LARGE_VAL_CHARS).
- ``chinese``: thousands of distinct characters, the Chinese messages (Simplified, then
  Traditional) of /usr/share/locale/zh_CN and zh_TW/LC_MESSAGES/*.mo that hold a CJK ideograph,
  each once, at most 3 MB.
  Needs Debian packages' locale files; skipped (with a note) under 300,000 characters.
"""
from __future__ import annotations

import re
import sys
import sysconfig
from pathlib import Path
from typing import Callable, Iterable, Optional

HERE = Path(__file__).resolve().parent
OUT = HERE / "runs" / "corpora"
MB = 1_000_000
LARGE_VAL_CHARS = 1_000_000     # held-out prefix for corpora over LARGE_CORPUS_CHARS
LARGE_CORPUS_CHARS = 20_000_000
LOCALES = Path("/usr/share/locale")
CYRILLIC = re.compile(r"[\u0400-\u04ff]")
HAN = re.compile(r"[\u4e00-\u9fff]")


def val_chars_for(chars: int) -> int:
    """The held-out characters to evaluate on for a corpus of ``chars`` characters: all of
    them (0) up to 20 M, else the first LARGE_VAL_CHARS."""
    return LARGE_VAL_CHARS if chars > LARGE_CORPUS_CHARS else 0


def source_files(root: Path, cap: int, skip: Callable[[Path], bool] = lambda p: False) -> str:
    """The .py files under ``root`` sorted by path (relative, POSIX), each headed by
    "# file: PATH", concatenated up to ``cap`` characters (cut at a file boundary, never
    inside one unless the first file alone is over the cap). Undecodable files are left out."""
    parts, size = [], 0
    for path in sorted(root.rglob("*.py"), key=lambda p: p.relative_to(root).as_posix()):
        relative = path.relative_to(root)
        if skip(relative) or not path.is_file():
            continue
        try:
            body = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        part = f"# file: {relative.as_posix()}\n{body}\n"
        if size + len(part) > cap:
            if not parts:
                parts.append(part[:cap])
            break
        parts.append(part)
        size += len(part)
    return "".join(parts)


def messages(files: Iterable[Path], keep: Callable[[str], bool], cap: int) -> str:
    """The translated strings of gettext catalogs (bench/german.py _mo_strings), whitespace
    collapsed, the ones ``keep`` accepts, each once, one a line, up to ``cap`` characters."""
    from bench.german import _mo_strings
    seen, lines, size = set(), [], 0
    for path in files:
        try:
            strings = list(_mo_strings(path.read_bytes()))
        except (OSError, ValueError, IndexError, Exception):  # a damaged catalog: leave it out
            continue
        for raw in strings:
            text = " ".join(raw.decode("utf-8", "replace").split())
            if text in seen or not keep(text):
                continue
            if size + len(text) + 1 > cap:
                return "\n".join(lines) + "\n"
            seen.add(text)
            lines.append(text)
            size += len(text) + 1
    return "\n".join(lines) + "\n" if lines else ""


def _stdlib_skip(relative: Path) -> bool:
    return relative.parts[0] in ("site-packages", "test", "idlelib", "lib2to3") or \
        "tests" in relative.parts or "test" in relative.parts


def build_code() -> tuple[str, str]:
    root = Path(sysconfig.get_paths()["stdlib"])
    return (source_files(root, 5 * MB, _stdlib_skip),
            f"the .py files of Python {sys.version.split()[0]}'s standard library ({root}), "
            f"tests and site-packages left out, sorted by path, first 5 MB")


def build_german() -> tuple[str, str]:
    from bench.german import new_corpus
    return new_corpus()


def _locale_corpus(locales: tuple, language: str, keep: Callable[[str], bool],
                   minimum: int) -> tuple[Optional[str], str]:
    """The ``language`` messages ``keep`` accepts of the gettext catalogs of ``locales`` (in
    that order), each once, at most 3 MB; (None, why) under ``minimum`` characters."""
    folders = [LOCALES / name / "LC_MESSAGES" for name in locales]
    files = [path for folder in folders for path in sorted(folder.glob("*.mo"))]
    text = messages(files, keep, 3 * MB)
    source = f"the {language} messages of {len(files)} gettext catalogs in " \
             f"{', '.join(map(str, folders))}, each once, at most 3 MB"
    if len(text) < minimum:
        return None, f"skipped: {source} come to {len(text):,} characters (< {minimum:,}): " \
                     f"install Debian packages with {language} translations (e.g. coreutils, bash)"
    return text, source


def build_russian() -> tuple[Optional[str], str]:
    return _locale_corpus(("ru",), "Russian",
                          lambda t: len(t) >= 20 and bool(CYRILLIC.search(t)), 500_000)


def build_chinese() -> tuple[Optional[str], str]:
    """Simplified, then Traditional Chinese."""
    return _locale_corpus(("zh_CN", "zh_TW"), "Chinese",
                          lambda t: len(t) >= 8 and bool(HAN.search(t)), 300_000)


def build_large() -> tuple[str, str]:
    root = Path(sysconfig.get_paths()["purelib"])
    return (source_files(root, 24 * MB),
            f"the .py files of the venv's site-packages ({root}: torch, numpy, tokenizers, "
            f"...), sorted by path, first 24 MB")


BUILDERS = {"code": build_code, "german": build_german, "russian": build_russian,
            "large": build_large, "chinese": build_chinese}


def build(name: str, out: Path = OUT) -> tuple[Optional[Path], str]:
    """(path of corpus ``name``, its description), built once into ``out``; (None, why) when
    this machine lacks what it is built from. The description is stored beside it."""
    path, about = out / f"{name}.txt", out / f"{name}.about"
    if path.exists() and about.exists():
        return path, about.read_text()
    text, source = BUILDERS[name]()
    if not text:
        return None, source
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    about.write_text(source)
    return path, source


def describe(path: Path) -> dict:
    """Size (MB), characters and distinct characters of a built corpus."""
    text = path.read_text(encoding="utf-8")
    return {"megabytes": path.stat().st_size / MB, "chars": len(text), "vocab": len(set(text))}


if __name__ == "__main__":
    for corpus in BUILDERS:
        built, why = build(corpus)
        figures = describe(built) if built else {}
        print(f"{corpus}: {figures} {why}")
