"""The ``sweet`` entry point: run the Typer app and turn every error a user can fix into one line.

Errors the user can fix are printed as one line (``error: ...``) with exit code 2; pass ``--debug`` (before the
command) to see the traceback. Usage errors (an unknown option, a malformed number) are typer's own exceptions
(``typer.TyperException``), printed the same way with a pointer to the command's ``--help``.
"""

from __future__ import annotations

import sys
import warnings

import typer
from typer._click.exceptions import (
    NoArgsIsHelpError,  # typer ships its own click; this is its class
)

from ..errors import SweetError, one_line
from .base import STATE, app


def _format_warning(message, category, filename, lineno, line=None) -> str:
    return f"warning: {one_line(message)}\n"


def main() -> None:
    warnings.formatwarning = _format_warning  # one line per warning, e.g. about truncated texts
    try:
        code = app(standalone_mode=False, prog_name="sweet")
    except SweetError as exc:
        if STATE["debug"]:
            raise
        typer.echo(f"error: {one_line(exc)}", err=True)
        sys.exit(2)
    except NoArgsIsHelpError as exc:  # a command given without arguments: its help
        exc.show()
        sys.exit(exc.exit_code)
    except typer.TyperException as exc:  # usage errors: unknown option or command, malformed value
        if STATE["debug"]:
            raise
        ctx = getattr(exc, "ctx", None)
        command = " ".join(["sweet", *([ctx.info_name] if ctx is not None and ctx.parent is not None else [])])
        hint = f" (see '{command} --help')" if ctx is not None else ""
        typer.echo(f"error: {one_line(exc.format_message())}{hint}", err=True)
        sys.exit(getattr(exc, "exit_code", None) or 2)
    except typer.Abort:
        typer.echo("aborted", err=True)
        sys.exit(130)
    if code == 130:  # typer turns Ctrl-C into exit code 130
        typer.echo("interrupted (an interrupted 'sweet train' continues with --resume)", err=True)
        sys.exit(130)
    if isinstance(code, int) and code:
        sys.exit(code)
