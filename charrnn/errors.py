"""The one exception type charrnn raises for problems a user can fix."""


class CharRNNError(Exception):
    """Bad input, a bad checkpoint or a bad setting; the message says what and how to fix it.

    The CLI prints it as one line and exits non-zero; API users can catch it.
    """
