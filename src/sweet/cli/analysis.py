"""``sweet analyze gradients``: the paper's conflicting-gradients analysis (Section 3.1)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from .base import analyze_app
from .options import (
    MIN_TOKENS,
    POSITIVE,
    Backbone,
    Data,
    DataDir,
    DataSource,
    DropInvalid,
    ExitLayers,
    LabelColumn,
    LearningRate,
    Pooling,
    Progress,
    Seed,
    TextColumn,
    TextColumns,
    command_line,
    data_fields,
    optional_str,
    parse_layers,
)


@analyze_app.command("gradients")
def analyze_gradients_cmd(
    output: Annotated[Path, typer.Option("--output", "-o", help="Directory for gradients.json and gradients.png.")],
    task: Annotated[Optional[str], typer.Option("--task", "-t", help="GLUE task preset to fine-tune on (the paper: mnli; the default without --data).")] = None,
    data: Data = None,
    text_column: TextColumn = None,
    text_columns: TextColumns = None,
    label_column: LabelColumn = None,
    drop_invalid: DropInvalid = False,
    steps: Annotated[int, typer.Option(metavar=POSITIVE, help="Training steps (the paper: 400).")] = 400,
    backbone: Backbone = "default",
    exit_layers: ExitLayers = None,
    batch_size: Annotated[int, typer.Option(metavar=POSITIVE, help="Training batch size (the paper: 16).")] = 16,
    learning_rate: LearningRate = 2e-5,
    seed: Seed = 0,
    max_length: Annotated[int, typer.Option(metavar=MIN_TOKENS, help="Maximum tokens per example.")] = 256,
    pooling: Pooling = "auto",
    probe_batches: Annotated[int, typer.Option(metavar=POSITIVE, help="Fresh training-pool batches measured after the last step (the paper's protocol: 1, plus 1 repeat).")] = 2,
    data_dir: DataDir = None,
    data_source: DataSource = "local",
    progress: Progress = True,
) -> None:
    """Conflicting gradients: fine-tune an Early-Exit model and, at every step, compare the gradients that each
    classifier's own loss sends to the last FFN weight matrix of every layer preceding an exit (row-wise cosine
    similarity, averaged over rows; pairs of classifiers, and each classifier vs the sum of the others). The
    learning rate defaults to 2e-5, the paper's analysis setting."""
    # heavy (torch, transformers): imported when the command runs, so that `sweet --help` stays fast
    from ..analysis import GRADIENTS_JSON, GRADIENTS_PNG, analyze_gradients
    from ..rundir import hide_hf_progress_bars

    if not progress:
        hide_hf_progress_bars()
    if task is None and data is None:
        task = "mnli"
    own = data_fields(data, None, None, "train", None, text_column, text_columns, label_column, None, None, drop_invalid)
    res = analyze_gradients(own_data={k: v for k, v in own.items() if k not in ("metric", "positive_label")}, task=task, output=output, backbone=backbone, exit_layers=parse_layers(exit_layers),
                            steps=steps, batch_size=batch_size, learning_rate=learning_rate, seed=seed,
                            max_length=max_length, pooling=pooling, probe_batches=probe_batches,
                            data_dir=optional_str(data_dir), data_source=data_source, progress=progress,
                            command=command_line())
    for lay in res["layers"]:
        pairs = "  ".join(f"{p['classifiers'][0]}/{p['classifiers'][1]}: {p['mean']:+.3f}" for p in lay["pairs"])
        others = "  ".join(f"{o['classifier']}: {o['mean']:+.3f}" for o in lay["others_vs_own"])
        typer.echo(f"layer {lay['layer']}: pairs {pairs}")
        typer.echo(f"{'':>{len(str(lay['layer'])) + 7}}own vs others' sum {others}")
    typer.echo(f"{res['steps']} steps in {res['seconds']:.0f}s. Written: {output / GRADIENTS_JSON}, {output / GRADIENTS_PNG}")
