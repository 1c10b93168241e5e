"""A griffe extension that renders this package's plain-prose docstrings as written (mkdocs.yml
loads it for the API reference; the site does not copy it).

Two things go wrong when the docstrings are read as Markdown, and this fixes both without
rewriting them (a command's docstring is also its ``--help`` text):

- griffe cleans a docstring with ``inspect.cleandoc``, which removes the indentation common to
  the lines after the first. A package docstring whose only lines after the first are its
  indented table of files loses that indentation and runs together as one paragraph. Here the
  indentation removed is that of the code around the docstring, so the table stays a block.
- some docstrings spell syntax with brackets, as in ``hf:NAME[:CONFIG][/SPLIT]``. Markdown reads
  ``[x][y]`` as a reference link, and mkdocs-autorefs then fails the strict build on the unknown
  target ``y``. No docstring here means a cross-reference, so each ``][`` outside code spans and
  indented blocks is escaped.
"""
from __future__ import annotations

import ast
import re

import griffe

# A code span: a run of backticks, then anything up to the same run (CommonMark).
CODE_SPAN = re.compile(r"(`+).+?\1")


def dedent_by(raw: str, indent: int) -> str:
    """``raw`` (a docstring as written) with the first line stripped and ``indent`` columns
    removed from each later line: the indentation of the code, not the smallest common one."""
    lines = raw.expandtabs().split("\n")
    rest = [line[indent:] if not line[:indent].strip() else line.lstrip() for line in lines[1:]]
    return "\n".join([lines[0].strip(), *rest]).strip("\n").rstrip()


def escape_brackets(text: str) -> str:
    """``text`` with each ``][`` outside code written ``]\\[``; indented lines (code blocks, where
    a backslash would show) unchanged."""
    lines = []
    for line in text.split("\n"):
        if line.startswith(("    ", "\t")):
            lines.append(line)
            continue
        parts, start = [], 0
        for span in CODE_SPAN.finditer(line):
            parts += [line[start:span.start()].replace("][", "]\\["), span.group(0)]
            start = span.end()
        parts.append(line[start:].replace("][", "]\\["))
        lines.append("".join(parts))
    return "\n".join(lines)


def _written(node) -> tuple[str, int] | None:
    """(the docstring as written, the column of its code) of a module, class or function's ast
    node; None for other nodes (an attribute's docstring keeps griffe's cleaning)."""
    body = getattr(node, "body", None)
    if not (isinstance(body, list) and body and isinstance(body[0], ast.Expr)):
        return None
    value = body[0].value
    if isinstance(value, ast.Constant) and isinstance(value.value, str):
        return value.value, body[0].col_offset
    return None


class ProseDocstrings(griffe.Extension):
    """Re-cleans and escapes every docstring griffe loads (griffe.Extension's ``on_instance``
    hook runs once for each module, class, function and attribute, with its ast node)."""

    def on_instance(self, *, node, obj: griffe.Object, **kwargs) -> None:
        if obj.docstring is None:
            return
        written = _written(node)
        if written is not None:
            obj.docstring.value = dedent_by(*written)
        obj.docstring.value = escape_brackets(obj.docstring.value)
