"""The command line's machinery (charrnn/cli/commands.py has the commands): every failure a user can
cause as one line ``error: ...`` and a non-zero exit, options generated from the declarations
in charrnn/config.py (a field there is a flag here, with its help, type and choices), and text
from the command line read as UTF-8 whatever the locale.
"""
from __future__ import annotations

import os
import re
import sys
import time

import click

from charrnn import api
from charrnn.errors import (CharRNNError, OptionError, OutputError, PeerError, output_errors,
                     silence_stdout)


class Guarded:
    """A click command or group whose output failures reach CharRNNGroup.main as
    OutputError, before click's own handler (which exits 1 on a broken pipe) sees them."""

    def make_context(self, *args, **kwargs):
        with output_errors(everything=True):     # parsing, --help, --version
            return super().make_context(*args, **kwargs)

    def invoke(self, ctx):
        with output_errors(everything=False):
            return super().invoke(ctx)


class CharRNNCommand(Guarded, click.Command):
    pass


class CharRNNGroup(Guarded, click.Group):
    """Turns every failure a user can cause into one line on stderr and a non-zero exit."""

    command_class = CharRNNCommand

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        utf8_stdio()
        try:
            code = super().main(args, prog_name or "charrnn", complete_var,
                                standalone_mode=False, **extra)
            if standalone_mode:
                sys.exit(code or 0)
            return code
        except OutputError as err:    # | head: the reader has what it wanted, say nothing
            silence_stdout()
            if err.error is None:
                sys.exit(0)
            fail(f"cannot write the output: {err.error.strerror or err.error}", 1)
        except click.exceptions.Abort:
            fail("interrupted", 130)
        except click.ClickException as err:     # click's usage errors, worded as ours are
            message = err.format_message()
            fail(message[:1].lower() + message[1:] if message[1:2].islower() else message,
                  err.exit_code)
        except OptionError as err:
            fail(f"{flag(err.name)} {err.problem}", 1)
        except PeerError:        # the torchrun process that failed prints the error: let it
            time.sleep(2)        # exit first, so that torchrun names it as the root cause
            sys.exit(1)
        except CharRNNError as err:
            fail(str(err), 1)
        except KeyboardInterrupt:
            fail("interrupted", 130)
        except OSError as err:
            fail(f"{getattr(err, 'filename', '') or ''} {err.strerror or err}".strip(), 1)

    def parse_args(self, ctx, args):
        if not args:      # click would print the whole help as the error message
            raise click.UsageError(f"give a command: {', '.join(self.commands)} (charrnn "
                                   "--help says more)", ctx)
        return super().parse_args(ctx, args)


# Flags that `make train` / `make sample` set from a make variable (Makefile): an error met
# through make names the variable, which is what the user can change there.
MAKE_VARIABLES = {"--out": "NAME=", "--time-limit": "TIME=", "--preset": "PRESET=",
                  "--prime": "PRIME=", "--length": "LENGTH=", "--seed": "SEED="}
FLAG = re.compile(r"(?<![\w=-])--[a-z][a-z0-9-]*")


def for_make(message: str) -> str:
    """``message`` with each flag as the make variable that sets it (``--out`` -> ``NAME=``)
    or, for any other flag, as ``ARGS=--flag``."""
    return FLAG.sub(lambda m: MAKE_VARIABLES.get(m.group(0), f"ARGS={m.group(0)}"), message)


def fail(message: str, code: int):
    message = str(message)
    if os.environ.get("CHARRNN_HINT") == "make":     # started by make (Makefile)
        message = for_make(message)
    try:
        click.echo(f"error: {' '.join(message.split())}", err=True)
    except OSError:
        pass         # stderr is gone too: the exit code still says it
    sys.exit(code)


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def utf8_stdio() -> None:
    # Samples hold any Unicode; under LANG=C or a Latin-1 locale, print UTF-8 instead of crashing.
    # Paths the OS gave as undecodable bytes (surrogate escapes) go back out as those bytes.
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure") and (stream.encoding or "").lower().replace("-", "") != "utf8":
            stream.reconfigure(encoding="utf-8", errors="surrogateescape")


def arg_text(value):
    """Text from the command line (--prime, --stop): under LANG=C Python decodes its UTF-8
    bytes as surrogate escapes; decode them as UTF-8. (Paths stay as the OS gave them.)"""
    if value and any("\udc80" <= c <= "\udcff" for c in value):
        try:
            return os.fsencode(value).decode("utf-8")
        except UnicodeDecodeError:
            pass
    return value


class Parsed(click.ParamType):
    """A declared option with its own parser (durations): CharRNNError -> a click error."""

    def __init__(self, parse, name):
        self.parse, self.name = parse, name

    def convert(self, value, param, ctx):
        if not isinstance(value, str):
            return value
        try:
            return self.parse(value)
        except CharRNNError as err:
            self.fail(str(err), param, ctx)


def declared_options(*classes, defaults: bool = False, only: tuple = (), **overrides):
    """Click options for every CLI field declared in ``classes`` (or the ones named in
    ``only``). With ``defaults=False`` an option not given is None (so a preset or a saved
    run fills it in); ``overrides`` give other defaults (``device="cpu"``)."""
    def decorate(command):
        items = [item for cls in classes for item in api.declared(cls)
                 if item.spec.cli and (not only or item.name in only)]
        for item in reversed(items):
            default = overrides.get(item.name, item.default if defaults else None)
            command = click_option(item, default)(command)
        return command
    return decorate


def click_option(item, default):
    spec = item.spec
    flags = [item.flag] + [flag(a) if len(a) > 1 else f"-{a}" for a in spec.aliases]  # -n
    if item.type is bool:
        if item.default or spec.negatable:   # --progress/--no-progress, --no-epoch-offset
            return click.option(f"{item.flag}/--no-{item.flag[2:]}", item.name,
                                default=default, help=spec.help)
        return click.option(*flags, item.name, is_flag=True, default=default, help=spec.help)
    if spec.choices:
        kind = click.Choice([str(c) for c in spec.choices])
    elif spec.parse:
        kind = Parsed(spec.parse, spec.metavar or item.type.__name__.upper())
    else:
        kind = {int: click.INT, float: click.FLOAT, str: click.STRING}[item.type]
    text = (f"{spec.help.rstrip('.')} ({spec.range_text()})."   # --help: ranges (click
            if spec.bounded and not spec.choices else spec.help)  # lists the choices itself)
    return click.option(*flags, item.name, type=kind, default=default, help=text,
                        show_default=default is not None, metavar=spec.metavar)
