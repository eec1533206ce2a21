"""``sweet grid``, ``sweet report`` and ``sweet tasks``: experiment grids and the data they run on."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ..choices import TRAIN_PRECISION_HELP
from ..errors import SweetError
from ..methods import METHODS_HELP
from .base import app
from .options import (
    POSITIVE,
    DataDir,
    Progress,
    command_line,
    one_of,
    optional_str,
    split_flag,
)


def _grid_flags(**given) -> dict:
    """The spec fields given on the command line (None: not given; ``exit_layers`` may be given as 'default')."""
    exit_layers = given.pop("exit_layers")
    flags = {k: v for k, v in given.items() if v is not None}
    if exit_layers is not None:
        named = exit_layers.strip().lower()
        flags["exit_layers"] = (None if named == "default" else named if named == "proportional"
                                else split_flag("--exit-layers", exit_layers, int))
    return flags


def _measured_line(measured: dict | None, side_by_side: int) -> list[str]:
    if measured is None:
        return []
    n, left = measured["runs"], measured["seconds_left"] / 60
    wall = (f", ~{left / side_by_side:.0f} min with {side_by_side} runs side by side" if side_by_side > 1
            else ", one run at a time")
    return [f"measured: this grid's {n} finished run{'s' if n > 1 else ''} took {measured['ratio']:.1f}x the estimate "
            f"of {'them' if n > 1 else 'it'} ({measured['seconds'] / 60:.0f} min against "
            f"{measured['estimate_seconds'] / 60:.0f}, at the load they ran under): at that rate ~{left:.0f} "
            f"run-minutes left{wall}"]


def _describe_plan(spec, status: dict, side_by_side: int = 1) -> list[str]:
    sizes = f" x {len(spec.train_sizes)} training sizes" if spec.is_size_sweep else ""
    if spec.learning_rates_from is not None:
        whose = "its method's" if spec.learning_rate_method == "same" else f"{spec.learning_rate_method}'s"
        shape = (f"{len(spec.tasks)} tasks x {len(spec.methods)} methods{sizes} x {len(spec.seeds)} seeds, each at "
                 f"{whose} learning rate chosen in {spec.learning_rates_from}")
        if spec.param_selection != "all_seeds":
            shape += (f"; seeds after {spec.seeds[0]} run only the value of each method family chosen on it by worst "
                      "deficit")
    elif spec.first_seed_selects:
        shape = (f"{len(spec.tasks)} tasks x {len(spec.methods)} methods{sizes} x ({len(spec.learning_rates)} "
                 f"learning rates on seed {spec.seeds[0]} + {len(spec.seeds) - 1} more seeds at the rate chosen on it)")
    else:
        shape = (f"{len(spec.tasks)} tasks x {len(spec.methods)} methods x {len(spec.seeds)} seeds x "
                 f"{len(spec.learning_rates)} learning rates{sizes}")
    if spec.task_methods:
        shape += "; " + ", ".join(f"{t} runs only {', '.join(ms)}" for t, ms in spec.task_methods.items())
    waits: dict[str, int] = {}
    for r in status["runs"]:
        if r["state"] == "waiting":
            waits[r["waits_for"]] = waits.get(r["waits_for"], 0) + 1
    waiting = f", {status['waiting']} waiting (below)" if status["waiting"] else ""
    at = [f"{r['steps'][0]}/{r['steps'][1]}" for r in status["runs"] if r.get("steps")]
    at = f" (checkpoints here at step {', '.join(at)})" if at else ""
    return [f"grid '{spec.name}': {status['n_runs']} runs ({shape}); {status['finished']} finished, "
            f"{status['partial']} started{at}, {status['pending']} not started{waiting}",
            *(f"  waiting: {n} run{'s' if n > 1 else ''} for {reason}" for reason, n in waits.items()),
            f"estimated time left, one run at a time: ~{status['estimate_seconds_left'] / 60:.0f} min (started runs: "
            "their steps left; a cost model "
            "whose speeds were measured on a 2-core AMD EPYC when idle: the default backbone ~91 training examples/s "
            "on SST-2, pair tasks 3-4x slower, mpnet ~6.7x slower; it does not time this machine, and runs on shared cores take ~1.3x longer)",
            *_measured_line(status.get("measured"), side_by_side)]


@app.command()
def grid(
    output: Annotated[Path, typer.Option("--output", "-o", help="Grid directory (created; an existing grid is continued).")],
    preset: Annotated[Optional[str], typer.Option(help="Start from a preset: 'paper' (7 tasks x 3 methods x 3 seeds x {1..5}e-5, 6K examples, 2 epochs), 'quick' (a reduced grid for 2 CPU cores) or 'sizes' (the training-set size sweep: MNLI at 1K, 3K, 6K examples).")] = None,
    spec: Annotated[Optional[Path], typer.Option("--spec", help="Spec file (.toml, .yaml or .json) with the fields of a grid; 'preset = NAME' inside starts from a preset. Only a spec file can say 'task_methods = {mnli = [\"early_exit\", \"sweet\"]}' (some tasks on fewer methods).")] = None,
    name: Annotated[Optional[str], typer.Option(help="The grid's name (the report's title); default: the preset's, else 'custom'.")] = None,
    tasks: Annotated[Optional[str], typer.Option(help="Comma-separated tasks, e.g. sst2,mrpc.")] = None,
    methods: Annotated[Optional[str], typer.Option(help="Comma-separated methods (" + METHODS_HELP + "), or 'all' for the paper's three.")] = None,
    backbone: Annotated[Optional[str], typer.Option(help="Backbone ('default', a local model directory or a hub id).")] = None,
    exit_layers: Annotated[Optional[str], typer.Option(help="Comma-separated exit layers, 'default', or 'proportional' (the paper's proportions at the backbone's depth: 1,2,3,6 at 6 layers).")] = None,
    seeds: Annotated[Optional[str], typer.Option(help="Comma-separated seeds, e.g. 0,1,2.")] = None,
    lrs: Annotated[Optional[str], typer.Option("--lrs", help="Comma-separated learning rates, e.g. 1e-5,3e-5,5e-5.")] = None,
    n_train: Annotated[Optional[str], typer.Option(help="Training examples per seed; a comma-separated list (e.g. 1000,3000,6000) is a training-set size sweep.")] = None,
    epochs: Annotated[Optional[int], typer.Option(metavar=POSITIVE, help="Training epochs.")] = None,
    data_dir: DataDir = None,
    backend: Annotated[str, typer.Option(**one_of(("local", "ray"), lambda v: f"unknown back-end '{v}'; choose one of: local, ray"),
                                         help="'local' (one run after another, in this process) or 'ray' (each run a Ray task).")] = "local",
    ray_address: Annotated[Optional[str], typer.Option(help="Ray cluster to join ('auto', 'ray://host:10001'); default: start a local Ray instance.")] = None,
    cpus_per_run: Annotated[Optional[float], typer.Option(help="Ray: CPUs requested per run (also its torch threads). Default 1.")] = None,
    gpus_per_run: Annotated[Optional[float], typer.Option(help="Ray: GPUs requested per run (a run with a GPU trains on it). Default 0.")] = None,
    precision: Annotated[Optional[str], typer.Option(help="Training precision of every run: " + TRAIN_PRECISION_HELP + " Resolved when the grid is planned (and part of each run's key unless fp32).")] = None,
    lr_selection: Annotated[Optional[str], typer.Option("--lr-selection", help="How the learning rate is chosen on the calibration split: 'all_seeds' (default: every seed runs every rate; the best mean AUC over seeds wins) or 'first_seed' (only the first seed runs every rate; the other seeds run only the rate chosen on it, per task and method: fewer runs).")] = None,
    learning_rates_from: Annotated[Optional[str], typer.Option("--learning-rates-from", help="A reference grid directory (instead of --lrs): each run takes the learning rate that grid chose for its task (on its calibration split, by its own rule); runs wait until it has chosen. A relative path is read from the root of the git checkout holding --output.")] = None,
    learning_rate_method: Annotated[Optional[str], typer.Option("--learning-rate-method", help="With --learning-rates-from: whose chosen rate each run takes, 'same' (default: its own method's) or a method the reference ran, e.g. early_exit.")] = None,
    param_selection: Annotated[Optional[str], typer.Option("--param-selection", help="Where the grid runs several values of one method (e.g. grad_scale@0.25,grad_scale@0.75): 'all_seeds' (default: every seed runs every value) or 'first_seed_worst_deficit' (the first seed runs every value; later seeds run only the value whose worst deficit against the better of the reference grid's early_exit and sweet, over the five fixed costs of the first seed's calibration split, is largest; needs --learning-rates-from).")] = None,
    threads: Annotated[Optional[int], typer.Option(metavar=POSITIVE, help="Local back-end: torch threads (default: torch's default). On a machine shared with other jobs, 1 can be several times faster than 2.")] = None,
    update_spec: Annotated[bool, typer.Option(help="Replace the spec stored in an existing grid directory.")] = False,
    dry_run: Annotated[bool, typer.Option(help="Print the plan (runs finished/left, time estimate; once runs have finished, also scaled by how long they took here) and exit. It runs the checks a launch runs (a launch it would refuse fails the same way) and writes nothing.")] = False,
    stop: Annotated[bool, typer.Option(help="Ask the launch running on --output to stop without losing training progress, and return at once: no further run starts, each run in training saves a checkpoint at its current step and stops (a run already past training finishes), and that launch ends with code 0. The next launch continues every stopped run from its checkpoint. (Ctrl-C stops too: on the local back-end each run in training saves its step in progress; on Ray, runs in flight lose the steps since their last periodic checkpoint.)")] = False,
    progress: Progress = True,
) -> None:
    """Run an experiment grid (tasks x methods x seeds x learning rates). Resumable: finished runs are skipped,
    so a killed grid continues where it stopped. Then 'sweet report GRID_DIR'."""
    # heavy (torch, transformers, ray): imported when the command runs, so that `sweet --help` stays fast
    from ..experiments import (
        grid_status,
        load_spec_file,
        request_stop,
        run_grid,
        spec_from_dict,
        stored_spec,
    )
    from ..experiments import preset as get_preset
    from ..experiments.status import runs_side_by_side

    if stop:
        path = request_stop(output)
        typer.echo(f"wrote {path}: the launch on {output} stops once each run in training has saved its current step "
                   "(a run past training finishes first); it removes the file when it ends")
        return

    flags = _grid_flags(
        tasks=split_flag("--tasks", tasks, str), methods=split_flag("--methods", methods, str), name=name,
        backbone=backbone, seeds=split_flag("--seeds", seeds, int), learning_rates=split_flag("--lrs", lrs, float),
        n_train=split_flag("--n-train", n_train, int), epochs=epochs, cpus_per_run=cpus_per_run,
        gpus_per_run=gpus_per_run, precision=precision, lr_selection=lr_selection, exit_layers=exit_layers,
        learning_rates_from=learning_rates_from, learning_rate_method=learning_rate_method,
        param_selection=param_selection,
    )
    if preset is not None and spec is not None:
        raise SweetError("give --preset or --spec, not both (a spec file can say 'preset = NAME')")
    if spec is not None:
        base = load_spec_file(spec).to_dict()
    elif preset is not None:
        base = spec_from_dict(get_preset(preset), source=f"preset {preset}").to_dict()
    else:
        old = stored_spec(output)
        base = old.to_dict() if old is not None else {}
    the_spec = spec_from_dict(flags, source="command line", base=base)
    if dry_run:
        side_by_side = runs_side_by_side(the_spec, backend, ray_address)
        for line in _describe_plan(the_spec, grid_status(the_spec, output, optional_str(data_dir), update_spec),
                                   side_by_side):
            typer.echo(line)
        return
    res = run_grid(the_spec, output, data_dir=optional_str(data_dir), backend=backend, ray_address=ray_address,
                   update_spec=update_spec, progress=progress, command=command_line(), threads=threads)
    stopped = (f"; stopped on request, {len(res.stopped)} run(s) saved at their current step (the next launch "
               "continues them)") if res.stop_requested else ""
    typer.echo(f"grid '{the_spec.name}': {res.n_runs} runs, {res.skipped} already finished, {len(res.executed)} run now "
               f"in {res.wall_seconds / 60:.1f} min{stopped}. Next: sweet report {output}")


@app.command()
def report(
    grid_dir: Annotated[Path, typer.Argument(help="A grid directory written by 'sweet grid'.")],
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Where to write report.md, report.json and the PNGs (default: GRID_DIR/report).")] = None,
    partial: Annotated[bool, typer.Option(help="Report an unfinished grid (what is finished; marked incomplete). Applies to the extra grids below too.")] = False,
    ablation_grid: Annotated[Optional[Path], typer.Option(help="The ladder-ablation grid (issue #25): its runs paired by seed with this grid's (default for the paper grid: the sibling directory 'ablation'; missing or empty: 'not run yet').")] = None,
    base_grid: Annotated[Optional[Path], typer.Option(help="The 12-layer BASE-depth grid (issue #26): Table 1 rows, fixed-cost scores and the paper's claims on it (default for the paper grid: the sibling 'base').")] = None,
    beyond_grid: Annotated[Optional[Path], typer.Option(help="The beyond-the-paper grid (issue #26): each method family's chosen parameter, held against the better of this grid's EE and SWEET (default for the paper grid: the sibling 'beyond').")] = None,
) -> None:
    """Aggregate a grid: choose learning rates on the calibration split, then mean, 95% CI and SD over seeds of every
    per-exit score and interpolated point (averages and the paper's claims also with tasks as the unit); floor
    cells marked and the averages and claims repeated without the tasks that have them; where the grid's learning
    rates were extended, the claims judged with the earlier rates too and what moved; Markdown + JSON +
    speed-accuracy PNGs. The paper grid's report (spec name 'paper') also has three sections fed by the grid
    directories beside it: the ladder ablation, the BASE depth and beyond the paper (or those given)."""
    from ..experiments import (  # heavy (matplotlib): only when the command runs
        REPORT_MD,
        write_report,
    )

    out = output if output is not None else grid_dir / "report"
    siblings = {"ablation": ablation_grid, "base_depth": base_grid, "beyond": beyond_grid}
    rep = write_report(grid_dir, out, partial=partial, command=command_line(), siblings=siblings)
    typer.echo(f"wrote {out / REPORT_MD} ({rep['status']['n_finished']} of {rep['status']['n_runs']} runs, "
               f"{len(rep['figures'])} figure(s))")


@app.command()
def tasks(data_dir: DataDir = None) -> None:
    """List the tasks and which of their files the data directory holds."""
    from ..data import task_status

    for row in task_status(data_dir):
        dev = row["dev"] or "none (evaluation uses a held-out part of the training pool, labelled 'held-out train')"
        typer.echo(f"{row['task']:<5} {row['folder']:<6} train: {row['train'] or 'MISSING'}  dev: {dev}  metric: {row['metric']}")
