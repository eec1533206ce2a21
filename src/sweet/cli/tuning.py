"""``sweet tune``: a run's default threshold chosen from a budget on its calibration split (:mod:`sweet.tuning`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from .base import app
from .options import DataDir, Policy, Progress, optional_str


@app.command()
def tune(
    run_dir: Annotated[Path, typer.Argument(help="A run directory written by 'sweet train' (or a grid run: its metrics.json is enough).")],
    max_drop: Annotated[Optional[float], typer.Option(metavar="FLOAT >= 0", help="Budget: at most this many points below the last exit's score (on the calibration split); the cheapest threshold that keeps it.")] = None,
    target_cost: Annotated[Optional[float], typer.Option(metavar="FLOAT in (0, 1]", help="Budget: at most this cost ratio (1 = the full model for every example); the best-scoring threshold within it.")] = None,
    policy: Policy = "confidence",
    from_curve: Annotated[bool, typer.Option("--from-curve", help="Tune on the calibration curve stored in metrics.json (11 thresholds, confidence policy; linear between them) even when the run has its model. Runs without a model/ (grid runs) always do.")] = False,
    data_dir: DataDir = None,
    output_json: Annotated[bool, typer.Option("--json", help="Print the choice as JSON (what threshold.json holds) instead of a table.")] = False,
    progress: Progress = True,
) -> None:
    """Choose the run's threshold from a budget (--max-drop POINTS or --target-cost RATIO) on its calibration split,
    never the evaluation split: from the model's logits over a fine threshold grid where the run has its model, else
    from the stored calibration curve. Prints the evaluation split's score and cost at that threshold next to what
    the calibration split predicted, and stores the choice in RUN_DIR/threshold.json (a copy and a refreshed model
    card in model/), which 'sweet predict' and 'sweet serve' use when no --threshold is given."""
    # heavy (torch): imported when the command runs, so that `sweet --help` stays fast
    from ..tuning import Budget, format_tune, tune_run

    budget = Budget(max_drop=max_drop, target_cost=target_cost)
    result = tune_run(run_dir, budget, policy, from_curve=from_curve, data_dir=optional_str(data_dir),
                      progress=progress)
    if output_json:
        typer.echo(json.dumps(result.to_dict(), indent=2))
    else:
        typer.echo(format_tune(result))
        typer.echo(f"\nwritten: {run_dir / 'threshold.json'} (the run's default threshold for the {result.policy} policy)")
