"""Command line interface: ``sweet train | evaluate | predict | bench | demo | grid | report | tasks | serve |
loadtest`` and ``sweet analyze gradients``.

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
from .methods import METHODS_HELP
from .precision import DEVICE_HELP, PRECISION_HELP, TRAIN_PRECISION_HELP

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Adaptive inference for transformer classifiers: fine-tune multi-exit models with Early-Exit, SWEET or "
    "Multi-Model, calibrate them, and measure the speed-accuracy trade-off.",
)
_STATE = {"debug": False}

DATA_DIR_HELP = "GLUE directory (one folder per task with train.tsv/train_pool.tsv and dev.tsv). Default: $SWEET_GLUE_DIR."
METHOD_HELP = "Fine-tuning method: " + METHODS_HELP + "."
POLICY_HELP = ("Exit policy: confidence (calibrated max probability), entropy (DeeBERT; 1 - normalised entropy), "
               "patience (PABEE; threshold t means patience round(t*(exits-1))) or learned (learning-to-exit; needs a "
               "model trained with --learn-exit).")


def parse_layers(text: Optional[str]) -> Optional[list[int]]:
    if text is None or text.strip().lower() in ("", "default"):
        return None
    try:
        return [int(x) for x in text.replace(" ", "").split(",") if x != ""]
    except ValueError:
        raise SweetError(f"--exit-layers must be comma-separated integers such as 1,2,4,6, got {text!r}") from None


@app.callback()
def _main(debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors.")) -> None:
    _STATE["debug"] = debug


def _run_one(task, method, backbone, exit_layers, n_train, seed, learning_rate, epochs, batch_size, max_length,
             pooling, data_dir, data_source, output, overwrite, progress, allow_partial_depth=False,
             checkpoint_every=200, resume=False, learn_exit=False, device="auto", precision="auto") -> dict:
    from .evaluation import format_report
    from .runs import RunConfig, run

    cfg = RunConfig(
        task=task, method=method, backbone=backbone, exit_layers=parse_layers(exit_layers), n_train=n_train, seed=seed,
        learning_rate=learning_rate, epochs=epochs, batch_size=batch_size, max_length=max_length, pooling=pooling,
        data_dir=str(data_dir) if data_dir else None, data_source=data_source, allow_partial_depth=allow_partial_depth,
        checkpoint_every=checkpoint_every, extra={"learn_exit": True} if learn_exit else {}, device=device,
        precision=precision,
    )
    if not progress:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # e.g. "Loading weights"
    metrics = run(cfg, output, progress=progress, overwrite=overwrite, resume=resume)
    typer.echo(format_report(metrics))
    t, where = metrics["timing"], metrics["placement"]["train"]
    typer.echo(f"\ntrain {t['train_seconds']:.0f}s ({t['train_examples_per_second']:.1f} examples/s, "
               f"{where['precision']} on {where['device']}), "
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
    max_length: int = typer.Option(256, help="Maximum tokens per example (longer ones are truncated, with one warning); capped at what the backbone accepts."),
    pooling: str = typer.Option("auto", help="How each exit pools tokens: cls, mean, or auto (the pooling the backbone was pretrained with if it declares one, e.g. mean for all-MiniLM-L6-v2; else cls)."),
    data_dir: Optional[Path] = typer.Option(None, help=DATA_DIR_HELP),
    data_source: str = typer.Option("local", help="'local' (TSV directory) or 'hub' (Hugging Face glue dataset; needs network)."),
    allow_partial_depth: bool = typer.Option(False, help="Allow the last exit below the backbone's depth (the encoder is cut after it)."),
    overwrite: bool = typer.Option(False, help="Replace a finished run in --output."),
    checkpoint_every: int = typer.Option(200, help="Save a training checkpoint (model, optimizer, scheduler, RNG states, data position) every N optimizer steps into OUTPUT/checkpoint; 0 turns checkpoints off."),
    resume: bool = typer.Option(False, help="Continue the unfinished run in --output from its checkpoint (pass the same options); the result equals that of an uninterrupted run."),
    learn_exit: bool = typer.Option(False, "--learn-exit", help="Also fit learning-to-exit modules (one Linear+sigmoid per exit, MSE against 'this exit is correct') after fine-tuning, on the held-out calibration split with the model frozen; enables --policy learned."),
    device: str = typer.Option("auto", help="Device: " + DEVICE_HELP),
    precision: str = typer.Option("auto", help="Training precision: " + TRAIN_PRECISION_HELP),
    progress: bool = typer.Option(True, help="Show progress bars."),
) -> None:
    """Fine-tune a multi-exit model on a GLUE task, calibrate it on held-out data, and evaluate it (the confidence
    curve in metrics.json 'evaluation'; the entropy, patience and, with --learn-exit, learned curves under 'policies')."""
    _run_one(task, method, backbone, exit_layers, n_train, seed, learning_rate, epochs, batch_size, max_length,
             pooling, data_dir, data_source, output, overwrite, progress, allow_partial_depth, checkpoint_every, resume,
             learn_exit, device, precision)


@app.command()
def evaluate(
    run_dir: Path = typer.Argument(..., help="A run directory written by 'sweet train'."),
    data_dir: Optional[Path] = typer.Option(None, help=DATA_DIR_HELP),
    file: Optional[Path] = typer.Option(None, help="Evaluate on this labelled TSV (same columns as the task) instead."),
    output_json: bool = typer.Option(False, "--json", help="Print the metrics as JSON instead of a table."),
    policy: str = typer.Option("confidence", help=POLICY_HELP),
    device: str = typer.Option("auto", help="Device: " + DEVICE_HELP),
    precision: str = typer.Option("auto", help="Inference precision: " + PRECISION_HELP),
    progress: bool = typer.Option(True, help="Show progress bars."),
) -> None:
    """Re-evaluate a trained run: per-exit scores, speed-accuracy curve, interpolated scores, AUC."""
    from .evaluation import format_report
    from .runs import evaluate_run

    result = evaluate_run(run_dir, str(data_dir) if data_dir else None, str(file) if file else None, progress=progress,
                          policy=policy, device=device, precision=precision)
    typer.echo(json.dumps(result, indent=2) if output_json else format_report(result))


@app.command()
def predict(
    run_dir: Path = typer.Argument(..., help="A run directory (or its model/ directory)."),
    input: str = typer.Option("-", "--input", "-i", help="Text file with one example per line (pairs: two texts separated by a tab); '-' reads stdin."),
    threshold: float = typer.Option(0.9, help="Threshold in [0, 1]: leave at the first exit whose policy score reaches it (confidence: the calibrated max probability; 1 = always run to the last exit)."),
    policy: str = typer.Option("confidence", help=POLICY_HELP),
    task: Optional[str] = typer.Option(None, help="Task (default: the one the model was trained on)."),
    fmt: str = typer.Option("tsv", "--format", help="tsv (label, exit layer, confidence; with a --policy other than confidence also its score) or jsonl."),
    batch_size: int = typer.Option(64, help="Rows per batch at every depth (the engine refills batches as rows leave)."),
    device: str = typer.Option("auto", help="Device: " + DEVICE_HELP),
    precision: str = typer.Option("auto", help="Inference precision: " + PRECISION_HELP),
) -> None:
    """Predict labels for unlabelled text; one line out per example: label, exit layer, confidence."""
    from .predictor import predict_texts

    if fmt not in ("tsv", "jsonl"):
        raise SweetError(f"--format must be tsv or jsonl, got {fmt!r}")
    if input == "-":
        raw, where = sys.stdin.buffer.read(), "standard input"
    else:
        path = Path(input)
        if not path.is_file():
            raise SweetError(f"input file not found: {path}")
        raw, where = path.read_bytes(), str(path)
    try:
        lines = raw.decode("utf-8-sig").splitlines()
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise SweetError(f"{where}, line {line}: not valid UTF-8 (byte offset {exc.start}); re-encode it as UTF-8") from exc
    rows = predict_texts(run_dir, lines, threshold, task, batch_size=batch_size, policy=policy, device=device,
                         precision=precision)
    for r in rows:
        if fmt == "jsonl":
            typer.echo(json.dumps(r))
        else:
            score = f"\t{r['score']:.4f}" if "score" in r else ""
            typer.echo(f"{r['label']}\t{r['exit_layer']}\t{r['confidence']:.4f}{score}")


@app.command()
def demo(
    method: str = typer.Option("sweet", "--method", "-m", help=METHOD_HELP + " Or 'all' to run the paper's three in turn."),
    data_dir: Optional[Path] = typer.Option(None, help=DATA_DIR_HELP),
    output: Path = typer.Option(Path("runs/demo"), help="Parent directory; each method writes OUTPUT/sst2-METHOD."),
    n_train: int = typer.Option(6000, help="Training examples (the paper's 6K)."),
    epochs: int = typer.Option(2, help="Training epochs."),
    seed: int = typer.Option(0, help="Seed."),
    learning_rate: float = typer.Option(5e-5, "--lr", help="Initial learning rate."),
    device: str = typer.Option("auto", help="Device: " + DEVICE_HELP),
    precision: str = typer.Option("auto", help="Training precision: " + TRAIN_PRECISION_HELP),
    progress: bool = typer.Option(True, help="Show progress bars."),
) -> None:
    """The main job: fine-tune the packaged all-MiniLM-L6-v2 (exits after layers 1,2,4,6) on a 6K random sample
    of SST-2, calibrate, evaluate on the SST-2 validation split, and print per-exit scores and the curve.
    Offline; about 5-10 minutes per method on 2 CPU cores (multi_model about twice that). Each run directory also
    gets curve.png, the run's speed-accuracy curve."""
    from .experiments import write_run_curve
    from .modeling import METHODS

    methods = list(METHODS) if method == "all" else [method]
    summary = []
    for m in methods:
        typer.echo(f"=== demo: SST-2, {m}, default backbone, exits 1,2,4,6 ===")
        metrics = _run_one("sst2", m, "default", None, n_train, seed, learning_rate, epochs, 16, 256, "auto", data_dir,
                           "local", output / f"sst2-{m}", True, progress, device=device, precision=precision)
        typer.echo(f"speed-accuracy curve: {write_run_curve(output / f'sst2-{m}', metrics)}")
        summary.append(metrics)
        typer.echo("")
    if len(summary) > 1:
        typer.echo("method        " + "  ".join(f"L{p['exit_layer']:<6}" for p in summary[0]["evaluation"]["per_exit"]) + "  AUC")
        for m in summary:
            ev = m["evaluation"]
            typer.echo(f"{m['method']:<13} " + "  ".join(f"{p['score']:6.2f} " for p in ev["per_exit"]) + f"  {ev['auc']:.2f}")


