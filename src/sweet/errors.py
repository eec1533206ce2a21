"""User-facing errors.

Everything the user can fix (a missing file, a bad flag, an inconsistent model directory) is raised as
:class:`SweetError` with a one-line message that says what is wrong and how to fix it. The CLI prints
that line and exits non-zero; library users can catch it like any other exception.
"""


class SweetError(Exception):
    """An error caused by user input, with a message meant to be read by that user."""
