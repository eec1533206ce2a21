"""``sweet train`` and ``sweet demo``: fine-tune, calibrate and evaluate one run (the demo: on SST-2)."""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from ..data import DATA_DIR_ENV
from ..errors import SweetError
from ..methods import PAPER_METHODS
from .base import app
from .options import (
    METHOD_HELP,
    MIN_TOKENS,
    NON_NEGATIVE,
    POSITIVE,
    Backbone,
    Data,
    DataConfig,
    DataDir,
    DataSource,
    Device,
    DropInvalid,
    Epochs,
    EvalData,
    EvalSplit,
    ExitLayers,
    LabelColumn,
    LearningRate,
    Method,
    Metric,
    Pooling,
    PositiveLabel,
    Progress,
    Seed,
    TextColumn,
    TextColumns,
    TrainPrecision,
    TrainSplit,
    data_fields,
    optional_str,
    parse_layers,
)

if TYPE_CHECKING:
    from ..config import RunConfig

#: where the demo reads SST-2 when no GLUE folder is given
HUB_SST2 = {"data": "nyu-mll/glue", "data_config": "sst2", "eval_split": "validation"}

#: The demo's time, measured: docs/results/demo-sst2.md is the one place that records every measured run, with its
#: machine; the README and this help quote its first row.
DEMO_TIME = ("SWEET takes about 2.5 minutes on 2 quiet CPU cores (142 s measured), far longer on a busy machine; "
             "Early-Exit about as long, Multi-Model about 2.2x. Every measured time, per method and machine: "
             "docs/results/demo-sst2.md")


def run_and_report(config: "RunConfig", output: Path, *, overwrite: bool = False, resume: bool = False,
                   progress: bool = True) -> dict:
    """Run ``config`` into ``output`` and print its per-exit table, curve and time."""
    # heavy (torch, transformers): imported when a run starts, so that `sweet --help` stays fast
    from ..evaluation import format_report
    from ..rundir import hide_hf_progress_bars
    from ..runs import run

    if not progress:
        hide_hf_progress_bars()
    metrics = run(config, output, progress=progress, overwrite=overwrite, resume=resume)
    typer.echo(format_report(metrics))
    t, placed = metrics["timing"], metrics["placement"]["train"]
    before = f", {t['seconds_before_resume']:.0f}s of it before the resume" if "seconds_before_resume" in t else ""
    typer.echo(f"\ntrain {t['train_seconds']:.0f}s ({t['train_examples_per_second']:.1f} examples/s, "
               f"{placed['precision']} on {placed['device']}), total {t['total_seconds']:.0f}s{before}. "
               f"Results: {output}/metrics.json")
    return metrics


@app.command()
def train(
    method: Method,
    output: Annotated[Path, typer.Option("--output", "-o", help="Run directory to create (config, model, metrics).")],
    task: Annotated[Optional[str], typer.Option("--task", "-t", help="A GLUE preset: sst2, mrpc, cola, mnli, qnli, qqp or rte (its columns, labels, metric and files). Give --task, --data, or both.")] = None,
    data: Data = None,
    eval_data: EvalData = None,
    data_config: DataConfig = None,
    train_split: TrainSplit = "train",
    eval_split: EvalSplit = None,
    text_column: TextColumn = None,
    text_columns: TextColumns = None,
    label_column: LabelColumn = None,
    metric: Metric = None,
    positive_label: PositiveLabel = None,
    drop_invalid: DropInvalid = False,
    backbone: Backbone = "default",
    exit_layers: ExitLayers = None,
    n_train: Annotated[Optional[int], typer.Option(metavar=POSITIVE, help="Training examples drawn at random per seed (all if the pool is smaller). Default: 6000 for a GLUE preset (the paper's protocol), every row left after the hold-outs for --data.")] = None,
    seed: Seed = 0,
    learning_rate: LearningRate = 5e-5,
    epochs: Epochs = 2,
    batch_size: Annotated[int, typer.Option(metavar=POSITIVE, help="Training batch size.")] = 16,
    max_length: Annotated[int, typer.Option(metavar=MIN_TOKENS, help="Maximum tokens per example (at least 8; longer ones are truncated, with one warning); capped at what the backbone accepts (run_config.json records the length used as max_length_used).")] = 256,
    pooling: Pooling = "auto",
    data_dir: DataDir = None,
    data_source: DataSource = "local",
    allow_partial_depth: Annotated[bool, typer.Option(help="Allow the last exit below the backbone's depth (the encoder is cut after it).")] = False,
    overwrite: Annotated[bool, typer.Option(help="Replace a finished run in --output.")] = False,
    checkpoint_every: Annotated[int, typer.Option(metavar=NON_NEGATIVE, help="Save a training checkpoint (model, optimizer, scheduler, RNG states, data position) every N optimizer steps into OUTPUT/checkpoint/step-NNNNNNN.safetensors; 0 turns checkpoints off. Ctrl-C also saves one, of the step in progress (a second Ctrl-C stops at once).")] = 200,
    resume: Annotated[bool, typer.Option(help="Continue the unfinished run in --output from its checkpoint (pass the same options); the result equals that of an uninterrupted run.")] = False,
    learn_exit: Annotated[bool, typer.Option("--learn-exit", help="Also fit learning-to-exit modules (one Linear+sigmoid per exit, MSE against 'this exit is correct') after fine-tuning, on the held-out calibration split with the model frozen; enables --policy learned.")] = False,
    device: Device = "auto",
    precision: TrainPrecision = "auto",
    progress: Progress = True,
) -> None:
    """Fine-tune a multi-exit model on a GLUE task preset (--task) or your own labelled data (--data), calibrate it on
    held-out data, and evaluate it (the confidence curve in metrics.json 'evaluation'; the entropy, patience and, with
    --learn-exit, learned curves under 'policies'; per-class precision, recall, F1 and the confusion matrix under
    'classes')."""
    if data_source == "hub" and data is None:
        warnings.warn("--data-source hub is deprecated and goes in the next release: use --data nyu-mll/glue "
                      f"--data-config {task or 'TASK'} --task {task or 'TASK'}", FutureWarning, stacklevel=1)
    if n_train is None and data is None:
        n_train = 6000
    from ..config import RunConfig  # heavy (torch): only when the command runs

    config = RunConfig(
        **data_fields(data, eval_data, data_config, train_split, eval_split, text_column, text_columns, label_column,
                      metric, positive_label, drop_invalid),
        task=task, method=method, backbone=backbone, exit_layers=parse_layers(exit_layers), n_train=n_train, seed=seed,
        learning_rate=learning_rate, epochs=epochs, batch_size=batch_size, max_length=max_length, pooling=pooling,
        data_dir=optional_str(data_dir), data_source=data_source, allow_partial_depth=allow_partial_depth,
        checkpoint_every=checkpoint_every, extra={"learn_exit": True} if learn_exit else {}, device=device,
        precision=precision,
    )
    run_and_report(config, output, overwrite=overwrite, resume=resume, progress=progress)


