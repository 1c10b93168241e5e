"""Declaring an option once: a dataclass field that carries its help, range and CLI spelling.

    lr: float = option(3e-3, "Peak learning rate.", low=0, low_open=True)

``check`` validates every declared field of a config (type, finiteness, range, choices) and the
CLI builds its click options from the same declarations (charrnn/cli/commands.py), so a new option is
one line in one place, and tests can iterate over ``declared(cls)``.
"""
from __future__ import annotations

import dataclasses
import difflib
import math
import typing
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from charrnn.errors import CharRNNError, OptionError


@dataclass(frozen=True)
class Spec:
    """What a config field means to users. Bounds are inclusive unless ``*_open``."""
    help: str
    low: Optional[float] = None
    high: Optional[float] = None
    low_open: bool = False
    high_open: bool = False
    choices: Optional[tuple] = None
    on_resume: bool = True           # may be changed when a run is resumed
    cli: bool = True                 # offered as a command-line option
    negatable: bool = False          # a bool a preset or a resumed run may turn on: also
                                     # --no-NAME on the CLI
    aliases: tuple = ()              # older names: accepted as CLI flags and in saved configs
    parse: Optional[Callable[[str], Any]] = None   # CLI text -> value (e.g. "10m" -> 600.0)
    metavar: Optional[str] = None

    @property
    def bounded(self) -> bool:
        """Whether the values are limited (choices, or a low or high bound): what
        ``range_text`` can describe."""
        return bool(self.choices) or self.low is not None or self.high is not None

    def range_text(self) -> str:
        """The allowed values in words: "> 0", ">= 1", "in [0, 1)", "one of a, b"; "" when
        they are not limited (not ``bounded``)."""
        if not self.bounded:
            return ""
        if self.choices:
            return "one of " + ", ".join(map(str, self.choices))
        if self.high is None:
            return f"{'>' if self.low_open else '>='} {_num(self.low)}"
        if self.low is None:
            return f"{'<' if self.high_open else '<='} {_num(self.high)}"
        left, right = "(" if self.low_open else "[", ")" if self.high_open else "]"
        return f"in {left}{_num(self.low)}, {_num(self.high)}{right}"


def option(default: Any = dataclasses.MISSING, help: str = "", *,
           default_factory: Any = dataclasses.MISSING, **spec) -> Any:
    """A dataclass field declared with its ``Spec`` (see the module docstring)."""
    return field(default=default, default_factory=default_factory,
                 metadata={"spec": Spec(help=help, **spec)})


@dataclass(frozen=True)
class Declared:
    """One declared option as ``declared`` reports it."""
    name: str
    type: type                       # int, float, str or bool
    optional: bool                   # None is allowed
    default: Any
    spec: Spec

    @property
    def flag(self) -> str:
        """Its command-line flag: ``top_p`` -> ``--top-p``."""
        return "--" + self.name.replace("_", "-")


def declared(cls) -> list[Declared]:
    """The declared options of a config dataclass, in declaration order."""
    hints = typing.get_type_hints(cls)
    result = []
    for f in dataclasses.fields(cls):
        spec = f.metadata.get("spec")
        if spec is None:
            continue
        kind, optional = _base_type(hints[f.name])
        default = f.default if f.default is not dataclasses.MISSING else None
        result.append(Declared(f.name, kind, optional, default, spec))
    return result


def check(config) -> None:
    """Raise ``OptionError`` for the first declared field whose value is out of its range.
    A whole number given for a float option becomes a float (``beta1 = 0`` from Python: torch's
    AdamW refuses betas of mixed types)."""
    for item in declared(type(config)):
        value = getattr(config, item.name)
        check_value(item, value)
        if item.type is float and isinstance(value, int):
            setattr(config, item.name, float(value))


def check_value(item: Declared, value: Any) -> None:
    """Raise ``OptionError`` unless ``value`` is of the option's type (finite, for numbers),
    one of its choices, and within its bounds; None passes for an optional option."""
    spec, name = item.spec, item.name
    if value is None:
        if item.optional:
            return
        raise OptionError(name, "must be given")
    if item.type is bool:
        if not isinstance(value, bool):
            raise OptionError(name, f"must be true or false, got {value!r}")
        return
    if item.type is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise OptionError(name, f"must be a whole number, got {value!r}")
    if item.type is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise OptionError(name, f"must be a number, got {value!r}")
        if not math.isfinite(value):
            raise OptionError(name, f"must be a finite number, got {value}")
    if item.type is str and not isinstance(value, str):
        raise OptionError(name, f"must be text, got {value!r}")
    if spec.choices is not None:
        if value not in spec.choices:
            raise OptionError(name, f"must be {spec.range_text()}, got {value!r}")
        return
    if item.type in (int, float) and not _within(value, spec):
        raise OptionError(name, f"must be {spec.range_text()}, got {_num(value)}")


def did_you_mean(name: str, known) -> str:
    """" (did you mean 'top_k'?)" for the closest of ``known`` names, as click suggests a flag
    for a mistyped one; "" when none is close."""
    close = difflib.get_close_matches(str(name), list(known), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def reject_unknown(kind: str, given, known, list_known: bool = True) -> None:
    """Raise CharRNNError for the first (in sorted order) of the names ``given`` that is not in
    ``known``: "unknown sampling option 'temprature' (did you mean 'temperature'?): use length,
    ..." (``kind`` is "sampling"; ``list_known`` False leaves out a list too long to read)."""
    known = list(known)
    unknown = sorted(set(given) - set(known))
    if unknown:
        listed = f": use {', '.join(known)}" if list_known else ""
        raise CharRNNError(f"unknown {kind} option {unknown[0]!r}"
                           f"{did_you_mean(unknown[0], known)}{listed}")


def _within(value: float, spec: Spec) -> bool:
    if spec.low is not None and (value < spec.low or (spec.low_open and value == spec.low)):
        return False
    if spec.high is not None and (value > spec.high or (spec.high_open and value == spec.high)):
        return False
    return True


def _base_type(hint) -> tuple[type, bool]:
    args = typing.get_args(hint)
    if type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return rest[0], True
    return hint, False


def _num(value: float) -> str:
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return f"{value:g}" if isinstance(value, float) else str(value)