@app.command()
def bench(
    run_dir: Path = typer.Argument(..., help="A run directory written by 'sweet train'."),
    batch_sizes: str = typer.Option("64", help="Comma-separated batch sizes, e.g. 1,16,64."),
    repeats: int = typer.Option(3, help="Timed passes over the split per configuration (the median is reported)."),
    max_examples: Optional[int] = typer.Option(None, help="Use only the first N examples of the evaluation split."),
    threads: Optional[int] = typer.Option(None, help="torch threads, and ONNX Runtime's intra-op threads (default: "
                                                     "torch's default, usually the core count)."),
    device: str = typer.Option("auto", help="Device: " + DEVICE_HELP),
    precisions: str = typer.Option("default", help="Comma list of inference precisions for the engine and the "
                                   "torch full model (fp32 is always included: it is the reference): fp32, bf16, "
                                   "fp16, int8; 'default' = fp32 plus what this device runs fast (CPU: int8, and "
                                   "bf16 where the processor has native bf16); 'all' = every one it can run."),
    peers: bool = typer.Option(True, help="Also time ONNX Runtime fp32 and int8 on the full model (needs the "
                                          "extra sweet[onnx]; skipped with a note without it)."),
    data_dir: Optional[Path] = typer.Option(None, help=DATA_DIR_HELP),
    output: Optional[Path] = typer.Option(None, help="Where to write the JSON (default: RUN_DIR/bench.json)."),
    policy: str = typer.Option("confidence", help=POLICY_HELP),
    progress: bool = typer.Option(True, help="Show progress bars."),
) -> None:
    """Measure throughput and accuracy of early-exit inference over the threshold grid, at each precision, against
    the full model in torch (fp32 = the baseline, and each precision) and in ONNX Runtime (fp32, int8), on the same
    examples: cost ratio, ideal speedup (1/cost), realised speedup and their ratio."""
    from .bench import benchmark, format_bench
    from .io import atomic_write_json

    sizes = _split_flag("--batch-sizes", batch_sizes, int) or [64]
    report = benchmark(run_dir, sizes, repeats=repeats, max_examples=max_examples, threads=threads,
                       data_dir=str(data_dir) if data_dir else None, progress=progress, policy=policy, device=device,
                       precisions=precisions, peers=peers)
    path = output or (run_dir / ("bench.json" if policy == "confidence" else f"bench-{policy}.json"))
    atomic_write_json(path, report)
    typer.echo(format_bench(report))
    typer.echo(f"\nwritten: {path}")


