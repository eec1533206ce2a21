"""Command line interface: ``sweet train | evaluate | predict | demo | tasks``.

Errors the user can fix are printed as one line (``error: ...``) with exit code 2; pass ``--debug``
(before the command) to see the traceback.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer

from .errors import SweetError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Adaptive inference for transformer classifiers: fine-tune multi-exit models with Early-Exit, SWEET or "
    "Multi-Model, calibrate them, and measure the speed-accuracy trade-off.",
)
_STATE = {"debug": False}

DATA_DIR_HELP = "GLUE directory (one folder per task with train.tsv/train_pool.tsv and dev.tsv). Default: $SWEET_GLUE_DIR."
METHOD_HELP = "Fine-tuning method: early_exit, sweet or multi_model."


def parse_layers(text: Optional[str]) -> Optional[list[int]]:
    if text is None or text.strip().lower() in ("", "default"):
        return None
    try:
        return [int(x) for x in text.replace(" ", "").split(",") if x != ""]
    except ValueError:
        raise SweetError(f"--exit-layers must be comma-separated integers such as 1,2,4,6, got '{text}'") from None


@app.callback()
def _main(debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors.")) -> None:
    _STATE["debug"] = debug


def _run_one(task, method, backbone, exit_layers, n_train, seed, learning_rate, epochs, batch_size, max_length,
             pooling, data_dir, data_source, output, overwrite, progress, allow_partial_depth=False) -> dict:
    from .evaluation import format_report
    from .runs import RunConfig, run

    cfg = RunConfig(
        task=task, method=method, backbone=backbone, exit_layers=parse_layers(exit_layers), n_train=n_train, seed=seed,
        learning_rate=learning_rate, epochs=epochs, batch_size=batch_size, max_length=max_length, pooling=pooling,
        data_dir=str(data_dir) if data_dir else None, data_source=data_source, allow_partial_depth=allow_partial_depth,
    )
    metrics = run(cfg, output, progress=progress, overwrite=overwrite)
    typer.echo(format_report(metrics))
    t = metrics["timing"]
    typer.echo(f"\ntrain {t['train_seconds']:.0f}s ({t['train_examples_per_second']:.1f} examples/s), "
               f"total {t['total_seconds']:.0f}s. Results: {output}/metrics.json")
    return metrics


@app.command()
def train(
    task: str = typer.Option(..., "--task", "-t", help="sst2, mrpc, cola, mnli, qnli, qqp or rte."),
    method: str = typer.Option(..., "--method", "-m", help=METHOD_HELP),
    output: Path = typer.Option(..., "--output", "-o", help="Run directory to create (config, model, metrics)."),
    backbone: str = typer.Option("default", help="'default' (packaged all-MiniLM-L6-v2), a hub id, or a local model directory."),
    exit_layers: Optional[str] = typer.Option(None, help="Comma-separated exit layers, e.g. 1,2,4,6. Default: the paper-shaped ladder for the backbone's depth."),
    n_train: int = typer.Option(6000, help="Training examples drawn at random per seed (all if the pool is smaller)."),
    seed: int = typer.Option(0, help="Seed for the training sample, initialisation, dropout and batch order."),
    learning_rate: float = typer.Option(5e-5, "--lr", help="Initial learning rate (AdamW, linear decay)."),
    epochs: int = typer.Option(2, help="Training epochs."),
    batch_size: int = typer.Option(16, help="Training batch size."),
    max_length: int = typer.Option(256, help="Maximum tokens per example (longer ones are truncated)."),
    pooling: str = typer.Option("auto", help="How each exit pools tokens: cls, mean, or auto (the pooling the backbone was pretrained with if it declares one, e.g. mean for all-MiniLM-L6-v2; else cls)."),
    data_dir: Optional[Path] = typer.Option(None, help=DATA_DIR_HELP),
    data_source: str = typer.Option("local", help="'local' (TSV directory) or 'hub' (Hugging Face glue dataset; needs network)."),
    allow_partial_depth: bool = typer.Option(False, help="Allow the last exit below the backbone's depth (the encoder is cut after it)."),
    overwrite: bool = typer.Option(False, help="Replace a finished run in --output."),
    progress: bool = typer.Option(True, help="Show progress bars."),
) -> None:
    """Fine-tune a multi-exit model on a GLUE task, calibrate it on held-out data, and evaluate it."""
    _run_one(task, method, backbone, exit_layers, n_train, seed, learning_rate, epochs, batch_size, max_length,
             pooling, data_dir, data_source, output, overwrite, progress, allow_partial_depth)


@app.command()
def evaluate(
    run_dir: Path = typer.Argument(..., help="A run directory written by 'sweet train'."),
    data_dir: Optional[Path] = typer.Option(None, help=DATA_DIR_HELP),
    file: Optional[Path] = typer.Option(None, help="Evaluate on this labelled TSV (same columns as the task) instead."),
    output_json: bool = typer.Option(False, "--json", help="Print the metrics as JSON instead of a table."),
    progress: bool = typer.Option(True, help="Show progress bars."),
) -> None:
    """Re-evaluate a trained run: per-exit scores, speed-accuracy curve, interpolated scores, AUC."""
    from .evaluation import format_report
    from .runs import evaluate_run

    result = evaluate_run(run_dir, str(data_dir) if data_dir else None, str(file) if file else None, progress=progress)
    typer.echo(json.dumps(result, indent=2) if output_json else format_report(result))


@app.command()
def predict(
    run_dir: Path = typer.Argument(..., help="A run directory (or its model/ directory)."),
    input: str = typer.Option("-", "--input", "-i", help="Text file with one example per line (pairs: two texts separated by a tab); '-' reads stdin."),
    threshold: float = typer.Option(0.9, help="Confidence threshold in [0, 1]: leave at the first exit whose calibrated max probability reaches it (1 = always run to the last exit)."),
    task: Optional[str] = typer.Option(None, help="Task (default: the one the model was trained on)."),
    fmt: str = typer.Option("tsv", "--format", help="tsv (label, exit layer, confidence) or jsonl."),
) -> None:
    """Predict labels for unlabelled text; one line out per example: label, exit layer, confidence."""
    from .runs import predict_texts

    if fmt not in ("tsv", "jsonl"):
        raise SweetError(f"--format must be tsv or jsonl, got '{fmt}'")
    if input == "-":
        lines = sys.stdin.read().splitlines()
    else:
        path = Path(input)
        if not path.is_file():
            raise SweetError(f"input file not found: {path}")
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except UnicodeDecodeError as exc:
            raise SweetError(f"{path}: not valid UTF-8 (byte offset {exc.start})") from exc
    rows = predict_texts(run_dir, lines, threshold, task)
    for r in rows:
        if fmt == "jsonl":
            typer.echo(json.dumps(r))
        else:
            typer.echo(f"{r['label']}\t{r['exit_layer']}\t{r['confidence']:.4f}")


@app.command()
def demo(
    method: str = typer.Option("sweet", "--method", "-m", help=METHOD_HELP + " Or 'all' to run the three in turn."),
    data_dir: Optional[Path] = typer.Option(None, help=DATA_DIR_HELP),
    output: Path = typer.Option(Path("runs/demo"), help="Parent directory; each method writes OUTPUT/sst2-METHOD."),
    n_train: int = typer.Option(6000, help="Training examples (the paper's 6K)."),
    epochs: int = typer.Option(2, help="Training epochs."),
    seed: int = typer.Option(0, help="Seed."),
    learning_rate: float = typer.Option(5e-5, "--lr", help="Initial learning rate."),
    progress: bool = typer.Option(True, help="Show progress bars."),
) -> None:
    """The main job: fine-tune the packaged all-MiniLM-L6-v2 (exits after layers 1,2,4,6) on a 6K random sample
    of SST-2, calibrate, evaluate on the SST-2 validation split, and print per-exit scores and the curve.
    Offline; about 5-10 minutes per method on 2 CPU cores (multi_model about twice that)."""
    from .modeling import METHODS

    methods = list(METHODS) if method == "all" else [method]
    summary = []
    for m in methods:
        typer.echo(f"=== demo: SST-2, {m}, default backbone, exits 1,2,4,6 ===")
        metrics = _run_one("sst2", m, "default", None, n_train, seed, learning_rate, epochs, 16, 256, "auto", data_dir,
                           "local", output / f"sst2-{m}", True, progress)
        summary.append(metrics)
        typer.echo("")
    if len(summary) > 1:
        typer.echo("method        " + "  ".join(f"L{p['exit_layer']:<6}" for p in summary[0]["evaluation"]["per_exit"]) + "  AUC")
        for m in summary:
            ev = m["evaluation"]
            typer.echo(f"{m['method']:<13} " + "  ".join(f"{p['score']:6.2f} " for p in ev["per_exit"]) + f"  {ev['auc']:.2f}")


@app.command()
def tasks(data_dir: Optional[Path] = typer.Option(None, help=DATA_DIR_HELP)) -> None:
    """List the tasks and which of their files the data directory holds."""
    from .data import task_status

    for row in task_status(data_dir):
        dev = row["dev"] or "none (evaluation uses a held-out part of the training pool, labelled 'held-out train')"
        typer.echo(f"{row['task']:<5} {row['folder']:<6} train: {row['train'] or 'MISSING'}  dev: {dev}  metric: {row['metric']}")


def main() -> None:
    try:
        app(standalone_mode=False)
    except SweetError as exc:
        if _STATE["debug"]:
            raise
        typer.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except Exception as exc:  # click usage errors and aborts
        import click

        if isinstance(exc, click.exceptions.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        if isinstance(exc, click.exceptions.Abort):
            typer.echo("aborted", err=True)
            sys.exit(130)
        raise


if __name__ == "__main__":
    main()
