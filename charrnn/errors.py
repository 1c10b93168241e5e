"""The exception types charrnn raises for problems a user can fix, and its one-line notes."""
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


def note(message: str) -> None:
    """Tell the user something worth knowing that is not an error: one line on stderr."""
    print(f"note: {message}", file=sys.stderr, flush=True)
