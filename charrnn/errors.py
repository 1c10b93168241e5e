"""The exception types charrnn raises for problems a user can fix, and how it prints: its
one-line notes, and output that fails (a closed pipe, a full disk) as one error. Also the
import of an optional extra's package, which fails as one such error (optional_import)."""
from __future__ import annotations

import contextlib
import errno
import importlib
import os
import sys


class CharRNNError(Exception):
    """Bad input, a bad checkpoint or a bad setting; the message says what and how to fix it.

    The CLI prints it as one line and exits non-zero; API users can catch it.
    """


class OptionError(CharRNNError):
    """A setting outside its documented range. ``name`` is the config field (``top_p``); the
    message names it as the API spells it, and the CLI rewrites it with the flag (``--top-p``)."""

    def __init__(self, name: str, problem: str):
        self.name, self.problem = name, problem
        super().__init__(f"{name} {problem}")


class PeerError(CharRNNError):
    """Raised, under torchrun, on the processes that did not fail themselves when one process
    hit an error: the message is that process's. It printed the error; these exit quietly."""


def note(message: str) -> None:
    """Tell the user something worth knowing that is not an error: one line on stderr."""
    print(f"note: {message}", file=sys.stderr, flush=True)


class OutputError(Exception):
    """Standard output failed: ``error``, the OSError; None when its reader went away
    (``| head``), which is no error at all."""

    def __init__(self, error: OSError | None = None):
        super().__init__(str(error))
        self.error = error


@contextlib.contextmanager
def output_errors(everything: bool):
    """A broken pipe inside the block raises OutputError(None); ``everything``: so does any
    other OSError, as OutputError(it) (the block only prints)."""
    try:
        yield
    except OSError as err:
        if err.errno == errno.EPIPE or everything:
            raise OutputError(None if err.errno == errno.EPIPE else err) from None
        raise


def echo(text: str = "", nl: bool = True, err: bool = False) -> None:
    """Print ``text`` as it is (generated text may hold any character) to stdout (stderr with
    ``err``) and flush. Raises OutputError when the stream cannot be written."""
    stream = sys.stderr if err else sys.stdout
    try:
        stream.write(text + ("\n" if nl else ""))
        stream.flush()
    except OSError as error:
        raise OutputError(None if error.errno == errno.EPIPE else error) from None


def silence_stdout() -> None:
    """Point standard output at the null device, as the Python docs advise after a broken
    pipe: what is still buffered then goes nowhere at exit instead of failing again there."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):     # no file descriptor (a test runner's stream)
        pass


def optional_import(module: str, extra: str, user: str):
    """``importlib.import_module(module)`` for a part of charrnn that needs setup.py's extra
    ``extra`` (``user`` names that part, as in "charrnn serve").

    Raises CharRNNError "<user> needs the <extra> extra: pip install -e '.[<extra>]'" when
    ``module``'s own package is not installed, so the CLI prints one line and the API raises a
    clear error. Any other import error (a broken install, a dependency of ``module`` missing)
    propagates as it is: the hint would send the user to fix the wrong thing."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as err:
        if err.name != module.partition(".")[0]:     # its package is there: not the extra
            raise
        raise CharRNNError(f"{user} needs the {extra} extra: "
                           f"pip install -e '.[{extra}]'") from None
