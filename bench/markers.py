"""Sections of bench/RESULTS.md that different commands own, each between its two markers.

`make bench` owns "make bench", `make bench-full` its own sections and the serve load check's
(bench/serve.py), and bench/TRIED.md is appended at the end by whichever writes last. A
command replaces only its own sections, so the others' figures stay.
"""
from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).resolve().parent
TITLE = "# Benchmark results"
TRIED_START, TRIED_END = "<!-- bench/TRIED.md (appended) -->", "<!-- /bench/TRIED.md -->"


def markers(name: str) -> tuple[str, str]:
    """The opening and closing marker of section ``name``."""
    return f"<!-- {name} -->", f"<!-- /{name} -->"


def put(text: str, name: str, section: str, first: bool = False) -> str:
    """``text`` with section ``name`` (its body, without markers) in place of the earlier
    one; a new section goes right after the title when ``first``, else before the appended
    TRIED.md (or "## What was tried"), else at the end."""
    start, end = markers(name)
    block = f"{start}\n{section.strip()}\n{end}"
    if start in text and end in text:
        return text[:text.index(start)] + block + text[text.index(end) + len(end):]
    if not text.startswith(TITLE):
        text = f"{TITLE}\n\n{text.lstrip()}"
    if first:
        at = len(TITLE)
        return text[:at] + "\n\n" + block + "\n" + text[at:]
    for anchor in (TRIED_START, "\n## What was tried"):
        if anchor in text:
            at = text.index(anchor)
            return text[:at].rstrip() + "\n\n" + block + "\n\n" + text[at:].lstrip("\n")
    return text.rstrip() + "\n\n" + block + "\n"


def with_tried(text: str, tried: Path = HERE / "TRIED.md") -> str:
    """``text`` with bench/TRIED.md appended between its markers, replacing an earlier copy
    (marked, or everything from "## What was tried" on)."""
    if TRIED_START in text:
        text = text[:text.index(TRIED_START)]
    elif "\n## What was tried" in text:
        text = text[:text.index("\n## What was tried")]
    if not tried.exists():
        return text.rstrip() + "\n"
    return f"{text.rstrip()}\n\n{TRIED_START}\n{tried.read_text().strip()}\n{TRIED_END}\n"


def update(results: Path, sections: dict[str, str], first: tuple = ()) -> None:
    """Put each of ``sections`` (name -> body) into the file ``results`` and re-append
    TRIED.md; names in ``first`` go right after the title when new."""
    text = results.read_text() if results.exists() else TITLE + "\n"
    for name, section in sections.items():
        text = put(text, name, section, first=name in first)
    results.write_text(with_tried(text))