@app.command()
def tasks(data_dir: Optional[Path] = typer.Option(None, help=DATA_DIR_HELP)) -> None:
    """List the tasks and which of their files the data directory holds."""
    from .data import task_status

    for row in task_status(data_dir):
        dev = row["dev"] or "none (evaluation uses a held-out part of the training pool, labelled 'held-out train')"
        typer.echo(f"{row['task']:<5} {row['folder']:<6} train: {row['train'] or 'MISSING'}  dev: {dev}  metric: {row['metric']}")


def _command_line() -> str:
    import shlex

    return "sweet " + shlex.join(sys.argv[1:])


def _split_flag(flag: str, text: Optional[str], convert) -> Optional[list]:
    if text is None:
        return None
    out = []
    for item in text.replace(" ", "").split(","):
        if item == "":
            continue
        try:
            out.append(convert(item))
        except ValueError:
            raise SweetError(f"{flag}: '{item}' is not a valid value (expected a comma-separated list, got '{text}')") from None
    return out


@app.command()
def grid(
    output: Path = typer.Option(..., "--output", "-o", help="Grid directory (created; an existing grid is continued)."),
    preset: Optional[str] = typer.Option(None, help="Start from a preset: 'paper' (7 tasks x 3 methods x 3 seeds x {1..5}e-5, 6K examples, 2 epochs), 'quick' (a reduced grid for 2 CPU cores) or 'sizes' (the training-set size sweep: MNLI at 1K, 3K, 6K examples)."),
    spec: Optional[Path] = typer.Option(None, "--spec", help="Spec file (.toml, .yaml or .json) with the fields of a grid; 'preset = NAME' inside starts from a preset."),
    name: Optional[str] = typer.Option(None, help="The grid's name (the report's title); default: the preset's, else 'custom'."),
    tasks: Optional[str] = typer.Option(None, help="Comma-separated tasks, e.g. sst2,mrpc."),
    methods: Optional[str] = typer.Option(None, help="Comma-separated methods (" + METHODS_HELP + "), or 'all' for the paper's three."),
    backbone: Optional[str] = typer.Option(None, help="Backbone ('default', a local model directory or a hub id)."),
    exit_layers: Optional[str] = typer.Option(None, help="Comma-separated exit layers, or 'default'."),
    seeds: Optional[str] = typer.Option(None, help="Comma-separated seeds, e.g. 0,1,2."),
    lrs: Optional[str] = typer.Option(None, "--lrs", help="Comma-separated learning rates, e.g. 1e-5,3e-5,5e-5."),
    n_train: Optional[str] = typer.Option(None, help="Training examples per seed; a comma-separated list (e.g. 1000,3000,6000) is a training-set size sweep."),
    epochs: Optional[int] = typer.Option(None, help="Training epochs."),
    data_dir: Optional[Path] = typer.Option(None, help=DATA_DIR_HELP),
    backend: str = typer.Option("local", help="'local' (one run after another, in this process) or 'ray' (each run a Ray task)."),
    ray_address: Optional[str] = typer.Option(None, help="Ray cluster to join ('auto', 'ray://host:10001'); default: start a local Ray instance."),
    cpus_per_run: Optional[float] = typer.Option(None, help="Ray: CPUs requested per run (also its torch threads). Default 1."),
    gpus_per_run: Optional[float] = typer.Option(None, help="Ray: GPUs requested per run. Default 0."),
    precision: Optional[str] = typer.Option(None, help="Training precision of every run: " + TRAIN_PRECISION_HELP + " Resolved when the grid is planned (and part of each run's key unless fp32)."),
    lr_selection: Optional[str] = typer.Option(None, "--lr-selection", help="How the learning rate is chosen on the calibration split: 'all_seeds' (default: every seed runs every rate; the best mean AUC over seeds wins) or 'first_seed' (only the first seed runs every rate; the other seeds run only the rate chosen on it, per task and method: fewer runs)."),
    threads: Optional[int] = typer.Option(None, help="Local back-end: torch threads (default: torch's default). On a machine shared with other jobs, 1 can be several times faster than 2."),
    update_spec: bool = typer.Option(False, help="Replace the spec stored in an existing grid directory."),
    dry_run: bool = typer.Option(False, help="Print the plan (runs finished/left, time estimate) and exit."),
    progress: bool = typer.Option(True, help="Show progress bars."),
) -> None:
    """Run an experiment grid (tasks x methods x seeds x learning rates). Resumable: finished runs are skipped,
    so a killed grid continues where it stopped. Then 'sweet report GRID_DIR'."""
    from .experiments import check_field, load_spec_file, preset as get_preset, run_grid, grid_status, spec_from_dict, stored_spec

    flags = {
        "tasks": _split_flag("--tasks", tasks, str), "methods": _split_flag("--methods", methods, str),
        "name": name, "backbone": backbone, "seeds": _split_flag("--seeds", seeds, int), "learning_rates": _split_flag("--lrs", lrs, float),
        "n_train": _split_flag("--n-train", n_train, int), "epochs": epochs, "cpus_per_run": cpus_per_run, "gpus_per_run": gpus_per_run,
        "precision": precision, "lr_selection": lr_selection,
    }
    if exit_layers is not None:
        flags["exit_layers"] = None if exit_layers.strip().lower() == "default" else _split_flag("--exit-layers", exit_layers, int)
    flags = {k: v for k, v in flags.items() if v is not None or k == "exit_layers"}
    if preset is not None and spec is not None:
        raise SweetError("give --preset or --spec, not both (a spec file can say 'preset = NAME')")
    if spec is not None:
        base = load_spec_file(spec).to_dict()
    elif preset is not None:
        base = spec_from_dict(get_preset(preset), source=f"preset {preset}").to_dict()
    else:
        old = stored_spec(output)
        base = old.to_dict() if old is not None else {}
    for k, v in flags.items():
        check_field(k, v, source="command line")
    the_spec = spec_from_dict(flags, source="command line", base=base)
    ddir = str(data_dir) if data_dir else None
    if dry_run:
        st = grid_status(the_spec, output, ddir)
        sizes = f" x {len(the_spec.train_sizes)} training sizes" if the_spec.is_size_sweep else ""
        if the_spec.first_seed_selects:
            shape = (f"{len(the_spec.tasks)} tasks x {len(the_spec.methods)} methods{sizes} x ({len(the_spec.learning_rates)} "
                     f"learning rates on seed {the_spec.seeds[0]} + {len(the_spec.seeds) - 1} more seeds at the rate chosen on it)")
        else:
            shape = (f"{len(the_spec.tasks)} tasks x {len(the_spec.methods)} methods x {len(the_spec.seeds)} seeds x "
                     f"{len(the_spec.learning_rates)} learning rates{sizes}")
        waiting = f", {st['waiting']} waiting for their learning rate" if st["waiting"] else ""
        typer.echo(f"grid '{the_spec.name}': {st['n_runs']} runs ({shape}); "
                   f"{st['finished']} finished, {st['partial']} started, {st['pending']} not started{waiting}")
        typer.echo(f"estimated time left, one run at a time: ~{st['estimate_seconds_left'] / 60:.0f} min "
                   "(measured on 2 idle cores: the default backbone ~91 training examples/s on SST-2, pair tasks 3-4x slower, mpnet ~4x slower)")
        return
    res = run_grid(the_spec, output, data_dir=ddir, backend=backend, ray_address=ray_address, update_spec=update_spec,
                   progress=progress, command=_command_line(), threads=threads)
    typer.echo(f"grid '{the_spec.name}': {res.n_runs} runs, {res.skipped} already finished, {len(res.executed)} run now "
               f"in {res.wall_seconds / 60:.1f} min. Next: sweet report {output}")


