"""The Typer application that every command module registers on, and the process-wide ``--debug`` flag."""

from __future__ import annotations

import typer

from ..version import __version__

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Adaptive inference for transformer classifiers: fine-tune multi-exit models with Early-Exit, SWEET or "
    "Multi-Model, calibrate them, and measure the speed-accuracy trade-off.",
)
analyze_app = typer.Typer(no_args_is_help=True, help="Analyses of multi-exit training (the paper's Section 3.1).")
app.add_typer(analyze_app, name="analyze")

STATE = {"debug": False}


def _show_version(value: bool) -> None:
    if value:
        typer.echo(f"sweet {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors."),
    version: bool = typer.Option(False, "--version", callback=_show_version, is_eager=True,
                                 help="Print sweet's version and exit."),
) -> None:
    STATE["debug"] = debug