@app.command()
def demo(
    method: Annotated[str, typer.Option("--method", "-m", help=METHOD_HELP + " Or 'all' to run the paper's three in turn.")] = "sweet",
    data_dir: DataDir = None,
    output: Annotated[Path, typer.Option(help="Parent directory; each method writes OUTPUT/sst2-METHOD.")] = Path("runs/demo"),
    n_train: Annotated[int, typer.Option(metavar=POSITIVE, help="Training examples (the paper's 6K).")] = 6000,
    epochs: Epochs = 2,
    seed: Seed = 0,
    learning_rate: LearningRate = 5e-5,
    device: Device = "auto",
    precision: TrainPrecision = "auto",
    progress: Progress = True,
) -> None:
    # the docstring is set below from DEMO_TIME, the one place that quotes the demo's time
    from ..config import RunConfig
    from ..evaluation import (
        Evaluation,  # heavy (torch, matplotlib): only when the demo runs
    )
    from ..experiments import write_run_curve

    methods = list(PAPER_METHODS) if method == "all" else [method]
    source = {}
    if data_dir is None and not os.environ.get(DATA_DIR_ENV):
        typer.echo(f"no GLUE folder given (--data-dir or ${DATA_DIR_ENV}): reading SST-2 from the Hugging Face hub "
                   f"({HUB_SST2['data']}, config {HUB_SST2['data_config']})", err=True)
        source = HUB_SST2
    summary = []
    for m in methods:
        typer.echo(f"=== demo: SST-2, {m}, default backbone, exits 1,2,4,6 ===")
        config = RunConfig(task="sst2", method=m, n_train=n_train, seed=seed, learning_rate=learning_rate,
                           epochs=epochs, data_dir=optional_str(data_dir), device=device, precision=precision,
                           **source)
        try:
            metrics = run_and_report(config, output / f"sst2-{m}", overwrite=True, progress=progress)
        except SweetError as exc:
            if source and "network" in str(exc):
                raise SweetError(f"the demo needs SST-2: pass --data-dir DIR (a GLUE folder; for this project "
                                 f"../shared/glue) or give it network access to read {HUB_SST2['data']} from the "
                                 f"Hugging Face hub ({exc})") from None
            raise
        typer.echo(f"speed-accuracy curve: {write_run_curve(output / f'sst2-{m}', metrics)}")
        summary.append(metrics)
        typer.echo("")
    if len(summary) > 1:
        evaluations = [Evaluation.of_run(m) for m in summary]
        typer.echo("method        " + "  ".join(f"L{p.exit_layer:<6}" for p in evaluations[0].per_exit) + "  AUC")
        for m, ev in zip(summary, evaluations):
            typer.echo(f"{m['method']:<13} " + "  ".join(f"{p.score:6.2f} " for p in ev.per_exit) + f"  {ev.curve.auc:.2f}")


demo.__doc__ = (
    "The main job: fine-tune the packaged all-MiniLM-L6-v2 (exits after layers 1,2,4,6) on a 6K random sample of "
    "SST-2, calibrate, evaluate on the SST-2 validation split, and print per-exit scores and the curve. Offline. "
    f"{DEMO_TIME}. Each run directory also gets curve.png, the run's speed-accuracy curve."
)