@app.command()
def report(
    grid_dir: Path = typer.Argument(..., help="A grid directory written by 'sweet grid'."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Where to write report.md, report.json and the PNGs (default: GRID_DIR/report)."),
    partial: bool = typer.Option(False, help="Report an unfinished grid (what is finished; marked incomplete)."),
) -> None:
    """Aggregate a grid: choose learning rates on the calibration split, then mean and 95% CI over seeds of every
    per-exit score and interpolated point; Markdown + JSON + speed-accuracy PNGs."""
    from .experiments import REPORT_MD, write_report

    out = output if output is not None else grid_dir / "report"
    rep = write_report(grid_dir, out, partial=partial, command=_command_line())
    typer.echo(f"wrote {out / REPORT_MD} ({rep['status']['n_finished']} of {rep['status']['n_runs']} runs, "
               f"{len(rep['figures'])} figure(s))")


analyze_app = typer.Typer(no_args_is_help=True, help="Analyses of multi-exit training (the paper's Section 3.1).")
app.add_typer(analyze_app, name="analyze")


@analyze_app.command("gradients")
def analyze_gradients_cmd(
    output: Path = typer.Option(..., "--output", "-o", help="Directory for gradients.json and gradients.png."),
    task: str = typer.Option("mnli", "--task", "-t", help="Task to fine-tune on (the paper: mnli)."),
    steps: int = typer.Option(400, help="Training steps (the paper: 400)."),
    backbone: str = typer.Option("default", help="'default' (packaged all-MiniLM-L6-v2), a hub id, or a local model directory."),
    exit_layers: Optional[str] = typer.Option(None, help="Comma-separated exit layers. Default: the paper-shaped ladder for the backbone's depth."),
    batch_size: int = typer.Option(16, help="Training batch size (the paper: 16)."),
    learning_rate: float = typer.Option(2e-5, "--lr", help="Learning rate (the paper's analysis: 2e-5)."),
    seed: int = typer.Option(0, help="Seed (training sample, heads, dropout, batch order)."),
    max_length: int = typer.Option(256, help="Maximum tokens per example."),
    pooling: str = typer.Option("auto", help="cls, mean or auto (as in 'sweet train')."),
    probe_batches: int = typer.Option(2, help="Fresh training-pool batches measured after the last step (the paper's protocol: 1, plus 1 repeat)."),
    data_dir: Optional[Path] = typer.Option(None, help=DATA_DIR_HELP),
    data_source: str = typer.Option("local", help="'local' (TSV directory) or 'hub'."),
    progress: bool = typer.Option(True, help="Show a progress bar."),
) -> None:
    """Conflicting gradients: fine-tune an Early-Exit model and, at every step, compare the gradients that each
    classifier's own loss sends to the last FFN weight matrix of every layer preceding an exit (row-wise cosine
    similarity, averaged over rows; pairs of classifiers, and each classifier vs the sum of the others)."""
    from .analysis import GRADIENTS_JSON, GRADIENTS_PNG, analyze_gradients

    if not progress:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    res = analyze_gradients(task=task, output=output, backbone=backbone, exit_layers=parse_layers(exit_layers),
                            steps=steps, batch_size=batch_size, learning_rate=learning_rate, seed=seed,
                            max_length=max_length, pooling=pooling, probe_batches=probe_batches,
                            data_dir=str(data_dir) if data_dir else None, data_source=data_source, progress=progress,
                            command=_command_line())
    for lay in res["layers"]:
        pairs = "  ".join(f"{p['classifiers'][0]}/{p['classifiers'][1]}: {p['mean']:+.3f}" for p in lay["pairs"])
        others = "  ".join(f"{o['classifier']}: {o['mean']:+.3f}" for o in lay["others_vs_own"])
        typer.echo(f"layer {lay['layer']}: pairs {pairs}")
        typer.echo(f"{'':>{len(str(lay['layer'])) + 7}}own vs others' sum {others}")
    typer.echo(f"{res['steps']} steps in {res['seconds']:.0f}s. Written: {output / GRADIENTS_JSON}, {output / GRADIENTS_PNG}")


# ---------------------------------------------------------------------------------------------- serving (issue #13)

def _need_serving_packages(*names: str) -> None:
    import importlib.util

    missing = [n for n in names if importlib.util.find_spec(n) is None]
    if missing:
        raise SweetError(f"this command needs {', '.join(missing)}: pip install 'sweet[serve]'")


@app.command()
def serve(
    run_dir: Path = typer.Argument(..., help="A run directory written by 'sweet train' (or its model/ directory)."),
    host: str = typer.Option("127.0.0.1", help="Address to bind (127.0.0.1: this machine only; 0.0.0.0 exposes the server to the network, set SWEET_API_KEY then)."),
    port: int = typer.Option(8000, help="TCP port."),
    threshold: float = typer.Option(0.9, help="Default threshold in [0, 1] (a request may send its own 'threshold')."),
    policy: str = typer.Option("confidence", help="Default exit policy (a request may send its own 'policy'). " + POLICY_HELP),
    task: Optional[str] = typer.Option(None, help="Task (default: the one the model was trained on)."),
    device: str = typer.Option("auto", help="Device: " + DEVICE_HELP),
    precision: str = typer.Option("auto", help="Inference precision: " + PRECISION_HELP),
    max_batch_size: int = typer.Option(64, help="Most rows per model call; concurrent requests are merged up to it."),
    max_wait_ms: float = typer.Option(5.0, help="How long the oldest queued request may wait for others to join its batch."),
    batching: bool = typer.Option(True, "--batching/--no-batching", help="Merge concurrent requests (--no-batching: one model call per request)."),
    max_items: int = typer.Option(256, help="Most texts (or pairs) per request; more is refused with 413."),
    max_body_bytes: int = typer.Option(1 << 20, help="Largest request body in bytes; larger is refused with 413."),
    threads: Optional[int] = typer.Option(None, help="torch threads (default: torch's default, usually the core count)."),
    backend: str = typer.Option("local", help="'local' (one uvicorn process) or 'ray' (a Ray Serve deployment of --replicas replicas)."),
    replicas: int = typer.Option(1, help="Ray: number of replicas (each loads the model and batches on its own)."),
    cpus_per_replica: float = typer.Option(1.0, help="Ray: CPUs reserved per replica."),
    ray_address: Optional[str] = typer.Option(None, help="Ray cluster to join ('auto', 'ray://host:10001'); default: $RAY_ADDRESS, else a local Ray instance."),
) -> None:
    """Serve a trained run over HTTP: POST /predict with a JSON body {"texts": ["...", ...]} (pair tasks: "pairs", a
    list of two-text lists), GET /healthz, /info, /metrics. Concurrent requests are batched dynamically. With $SWEET_API_KEY set, requests
    need 'Authorization: Bearer KEY'. SIGTERM: finish the requests in flight, then exit 0."""
    import os

    _need_serving_packages("fastapi", "uvicorn")
    from .serving.server import LOOPBACK_HOSTS, announce, check_port, serve_local, serve_ray

    check_port(port)
    if backend not in ("local", "ray"):
        raise SweetError(f"--backend must be local or ray, got {backend!r}")
    if backend == "local" and replicas != 1:
        raise SweetError("--replicas needs --backend ray (the local backend is one process)")
    for flag, value in (("--max-batch-size", max_batch_size), ("--max-items", max_items), ("--max-body-bytes", max_body_bytes)):
        if value < 1:
            raise SweetError(f"{flag} must be positive, got {value}")
    if not max_wait_ms >= 0:
        raise SweetError(f"--max-wait-ms must be a non-negative number, got {max_wait_ms}")
    if threads is not None:
        if threads < 1:
            raise SweetError(f"--threads must be positive, got {threads}")
        import torch

        torch.set_num_threads(threads)
    from .policies import check_threshold

    check_threshold(threshold)
    from .policies import POLICIES

    if policy not in POLICIES:
        raise SweetError(f"unknown exit policy {policy!r}; choose one of: {', '.join(POLICIES)}")
    api_key = os.environ.get("SWEET_API_KEY") or None
    if host not in LOOPBACK_HOSTS and api_key is None:
        typer.echo(f"warning: serving on {host} without an API key: anyone who can reach it can use it (set SWEET_API_KEY)", err=True)
    app_options = dict(max_batch_size=max_batch_size, max_wait_ms=max_wait_ms, batching=batching, max_items=max_items,
                       max_body_bytes=max_body_bytes, api_key=api_key or "")
    load_options = dict(device=device, precision=precision, threshold=threshold, policy=policy, task=task)
    where = f"http://{'[' + host + ']' if ':' in host else host}:{port}"
    if backend == "ray":
        serve_ray(run_dir, host=host, port=port, replicas=replicas, cpus_per_replica=cpus_per_replica, threads=threads,
                  ray_address=ray_address, app_options=app_options, load_options=load_options,
                  on_ready=lambda: announce(f"sweet serve: {run_dir} on {where} (Ray Serve, {replicas} replica(s)); "
                                            "Ctrl-C or SIGTERM stops it"))
        return
    from .serving.app import create_app

    app_ = create_app(run_dir, **app_options, **load_options)
    info = app_.state.predictor.info()
    serve_local(app_, host=host, port=port,
                on_ready=lambda: announce(f"sweet serve: {run_dir} ({info['task']}, {info['method']}, {info['precision']} on "
                                          f"{info['device']}) on {where}; batching "
                                          f"{'up to ' + str(max_batch_size) + ' rows / ' + format(max_wait_ms, 'g') + ' ms' if batching else 'off'}; "
                                          "Ctrl-C or SIGTERM stops it"))


@app.command()
def loadtest(
    url: str = typer.Argument("http://127.0.0.1:8000", help="The server (this machine only: 127.0.0.1, ::1 or localhost)."),
    concurrency: int = typer.Option(8, help="Concurrent clients (each sends its next request when its answer arrives)."),
    requests: int = typer.Option(200, help="Requests to send in total (the test stops after them)."),
    texts_per_request: int = typer.Option(1, help="Texts (or pairs) per request."),
    duration_s: float = typer.Option(60.0, help="Stop sending after this many seconds even if requests are left."),
    timeout_s: float = typer.Option(30.0, help="Timeout of each request (counted as an error)."),
    texts: Optional[Path] = typer.Option(None, help="Text file, one text per line (pairs: two tab-separated texts); default: a few built-in sentences."),
    pairs: bool = typer.Option(False, help="Send {'pairs': ...} (for a pair-task server)."),
    threshold: Optional[float] = typer.Option(None, help="Send this threshold with every request (default: the server's)."),
    output_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
    output: Optional[Path] = typer.Option(None, help="Also write the JSON result to this file."),
) -> None:
    """Load-test a sweet server on this machine: throughput, p50/p95/p99 latency, errors, and the CPU time the
    load generator used. Bounded by --requests and --duration-s. Sends $SWEET_API_KEY as a bearer token if set."""
    import os

    _need_serving_packages("httpx")
    from .io import atomic_write_json
    from .serving.loadtest import format_load_test, load_test, read_texts

    items = read_texts(str(texts), pairs) if texts is not None else None
    result = load_test(url, concurrency=concurrency, requests=requests, texts_per_request=texts_per_request,
                       duration_s=duration_s, timeout_s=timeout_s, texts=items, threshold=threshold,
                       api_key=os.environ.get("SWEET_API_KEY") or None, pairs=pairs)
    if output is not None:
        atomic_write_json(output, result)
    typer.echo(json.dumps(result, indent=2) if output_json else format_load_test(result))


def _one_line(text) -> str:
    return " ".join(part.strip() for part in str(text).splitlines() if part.strip())


def _format_warning(message, category, filename, lineno, line=None) -> str:
    return f"warning: {_one_line(message)}\n"


def main() -> None:
    import warnings

    warnings.formatwarning = _format_warning  # one line per warning, e.g. about truncated texts
    try:
        code = app(standalone_mode=False)
    except SweetError as exc:
        if _STATE["debug"]:
            raise
        typer.echo(f"error: {_one_line(exc)}", err=True)
        sys.exit(2)
    except Exception as exc:  # usage errors (typer ships its own click; plain click for older typer) and aborts
        import click

        if isinstance(exc, (getattr(typer, "TyperException", click.exceptions.ClickException), click.exceptions.ClickException)):
            if _STATE["debug"]:
                raise
            if type(exc).__name__ == "NoArgsIsHelpError":  # a command given without arguments: its help
                exc.show()
                sys.exit(exc.exit_code)
            ctx = getattr(exc, "ctx", None)
            command = " ".join(["sweet", *([ctx.info_name] if ctx is not None and ctx.parent is not None else [])])
            hint = f" (see '{command} --help')" if ctx is not None else ""
            typer.echo(f"error: {_one_line(exc.format_message())}{hint}", err=True)
            sys.exit(exc.exit_code or 2)
        if isinstance(exc, (getattr(typer, "Abort", click.exceptions.Abort), click.exceptions.Abort)):
            typer.echo("aborted", err=True)
            sys.exit(130)
        raise
    if code == 130:  # typer turns Ctrl-C into exit code 130
        typer.echo("interrupted (an interrupted 'sweet train' continues with --resume)", err=True)
        sys.exit(130)
    if isinstance(code, int) and code:
        sys.exit(code)


if __name__ == "__main__":
    main()
